#include "SteerNPCSceneComponent.h"

#include "SteerNPCLog.h"

#include <steernpc/steernpc.h>

USteerNPCSceneComponent::USteerNPCSceneComponent()
{
	PrimaryComponentTick.bCanEverTick = false;  // the subsystem ticks and routes events here
}

void USteerNPCSceneComponent::BeginPlay()
{
	Super::BeginPlay();
	if (bStartSceneOnBeginPlay && !bReady)
	{
		StartScene();
	}
}

void USteerNPCSceneComponent::EndPlay(const EEndPlayReason::Type EndPlayReason)
{
	CancelScene();
	Waiting.Reset();
	ExtraHandlers.Reset();
	if (bDeleteSceneOnEndPlay && bReady)
	{
		if (USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this))
		{
			Subsystem->DeleteSceneAsync(SceneId);
		}
	}
	bReady = false;
	Super::EndPlay(EndPlayReason);
}

void USteerNPCSceneComponent::StartScene()
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem (not in a game world)"));
		return;
	}
	TWeakObjectPtr<USteerNPCSceneComponent> WeakThis(this);
	Subsystem->CreateSceneAsync(SceneId, PlayerName, Members, Seed,
		[WeakThis](const FString& NewSceneId, int32 Status, const FString& Error)
		{
			if (USteerNPCSceneComponent* Self = WeakThis.Get())
			{
				Self->OnSceneStarted(NewSceneId, Status, Error);
			}
		});
}

void USteerNPCSceneComponent::RestoreScene(const TArray<uint8>& Snapshot)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem (not in a game world)"));
		return;
	}
	CancelScene();
	bReady = false;
	TWeakObjectPtr<USteerNPCSceneComponent> WeakThis(this);
	Subsystem->ImportSceneAsync(Snapshot, [WeakThis](const FString& NewSceneId, int32 Status, const FString& Error)
	{
		if (USteerNPCSceneComponent* Self = WeakThis.Get())
		{
			Self->OnSceneStarted(NewSceneId, Status, Error);
		}
	});
}

void USteerNPCSceneComponent::OnSceneStarted(const FString& NewSceneId, int32 Status, const FString& Error)
{
	if (Status != 0)
	{
		UE_LOG(LogSteerNPC, Warning, TEXT("%s: no scene '%s' (%d): %s"), *GetNameSafe(GetOwner()), *SceneId, Status, *Error);
		OnError.Broadcast(0, Status, Error);
		return;
	}
	SceneId = NewSceneId;
	bReady = true;
	OnSceneReady.Broadcast(SceneId);
	TArray<TFunction<void()>> Lines = MoveTemp(Waiting);
	for (TFunction<void()>& Line : Lines)
	{
		Line();
	}
}

int64 USteerNPCSceneComponent::Say(const FString& Text)
{
	return SayWithHandler(Text, TArray<FString>(), FSteerNPCReplyHandler());
}

int64 USteerNPCSceneComponent::SayTo(const FString& Text, const TArray<FString>& MemberIds)
{
	return SayWithHandler(Text, MemberIds, FSteerNPCReplyHandler());
}

int64 USteerNPCSceneComponent::Continue(int32 Turns)
{
	return ContinueWithHandler(Turns, FSteerNPCReplyHandler());
}

int64 USteerNPCSceneComponent::SayWithHandler(const FString& Text, const TArray<FString>& MemberIds, FSteerNPCReplyHandler Extra)
{
	if (!bReady)
	{
		Waiting.Add([this, Text, MemberIds, Extra]() { SayWithHandler(Text, MemberIds, Extra); });
		return 0;
	}
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem"));
		return 0;
	}
	// No local cancel: the server ends a running Continue of this scene before it answers.
	FString Error;
	const int64 Id = Subsystem->SceneSay(SceneId, Text, MemberIds, FString(), MaxNewTokens,
	                                     FSteerNPCReplyHandler::CreateUObject(this, &USteerNPCSceneComponent::HandleEvent), Error);
	return Started(Id, Error, MoveTemp(Extra));
}

int64 USteerNPCSceneComponent::ContinueWithHandler(int32 Turns, FSteerNPCReplyHandler Extra)
{
	if (!bReady)
	{
		Waiting.Add([this, Turns, Extra]() { ContinueWithHandler(Turns, Extra); });
		return 0;
	}
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("no SteerNPC subsystem"));
		return 0;
	}
	FString Error;
	const int64 Id = Subsystem->SceneContinue(SceneId, Turns, MaxNewTokens,
	                                          FSteerNPCReplyHandler::CreateUObject(this, &USteerNPCSceneComponent::HandleEvent), Error);
	return Started(Id, Error, MoveTemp(Extra));
}

int64 USteerNPCSceneComponent::Started(int64 Id, const FString& Error, FSteerNPCReplyHandler Extra)
{
	if (Id == 0)
	{
		FSteerNPCEvent Failed;
		Failed.Type = ESteerNPCEventType::Error;
		Failed.StatusCode = NPC_INVALID_ARGUMENT;
		Failed.Text = Error;
		Failed.SceneId = SceneId;
		OnError.Broadcast(0, NPC_INVALID_ARGUMENT, Error);
		Extra.ExecuteIfBound(Failed);
		return 0;
	}
	CurrentRequest = Id;
	if (Extra.IsBound())
	{
		ExtraHandlers.Add(Id, MoveTemp(Extra));
	}
	return Id;
}

