#include "SteerNPCTypes.h"

namespace SteerNPC
{
	FString FormatAttributes(const TMap<FString, int32>& Attributes)
	{
		TArray<FString> Keys;
		Attributes.GetKeys(Keys);
		Keys.Sort();
		TArray<FString> Items;
		for (const FString& Key : Keys)
		{
			Items.Add(FString::Printf(TEXT("%s:%d"), *Key.TrimStartAndEnd(), Attributes[Key]));
		}
		return FString::Join(Items, TEXT(","));
	}

	TMap<FString, int32> ParseAttributes(const FString& Text)
	{
		TMap<FString, int32> Result;
		TArray<FString> Items;
		Text.ParseIntoArray(Items, TEXT(","), /*InCullEmpty=*/true);
		for (const FString& Item : Items)
		{
			FString Name, Value;
			if (Item.Split(TEXT(":"), &Name, &Value) || Item.Split(TEXT("="), &Name, &Value))
			{
				Result.Add(Name.TrimStartAndEnd(), FCString::Atoi(*Value.TrimStartAndEnd()));
			}
		}
		return Result;
	}
}
