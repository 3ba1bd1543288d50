#include "SteerNPCComponent.h"

#include "SteerNPCLog.h"

#include <steernpc/steernpc.h>

USteerNPCComponent::USteerNPCComponent()
{
	PrimaryComponentTick.bCanEverTick = false;  // the subsystem ticks and routes events here
}

void USteerNPCComponent::BeginPlay()
{
	Super::BeginPlay();
	if (bStartSessionOnBeginPlay && SessionId.IsEmpty())
	{
		StartSession();
	}
}

void USteerNPCComponent::EndPlay(const EEndPlayReason::Type EndPlayReason)
{
	CancelReply();
	Waiting.Reset();
	ExtraHandlers.Reset();
	if (bDeleteSessionOnEndPlay && !SessionId.IsEmpty())
	{
		if (USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this))
		{
			Subsystem->DeleteSessionAsync(SessionId);
		}
	}
	Super::EndPlay(EndPlayReason);
}

void USteerNPCComponent::StartSession()
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem (not in a game world)"));
		return;
	}
	TWeakObjectPtr<USteerNPCComponent> WeakThis(this);
	Subsystem->CreateSessionAsync(CharacterId, Mood, SteerNPC::FormatAttributes(AttributeOverrides), PlayerName,
		[WeakThis](const FString& NewSessionId, int32 Status, const FString& Error)
		{
			if (USteerNPCComponent* Self = WeakThis.Get())
			{
				Self->OnSessionStarted(NewSessionId, Status, Error);
			}
		});
}

void USteerNPCComponent::RestoreSession(const TArray<uint8>& Snapshot)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem (not in a game world)"));
		return;
	}
	CancelReply();
	SessionId.Reset();
	TWeakObjectPtr<USteerNPCComponent> WeakThis(this);
	Subsystem->ImportSessionAsync(Snapshot, [WeakThis](const FString& NewSessionId, int32 Status, const FString& Error)
	{
		if (USteerNPCComponent* Self = WeakThis.Get())
		{
			Self->OnSessionStarted(NewSessionId, Status, Error);
		}
	});
}

void USteerNPCComponent::OnSessionStarted(const FString& NewSessionId, int32 Status, const FString& Error)
{
	if (Status != 0)
	{
		UE_LOG(LogSteerNPC, Warning, TEXT("%s: no session for '%s' (%d): %s"), *GetNameSafe(GetOwner()), *CharacterId, Status, *Error);
		OnError.Broadcast(0, Status, Error);
		return;
	}
	SessionId = NewSessionId;
	OnSessionReady.Broadcast(SessionId);
	TArray<FWaitingLine> Lines = MoveTemp(Waiting);
	for (FWaitingLine& Line : Lines)
	{
		SayWithHandler(Line.Text, Line.Overrides, MoveTemp(Line.Extra));
	}
}

int64 USteerNPCComponent::Say(const FString& Text, const FString& PerReplyOverrides)
{
	return SayWithHandler(Text, PerReplyOverrides, FSteerNPCReplyHandler());
}

int64 USteerNPCComponent::SayWithHandler(const FString& Text, const FString& PerReplyOverrides, FSteerNPCReplyHandler Extra)
{
	if (SessionId.IsEmpty())
	{
		Waiting.Add({Text, PerReplyOverrides, MoveTemp(Extra)});
		return 0;
	}
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem"));
		return 0;
	}
	CancelReply();  // one line at a time per NPC
	FString Error;
	const int64 Id = Subsystem->Say(SessionId, Text, PerReplyOverrides, MaxNewTokens,
	                                FSteerNPCReplyHandler::CreateUObject(this, &USteerNPCComponent::HandleEvent), Error);
	if (Id == 0)
	{
		FSteerNPCEvent Failed;
		Failed.Type = ESteerNPCEventType::Error;
		Failed.StatusCode = NPC_INVALID_ARGUMENT;
		Failed.Text = Error;
		Failed.SessionId = SessionId;
		Extra.ExecuteIfBound(Failed);
		OnError.Broadcast(0, NPC_INVALID_ARGUMENT, Error);
		return 0;
	}
	CurrentRequest = Id;
	if (Extra.IsBound())
	{
		ExtraHandlers.Add(Id, MoveTemp(Extra));
	}
	return Id;
}

