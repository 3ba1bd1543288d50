// Module start-up: on Windows the native core is delay-loaded, so load it from the plugin's
// binaries before the first call.
#include "Modules/ModuleManager.h"
#include "Interfaces/IPluginManager.h"
#include "HAL/PlatformProcess.h"
#include "Misc/Paths.h"
#include "SteerNPCLog.h"

#include <steernpc/steernpc.h>

DEFINE_LOG_CATEGORY(LogSteerNPC);

class FSteerNPCModule : public IModuleInterface
{
public:
	virtual void StartupModule() override
	{
#if PLATFORM_WINDOWS
		const TSharedPtr<IPlugin> Plugin = IPluginManager::Get().FindPlugin(TEXT("SteerNPC"));
		const FString BaseDir = Plugin.IsValid() ? Plugin->GetBaseDir() : FString();
		const FString Candidates[] = {
			FPaths::Combine(BaseDir, TEXT("Binaries/Win64/steernpc.dll")),
			FPaths::Combine(BaseDir, TEXT("Source/ThirdParty/SteerNPCLibrary/lib/Win64/steernpc.dll")),
		};
		for (const FString& Path : Candidates)
		{
			if (FPaths::FileExists(Path))
			{
				LibraryHandle = FPlatformProcess::GetDllHandle(*Path);
				break;
			}
		}
		if (LibraryHandle == nullptr)
		{
			UE_LOG(LogSteerNPC, Error, TEXT("steernpc.dll not found (looked in %s and %s); see the SteerNPC plugin README"),
			       *Candidates[0], *Candidates[1]);
			return;
		}
#endif
		UE_LOG(LogSteerNPC, Log, TEXT("SteerNPC native core %s"), UTF8_TO_TCHAR(npc_version()));
	}

	virtual void ShutdownModule() override
	{
		if (LibraryHandle != nullptr)
		{
			FPlatformProcess::FreeDllHandle(LibraryHandle);
			LibraryHandle = nullptr;
		}
	}

private:
	void* LibraryHandle = nullptr;
};

IMPLEMENT_MODULE(FSteerNPCModule, SteerNPC)
