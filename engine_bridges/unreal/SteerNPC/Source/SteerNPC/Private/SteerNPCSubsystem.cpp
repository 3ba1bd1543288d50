#include "SteerNPCSubsystem.h"

#include "Async/Async.h"
#include "Engine/Engine.h"
#include "Engine/GameInstance.h"
#include "Engine/World.h"
#include "Misc/FileHelper.h"
#include "Misc/Paths.h"
#include "SteerNPCLog.h"
#include "SteerNPCSettings.h"

#include <steernpc/steernpc.h>

namespace
{
	// UTF-8 for the C ABI; keeps the bytes alive for the duration of a call.
	struct FUtf8
	{
		explicit FUtf8(const FString& S) : Conv(*S) {}
		const char* Get() const { return reinterpret_cast<const char*>(Conv.Get()); }
		/** NULL for an empty string (the C ABI's "none"). */
		const char* OrNull(const FString& S) const { return S.IsEmpty() ? nullptr : Get(); }
		FTCHARToUTF8 Conv;
	};

	FString FromUtf8(const char* Ptr, int32 Len = -1)
	{
		if (Ptr == nullptr)
		{
			return FString();
		}
		if (Len < 0)
		{
			Len = FCStringAnsi::Strlen(Ptr);
		}
		FUTF8ToTCHAR Conv(reinterpret_cast<const ANSICHAR*>(Ptr), Len);
		return FString(Conv.Length(), Conv.Get());
	}

	FString LastError() { return FromUtf8(npc_last_error()); }

	/** Owns an npc_result: the whole answer of one call (one RPC; never repeated to size a buffer). */
	struct FResult
	{
		explicit FResult(npc_result* InResult) : Result(InResult) {}
		~FResult() { npc_result_free(Result); }
		FResult(const FResult&) = delete;
		FResult& operator=(const FResult&) = delete;

		int32 Status() const { return npc_result_status(Result); }
		bool Ok() const { return Status() == NPC_OK; }
		/** The value, or the error message when !Ok(). */
		FString Text() const { return FromUtf8(npc_result_text(Result), static_cast<int32>(npc_result_size(Result))); }

		npc_result* Result;
	};

	template <typename Fn>
	void OnGameThread(Fn&& Callback)
	{
		AsyncTask(ENamedThreads::GameThread, MoveTemp(Callback));
	}
}

FSteerNPCClientHandle::~FSteerNPCClientHandle()
{
	npc_client_destroy(Client);  // cancels replies in flight, joins the core's threads
}

USteerNPCSubsystem* USteerNPCSubsystem::Get(const UObject* WorldContextObject)
{
	const UWorld* World = GEngine ? GEngine->GetWorldFromContextObject(WorldContextObject, EGetWorldErrorMode::ReturnNull) : nullptr;
	UGameInstance* GameInstance = World ? World->GetGameInstance() : nullptr;
	return GameInstance ? GameInstance->GetSubsystem<USteerNPCSubsystem>() : nullptr;
}

void USteerNPCSubsystem::Initialize(FSubsystemCollectionBase& Collection)
{
	Super::Initialize(Collection);
	const USteerNPCSettings* Settings = GetDefault<USteerNPCSettings>();
	MaxEventsPerTick = FMath::Max(1, Settings->MaxEventsPerTick);

	FString RootPem;
	if (Settings->bUseTls && !Settings->RootCertificatesPem.FilePath.IsEmpty())
	{
		const FString Path = FPaths::ConvertRelativePathToFull(FPaths::ProjectDir(), Settings->RootCertificatesPem.FilePath);
		if (!FFileHelper::LoadFileToString(RootPem, *Path))
		{
			UE_LOG(LogSteerNPC, Error, TEXT("cannot read TLS root certificates %s"), *Path);
		}
	}
	FUtf8 Target(Settings->ServerTarget), ApiKey(Settings->ApiKey), Roots(RootPem);
	npc_client_options Options = {};
	Options.target = Target.Get();
	Options.api_key = ApiKey.OrNull(Settings->ApiKey);
	Options.root_certs_pem = Roots.OrNull(RootPem);
	Options.use_tls = Settings->bUseTls ? 1 : 0;
	Options.default_deadline_ms = Settings->DefaultDeadlineMs;
	Options.max_reconnect_backoff_ms = Settings->MaxReconnectBackoffMs;
	npc_client* Raw = npc_client_create(&Options);
	if (Raw == nullptr)
	{
		UE_LOG(LogSteerNPC, Error, TEXT("cannot create the SteerNPC client: %s"), *LastError());
		return;
	}
	Client = MakeShared<FSteerNPCClientHandle, ESPMode::ThreadSafe>(Raw);
	npc_client_state(Raw, /*try_to_connect=*/1);  // start connecting in the background
	UE_LOG(LogSteerNPC, Log, TEXT("SteerNPC client for %s"), *Settings->ServerTarget);
}

