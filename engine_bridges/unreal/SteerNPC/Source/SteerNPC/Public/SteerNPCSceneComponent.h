// USteerNPCSceneComponent: several NPCs and the player in one conversation (a tavern table).
// List the members in the Details panel; bind OnLineDelta / OnLineDone / OnSceneEnd / OnError;
// call Say, SayTo or Continue. Every line's events name their speaker (SpeakerId, Speaker).
// Thin: the protocol is the native core's (npc_scene_*); the subsystem polls and routes events.
#pragma once

#include "CoreMinimal.h"
#include "Components/ActorComponent.h"
#include "SteerNPCSubsystem.h"
#include "SteerNPCTypes.h"
#include "SteerNPCComponent.h"
#include "SteerNPCSceneComponent.generated.h"

DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FSteerNPCLineStartedSignature, const FString&, SpeakerId, const FString&, Speaker);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FSteerNPCSceneEventSignature, const FSteerNPCEvent&, Event);

UCLASS(ClassGroup = (SteerNPC), meta = (BlueprintSpawnableComponent, DisplayName = "SteerNPC Scene"))
class STEERNPC_API USteerNPCSceneComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	USteerNPCSceneComponent();

	/** The scene's id on the server; empty = the server picks one (read it back after OnSceneReady). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	FString SceneId;

	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	FString PlayerName;

	/** The NPCs at the table. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	TArray<FSteerNPCSceneMember> Members;

	/** The speaking policy's tie-break seed; 0 = random. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC", meta = (ClampMin = "0"))
	int64 Seed = 0;

	/** 0 = each persona's default. */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC", meta = (ClampMin = "0"))
	int32 MaxNewTokens = 0;

	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	bool bStartSceneOnBeginPlay = true;

	/** Off: the server keeps the scene until it stops (save games restore it with RestoreScene). */
	UPROPERTY(EditAnywhere, BlueprintReadOnly, Category = "SteerNPC")
	bool bDeleteSceneOnEndPlay = true;

	/** A member starts a line. */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCLineStartedSignature OnLineStarted;

	/** Each streamed piece of a line (Event.SpeakerId, Event.Speaker, Event.Text). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSceneEventSignature OnLineDelta;

	/** A member's whole line (also after a cancel: FinishReason Cancelled). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSceneEventSignature OnLineDone;

	/** A Say / Continue is over (Event.Line: lines; FinishReason Cancelled when cancelled or interrupted). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSceneEventSignature OnSceneEnd;

	/** A scene call failed (StatusCode: npc_status, the gRPC code: NOT_FOUND 5 for an unknown member, ...). */
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCErrorSignature OnError;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSessionSignature OnSceneReady;

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void StartScene();

	/** The player speaks to the table; the speaking policy picks who answers (a name in the line,
	 *  else the last speaker). A running Continue ends first. Returns the request id (0 while the
	 *  scene is not ready: the line waits for it). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	int64 Say(const FString& Text);

	/** The player addresses these members (ids); they answer in this order. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	int64 SayTo(const FString& Text, const TArray<FString>& MemberIds);

	/** Members answer each other for up to Turns lines (1..32). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	int64 Continue(int32 Turns);

	/** Stop what is streaming at the next step. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void CancelScene();

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void JoinMember(const FSteerNPCSceneMember& Member);

	/** A USteerNPCComponent's character joins (its character id, mood and overrides). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void JoinCharacter(USteerNPCComponent* Character);

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void LeaveMember(const FString& MemberId);

	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void SteerMember(const FString& MemberId, const FString& Mood, const TMap<FString, int32>& Attributes, bool bClear);

	UFUNCTION(BlueprintPure, Category = "SteerNPC")
	bool IsReady() const { return bReady; }

	UFUNCTION(BlueprintPure, Category = "SteerNPC")
	bool IsBusy() const { return CurrentRequest != 0; }

	/** Blocking: the scene as save-game bytes. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool SaveScene(TArray<uint8>& OutSnapshot);

	/** Continue a saved scene (instead of StartScene). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	void RestoreScene(const TArray<uint8>& Snapshot);

	/** Say / Continue with one more receiver of the request's events (the async Blueprint nodes). */
	int64 SayWithHandler(const FString& Text, const TArray<FString>& MemberIds, FSteerNPCReplyHandler Extra);
	int64 ContinueWithHandler(int32 Turns, FSteerNPCReplyHandler Extra);

protected:
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type EndPlayReason) override;

private:
	void HandleEvent(const FSteerNPCEvent& Event);
	void OnSceneStarted(const FString& NewSceneId, int32 Status, const FString& Error);
	int64 Started(int64 Id, const FString& Error, FSteerNPCReplyHandler Extra);
	void ReportStatus(int32 Status, const FString& Error);

	bool bReady = false;
	int64 CurrentRequest = 0;
	FString SpeakingId;
	TArray<TFunction<void()>> Waiting;
	TMap<int64, FSteerNPCReplyHandler> ExtraHandlers;
};
