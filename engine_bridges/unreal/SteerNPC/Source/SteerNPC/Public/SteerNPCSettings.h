// Project Settings > Plugins > SteerNPC (stored in DefaultGame.ini).
#pragma once

#include "CoreMinimal.h"
#include "Engine/DeveloperSettings.h"
#include "Engine/EngineTypes.h"
#include "SteerNPCSettings.generated.h"

UCLASS(Config = Game, DefaultConfig, meta = (DisplayName = "SteerNPC"))
class STEERNPC_API USteerNPCSettings : public UDeveloperSettings
{
	GENERATED_BODY()

public:
	USteerNPCSettings() { CategoryName = TEXT("Plugins"); }

	/** host:port of `steernpc serve`. */
	UPROPERTY(Config, EditAnywhere, Category = "Server")
	FString ServerTarget = TEXT("127.0.0.1:50051");

	/** Sent as "authorization: Bearer KEY". Do not ship a secret key inside a game build. */
	UPROPERTY(Config, EditAnywhere, Category = "Server")
	FString ApiKey;

	UPROPERTY(Config, EditAnywhere, Category = "Server")
	bool bUseTls = false;

	/** PEM root certificates for TLS (a file path relative to the project); empty = system roots. */
	UPROPERTY(Config, EditAnywhere, Category = "Server", meta = (EditCondition = "bUseTls"))
	FFilePath RootCertificatesPem;

	/** Deadline of the blocking calls (session create, steer, export...), ms. */
	UPROPERTY(Config, EditAnywhere, Category = "Server", meta = (ClampMin = "100"))
	int32 DefaultDeadlineMs = 10000;

	/** Upper bound of the reconnect backoff after the server went away, ms. */
	UPROPERTY(Config, EditAnywhere, Category = "Server", meta = (ClampMin = "100"))
	int32 MaxReconnectBackoffMs = 5000;

	/** Events handed to components per frame at most. */
	UPROPERTY(Config, EditAnywhere, Category = "Runtime", meta = (ClampMin = "1"))
	int32 MaxEventsPerTick = 256;
};