void USteerNPCSubsystem::Deinitialize()
{
	Routes.Reset();
	Client.Reset();  // destroyed now, or when the last worker task using it returns
	Super::Deinitialize();
}

ETickableTickType USteerNPCSubsystem::GetTickableTickType() const
{
	return IsTemplate() ? ETickableTickType::Never : ETickableTickType::Conditional;
}

bool USteerNPCSubsystem::IsTickable() const
{
	return !IsTemplate() && Client.IsValid();
}

TStatId USteerNPCSubsystem::GetStatId() const
{
	RETURN_QUICK_DECLARE_CYCLE_STAT(USteerNPCSubsystem, STATGROUP_Tickables);
}

void USteerNPCSubsystem::Tick(float DeltaTime)
{
	if (!Client.IsValid())
	{
		return;
	}
	npc_event_ex Ex;
	for (int32 Count = 0; Count < MaxEventsPerTick && npc_poll_ex(Client->Get(), &Ex, 0) == 1; ++Count)
	{
		const npc_event& Raw = Ex.event;
		// Copy out now: the native strings are valid only until the next npc_poll on this thread.
		FSteerNPCEvent Event;
		Event.RequestId = Raw.request_id;
		Event.Type = static_cast<ESteerNPCEventType>(Raw.type);
		Event.Text = FromUtf8(Raw.text, Raw.text_len);
		Event.FinishReason = static_cast<ESteerNPCFinishReason>(Raw.finish_reason);
		Event.StatusCode = Raw.status_code;
		Event.SessionId = FromUtf8(Raw.session_id);
		Event.CompletionTokens = Raw.completion_tokens;
		Event.ServerTimeToFirstTokenMs = Raw.server_ttft_ms;
		Event.SceneId = FromUtf8(Ex.scene_id);
		Event.SpeakerId = FromUtf8(Ex.speaker_id);
		Event.Speaker = FromUtf8(Ex.speaker);
		Event.Line = Ex.line;
		if (Event.Type == ESteerNPCEventType::Done)
		{
			Event.AppliedAttributes = SteerNPC::ParseAttributes(FromUtf8(Raw.attributes));
		}
		OnAnyEvent.Broadcast(Event);
		if (Event.IsFinal())
		{
			FSteerNPCReplyHandler Handler;
			if (Routes.RemoveAndCopyValue(Event.RequestId, Handler))
			{
				Handler.ExecuteIfBound(Event);
			}
		}
		else if (const FSteerNPCReplyHandler* Found = Routes.Find(Event.RequestId))
		{
			// A copy: the handler may start another reply, which can reallocate Routes.
			const FSteerNPCReplyHandler Handler = *Found;
			Handler.ExecuteIfBound(Event);
		}
	}
}

int64 USteerNPCSubsystem::Say(const FString& SessionId, const FString& Text, const FString& AttributeOverrides, int32 MaxNewTokens,
                              FSteerNPCReplyHandler Handler, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available (see the log)");
		return 0;
	}
	FUtf8 Session(SessionId), Line(Text), Overrides(AttributeOverrides);
	npc_say_options Options = {};
	Options.attributes = Overrides.OrNull(AttributeOverrides);
	Options.max_new_tokens = MaxNewTokens;
	const npc_request_id Id = npc_say_ex(Client->Get(), Session.Get(), Line.Get(), &Options);
	if (Id <= 0)
	{
		OutError = LastError();
		return 0;
	}
	// Events are only taken out in Tick, on this (game) thread: registering now cannot miss any.
	Routes.Add(Id, MoveTemp(Handler));
	return Id;
}

