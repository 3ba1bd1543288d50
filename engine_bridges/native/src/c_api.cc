// The C ABI (include/steernpc/steernpc.h) over steernpc::Client. No C++ exception crosses it.
#include "steernpc/steernpc.h"

#include <exception>
#include <new>
#include <string>

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/util/json_util.h>

#include "client.h"
#include "util.h"

using steernpc::Fail;
using steernpc::Str;

struct npc_client {
  steernpc::Client impl;
  explicit npc_client(steernpc::ClientOptions options) : impl(std::move(options)) {}
};

namespace steernpc {
std::string DescribeStatus(const grpc::Status& status, const std::string& target);
}

namespace {

// Strings of the event last returned by npc_poll on this thread (see npc_event).
struct PolledStrings {
  std::string text, attributes, session_id, interaction_id;
};
thread_local PolledStrings tls_polled;

int FailStatus(npc_client* client, const grpc::Status& status) {
  return Fail(static_cast<int>(status.error_code()),
              steernpc::DescribeStatus(status, client->impl.options().target));
}

int FailException(const std::exception& e) { return Fail(13, std::string("internal error: ") + e.what()); }

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
#if GOOGLE_PROTOBUF_VERSION >= 5026000
  options.always_print_fields_with_no_presence = true;
#else
  options.always_print_primitive_fields = true;
#endif
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return "{}";
  return out;
}

#define NPC_REQUIRE(cond, what)                                 \
  do {                                                          \
    if (!(cond)) return Fail(3, std::string(what) + " is required"); \
  } while (0)

#define NPC_GUARD_BEGIN try {
#define NPC_GUARD_END                                  \
  }                                                    \
  catch (const std::bad_alloc&) {                      \
    return Fail(8, "out of memory");                   \
  }                                                    \
  catch (const std::exception& e) {                    \
    return FailException(e);                           \
  }                                                    \
  catch (...) {                                        \
    return Fail(13, "internal error");                 \
  }

int32_t WriteSessionId(npc_client* client, const grpc::Status& status, const steernpc::v1::Session& s,
                       char* out_id, size_t cap) {
  if (!status.ok()) return FailStatus(client, status);
  steernpc::ClearError();
  return steernpc::WriteOut(s.session_id(), out_id, cap);
}

}  // namespace

