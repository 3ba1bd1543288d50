// The SteerNPC native client core as an external (prebuilt) module.
//
// Layout (see the plugin README for how to build each platform's binary):
//   include/steernpc/steernpc.h                      the C ABI (copied by `cmake --install`)
//   lib/Win64/steernpc.dll + steernpc.lib            Windows (DLL + import library)
//   lib/Linux/x86_64-unknown-linux-gnu/libsteernpc.so
//   lib/Mac/libsteernpc.dylib                        universal (arm64 + x86_64)
//   lib/Android/arm64-v8a/libsteernpc.so (+ armeabi-v7a, x86_64)
//   lib/IOS/libsteernpc_static.a + the static gRPC/protobuf/abseil/... archives
//
// Desktop and Android link the shared library, whose only exported symbols are npc_* (gRPC,
// protobuf and their SSL stay private to it, so they cannot clash with the engine's own
// OpenSSL / zlib). iOS links statically.
using System.IO;
using UnrealBuildTool;

public class SteerNPCLibrary : ModuleRules
{
	public SteerNPCLibrary(ReadOnlyTargetRules Target) : base(Target)
	{
		Type = ModuleType.External;

		string IncludeDir = Path.Combine(ModuleDirectory, "include");
		if (!File.Exists(Path.Combine(IncludeDir, "steernpc", "steernpc.h")))
		{
			// Used in place from the SteerNPC repository: the header is engine_bridges/native/include.
			IncludeDir = Path.GetFullPath(Path.Combine(ModuleDirectory, "..", "..", "..", "..", "..", "native", "include"));
		}
		PublicSystemIncludePaths.Add(IncludeDir);

		string LibDir = Path.Combine(ModuleDirectory, "lib");

		if (Target.Platform == UnrealTargetPlatform.Win64)
		{
			string Dir = Path.Combine(LibDir, "Win64");
			PublicAdditionalLibraries.Add(Path.Combine(Dir, "steernpc.lib"));
			PublicDelayLoadDLLs.Add("steernpc.dll");
			RuntimeDependencies.Add("$(BinaryOutputDir)/steernpc.dll", Path.Combine(Dir, "steernpc.dll"));
		}
		else if (Target.Platform == UnrealTargetPlatform.Linux)
		{
			string Dir = Path.Combine(LibDir, "Linux", "x86_64-unknown-linux-gnu");
			string So = Path.Combine(Dir, "libsteernpc.so");
			PublicAdditionalLibraries.Add(So);
			RuntimeDependencies.Add("$(BinaryOutputDir)/libsteernpc.so", So);
		}
		else if (Target.Platform == UnrealTargetPlatform.Mac)
		{
			string Dylib = Path.Combine(LibDir, "Mac", "libsteernpc.dylib");
			PublicAdditionalLibraries.Add(Dylib);
			RuntimeDependencies.Add("$(BinaryOutputDir)/libsteernpc.dylib", Dylib);
		}
		else if (Target.Platform == UnrealTargetPlatform.Android)
		{
			foreach (string Abi in new string[] { "arm64-v8a", "armeabi-v7a", "x86_64" })
			{
				string So = Path.Combine(LibDir, "Android", Abi, "libsteernpc.so");
				if (File.Exists(So))
				{
					PublicAdditionalLibraries.Add(So);
				}
			}
			// Copies the .so files into the APK.
			AdditionalPropertiesForReceipt.Add("AndroidPlugin", Path.Combine(ModuleDirectory, "SteerNPCLibrary_APL.xml"));
		}
		else if (Target.Platform == UnrealTargetPlatform.IOS)
		{
			string Dir = Path.Combine(LibDir, "IOS");
			PublicDefinitions.Add("STEERNPC_STATIC=1");
			if (Directory.Exists(Dir))
			{
				foreach (string Archive in Directory.GetFiles(Dir, "*.a"))
				{
					PublicAdditionalLibraries.Add(Archive);
				}
			}
			PublicSystemLibraries.Add("z");
			PublicSystemLibraries.Add("resolv");
		}
	}
}
