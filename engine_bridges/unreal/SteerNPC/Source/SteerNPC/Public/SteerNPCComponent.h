// USteerNPCComponent: one NPC of the SteerNPC server on an actor. Set the character, mood and
// attribute overrides in the Details panel; bind OnReplyDelta / OnReplyDone / OnError; call Say.
#pragma once

#include "CoreMinimal.h"
#include "Components/ActorComponent.h"
#include "SteerNPCSubsystem.h"
#include "SteerNPCTypes.h"
#include "SteerNPCComponent.generated.h"

DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FSteerNPCDeltaSignature, int64, RequestId, const FString&, Delta);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FSteerNPCReplySignature, const FSteerNPCEvent&, Reply);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FSteerNPCErrorSignature, int64, RequestId, int32, StatusCode, const FString&, Message);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FSteerNPCSessionSignature, const FString&, SessionId);

UCLASS(ClassGroup = (SteerNPC), meta = (BlueprintSpawnableComponent, DisplayName = "SteerNPC Character"))
class STEERNPC_API USteerNPCComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	USteerNPCComponent();

	/** The persona id on the server, e.g. "brom". */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	FString CharacterId = TEXT("brom");

	/** One of the persona's moods; empty = none. Use SetMood at run time. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	FString Mood;

	/** Session-level steering (attribute -> value, e.g. humor 3). Use SetAttribute at run time. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	TMap<FString, int32> AttributeOverrides;

	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	FString PlayerName;

	/** 0 = the persona's default. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC", meta = (ClampMin = "0"))
	int32 MaxNewTokens = 0;

	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	bool bStartSessionOnBeginPlay = true;

	/** Off: the server keeps the session (save games restore it with RestoreSession). */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	bool bDeleteSessionOnEndPlay = false;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString SessionId;

	/** Each streamed piece of a reply. */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCDeltaSignature OnReplyDelta;

	/** The reply finished (Reply.Text is all of it; also after a cancel, FinishReason Cancelled). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCReplySignature OnReplyDone;

	/** A reply or a session call failed (StatusCode: npc_status, the gRPC code, e.g. NPC_UNAVAILABLE = 14). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCErrorSignature OnError;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSessionSignature OnSessionReady;

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void StartSession();

	/** The player says Text. PerReplyOverrides ("humor:4,verbosity:1") apply to this reply only.
	 *  A reply still streaming is cancelled first; lines said before the session is ready wait
	 *  for it (and return 0). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	int64 Say(const FString& Text, const FString& PerReplyOverrides);

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void CancelReply();

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void SetMood(const FString& NewMood);

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void SetAttribute(const FString& Attribute, int32 Value);

	/** Drop mood and attribute steering. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void ClearSteering();

	UFUNCTION(BlueprintPure, Category = "SteerNPC")
	bool IsReady() const { return !SessionId.IsEmpty(); }

	UFUNCTION(BlueprintPure, Category = "SteerNPC")
	bool IsSpeaking() const { return CurrentRequest != 0; }

	/** Blocking: the conversation as save-game bytes. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool SaveSession(TArray<uint8>& OutSnapshot);

	/** Continue a saved conversation (instead of StartSession). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void RestoreSession(const TArray<uint8>& Snapshot);

	/** Say, with one more receiver of this reply's events (the async Blueprint node). */
	int64 SayWithHandler(const FString& Text, const FString& PerReplyOverrides, FSteerNPCReplyHandler Extra);

protected:
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type EndPlayReason) override;
#if WITH_EDITOR
	virtual void PostEditChangeProperty(FPropertyChangedEvent& PropertyChangedEvent) override;
#endif

private:
	struct FWaitingLine
	{
		FString Text;
		FString Overrides;
		FSteerNPCReplyHandler Extra;
	};

	void HandleEvent(const FSteerNPCEvent& Event);
	void OnSessionStarted(const FString& NewSessionId, int32 Status, const FString& Error);
	void PushSteer(bool bClear);

	int64 CurrentRequest = 0;
	TArray<FWaitingLine> Waiting;
	TMap<int64, FSteerNPCReplyHandler> ExtraHandlers;
};