extern "C" {

NPC_API const char* npc_version(void) { return "0.1.0"; }

NPC_API const char* npc_last_error(void) { return steernpc::LastErrorMessage(); }

NPC_API int32_t npc_last_error_code(void) { return steernpc::LastErrorCode(); }

NPC_API npc_client* npc_client_create(const npc_client_options* options) {
  if (options == nullptr || options->target == nullptr || options->target[0] == '\0') {
    Fail(3, "npc_client_create: options.target is required");
    return nullptr;
  }
  try {
    steernpc::ClientOptions o;
    o.target = options->target;
    o.api_key = Str(options->api_key);
    o.root_certs_pem = Str(options->root_certs_pem);
    o.use_tls = options->use_tls != 0;
    if (options->default_deadline_ms > 0) o.default_deadline_ms = options->default_deadline_ms;
    if (options->say_deadline_ms > 0) o.say_deadline_ms = options->say_deadline_ms;
    if (options->max_reconnect_backoff_ms > 0) o.max_reconnect_backoff_ms = options->max_reconnect_backoff_ms;
    o.wait_for_ready = options->wait_for_ready != 0;
    auto* client = new npc_client(std::move(o));
    steernpc::ClearError();
    return client;
  } catch (const std::exception& e) {
    FailException(e);
    return nullptr;
  }
}

NPC_API void npc_client_destroy(npc_client* client) { delete client; }

NPC_API int32_t npc_client_state(npc_client* client, int32_t try_to_connect) {
  NPC_REQUIRE(client, "client");
  return client->impl.State(try_to_connect != 0);
}

NPC_API int32_t npc_client_wait_connected(npc_client* client, int32_t timeout_ms) {
  NPC_REQUIRE(client, "client");
  NPC_GUARD_BEGIN
  if (client->impl.WaitConnected(timeout_ms)) return 0;
  return Fail(14, "not connected to " + client->impl.options().target + " after " +
                      std::to_string(timeout_ms) + " ms");
  NPC_GUARD_END
}

NPC_API int32_t npc_list_characters(npc_client* client, char* buf, size_t cap) {
  NPC_REQUIRE(client, "client");
  NPC_GUARD_BEGIN
  steernpc::v1::ListCharactersResponse response;
  grpc::Status status = client->impl.ListCharacters(&response);
  if (!status.ok()) return FailStatus(client, status);
  std::string json = "[";
  for (int i = 0; i < response.characters_size(); ++i) {
    if (i) json += ',';
    json += ToJson(response.characters(i));
  }
  json += ']';
  steernpc::ClearError();
  return steernpc::WriteOut(json, buf, cap);
  NPC_GUARD_END
}

NPC_API int32_t npc_session_create(npc_client* client, const char* character_id, char* out_id,
                                   size_t cap) {
  npc_session_options options{};
  options.character_id = character_id;
  return npc_session_create_ex(client, &options, out_id, cap);
}

NPC_API int32_t npc_session_create_ex(npc_client* client, const npc_session_options* options,
                                      char* out_id, size_t cap) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(options && options->character_id && options->character_id[0], "character_id");
  NPC_GUARD_BEGIN
  steernpc::v1::CreateSessionRequest request;
  request.set_character_id(options->character_id);
  request.set_session_id(Str(options->session_id));
  request.set_mood(Str(options->mood));
  request.set_player_name(Str(options->player_name));
  std::string error;
  if (!steernpc::ParseAttributes(options->attributes, "attributes", request.mutable_attributes(), &error))
    return Fail(3, error);
  steernpc::v1::Session session;
  grpc::Status status = client->impl.CreateSession(request, &session);
  return WriteSessionId(client, status, session, out_id, cap);
  NPC_GUARD_END
}

NPC_API int32_t npc_session_get(npc_client* client, const char* session_id, char* buf, size_t cap) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(session_id && session_id[0], "session_id");
  NPC_GUARD_BEGIN
  steernpc::v1::Session session;
  grpc::Status status = client->impl.GetSession(session_id, &session);
  if (!status.ok()) return FailStatus(client, status);
  steernpc::ClearError();
  return steernpc::WriteOut(ToJson(session), buf, cap);
  NPC_GUARD_END
}

NPC_API int32_t npc_session_delete(npc_client* client, const char* session_id) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(session_id && session_id[0], "session_id");
  NPC_GUARD_BEGIN
  grpc::Status status = client->impl.DeleteSession(session_id);
  if (!status.ok()) return FailStatus(client, status);
  steernpc::ClearError();
  return 0;
  NPC_GUARD_END
}

NPC_API int32_t npc_steer(npc_client* client, const char* session_id, const char* mood,
                          const char* attributes) {
  return npc_steer_ex(client, session_id, mood, attributes, 0);
}

NPC_API int32_t npc_steer_ex(npc_client* client, const char* session_id, const char* mood,
                             const char* attributes, int32_t clear) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(session_id && session_id[0], "session_id");
  NPC_GUARD_BEGIN
  steernpc::v1::SteerRequest request;
  request.set_session_id(session_id);
  request.set_mood(Str(mood));
  request.set_clear(clear != 0);
  std::string error;
  if (!steernpc::ParseAttributes(attributes, "attributes", request.mutable_attributes(), &error))
    return Fail(3, error);
  steernpc::v1::Session session;
  grpc::Status status = client->impl.Steer(request, &session);
  if (!status.ok()) return FailStatus(client, status);
  steernpc::ClearError();
  return 0;
  NPC_GUARD_END
}

