#include "SteerNPCSceneActions.h"

#include "SteerNPCSceneComponent.h"

#include <steernpc/steernpc.h>

USteerNPCSceneAction* USteerNPCSceneAction::SteerNPCSceneSay(UObject* WorldContextObject, USteerNPCSceneComponent* Scene,
                                                             const FString& Text, const TArray<FString>& MemberIds)
{
	USteerNPCSceneAction* Action = NewObject<USteerNPCSceneAction>();
	Action->Scene = Scene;
	Action->Text = Text;
	Action->MemberIds = MemberIds;
	Action->RegisterWithGameInstance(WorldContextObject);  // kept alive until SetReadyToDestroy
	return Action;
}

USteerNPCSceneAction* USteerNPCSceneAction::SteerNPCSceneContinue(UObject* WorldContextObject, USteerNPCSceneComponent* Scene,
                                                                  int32 Turns)
{
	USteerNPCSceneAction* Action = NewObject<USteerNPCSceneAction>();
	Action->Scene = Scene;
	Action->Turns = FMath::Max(1, Turns);
	Action->RegisterWithGameInstance(WorldContextObject);
	return Action;
}

void USteerNPCSceneAction::Activate()
{
	USteerNPCSceneComponent* Component = Scene.Get();
	if (Component == nullptr)
	{
		Fail(NPC_INVALID_ARGUMENT, TEXT("SteerNPC Scene: no SteerNPC Scene component given"));
		return;
	}
	// The component's own delegates see these events as well.
	FSteerNPCReplyHandler Handler = FSteerNPCReplyHandler::CreateUObject(this, &USteerNPCSceneAction::HandleEvent);
	if (Turns > 0)
	{
		Component->ContinueWithHandler(Turns, MoveTemp(Handler));
	}
	else
	{
		Component->SayWithHandler(Text, MemberIds, MoveTemp(Handler));
	}
}

void USteerNPCSceneAction::HandleEvent(const FSteerNPCEvent& Event)
{
	switch (Event.Type)
	{
	case ESteerNPCEventType::Delta:
		OnDelta.Broadcast(Event);
		return;
	case ESteerNPCEventType::Done:
		OnLineDone.Broadcast(Event);
		return;
	case ESteerNPCEventType::SceneEnd:
		OnEnded.Broadcast(Event);
		break;
	default:
		OnError.Broadcast(Event);
		break;
	}
	SetReadyToDestroy();
}

void USteerNPCSceneAction::Fail(int32 StatusCode, const FString& Message)
{
	FSteerNPCEvent Event;
	Event.Type = ESteerNPCEventType::Error;
	Event.StatusCode = StatusCode;
	Event.Text = Message;
	OnError.Broadcast(Event);
	SetReadyToDestroy();
}