void USteerNPCComponent::HandleEvent(const FSteerNPCEvent& Event)
{
	if (Event.IsFinal() && Event.RequestId == CurrentRequest)
	{
		CurrentRequest = 0;
	}
	FSteerNPCReplyHandler Extra;
	if (Event.IsFinal())
	{
		ExtraHandlers.RemoveAndCopyValue(Event.RequestId, Extra);
	}
	else if (const FSteerNPCReplyHandler* Found = ExtraHandlers.Find(Event.RequestId))
	{
		Extra = *Found;
	}
	switch (Event.Type)
	{
	case ESteerNPCEventType::Delta:
		OnReplyDelta.Broadcast(Event.RequestId, Event.Text);
		break;
	case ESteerNPCEventType::Done:
		OnReplyDone.Broadcast(Event);
		break;
	case ESteerNPCEventType::Error:
		UE_LOG(LogSteerNPC, Warning, TEXT("%s: reply %lld failed (%d): %s"), *GetNameSafe(GetOwner()), Event.RequestId, Event.StatusCode, *Event.Text);
		OnError.Broadcast(Event.RequestId, Event.StatusCode, Event.Text);
		break;
	default:
		break;
	}
	Extra.ExecuteIfBound(Event);
}

void USteerNPCComponent::CancelReply()
{
	if (CurrentRequest != 0)
	{
		if (USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this))
		{
			Subsystem->CancelReply(CurrentRequest);  // its Done (Cancelled) still arrives
		}
	}
}

void USteerNPCComponent::SetMood(const FString& NewMood)
{
	Mood = NewMood;
	PushSteer(/*bClear=*/true);
}

void USteerNPCComponent::SetAttribute(const FString& Attribute, int32 Value)
{
	AttributeOverrides.Add(Attribute, Value);
	PushSteer(/*bClear=*/true);
}

void USteerNPCComponent::ClearSteering()
{
	Mood.Reset();
	AttributeOverrides.Reset();
	PushSteer(/*bClear=*/true);
}

void USteerNPCComponent::PushSteer(bool bClear)
{
	if (SessionId.IsEmpty())
	{
		return;  // the session is created with the current mood and overrides
	}
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		return;
	}
	TWeakObjectPtr<USteerNPCComponent> WeakThis(this);
	// bClear: the component's Mood and AttributeOverrides are the whole truth about the session.
	Subsystem->SteerAsync(SessionId, Mood, SteerNPC::FormatAttributes(AttributeOverrides), bClear,
		[WeakThis](int32 Status, const FString& Error)
		{
			USteerNPCComponent* Self = WeakThis.Get();
			if (Self != nullptr && Status != 0)
			{
				Self->OnError.Broadcast(0, Status, Error);
			}
		});
}

bool USteerNPCComponent::SaveSession(TArray<uint8>& OutSnapshot)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	FString Error;
	if (Subsystem == nullptr || SessionId.IsEmpty() || !Subsystem->ExportSession(SessionId, OutSnapshot, Error))
	{
		OnError.Broadcast(0, Subsystem == nullptr || SessionId.IsEmpty() ? NPC_FAILED_PRECONDITION : NPC_INTERNAL, Error.IsEmpty() ? TEXT("no session") : Error);
		return false;
	}
	return true;
}

#if WITH_EDITOR
void USteerNPCComponent::PostEditChangeProperty(FPropertyChangedEvent& PropertyChangedEvent)
{
	Super::PostEditChangeProperty(PropertyChangedEvent);
	const FName Name = PropertyChangedEvent.GetMemberPropertyName();
	// Editing Mood / AttributeOverrides during Play In Editor steers the live session.
	if (HasBegunPlay() && (Name == GET_MEMBER_NAME_CHECKED(USteerNPCComponent, Mood) ||
	                       Name == GET_MEMBER_NAME_CHECKED(USteerNPCComponent, AttributeOverrides)))
	{
		PushSteer(/*bClear=*/true);
	}
}
#endif
