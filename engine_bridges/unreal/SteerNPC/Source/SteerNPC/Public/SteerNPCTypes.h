// Blueprint-facing types of the SteerNPC plugin.
#pragma once

#include "CoreMinimal.h"
#include "SteerNPCTypes.generated.h"

UENUM(BlueprintType)
enum class ESteerNPCEventType : uint8
{
	None = 0,
	/** A piece of the reply (Text). */
	Delta = 1,
	/** The reply finished: Text is the whole reply; FinishReason and AppliedAttributes are set. */
	Done = 2,
	/** The reply failed: StatusCode is a gRPC status code, Text the message. */
	Error = 3,
	/** A scene Say / Continue is over, after its last line's Done (FinishReason Cancelled when
	 *  cancelled or interrupted by a new Say; Line = the lines it produced). */
	SceneEnd = 4,
};

UENUM(BlueprintType)
enum class ESteerNPCFinishReason : uint8
{
	Unspecified = 0,
	/** The character finished its line. */
	Stop = 1,
	/** The token limit was reached. */
	Length = 2,
	/** Cancelled by the game (CancelReply / a new Say). */
	Cancelled = 3,
};

/** One event of a streamed reply, copied out of the native core on the game thread. */
USTRUCT(BlueprintType)
struct STEERNPC_API FSteerNPCEvent
{
	GENERATED_BODY()

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	int64 RequestId = 0;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	ESteerNPCEventType Type = ESteerNPCEventType::None;

	/** Delta: the new piece. Done: the whole reply. Error: the message. */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString Text;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	ESteerNPCFinishReason FinishReason = ESteerNPCFinishReason::Unspecified;

	/** Error: npc_status, the gRPC code (NPC_NOT_FOUND 5, NPC_UNAVAILABLE 14, NPC_UNAUTHENTICATED 16, ...). */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	int32 StatusCode = 0;

	/** Done: the attribute vector the server applied to this reply. */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	TMap<FString, int32> AppliedAttributes;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString SessionId;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	int32 CompletionTokens = 0;

	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	float ServerTimeToFirstTokenMs = 0.f;

	/** Scene events: the scene (empty for a session reply). */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString SceneId;

	/** Scene Delta / Done: the member speaking this line. */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString SpeakerId;

	/** Scene Delta / Done: the name it speaks under, e.g. "Brom Ironhand". */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	FString Speaker;

	/** Scene Delta / Done: the line's index in its request; SceneEnd: the lines it produced. */
	UPROPERTY(BlueprintReadOnly, Category = "SteerNPC")
	int32 Line = 0;

	/** The last event of its request: a session reply's Done or Error; a scene request's SceneEnd or Error. */
	bool IsFinal() const
	{
		return Type == ESteerNPCEventType::Error || Type == ESteerNPCEventType::SceneEnd ||
		       (Type == ESteerNPCEventType::Done && SceneId.IsEmpty());
	}
};

/** One member of a scene (USteerNPCSceneComponent). */
USTRUCT(BlueprintType)
struct STEERNPC_API FSteerNPCSceneMember
{
	GENERATED_BODY()

	/** The persona id on the server, e.g. "brom". */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	FString CharacterId;

	/** Its id in the scene; empty = the character id. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	FString MemberId;

	/** Empty = the character's name. */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	FString Name;

	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	FString Mood;

	/** Member-level steering (attribute -> value). */
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "SteerNPC")
	TMap<FString, int32> AttributeOverrides;

	FString EffectiveMemberId() const { return MemberId.IsEmpty() ? CharacterId : MemberId; }
};

namespace SteerNPC
{
	/** "humor:4,verbosity:1" <-> map, the attribute format of the native core. */
	STEERNPC_API FString FormatAttributes(const TMap<FString, int32>& Attributes);
	STEERNPC_API TMap<FString, int32> ParseAttributes(const FString& Text);
}
