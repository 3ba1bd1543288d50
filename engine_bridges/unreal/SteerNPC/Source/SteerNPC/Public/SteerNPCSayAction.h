// "SteerNPC Say": an async Blueprint node. Its OnDelta pin fires for each streamed piece, then
// OnDone (or OnError) once.
#pragma once

#include "CoreMinimal.h"
#include "Kismet/BlueprintAsyncActionBase.h"
#include "SteerNPCTypes.h"
#include "SteerNPCSayAction.generated.h"

class USteerNPCComponent;

DECLARE_DYNAMIC_MULTICAST_DELEGATE_OneParam(FSteerNPCSayActionPin, const FSteerNPCEvent&, Event);

UCLASS()
class STEERNPC_API USteerNPCSayAction : public UBlueprintAsyncActionBase
{
	GENERATED_BODY()

public:
	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnDelta;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnDone;

	UPROPERTY(BlueprintAssignable, Category = "SteerNPC")
	FSteerNPCSayActionPin OnError;

	/** Say Text to Npc and stream its reply. AttributeOverrides ("humor:4") apply to this reply only. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC",
	          meta = (BlueprintInternalUseOnly = "true", DisplayName = "SteerNPC Say", WorldContext = "WorldContextObject"))
	static USteerNPCSayAction* SteerNPCSay(UObject* WorldContextObject, USteerNPCComponent* Npc, const FString& Text,
	                                       const FString& AttributeOverrides);

	virtual void Activate() override;

private:
	void HandleEvent(const FSteerNPCEvent& Event);
	void Fail(int32 StatusCode, const FString& Message);

	TWeakObjectPtr<USteerNPCComponent> Npc;
	FString Text;
	FString AttributeOverrides;
};