void USteerNPCSceneComponent::HandleEvent(const FSteerNPCEvent& Event)
{
	switch (Event.Type)
	{
	case ESteerNPCEventType::Delta:
		if (SpeakingId != Event.SpeakerId)
		{
			SpeakingId = Event.SpeakerId;
			OnLineStarted.Broadcast(Event.SpeakerId, Event.Speaker);
		}
		OnLineDelta.Broadcast(Event);
		break;
	case ESteerNPCEventType::Done:
		if (SpeakingId != Event.SpeakerId)
		{
			OnLineStarted.Broadcast(Event.SpeakerId, Event.Speaker);  // a line without deltas
		}
		SpeakingId.Reset();
		OnLineDone.Broadcast(Event);
		break;
	case ESteerNPCEventType::SceneEnd:
		OnSceneEnd.Broadcast(Event);
		break;
	default:
		OnError.Broadcast(Event.RequestId, Event.StatusCode, Event.Text);
		break;
	}
	if (Event.IsFinal())
	{
		SpeakingId.Reset();
		if (CurrentRequest == Event.RequestId)
		{
			CurrentRequest = 0;
		}
		FSteerNPCReplyHandler Extra;
		if (ExtraHandlers.RemoveAndCopyValue(Event.RequestId, Extra))
		{
			Extra.ExecuteIfBound(Event);
		}
	}
	else if (const FSteerNPCReplyHandler* Found = ExtraHandlers.Find(Event.RequestId))
	{
		const FSteerNPCReplyHandler Extra = *Found;
		Extra.ExecuteIfBound(Event);
	}
}

void USteerNPCSceneComponent::CancelScene()
{
	if (CurrentRequest != 0)
	{
		if (USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this))
		{
			Subsystem->CancelReply(CurrentRequest);  // the request still ends with SceneEnd (Cancelled)
		}
	}
}

void USteerNPCSceneComponent::JoinMember(const FSteerNPCSceneMember& Member)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr || !bReady)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("the scene is not ready"));
		return;
	}
	TWeakObjectPtr<USteerNPCSceneComponent> WeakThis(this);
	Subsystem->JoinSceneAsync(SceneId, Member, [WeakThis, Member](int32 Status, const FString& Error)
	{
		if (USteerNPCSceneComponent* Self = WeakThis.Get())
		{
			if (Status == 0)
			{
				Self->Members.Add(Member);
			}
			Self->ReportStatus(Status, Error);
		}
	});
}

void USteerNPCSceneComponent::JoinCharacter(USteerNPCComponent* Character)
{
	if (Character == nullptr)
	{
		OnError.Broadcast(0, NPC_INVALID_ARGUMENT, TEXT("JoinCharacter: no SteerNPC component given"));
		return;
	}
	FSteerNPCSceneMember Member;
	Member.CharacterId = Character->CharacterId;
	Member.Mood = Character->Mood;
	Member.AttributeOverrides = Character->AttributeOverrides;
	JoinMember(Member);
}

void USteerNPCSceneComponent::LeaveMember(const FString& MemberId)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr || !bReady)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("the scene is not ready"));
		return;
	}
	TWeakObjectPtr<USteerNPCSceneComponent> WeakThis(this);
	Subsystem->LeaveSceneAsync(SceneId, MemberId, [WeakThis, MemberId](int32 Status, const FString& Error)
	{
		if (USteerNPCSceneComponent* Self = WeakThis.Get())
		{
			if (Status == 0)
			{
				Self->Members.RemoveAll([&MemberId](const FSteerNPCSceneMember& M) { return M.EffectiveMemberId() == MemberId; });
			}
			Self->ReportStatus(Status, Error);
		}
	});
}

void USteerNPCSceneComponent::SteerMember(const FString& MemberId, const FString& Mood, const TMap<FString, int32>& Attributes, bool bClear)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	if (Subsystem == nullptr || !bReady)
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, TEXT("the scene is not ready"));
		return;
	}
	TWeakObjectPtr<USteerNPCSceneComponent> WeakThis(this);
	Subsystem->SteerMemberAsync(SceneId, MemberId, Mood, SteerNPC::FormatAttributes(Attributes), bClear,
		[WeakThis](int32 Status, const FString& Error)
		{
			if (USteerNPCSceneComponent* Self = WeakThis.Get())
			{
				Self->ReportStatus(Status, Error);
			}
		});
}

bool USteerNPCSceneComponent::SaveScene(TArray<uint8>& OutSnapshot)
{
	USteerNPCSubsystem* Subsystem = USteerNPCSubsystem::Get(this);
	FString Error;
	if (Subsystem == nullptr || !bReady || !Subsystem->ExportScene(SceneId, OutSnapshot, Error))
	{
		OnError.Broadcast(0, NPC_FAILED_PRECONDITION, Error.IsEmpty() ? TEXT("the scene is not ready") : Error);
		return false;
	}
	return true;
}

void USteerNPCSceneComponent::ReportStatus(int32 Status, const FString& Error)
{
	if (Status != 0)
	{
		OnError.Broadcast(0, Status, Error);
	}
}
