// Small helpers of the native core: attribute strings, thread-local errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include <google/protobuf/map.h>

namespace steernpc {

// Thread-local last error (npc_last_error / npc_last_error_code).
void SetError(int code, const std::string& message);
void ClearError();
const char* LastErrorMessage();
int LastErrorCode();

// Set the last error and return -code (the C ABI's convention for int results).
int Fail(int code, const std::string& message);

// Parse "name:value,name:value" ('=' also accepted, whitespace ignored). NULL or "" -> empty.
// On a syntax error returns false and describes it in *error (names the offending item).
bool ParseAttributes(const char* text, const char* what,
                     google::protobuf::Map<std::string, int32_t>* out, std::string* error);

// "name:value,..." sorted by name.
std::string FormatAttributes(const google::protobuf::Map<std::string, int32_t>& attrs);

// Non-NULL view of an optional C string.
inline std::string Str(const char* s) { return s ? std::string(s) : std::string(); }

}  // namespace steernpc