int64 USteerNPCSubsystem::Track(int64 Id, FSteerNPCReplyHandler Handler, FString& OutError)
{
	if (Id <= 0)
	{
		OutError = LastError();
		return 0;
	}
	Routes.Add(Id, MoveTemp(Handler));  // events are only taken out in Tick, on this thread
	return Id;
}

int64 USteerNPCSubsystem::SceneSay(const FString& SceneId, const FString& Text, const TArray<FString>& MemberIds,
                                   const FString& AttributeOverrides, int32 MaxNewTokens, FSteerNPCReplyHandler Handler, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available (see the log)");
		return 0;
	}
	const FString Ids = FString::Join(MemberIds, TEXT(","));
	FUtf8 Scene(SceneId), Line(Text), IdsUtf8(Ids), Overrides(AttributeOverrides);
	npc_say_options Options = {};
	Options.attributes = Overrides.OrNull(AttributeOverrides);
	Options.max_new_tokens = MaxNewTokens;
	return Track(npc_scene_say(Client->Get(), Scene.Get(), Line.Get(), IdsUtf8.OrNull(Ids), &Options), MoveTemp(Handler), OutError);
}

int64 USteerNPCSubsystem::SceneContinue(const FString& SceneId, int32 Turns, int32 MaxNewTokens, FSteerNPCReplyHandler Handler,
                                        FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available (see the log)");
		return 0;
	}
	FUtf8 Scene(SceneId);
	npc_say_options Options = {};
	Options.max_new_tokens = MaxNewTokens;
	return Track(npc_scene_continue(Client->Get(), Scene.Get(), Turns, &Options), MoveTemp(Handler), OutError);
}

bool USteerNPCSubsystem::CancelReply(int64 RequestId)
{
	return Client.IsValid() && npc_cancel(Client->Get(), RequestId) == 0;
}

void USteerNPCSubsystem::CreateSessionAsync(const FString& CharacterId, const FString& Mood, const FString& Attributes,
                                            const FString& PlayerName,
                                            TFunction<void(const FString&, int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		Done(FString(), NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, CharacterId, Mood, Attributes, PlayerName, Done = MoveTemp(Done)]() mutable
	{
		FUtf8 Character(CharacterId), MoodUtf8(Mood), Attrs(Attributes), Player(PlayerName);
		npc_session_options Options = {};
		Options.character_id = Character.Get();
		Options.mood = MoodUtf8.OrNull(Mood);
		Options.attributes = Attrs.OrNull(Attributes);
		Options.player_name = Player.OrNull(PlayerName);
		const FResult Result(npc_session_create_ex(Ref->Get(), &Options));
		const int32 Status = Result.Status();
		const FString SessionId = Result.Ok() ? Result.Text() : FString();
		const FString Error = Result.Ok() ? FString() : Result.Text();
		OnGameThread([Done = MoveTemp(Done), SessionId, Status, Error]() { Done(SessionId, Status, Error); });
	});
}

void USteerNPCSubsystem::ImportSessionAsync(const TArray<uint8>& Snapshot,
                                            TFunction<void(const FString&, int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		Done(FString(), NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, Snapshot, Done = MoveTemp(Done)]() mutable
	{
		const FResult Result(npc_session_import(Ref->Get(), Snapshot.GetData(), Snapshot.Num()));
		const int32 Status = Result.Status();
		const FString SessionId = Result.Ok() ? Result.Text() : FString();
		const FString Error = Result.Ok() ? FString() : Result.Text();
		OnGameThread([Done = MoveTemp(Done), SessionId, Status, Error]() { Done(SessionId, Status, Error); });
	});
}

void USteerNPCSubsystem::SteerAsync(const FString& SessionId, const FString& Mood, const FString& Attributes, bool bClear,
                                    TFunction<void(int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		if (Done) Done(NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SessionId, Mood, Attributes, bClear, Done = MoveTemp(Done)]() mutable
	{
		FUtf8 Session(SessionId), MoodUtf8(Mood), Attrs(Attributes);
		const int32 Result = npc_steer_ex(Ref->Get(), Session.Get(), MoodUtf8.OrNull(Mood), Attrs.OrNull(Attributes), bClear ? 1 : 0);
		const FString Error = Result < 0 ? LastError() : FString();
		if (Done)
		{
			OnGameThread([Done = MoveTemp(Done), Result, Error]() { Done(Result < 0 ? -Result : 0, Error); });
		}
	});
}

