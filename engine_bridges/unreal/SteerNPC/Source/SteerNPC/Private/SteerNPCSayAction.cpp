#include "SteerNPCSayAction.h"

#include "SteerNPCComponent.h"

#include <steernpc/steernpc.h>

USteerNPCSayAction* USteerNPCSayAction::SteerNPCSay(UObject* WorldContextObject, USteerNPCComponent* Npc, const FString& Text,
                                                    const FString& AttributeOverrides)
{
	USteerNPCSayAction* Action = NewObject<USteerNPCSayAction>();
	Action->Npc = Npc;
	Action->Text = Text;
	Action->AttributeOverrides = AttributeOverrides;
	Action->RegisterWithGameInstance(WorldContextObject);  // kept alive until SetReadyToDestroy
	return Action;
}

void USteerNPCSayAction::Activate()
{
	USteerNPCComponent* Component = Npc.Get();
	if (Component == nullptr)
	{
		Fail(NPC_INVALID_ARGUMENT, TEXT("SteerNPC Say: no SteerNPC component given"));
		return;
	}
	// Component->Say routes this reply's events to the component's own delegates as well.
	Component->SayWithHandler(Text, AttributeOverrides, FSteerNPCReplyHandler::CreateUObject(this, &USteerNPCSayAction::HandleEvent));
}

void USteerNPCSayAction::HandleEvent(const FSteerNPCEvent& Event)
{
	switch (Event.Type)
	{
	case ESteerNPCEventType::Delta:
		OnDelta.Broadcast(Event);
		return;
	case ESteerNPCEventType::Done:
		OnDone.Broadcast(Event);
		break;
	default:
		OnError.Broadcast(Event);
		break;
	}
	SetReadyToDestroy();
}

void USteerNPCSayAction::Fail(int32 StatusCode, const FString& Message)
{
	FSteerNPCEvent Event;
	Event.Type = ESteerNPCEventType::Error;
	Event.StatusCode = StatusCode;
	Event.Text = Message;
	OnError.Broadcast(Event);
	SetReadyToDestroy();
}
