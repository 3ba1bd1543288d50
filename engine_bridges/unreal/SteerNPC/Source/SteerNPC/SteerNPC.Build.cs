// SteerNPC runtime module: subsystem, actor component and Blueprint async node over the
// SteerNPC native client core (the SteerNPCLibrary ThirdParty module).
using UnrealBuildTool;

public class SteerNPC : ModuleRules
{
	public SteerNPC(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;

		PublicDependencyModuleNames.AddRange(new string[]
		{
			"Core",
			"CoreUObject",
			"Engine",
			"DeveloperSettings",
		});

		PrivateDependencyModuleNames.AddRange(new string[]
		{
			"Projects",          // IPluginManager: where the native library lives
			"SteerNPCLibrary",   // ThirdParty: steernpc.h + libsteernpc
		});
	}
}
