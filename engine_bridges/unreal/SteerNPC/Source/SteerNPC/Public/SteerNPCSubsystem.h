// USteerNPCSubsystem: owns the SteerNPC client for the game instance, polls it every frame and
// routes reply events to whoever started each reply (components, async nodes) by request id;
// scene requests (several lines, each with its speaker) are routed the same way.
//
// Threading: the native core streams on its own threads; this subsystem takes events out with
// npc_poll_ex in Tick, on the game thread, so every delegate fires on the game thread. Blocking
// calls (create session, steer, ...) run on a worker thread through the *Async helpers and call
// back on the game thread.
#pragma once

#include "CoreMinimal.h"
#include "Subsystems/GameInstanceSubsystem.h"
#include "Tickable.h"
#include "SteerNPCTypes.h"
#include "SteerNPCSubsystem.generated.h"

struct npc_client;

/** Owns an npc_client*. Shared (thread-safe) with worker tasks so that a blocking call in flight
 *  keeps the client alive until it returns; npc_client_destroy runs with the last reference. */
class STEERNPC_API FSteerNPCClientHandle
{
public:
	explicit FSteerNPCClientHandle(npc_client* InClient) : Client(InClient) {}
	~FSteerNPCClientHandle();
	npc_client* Get() const { return Client; }

private:
	npc_client* Client;
};

using FSteerNPCClientRef = TSharedPtr<FSteerNPCClientHandle, ESPMode::ThreadSafe>;

/** Receives the events of one reply (game thread). */
DECLARE_DELEGATE_OneParam(FSteerNPCReplyHandler, const FSteerNPCEvent& /*Event*/);
DECLARE_MULTICAST_DELEGATE_OneParam(FOnSteerNPCEvent, const FSteerNPCEvent& /*Event*/);

UCLASS()
class STEERNPC_API USteerNPCSubsystem : public UGameInstanceSubsystem, public FTickableGameObject
{
	GENERATED_BODY()

public:
	/** The subsystem of WorldContextObject's game instance (null outside a game). */
	static USteerNPCSubsystem* Get(const UObject* WorldContextObject);

	// USubsystem
	virtual void Initialize(FSubsystemCollectionBase& Collection) override;
	virtual void Deinitialize() override;

	// FTickableGameObject
	virtual void Tick(float DeltaTime) override;
	virtual ETickableTickType GetTickableTickType() const override;
	virtual bool IsTickable() const override;
	virtual bool IsTickableWhenPaused() const override { return true; }
	virtual bool IsTickableInEditor() const override { return false; }
	virtual TStatId GetStatId() const override;
	virtual UWorld* GetTickableGameObjectWorld() const override { return GetWorld(); }

	/** Start a streamed reply. Handler gets its events on the game thread. Returns the request
	 *  id (> 0), or 0 with OutError set (bad arguments; server-side problems arrive as an Error
	 *  event instead). */
	int64 Say(const FString& SessionId, const FString& Text, const FString& AttributeOverrides, int32 MaxNewTokens,
	          FSteerNPCReplyHandler Handler, FString& OutError);

	/** A scene's player line (npc_scene_say): MemberIds answer in order (empty: the speaking
	 *  policy picks). Handler gets each line's Delta and Done (with the speaker), then SceneEnd or
	 *  Error. Returns the request id, or 0 with OutError set. */
	int64 SceneSay(const FString& SceneId, const FString& Text, const TArray<FString>& MemberIds, const FString& AttributeOverrides,
	               int32 MaxNewTokens, FSteerNPCReplyHandler Handler, FString& OutError);

	/** Up to Turns lines of members answering each other (npc_scene_continue); as SceneSay. */
	int64 SceneContinue(const FString& SceneId, int32 Turns, int32 MaxNewTokens, FSteerNPCReplyHandler Handler, FString& OutError);

	/** Ask the server to stop a reply (or a scene Say / Continue: its running line ends cancelled,
	 *  no other starts); a reply then ends with a Done event, FinishReason Cancelled. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool CancelReply(int64 RequestId);

	/** Blocking calls on a worker thread; Done runs on the game thread. Status NPC_OK (0), else an npc_status (the gRPC code). */
	void CreateSessionAsync(const FString& CharacterId, const FString& Mood, const FString& Attributes, const FString& PlayerName,
	                        TFunction<void(const FString& SessionId, int32 Status, const FString& Error)> Done);
	void ImportSessionAsync(const TArray<uint8>& Snapshot, TFunction<void(const FString& SessionId, int32 Status, const FString& Error)> Done);
	void SteerAsync(const FString& SessionId, const FString& Mood, const FString& Attributes, bool bClear,
	                TFunction<void(int32 Status, const FString& Error)> Done);
	void DeleteSessionAsync(const FString& SessionId);

	/** Scenes: blocking calls on a worker thread, Done on the game thread (as above). */
	void CreateSceneAsync(const FString& SceneId, const FString& PlayerName, const TArray<FSteerNPCSceneMember>& Members, int64 Seed,
	                      TFunction<void(const FString& SceneId, int32 Status, const FString& Error)> Done);
	void ImportSceneAsync(const TArray<uint8>& Snapshot, TFunction<void(const FString& SceneId, int32 Status, const FString& Error)> Done);
	void JoinSceneAsync(const FString& SceneId, const FSteerNPCSceneMember& Member, TFunction<void(int32 Status, const FString& Error)> Done);
	void LeaveSceneAsync(const FString& SceneId, const FString& MemberId, TFunction<void(int32 Status, const FString& Error)> Done);
	void SteerMemberAsync(const FString& SceneId, const FString& MemberId, const FString& Mood, const FString& Attributes, bool bClear,
	                      TFunction<void(int32 Status, const FString& Error)> Done);
	void DeleteSceneAsync(const FString& SceneId);

	/** Blocking: a save-game snapshot of a scene. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool ExportScene(const FString& SceneId, TArray<uint8>& OutSnapshot, FString& OutError);

	/** Blocking: the scene as JSON (members, lines; the transcript with bIncludeTranscript). */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool GetSceneJson(const FString& SceneId, bool bIncludeTranscript, FString& OutJson, FString& OutError);

	/** Blocking (up to the default deadline): the server's characters as JSON. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool ListCharactersJson(FString& OutJson, FString& OutError);

	/** Blocking: a save-game snapshot of a session. */
	UFUNCTION(BlueprintCallable, Category = "SteerNPC")
	bool ExportSession(const FString& SessionId, TArray<uint8>& OutSnapshot, FString& OutError);

	/** True while the channel to the server is connected (it reconnects by itself). */
	UFUNCTION(BlueprintPure, Category = "SteerNPC")
	bool IsConnected() const;

	/** Every event, before it is routed. */
	FOnSteerNPCEvent OnAnyEvent;

	FSteerNPCClientRef GetClient() const { return Client; }

private:
	int64 Track(int64 Id, FSteerNPCReplyHandler Handler, FString& OutError);

	FSteerNPCClientRef Client;
	TMap<int64, FSteerNPCReplyHandler> Routes;
	int32 MaxEventsPerTick = 256;
};