NPC_API int32_t npc_session_export(npc_client* client, const char* session_id, uint8_t* buf,
                                   size_t cap) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(session_id && session_id[0], "session_id");
  NPC_GUARD_BEGIN
  steernpc::v1::SessionSnapshot snapshot;
  grpc::Status status = client->impl.ExportSession(session_id, &snapshot);
  if (!status.ok()) return FailStatus(client, status);
  steernpc::ClearError();
  return steernpc::WriteOut(snapshot.data(), buf, cap, /*nul=*/false);
  NPC_GUARD_END
}

NPC_API int32_t npc_session_import(npc_client* client, const uint8_t* data, size_t len,
                                   char* out_id, size_t cap) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(data || len == 0, "data");
  NPC_GUARD_BEGIN
  steernpc::v1::Session session;
  grpc::Status status = client->impl.ImportSession(
      data ? std::string(reinterpret_cast<const char*>(data), len) : std::string(), &session);
  return WriteSessionId(client, status, session, out_id, cap);
  NPC_GUARD_END
}

NPC_API npc_request_id npc_say(npc_client* client, const char* session_id, const char* text,
                               const char* attribute_overrides) {
  npc_say_options options{};
  options.attributes = attribute_overrides;
  return npc_say_ex(client, session_id, text, &options);
}

NPC_API npc_request_id npc_say_ex(npc_client* client, const char* session_id, const char* text,
                                  const npc_say_options* options) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(session_id && session_id[0], "session_id");
  NPC_REQUIRE(text, "text");
  NPC_GUARD_BEGIN
  steernpc::SayOptions o;
  if (options) {
    std::string error;
    if (!steernpc::ParseAttributes(options->attributes, "attribute_overrides", &o.attributes, &error))
      return Fail(3, error);
    o.max_new_tokens = options->max_new_tokens;
    o.temperature = options->temperature;
    o.top_p = options->top_p;
    o.top_k = options->top_k;
    o.seed = options->seed;
  }
  steernpc::ClearError();
  return client->impl.Say(session_id, text, o);
  NPC_GUARD_END
}

NPC_API int32_t npc_cancel(npc_client* client, npc_request_id request_id) {
  NPC_REQUIRE(client, "client");
  NPC_GUARD_BEGIN
  if (!client->impl.Cancel(request_id))
    return Fail(5, "no reply in flight with request id " + std::to_string(request_id));
  steernpc::ClearError();
  return 0;
  NPC_GUARD_END
}

NPC_API int32_t npc_poll_wait(npc_client* client, npc_event* out, int32_t timeout_ms) {
  NPC_REQUIRE(client, "client");
  NPC_REQUIRE(out, "out");
  NPC_GUARD_BEGIN
  steernpc::Event e;
  *out = npc_event{};
  out->text = out->attributes = out->session_id = out->interaction_id = "";
  if (!client->impl.Poll(&e, timeout_ms)) return 0;
  tls_polled.text = std::move(e.text);
  tls_polled.attributes = std::move(e.attributes);
  tls_polled.session_id = std::move(e.session_id);
  tls_polled.interaction_id = std::move(e.interaction_id);
  out->request_id = e.request_id;
  out->type = static_cast<int32_t>(e.type);
  out->finish_reason = e.finish_reason;
  out->status_code = e.status_code;
  out->prompt_tokens = e.prompt_tokens;
  out->completion_tokens = e.completion_tokens;
  out->server_ttft_ms = e.server_ttft_ms;
  out->server_total_ms = e.server_total_ms;
  out->text_len = static_cast<int32_t>(tls_polled.text.size());
  out->text = tls_polled.text.c_str();
  out->attributes = tls_polled.attributes.c_str();
  out->session_id = tls_polled.session_id.c_str();
  out->interaction_id = tls_polled.interaction_id.c_str();
  return 1;
  NPC_GUARD_END
}

NPC_API int32_t npc_poll(npc_client* client, npc_event* out) { return npc_poll_wait(client, out, 0); }

NPC_API int32_t npc_pending(npc_client* client) {
  NPC_REQUIRE(client, "client");
  return client->impl.Pending();
}

}  // extern "C"
