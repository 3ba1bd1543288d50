// "SteerNPC Scene Say" and "SteerNPC Scene Continue": async Blueprint nodes. OnDelta fires for each
// streamed piece and OnLineDone for each member's whole line (both with the speaker), then
// OnEnded (or OnError) once.
#pragma once

#include "CoreMinimal.h"
#include "Kismet/BlueprintAsyncActionBase.h"
#include "SteerNPCTypes.h"
#include "SteerNPCSayAction.h"
#include "SteerNPCSceneActions.generated.h"

class USteerNPCSceneComponent;

UCLASS()
class STEERNPC_API USteerNPCSceneAction : public UBlueprintAsyncActionBase
{
	GENERATED_BODY()

public:
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnDelta;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnLineDone;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnEnded;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnError;

	/** The player speaks to Scene; MemberIds (optional) answer in order, else the speaking policy picks. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC",
	          meta = (BlueprintInternalUseOnly = "true", DisplayName = "SteerNPC Scene Say", WorldContext = "WorldContextObject",
	                  AutoCreateRefTerm = "MemberIds"))
	static USteerNPCSceneAction* SteerNPCSceneSay(UObject* WorldContextObject, USteerNPCSceneComponent* Scene, const FString& Text,
	                                              const TArray<FString>& MemberIds);

	/** Members of Scene answer each other for up to Turns lines. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC",
	          meta = (BlueprintInternalUseOnly = "true", DisplayName = "SteerNPC Scene Continue", WorldContext = "WorldContextObject"))
	static USteerNPCSceneAction* SteerNPCSceneContinue(UObject* WorldContextObject, USteerNPCSceneComponent* Scene, int32 Turns);

	virtual void Activate() override;

private:
	void HandleEvent(const FSteerNPCEvent& Event);
	void Fail(int32 StatusCode, const FString& Message);

	TWeakObjectPtr<USteerNPCSceneComponent> Scene;
	FString Text;
	TArray<FString> MemberIds;
	int32 Turns = 0;  // 0: a Say
};