void USteerNPCSubsystem::DeleteSessionAsync(const FString& SessionId)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid() || SessionId.IsEmpty())
	{
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SessionId]()
	{
		FUtf8 Session(SessionId);
		npc_session_delete(Ref->Get(), Session.Get());
	});
}

bool USteerNPCSubsystem::ListCharactersJson(FString& OutJson, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available");
		return false;
	}
	const FResult Result(npc_list_characters(Client->Get()));
	if (!Result.Ok())
	{
		OutError = Result.Text();
		return false;
	}
	OutJson = Result.Text();
	return true;
}

bool USteerNPCSubsystem::ExportSession(const FString& SessionId, TArray<uint8>& OutSnapshot, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available");
		return false;
	}
	FUtf8 Session(SessionId);
	const FResult Result(npc_session_export(Client->Get(), Session.Get()));
	OutSnapshot.Reset();
	if (!Result.Ok())
	{
		OutError = Result.Text();
		return false;
	}
	OutSnapshot.Append(npc_result_data(Result.Result), static_cast<int32>(npc_result_size(Result.Result)));
	return true;
}

bool USteerNPCSubsystem::IsConnected() const
{
	return Client.IsValid() && npc_client_state(Client->Get(), 0) == NPC_STATE_READY;
}

// ---- scenes -----------------------------------------------------------------------------------

namespace
{
	/** A member's strings, alive while the npc_scene_member pointing at them is used. */
	struct FMemberUtf8
	{
		explicit FMemberUtf8(const FSteerNPCSceneMember& M)
			: Attributes(SteerNPC::FormatAttributes(M.AttributeOverrides)), Character(M.CharacterId), Member(M.MemberId), Name(M.Name),
			  Mood(M.Mood), Attrs(Attributes), Source(M)
		{
		}
		npc_scene_member Get() const
		{
			npc_scene_member Out = {};
			Out.character_id = Character.Get();
			Out.member_id = Member.OrNull(Source.MemberId);
			Out.name = Name.OrNull(Source.Name);
			Out.mood = Mood.OrNull(Source.Mood);
			Out.attributes = Attrs.OrNull(Attributes);
			return Out;
		}
		FString Attributes;
		FUtf8 Character, Member, Name, Mood, Attrs;
		FSteerNPCSceneMember Source;
	};

	void Finish(TFunction<void(int32, const FString&)>&& Done, int32 Result)
	{
		const FString Error = Result < 0 ? LastError() : FString();
		if (Done)
		{
			OnGameThread([Done = MoveTemp(Done), Result, Error]() { Done(Result < 0 ? -Result : 0, Error); });
		}
	}
}

void USteerNPCSubsystem::CreateSceneAsync(const FString& SceneId, const FString& PlayerName, const TArray<FSteerNPCSceneMember>& Members,
                                          int64 Seed, TFunction<void(const FString&, int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		Done(FString(), NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SceneId, PlayerName, Members, Seed, Done = MoveTemp(Done)]() mutable
	{
		TArray<TUniquePtr<FMemberUtf8>> Strings;
		TArray<npc_scene_member> Specs;
		for (const FSteerNPCSceneMember& Member : Members)
		{
			Strings.Add(MakeUnique<FMemberUtf8>(Member));
			Specs.Add(Strings.Last()->Get());
		}
		FUtf8 Scene(SceneId), Player(PlayerName);
		npc_scene_options Options = {};
		Options.scene_id = Scene.OrNull(SceneId);
		Options.player_name = Player.OrNull(PlayerName);
		Options.seed = static_cast<uint64_t>(Seed);
		Options.members = Specs.GetData();
		Options.member_count = Specs.Num();
		const FResult Result(npc_scene_create(Ref->Get(), &Options));
		const int32 Status = Result.Status();
		const FString NewId = Result.Ok() ? Result.Text() : FString();
		const FString Error = Result.Ok() ? FString() : Result.Text();
		OnGameThread([Done = MoveTemp(Done), NewId, Status, Error]() { Done(NewId, Status, Error); });
	});
}

