#include "util.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace steernpc {

namespace {
thread_local std::string tls_error_message;
thread_local int tls_error_code = 0;

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}
}  // namespace

void SetError(int code, const std::string& message) {
  tls_error_code = code;
  tls_error_message = message;
}

void ClearError() {
  tls_error_code = 0;
  tls_error_message.clear();
}

const char* LastErrorMessage() { return tls_error_message.c_str(); }
int LastErrorCode() { return tls_error_code; }

int Fail(int code, const std::string& message) {
  SetError(code, message);
  return -code;
}

bool ParseAttributes(const char* text, const char* what,
                     google::protobuf::Map<std::string, int32_t>* out, std::string* error) {
  if (text == nullptr) return true;
  std::string all(text);
  size_t pos = 0;
  while (pos <= all.size()) {
    size_t comma = all.find(',', pos);
    if (comma == std::string::npos) comma = all.size();
    std::string item = Trim(all.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;
    size_t sep = item.find_first_of(":=");
    if (sep == std::string::npos) {
      *error = std::string(what) + ": expected name:value, got '" + item + "'";
      return false;
    }
    std::string name = Trim(item.substr(0, sep));
    std::string value = Trim(item.substr(sep + 1));
    if (name.empty()) {
      *error = std::string(what) + ": missing attribute name in '" + item + "'";
      return false;
    }
    char* end = nullptr;
    errno = 0;
    long v = value.empty() ? 0 : std::strtol(value.c_str(), &end, 10);
    if (value.empty() || end == nullptr || *end != '\0' || errno != 0 || v < INT32_MIN ||
        v > INT32_MAX) {
      *error = std::string(what) + ": value of '" + name + "' is not an integer: '" + value + "'";
      return false;
    }
    (*out)[name] = static_cast<int32_t>(v);
  }
  return true;
}

std::string FormatAttributes(const google::protobuf::Map<std::string, int32_t>& attrs) {
  std::vector<std::pair<std::string, int32_t>> items(attrs.begin(), attrs.end());
  std::sort(items.begin(), items.end());
  std::string out;
  for (const auto& kv : items) {
    if (!out.empty()) out += ',';
    out += kv.first;
    out += ':';
    out += std::to_string(kv.second);
  }
  return out;
}

}  // namespace steernpc