void USteerNPCSubsystem::ImportSceneAsync(const TArray<uint8>& Snapshot, TFunction<void(const FString&, int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		Done(FString(), NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, Snapshot, Done = MoveTemp(Done)]() mutable
	{
		const FResult Result(npc_scene_import(Ref->Get(), Snapshot.GetData(), Snapshot.Num()));
		const int32 Status = Result.Status();
		const FString SceneId = Result.Ok() ? Result.Text() : FString();
		const FString Error = Result.Ok() ? FString() : Result.Text();
		OnGameThread([Done = MoveTemp(Done), SceneId, Status, Error]() { Done(SceneId, Status, Error); });
	});
}

void USteerNPCSubsystem::JoinSceneAsync(const FString& SceneId, const FSteerNPCSceneMember& Member,
                                        TFunction<void(int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		if (Done) Done(NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SceneId, Member, Done = MoveTemp(Done)]() mutable
	{
		FUtf8 Scene(SceneId);
		const FMemberUtf8 Strings(Member);
		const npc_scene_member Spec = Strings.Get();
		Finish(MoveTemp(Done), npc_scene_join(Ref->Get(), Scene.Get(), &Spec));
	});
}

void USteerNPCSubsystem::LeaveSceneAsync(const FString& SceneId, const FString& MemberId, TFunction<void(int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		if (Done) Done(NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SceneId, MemberId, Done = MoveTemp(Done)]() mutable
	{
		FUtf8 Scene(SceneId), Member(MemberId);
		Finish(MoveTemp(Done), npc_scene_leave(Ref->Get(), Scene.Get(), Member.Get()));
	});
}

void USteerNPCSubsystem::SteerMemberAsync(const FString& SceneId, const FString& MemberId, const FString& Mood, const FString& Attributes,
                                          bool bClear, TFunction<void(int32, const FString&)> Done)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid())
	{
		if (Done) Done(NPC_FAILED_PRECONDITION, TEXT("SteerNPC client is not available"));
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SceneId, MemberId, Mood, Attributes, bClear, Done = MoveTemp(Done)]() mutable
	{
		FUtf8 Scene(SceneId), Member(MemberId), MoodUtf8(Mood), Attrs(Attributes);
		Finish(MoveTemp(Done), npc_scene_steer(Ref->Get(), Scene.Get(), Member.Get(), MoodUtf8.OrNull(Mood), Attrs.OrNull(Attributes),
		                                       bClear ? 1 : 0));
	});
}

void USteerNPCSubsystem::DeleteSceneAsync(const FString& SceneId)
{
	FSteerNPCClientRef Ref = Client;
	if (!Ref.IsValid() || SceneId.IsEmpty())
	{
		return;
	}
	Async(EAsyncExecution::ThreadPool, [Ref, SceneId]()
	{
		FUtf8 Scene(SceneId);
		npc_scene_delete(Ref->Get(), Scene.Get());
	});
}

bool USteerNPCSubsystem::ExportScene(const FString& SceneId, TArray<uint8>& OutSnapshot, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available");
		return false;
	}
	FUtf8 Scene(SceneId);
	const FResult Result(npc_scene_export(Client->Get(), Scene.Get()));
	OutSnapshot.Reset();
	if (!Result.Ok())
	{
		OutError = Result.Text();
		return false;
	}
	OutSnapshot.Append(npc_result_data(Result.Result), static_cast<int32>(npc_result_size(Result.Result)));
	return true;
}

bool USteerNPCSubsystem::GetSceneJson(const FString& SceneId, bool bIncludeTranscript, FString& OutJson, FString& OutError)
{
	if (!Client.IsValid())
	{
		OutError = TEXT("SteerNPC client is not available");
		return false;
	}
	FUtf8 Scene(SceneId);
	const FResult Result(npc_scene_get(Client->Get(), Scene.Get(), bIncludeTranscript ? 1 : 0));
	if (!Result.Ok())
	{
		OutError = Result.Text();
		return false;
	}
	OutJson = Result.Text();
	return true;
}
