// Native tests of libsteernpc against a real `steernpc serve`.
//
//   steernpc_tests <case>        (ctest runs one process per case; `steernpc_tests --list`)
//
// Environment:
//   STEERNPC_TEST_TARGET       host:port of a running server (required, else the case is skipped: 77)
//   STEERNPC_TEST_API_KEY      the server's API key ("" if it runs without auth)
//   STEERNPC_TEST_CHARACTER    a character id (default: brom)
//   STEERNPC_TEST_CONTROL_DIR  for the restart cases: the harness (tests/test_native_bridge.py)
//                              watches this folder for "<n>.request" files (stop | start |
//                              restart) and answers with "<n>.done" when it is done.
//
// Uses only the C ABI, as an engine would. No test framework: CHECK prints file:line and exits 1.
#include <steernpc/steernpc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifdef _WIN32
#include <process.h>
static int getpid_portable() { return _getpid(); }
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
static int getpid_portable() { return static_cast<int>(getpid()); }
#endif

namespace {

// ---- layout guard: the C# / Unreal bindings rely on it (see NativeMethods.cs) ----------------
static_assert(sizeof(void*) != 8 || sizeof(npc_event) == 72, "npc_event layout changed");
static_assert(sizeof(void*) != 8 || offsetof(npc_event, text) == 40, "npc_event layout changed");
static_assert(sizeof(void*) != 8 || offsetof(npc_event, interaction_id) == 64, "npc_event layout changed");
static_assert(sizeof(void*) != 8 || sizeof(npc_say_options) == 32, "npc_say_options layout changed");
static_assert(sizeof(void*) != 8 || sizeof(npc_client_options) == 48, "npc_client_options layout changed");
static_assert(offsetof(npc_event_ex, event) == 0, "npc_event_ex starts with an npc_event");
static_assert(sizeof(void*) != 8 || sizeof(npc_event_ex) == 104, "npc_event_ex layout changed");
static_assert(sizeof(void*) != 8 || offsetof(npc_event_ex, line) == 96, "npc_event_ex layout changed");
static_assert(sizeof(void*) != 8 || sizeof(npc_scene_member) == 40, "npc_scene_member layout changed");
static_assert(sizeof(void*) != 8 || sizeof(npc_scene_options) == 48, "npc_scene_options layout changed");

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (last error %d: %s)\n", __FILE__,     \
                   __LINE__, #cond, npc_last_error_code(), npc_last_error());            \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    auto va_ = (a);                                                                      \
    auto vb_ = (b);                                                                      \
    if (!(va_ == vb_)) {                                                                 \
      std::fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%s vs %s; last error %d: %s)\n", \
                   __FILE__, __LINE__, #a, #b, Show(va_).c_str(), Show(vb_).c_str(),     \
                   npc_last_error_code(), npc_last_error());                             \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

template <typename T>
std::string Show(const T& v) { return std::to_string(v); }
std::string Show(const std::string& v) { return "'" + v + "'"; }
std::string Show(const char* v) { return v ? "'" + std::string(v) + "'" : "NULL"; }

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string Env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

std::string Target() { return Env("STEERNPC_TEST_TARGET"); }
std::string ApiKey() { return Env("STEERNPC_TEST_API_KEY"); }
std::string Character() { return Env("STEERNPC_TEST_CHARACTER", "brom"); }
// One of the character's moods (the harness reads it from the persona file).
std::string Mood() { return Env("STEERNPC_TEST_MOOD", "angry"); }

struct ClientPtr {
  npc_client* c = nullptr;
  explicit ClientPtr(npc_client* client) : c(client) {}
  ~ClientPtr() { npc_client_destroy(c); }
  ClientPtr(const ClientPtr&) = delete;
  ClientPtr& operator=(const ClientPtr&) = delete;
  operator npc_client*() const { return c; }
};

npc_client* NewClient(const std::string& api_key, int deadline_ms = 15000) {
  npc_client_options o{};
  std::string target = Target();
  o.target = target.c_str();
  o.api_key = api_key.c_str();
  o.default_deadline_ms = deadline_ms;
  o.max_reconnect_backoff_ms = 1000;
  npc_client* c = npc_client_create(&o);
  CHECK(c != nullptr);
  return c;
}
npc_client* NewClient() { return NewClient(ApiKey()); }

// Owns an npc_result; checks what every result promises (never NULL, NUL-terminated text).
struct Result {
  npc_result* r;
  explicit Result(npc_result* result) : r(result) {
    CHECK(r != nullptr);
    CHECK(npc_result_text(r) != nullptr);
    CHECK_EQ(npc_result_text(r)[npc_result_size(r)], '\0');
    CHECK(npc_result_data(r) == reinterpret_cast<const uint8_t*>(npc_result_text(r)));
  }
  ~Result() { npc_result_free(r); }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  int32_t status() const { return npc_result_status(r); }
  size_t size() const { return npc_result_size(r); }
  const char* c_str() const { return npc_result_text(r); }
  std::string str() const { return std::string(npc_result_text(r), npc_result_size(r)); }
};

// The value of a result that must have succeeded.
std::string Ok(npc_result* result) {
  Result r(result);
  CHECK_EQ(r.status(), static_cast<int32_t>(NPC_OK));
  CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_OK));
  return r.str();
}

std::string CreateSession(npc_client* c, const std::string& character = Character()) {
  std::string id = Ok(npc_session_create(c, character.c_str()));
  CHECK(!id.empty());
  CHECK_EQ(id.size(), std::strlen(id.c_str()));
  return id;
}

std::string SessionJson(npc_client* c, const std::string& session) {
  return Ok(npc_session_get(c, session.c_str()));
}

std::map<std::string, int> ParseAttrs(const std::string& s) {
  std::map<std::string, int> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(pos, comma - pos);
    size_t colon = item.find(':');
    if (colon != std::string::npos) out[item.substr(0, colon)] = std::atoi(item.c_str() + colon + 1);
    pos = comma + 1;
  }
  return out;
}

// The "attributes" object of a Session JSON, as a sorted map (maps have no order on the wire).
std::map<std::string, int> JsonAttrs(const std::string& json) {
  std::map<std::string, int> out;
  size_t start = json.find("\"attributes\":{");
  if (start == std::string::npos) return out;
  size_t end = json.find('}', start);
  std::string body = json.substr(start + 14, end - start - 14);
  size_t pos = 0;
  while ((pos = body.find('"', pos)) != std::string::npos) {
    size_t close = body.find('"', pos + 1);
    std::string name = body.substr(pos + 1, close - pos - 1);
    out[name] = std::atoi(body.c_str() + body.find(':', close) + 1);
    pos = body.find(',', close);
    if (pos == std::string::npos) break;
  }
  return out;
}

template <typename K, typename V>
std::string Show(const std::map<K, V>& m) {
  std::string s = "{";
  for (auto& kv : m) s += kv.first + ":" + std::to_string(kv.second) + " ";
  return s + "}";
}

// Everything one reply produced.
struct Reply {
  int64_t id = 0;
  std::vector<std::string> deltas;
  int final_type = NPC_EVENT_NONE;
  int finish_reason = 0;
  int status_code = 0;
  std::string text;  // done: full text; error: message
  std::string attributes;
  std::string session_id;
  std::string joined() const {
    std::string s;
    for (auto& d : deltas) s += d;
    return s;
  }
};

// Poll until request `id` has its final event (events of other requests are a failure here).
Reply Collect(npc_client* c, int64_t id, int timeout_ms = 60000,
              const std::function<void(const Reply&)>& on_delta = nullptr) {
  Reply r;
  r.id = id;
  auto start = Clock::now();
  while (MsSince(start) < timeout_ms) {
    npc_event e;
    int got = npc_poll_wait(c, &e, 100);
    CHECK(got >= 0);
    if (got == 0) continue;
    CHECK_EQ(e.request_id, id);
    CHECK(e.text != nullptr && e.attributes != nullptr && e.session_id != nullptr);
    CHECK_EQ(static_cast<size_t>(e.text_len), std::strlen(e.text));
    r.session_id = e.session_id;
    if (e.type == NPC_EVENT_DELTA) {
      r.deltas.emplace_back(e.text, e.text_len);
      if (on_delta) on_delta(r);
      continue;
    }
    r.final_type = e.type;
    r.finish_reason = e.finish_reason;
    r.status_code = e.status_code;
    r.text = e.text;
    r.attributes = e.attributes;
    return r;
  }
  std::fprintf(stderr, "no final event for request %lld within %d ms\n", (long long)id, timeout_ms);
  std::exit(1);
}

Reply SayAndCollect(npc_client* c, const std::string& session, const char* text,
                    const char* attrs = nullptr, int max_new_tokens = 12) {
  npc_say_options o{};
  o.attributes = attrs;
  o.max_new_tokens = max_new_tokens;
  npc_request_id id = npc_say_ex(c, session.c_str(), text, &o);
  CHECK(id > 0);
  return Collect(c, id);
}

void ExpectDone(const Reply& r) {
  if (r.final_type != NPC_EVENT_DONE)
    std::fprintf(stderr, "expected done, got type %d code %d: %s\n", r.final_type, r.status_code, r.text.c_str());
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_DONE));
}

// ---- restart control (the pytest harness stops / starts the server) ---------------------------
bool HaveControl() { return !Env("STEERNPC_TEST_CONTROL_DIR").empty(); }

void Control(const std::string& what) {
  static int n = 0;
  std::string dir = Env("STEERNPC_TEST_CONTROL_DIR");
  std::string base = dir + "/" + std::to_string(getpid_portable()) + "-" + std::to_string(++n);
  {
    std::ofstream tmp(base + ".tmp");
    tmp << what;
  }
  std::rename((base + ".tmp").c_str(), (base + ".request").c_str());
  auto start = Clock::now();
  for (;;) {
    std::ifstream done(base + ".done");
    if (done.good()) break;
    if (MsSince(start) > 180000) {
      std::fprintf(stderr, "the harness did not answer '%s' within 180 s\n", what.c_str());
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr, "[control] %s: done after %.0f ms\n", what.c_str(), MsSince(start));
}

// ================================================================================================
// Cases

void TestVersionAndArgs() {
  CHECK(std::strlen(npc_version()) > 0);
  CHECK(npc_client_create(nullptr) == nullptr);
  CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
  npc_client_options o{};
  CHECK(npc_client_create(&o) == nullptr);
  CHECK(std::strstr(npc_last_error(), "target") != nullptr);

  ClientPtr c(NewClient());
  npc_event e;
  CHECK_EQ(npc_poll(c, &e), 0);  // nothing yet, never blocks
  CHECK_EQ(e.type, static_cast<int32_t>(NPC_EVENT_NONE));
  CHECK(e.text != nullptr);
  CHECK_EQ(npc_poll(c, nullptr), -NPC_INVALID_ARGUMENT);
  CHECK_EQ(npc_say(c, nullptr, "hi", nullptr), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  CHECK_EQ(npc_say(c, "s", "hi", "humor"), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));  // no value
  CHECK(std::strstr(npc_last_error(), "humor") != nullptr);
  CHECK_EQ(npc_say(c, "s", "hi", "humor:x"), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  CHECK_EQ(npc_cancel(c, 12345), -NPC_NOT_FOUND);
  CHECK_EQ(npc_pending(c), 0);
  npc_client_destroy(nullptr);
  // Results: argument errors come back as a result too (never NULL), with the message.
  {
    Result r(npc_list_characters(nullptr));
    CHECK_EQ(r.status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
    CHECK(std::strstr(r.c_str(), "client") != nullptr);
    CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
    CHECK_EQ(std::string(npc_last_error()), r.str());
  }
  {
    Result r(npc_session_create(c, ""));
    CHECK_EQ(r.status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
    CHECK(std::strstr(r.c_str(), "character_id") != nullptr);
  }
  CHECK_EQ(npc_result_status(nullptr), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
  CHECK_EQ(std::string(npc_result_text(nullptr)), std::string());
  CHECK_EQ(npc_result_size(nullptr), static_cast<size_t>(0));
  npc_result_free(nullptr);
}

void TestListCharacters() {
  ClientPtr c(NewClient());
  std::string json = Ok(npc_list_characters(c));
  CHECK(json.size() > 2);
  CHECK_EQ(json.size(), std::strlen(json.c_str()));
  CHECK(json.front() == '[' && json.back() == ']');
  CHECK(json.find("\"id\":\"" + Character() + "\"") != std::string::npos);
  CHECK(json.find("\"schema\"") != std::string::npos);
  CHECK(json.find("\"moods\"") != std::string::npos);
  std::printf("characters: %zu bytes of JSON\n", json.size());
}

void TestCreateSession() {
  ClientPtr c(NewClient());
  std::string id = CreateSession(c);
  CHECK(!id.empty());
  std::string json = SessionJson(c, id);
  CHECK(json.find("\"character_id\":\"" + Character() + "\"") != std::string::npos);
  // A client-chosen id and a mood.
  npc_session_options so{};
  std::string chosen = "native-test-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  so.character_id = Character().c_str();
  std::string ch = Character();
  so.character_id = ch.c_str();
  so.session_id = chosen.c_str();
  so.player_name = "Ada";
  CHECK_EQ(Ok(npc_session_create_ex(c, &so)), chosen);
  // Delete, then it is gone: the result carries the status and the message.
  CHECK_EQ(npc_session_delete(c, id.c_str()), 0);
  {
    Result gone(npc_session_get(c, id.c_str()));
    CHECK_EQ(gone.status(), static_cast<int32_t>(NPC_NOT_FOUND));
    CHECK(gone.size() > 0);
    CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_NOT_FOUND));
    CHECK_EQ(std::string(npc_last_error()), gone.str());
  }
  CHECK_EQ(npc_session_delete(c, id.c_str()), -NPC_NOT_FOUND);
}

void TestSayStreams() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  auto t0 = Clock::now();
  npc_say_options o{};
  o.max_new_tokens = 16;
  npc_request_id id = npc_say_ex(c, session.c_str(), "Hello there, smith. What do you sell?", &o);
  CHECK(id > 0);
  CHECK_EQ(npc_pending(c), 1);
  double first_ms = -1;
  Reply r = Collect(c, id, 60000, [&](const Reply& partial) {
    if (partial.deltas.size() == 1) first_ms = MsSince(t0);
  });
  ExpectDone(r);
  CHECK(r.deltas.size() >= 2);
  CHECK_EQ(r.joined(), r.text);  // the deltas add up to the done text
  CHECK(r.finish_reason == NPC_FINISH_STOP || r.finish_reason == NPC_FINISH_LENGTH);
  CHECK_EQ(r.session_id, session);
  auto attrs = ParseAttrs(r.attributes);
  CHECK(attrs.count("humor") == 1 && attrs.count("verbosity") == 1);
  CHECK_EQ(npc_pending(c), 0);
  npc_event e;
  CHECK_EQ(npc_poll(c, &e), 0);  // nothing after the done
  // The request id is finished now.
  CHECK_EQ(npc_cancel(c, id), -NPC_NOT_FOUND);
  // A second turn in the same session works (ids increase).
  Reply r2 = SayAndCollect(c, session, "And your prices?");
  ExpectDone(r2);
  CHECK(r2.id > id);
  CHECK(SessionJson(c, session).find("\"turns\":2") != std::string::npos);
  std::printf("%zu deltas, first after %.1f ms, attributes %s\n", r.deltas.size(), first_ms, r.attributes.c_str());
}

// npc_say only hands the request to the core's thread. Checked against a server that accepts
// the connection and never answers: a call that waited for the server would never return (and
// ctest's timeout would fail the test), so no clock is read.
void TestSayDoesNotBlock() {
#ifdef _WIN32
  std::printf("skipped on Windows (uses POSIX sockets)\n");
#else
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  CHECK(listen(fd, 8) == 0);  // the kernel completes the handshake; nothing ever speaks HTTP/2
  socklen_t len = sizeof addr;
  CHECK(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  std::string target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  npc_client_options o{};
  o.target = target.c_str();
  o.default_deadline_ms = 600000;
  o.say_deadline_ms = 600000;
  {
    ClientPtr c(npc_client_create(&o));
    CHECK(c != nullptr);
    npc_say_options so{};
    so.max_new_tokens = 4;
    npc_request_id id = npc_say_ex(c, "any-session", "Hello?", &so);
    CHECK(id > 0);
    CHECK_EQ(npc_pending(c), 1);
  }  // destroying the client cancels the pending call
  close(fd);
#endif
}

void TestSteer() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  Reply before = SayAndCollect(c, session, "Good morning.");
  ExpectDone(before);
  auto a0 = ParseAttrs(before.attributes);
  CHECK(a0.count("humor") == 1);
  int humor = a0["humor"] >= 3 ? 1 : 4;
  std::string steer = "humor:" + std::to_string(humor) + ", verbosity = 3";
  CHECK_EQ(npc_steer(c, session.c_str(), nullptr, steer.c_str()), 0);
  Reply after = SayAndCollect(c, session, "Tell me a joke.");
  ExpectDone(after);
  auto a1 = ParseAttrs(after.attributes);
  CHECK_EQ(a1["humor"], humor);
  CHECK_EQ(a1["verbosity"], 3);
  // A mood from the character sheet, then clear.
  CHECK_EQ(npc_steer_ex(c, session.c_str(), Mood().c_str(), nullptr, 1), 0);
  std::string json = SessionJson(c, session);
  CHECK(json.find("\"mood\":\"" + Mood() + "\"") != std::string::npos);
  Reply angry = SayAndCollect(c, session, "Hello again.");
  ExpectDone(angry);
  auto a2 = ParseAttrs(angry.attributes);
  // clear dropped the humor / verbosity steer: the reply gets exactly the session's mood vector.
  CHECK_EQ(a2, JsonAttrs(json));
  std::printf("before %s | steered %s | angry %s\n", before.attributes.c_str(), after.attributes.c_str(),
              angry.attributes.c_str());
  // Unknown mood / attribute: INVALID_ARGUMENT that names it.
  CHECK_EQ(npc_steer(c, session.c_str(), "no-such-mood", nullptr), -NPC_INVALID_ARGUMENT);
  CHECK_EQ(npc_steer(c, session.c_str(), nullptr, "no_such_attribute:1"), -NPC_INVALID_ARGUMENT);
  CHECK(std::strstr(npc_last_error(), "no_such_attribute") != nullptr);
  CHECK_EQ(npc_steer(c, "no-such-session", nullptr, "humor:1"), -NPC_NOT_FOUND);
}

void TestPerReplyOverrides() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  Reply base = SayAndCollect(c, session, "Hi.");
  ExpectDone(base);
  int humor = ParseAttrs(base.attributes)["humor"] >= 3 ? 0 : 4;
  std::string o = "humor:" + std::to_string(humor);
  Reply over = SayAndCollect(c, session, "Hi again.", o.c_str());
  ExpectDone(over);
  CHECK_EQ(ParseAttrs(over.attributes)["humor"], humor);
  Reply again = SayAndCollect(c, session, "Once more.");
  ExpectDone(again);
  CHECK_EQ(again.attributes, base.attributes);  // the override was for one reply only
}

void TestCancel() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  npc_say_options o{};
  o.max_new_tokens = 4000;
  o.temperature = 1.0f;
  npc_request_id id = npc_say_ex(c, session.c_str(), "Tell me the whole history of Emberfall.", &o);
  CHECK(id > 0);
  bool cancelled = false;
  Clock::time_point cancel_at;
  Reply r = Collect(c, id, 60000, [&](const Reply& partial) {
    if (!cancelled && partial.deltas.size() >= 3) {
      CHECK_EQ(npc_cancel(c, id), 0);
      CHECK_EQ(npc_cancel(c, id), 0);  // asking twice is fine
      cancelled = true;
      cancel_at = Clock::now();
    }
  });
  CHECK(cancelled);
  ExpectDone(r);
  CHECK_EQ(r.finish_reason, static_cast<int>(NPC_FINISH_CANCELLED));
  CHECK(r.joined().rfind(r.text, 0) == 0 || r.text.rfind(r.joined(), 0) == 0);
  // the reply ended because of the cancel, long before its 4000 tokens (counted, not timed)
  std::printf("cancelled after %zu deltas; done %.1f ms after npc_cancel\n", r.deltas.size(), MsSince(cancel_at));
  CHECK(r.deltas.size() < 4000);
  CHECK_EQ(npc_cancel(c, id), -NPC_NOT_FOUND);
  // The session still works.
  ExpectDone(SayAndCollect(c, session, "Short answer please."));
}

void TestUnknownCharacter() {
  ClientPtr c(NewClient());
  Result r(npc_session_create(c, "no-such-character"));
  CHECK_EQ(r.status(), static_cast<int32_t>(NPC_NOT_FOUND));
  CHECK(std::strstr(r.c_str(), "no-such-character") != nullptr);
  CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_NOT_FOUND));
  CHECK(std::strstr(npc_last_error(), "no-such-character") != nullptr);
  std::printf("NOT_FOUND: %s\n", npc_last_error());
}

void TestUnknownSession() {
  ClientPtr c(NewClient());
  npc_request_id id = npc_say(c, "no-such-session", "Hello?", nullptr);
  CHECK(id > 0);
  Reply r = Collect(c, id);
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_NOT_FOUND));
  CHECK(r.deltas.empty());
  CHECK(!r.text.empty());
  CHECK_EQ(npc_pending(c), 0);
}

void TestWrongApiKey() {
  if (ApiKey().empty()) {
    std::printf("the server runs without an API key; skipped\n");
    std::exit(77);
  }
  ClientPtr bad(NewClient("not-the-key"));
  CHECK_EQ(Result(npc_list_characters(bad)).status(), static_cast<int32_t>(NPC_UNAUTHENTICATED));
  CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_UNAUTHENTICATED));
  std::printf("UNAUTHENTICATED: %s\n", npc_last_error());
  ClientPtr none(NewClient(""));
  CHECK_EQ(Result(npc_session_create(none, Character().c_str())).status(), static_cast<int32_t>(NPC_UNAUTHENTICATED));
  // Streams report it as an error event.
  ClientPtr good(NewClient());
  std::string session = CreateSession(good);
  npc_request_id id = npc_say(bad, session.c_str(), "Hello", nullptr);
  CHECK(id > 0);
  Reply r = Collect(bad, id);
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_UNAUTHENTICATED));
}

void TestBadAttribute() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  npc_request_id id = npc_say(c, session.c_str(), "Hello", "humor:99");
  CHECK(id > 0);
  Reply r = Collect(c, id);
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_INVALID_ARGUMENT));
  CHECK(r.text.find("humor") != std::string::npos);
  std::printf("INVALID_ARGUMENT: %s\n", r.text.c_str());
  npc_session_options so{};
  std::string ch = Character();
  so.character_id = ch.c_str();
  so.attributes = "bogus:2";
  CHECK_EQ(Result(npc_session_create_ex(c, &so)).status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
}

void TestExportImport() {
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  CHECK_EQ(npc_steer(c, session.c_str(), Mood().c_str(), "humor:3"), 0);
  ExpectDone(SayAndCollect(c, session, "Remember me: my name is Ada."));
  std::string before = SessionJson(c, session);
  std::string snapshot = Ok(npc_session_export(c, session.c_str()));
  CHECK(!snapshot.empty());
  // The save game outlives the session.
  CHECK_EQ(npc_session_delete(c, session.c_str()), 0);
  std::string id = Ok(npc_session_import(c, reinterpret_cast<const uint8_t*>(snapshot.data()), snapshot.size()));
  CHECK_EQ(id, session);
  std::string after = SessionJson(c, id);
  CHECK_EQ(JsonAttrs(after), JsonAttrs(before));
  CHECK_EQ(JsonAttrs(after)["humor"], 3);
  CHECK(after.find("\"mood\":\"" + Mood() + "\"") != std::string::npos);
  CHECK(after.find("\"turns\":1") != std::string::npos);
  CHECK(after.find("\"character_id\":\"" + Character() + "\"") != std::string::npos);
  std::printf("snapshot %zu bytes; session %s\n", snapshot.size(), after.c_str());
  Reply r = SayAndCollect(c, id, "Do you remember my name?");
  ExpectDone(r);
  CHECK(ParseAttrs(r.attributes)["humor"] == 3);
  // Garbage is INVALID_ARGUMENT.
  const uint8_t junk[] = {1, 2, 3};
  CHECK_EQ(Result(npc_session_import(c, junk, sizeof junk)).status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
}

void TestParallel() {
  const int kThreads = 4, kPerThread = 8, kTotal = kThreads * kPerThread;
  ClientPtr c(NewClient());
  std::mutex mu;
  std::map<int64_t, Reply> replies;  // by request id
  std::map<int64_t, size_t> delta_bytes;
  std::atomic<int> finals{0};
  std::atomic<bool> stop{false};
  std::vector<std::string> failures;

  // Several threads create sessions and start replies on one shared client, then every thread
  // polls the same client: events are handed out once each, whoever polls.
  auto worker = [&](int t) {
    std::vector<int64_t> mine;
    for (int i = 0; i < kPerThread; ++i) {
      npc_result* created = npc_session_create(c, Character().c_str());
      std::string id = npc_result_text(created);
      int32_t status = npc_result_status(created);
      npc_result_free(created);
      if (status != NPC_OK) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back("create: " + id);
        continue;
      }
      npc_say_options o{};
      o.max_new_tokens = 8;
      std::string text = "Thread " + std::to_string(t) + " says hello #" + std::to_string(i);
      npc_request_id rid = npc_say_ex(c, id.c_str(), text.c_str(), &o);
      std::lock_guard<std::mutex> lock(mu);
      replies[rid].id = rid;
      replies[rid].session_id = id;
    }
    auto start = Clock::now();
    while (!stop && finals.load() < kTotal && MsSince(start) < 120000) {
      npc_event e;
      if (npc_poll_wait(c, &e, 50) != 1) continue;
      std::lock_guard<std::mutex> lock(mu);
      Reply& r = replies[e.request_id];
      if (r.session_id != e.session_id) failures.push_back("event routed to the wrong session");
      if (e.type == NPC_EVENT_DELTA) {
        delta_bytes[e.request_id] += static_cast<size_t>(e.text_len);
      } else {
        if (r.final_type != NPC_EVENT_NONE) failures.push_back("two final events");
        r.final_type = e.type;
        r.status_code = e.status_code;
        r.text = e.text;
        ++finals;
      }
    }
  };
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  for (auto& f : failures) std::fprintf(stderr, "failure: %s\n", f.c_str());
  CHECK(failures.empty());
  CHECK_EQ(static_cast<int>(replies.size()), kTotal);
  CHECK_EQ(finals.load(), kTotal);
  for (auto& kv : replies) {
    if (kv.second.final_type != NPC_EVENT_DONE)
      std::fprintf(stderr, "request %lld: type %d code %d %s\n", (long long)kv.first, kv.second.final_type,
                   kv.second.status_code, kv.second.text.c_str());
    CHECK_EQ(kv.second.final_type, static_cast<int>(NPC_EVENT_DONE));
    CHECK_EQ(delta_bytes[kv.first], kv.second.text.size());
  }
  CHECK_EQ(npc_pending(c), 0);
  std::printf("%d replies on %d threads in %.0f ms\n", kTotal, kThreads, MsSince(t0));
}

// The server is stopped: calls fail fast and clearly; then it comes back and the same client
// works again.
void TestServerDown() {
  if (!HaveControl()) {
    std::printf("needs STEERNPC_TEST_CONTROL_DIR (run through tests/test_native_bridge.py); skipped\n");
    std::exit(77);
  }
  // a 10-minute deadline: a call that waited for it instead of failing fast would hang the
  // test (ctest's timeout fails it), so "fails fast" needs no clock
  ClientPtr c(NewClient(ApiKey(), 600000));
  std::string session = CreateSession(c);
  Control("stop");
  auto t0 = Clock::now();
  CHECK_EQ(Result(npc_list_characters(c)).status(), static_cast<int32_t>(NPC_UNAVAILABLE));
  std::printf("UNAVAILABLE after %.0f ms: %s\n", MsSince(t0), npc_last_error());
  CHECK(std::strstr(npc_last_error(), "unavailable") != nullptr);
  CHECK_EQ(Result(npc_session_create(c, Character().c_str())).status(), static_cast<int32_t>(NPC_UNAVAILABLE));
  npc_request_id id = npc_say(c, session.c_str(), "Anyone there?", nullptr);
  CHECK(id > 0);
  Reply r = Collect(c, id, 20000);
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_UNAVAILABLE));
  std::printf("say error event: %s\n", r.text.c_str());
  {
    // wait_for_ready: calls wait for the server (up to their deadline) instead of failing fast.
    npc_client_options o{};
    std::string target = Target(), key = ApiKey();
    o.target = target.c_str();
    o.api_key = key.c_str();
    o.default_deadline_ms = 1500;
    o.wait_for_ready = 1;
    ClientPtr patient(npc_client_create(&o));
    auto tw = Clock::now();
    CHECK_EQ(Result(npc_list_characters(patient)).status(), static_cast<int32_t>(NPC_DEADLINE_EXCEEDED));
    CHECK(MsSince(tw) >= 1400);
    std::printf("wait_for_ready: DEADLINE_EXCEEDED after %.0f ms\n", MsSince(tw));
  }
  Control("start");
  auto t1 = Clock::now();
  int32_t status = -1;
  while (MsSince(t1) < 30000 && (status = Result(npc_list_characters(c)).status()) != NPC_OK)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_EQ(status, static_cast<int32_t>(NPC_OK));
  std::printf("reconnected %.0f ms after the server was back\n", MsSince(t1));
}

// A reply is streaming when the server dies: it ends with UNAVAILABLE; the server restarts and
// the client reconnects by itself (backoff), sessions persisted by the store still work.
void TestReconnect() {
  if (!HaveControl()) {
    std::printf("needs STEERNPC_TEST_CONTROL_DIR (run through tests/test_native_bridge.py); skipped\n");
    std::exit(77);
  }
  ClientPtr c(NewClient());
  std::string session = CreateSession(c);
  ExpectDone(SayAndCollect(c, session, "Hello before the restart."));
  npc_say_options o{};
  o.max_new_tokens = 4000;
  npc_request_id id = npc_say_ex(c, session.c_str(), "Talk for a long time.", &o);
  CHECK(id > 0);
  // Wait for the stream to be going, then kill the server under it.
  npc_event e;
  auto t0 = Clock::now();
  int deltas = 0;
  while (deltas < 2 && MsSince(t0) < 30000) {
    if (npc_poll_wait(c, &e, 100) == 1) {
      CHECK_EQ(e.request_id, id);
      CHECK_EQ(e.type, static_cast<int32_t>(NPC_EVENT_DELTA));
      ++deltas;
    }
  }
  CHECK(deltas == 2);
  Control("restart");  // kill -9, start again, wait for SERVING
  Reply r = Collect(c, id, 30000);
  std::printf("in-flight reply ended with type %d code %d after %zu more deltas: %s\n", r.final_type,
              r.status_code, r.deltas.size(), r.text.substr(0, 160).c_str());
  if (r.final_type == NPC_EVENT_ERROR) CHECK_EQ(r.status_code, static_cast<int>(NPC_UNAVAILABLE));
  auto t1 = Clock::now();
  int32_t status = -1;
  int failures = 0;
  while (MsSince(t1) < 30000 && (status = Result(npc_list_characters(c)).status()) != NPC_OK) {
    CHECK_EQ(status, static_cast<int32_t>(NPC_UNAVAILABLE));
    CHECK_EQ(npc_last_error_code(), static_cast<int32_t>(NPC_UNAVAILABLE));
    ++failures;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK_EQ(status, static_cast<int32_t>(NPC_OK));
  std::printf("reconnected %.0f ms after restart (%d failed tries); state %d\n", MsSince(t1), failures,
              npc_client_state(c, 0));
  CHECK_EQ(npc_client_state(c, 0), static_cast<int32_t>(NPC_STATE_READY));
  std::string fresh = CreateSession(c);
  ExpectDone(SayAndCollect(c, fresh, "Hello after the restart."));
  // The harness runs the server with the sqlite store: the old session survived.
  ExpectDone(SayAndCollect(c, session, "Still there?"));
}

// Against the harness's counting server (CountingServicer in tests/test_native_bridge.py), not
// `steernpc serve`: its answers are far longer than any buffer a caller would guess (a character
// list of ~150 KB, a session id of 3000 bytes, a 1 MiB snapshot holding every byte value). Each
// call here is made once; the harness then checks that the server saw exactly one RPC per call.
void TestLongResultsOneRpcEach() {
  ClientPtr c(NewClient());
  std::string characters = Ok(npc_list_characters(c));
  CHECK(characters.size() > 100000);
  CHECK(characters.find("\"id\":\"long\"") != std::string::npos);
  CHECK(characters.find("Gr\xc3\xbc\xc3\x9f" "e, Reisender!") != std::string::npos);  // UTF-8 intact
  std::string session = CreateSession(c, "long");
  CHECK_EQ(session.size(), static_cast<size_t>(3000));
  std::string json = SessionJson(c, session);
  CHECK(json.size() > 100000);
  CHECK(json.find("\"session_id\":\"" + session + "\"") != std::string::npos);
  std::string snapshot = Ok(npc_session_export(c, session.c_str()));
  CHECK_EQ(snapshot.size(), static_cast<size_t>(1 << 20));
  for (size_t i = 0; i < snapshot.size(); ++i) {
    if (static_cast<uint8_t>(snapshot[i]) != i % 251) {
      std::fprintf(stderr, "snapshot byte %zu is %d, expected %zu\n", i, static_cast<uint8_t>(snapshot[i]), i % 251);
      std::exit(1);
    }
  }
  std::string restored = Ok(npc_session_import(c, reinterpret_cast<const uint8_t*>(snapshot.data()), snapshot.size()));
  CHECK_EQ(restored, session);
  std::printf("characters %zu bytes, session id %zu, session %zu, snapshot %zu: one call each\n",
              characters.size(), session.size(), json.size(), snapshot.size());
}

// ---- scenes ------------------------------------------------------------------------------------
// A 3-member scene (brom, marta, lysander) of the sample personas, the player "Ayla". Replies come
// from a random-weight model: the cases check structure (who speaks, events, statuses), never
// wording.

const char* const kTrio[] = {"brom", "marta", "lysander"};

std::string UniqueId(const std::string& what) {
  return "native-" + what + "-" + std::to_string(getpid_portable()) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000000);
}

std::string CreateTrio(npc_client* c, const std::string& what) {
  npc_scene_member members[3] = {};
  for (int i = 0; i < 3; ++i) members[i].character_id = kTrio[i];
  npc_scene_options o{};
  std::string id = UniqueId(what);
  o.scene_id = id.c_str();
  o.player_name = "Ayla";
  o.context = "place=The Rusty Tankard\nhour = late evening";
  o.seed = 11;
  o.members = members;
  o.member_count = 3;
  CHECK_EQ(Ok(npc_scene_create(c, &o)), id);
  return id;
}

// One member's line within a scene request.
struct SceneLine {
  std::string speaker_id, speaker, deltas, text, attributes;
  int delta_count = 0;
  int finish_reason = 0;
  int index = -1;
};

// Everything one scene request produced.
struct SceneReply {
  int64_t id = 0;
  std::vector<SceneLine> lines;
  int final_type = NPC_EVENT_NONE;
  int finish_reason = 0;  // SCENE_END
  int end_lines = -1;     // SCENE_END: npc_event_ex.line
  int status_code = 0;    // ERROR
  std::string message;    // ERROR
  std::vector<std::string> speakers() const {
    std::vector<std::string> out;
    for (auto& l : lines) out.push_back(l.speaker_id);
    return out;
  }
};

std::string Show(const std::vector<std::string>& v) {
  std::string s = "[";
  for (auto& x : v) s += (s.size() > 1 ? "," : "") + x;
  return s + "]";
}

// Poll (npc_poll_ex) until scene request `id` ends; checks what every scene event promises on
// the way: the speaker on each delta and done, deltas that add up to the done, lines numbered in
// order, and the scene's id in both scene_id and session_id.
SceneReply CollectScene(npc_client* c, int64_t id, const std::string& scene, int timeout_ms = 120000,
                        const std::function<void(const SceneReply&, const SceneLine&)>& on_delta = nullptr) {
  SceneReply r;
  r.id = id;
  SceneLine open;
  auto start = Clock::now();
  while (MsSince(start) < timeout_ms) {
    npc_event_ex x;
    int got = npc_poll_ex(c, &x, 100);
    CHECK(got >= 0);
    if (got == 0) continue;
    const npc_event& e = x.event;
    CHECK_EQ(e.request_id, id);
    CHECK(x.scene_id && x.speaker_id && x.speaker && e.text && e.session_id);
    CHECK_EQ(std::string(x.scene_id), scene);
    CHECK_EQ(std::string(e.session_id), scene);
    CHECK_EQ(x.reserved, 0);
    if (e.type == NPC_EVENT_DELTA || e.type == NPC_EVENT_DONE) {
      CHECK(x.speaker_id[0] != '\0' && x.speaker[0] != '\0');
      CHECK_EQ(x.line, static_cast<int32_t>(r.lines.size()));
      if (open.index < 0) {
        open = SceneLine();
        open.index = x.line;
        open.speaker_id = x.speaker_id;
        open.speaker = x.speaker;
      }
      CHECK_EQ(std::string(x.speaker_id), open.speaker_id);  // a line has one speaker
      CHECK_EQ(std::string(x.speaker), open.speaker);
    }
    if (e.type == NPC_EVENT_DELTA) {
      open.deltas.append(e.text, e.text_len);
      ++open.delta_count;
      if (on_delta) on_delta(r, open);
      continue;
    }
    if (e.type == NPC_EVENT_DONE) {
      open.text = e.text;
      open.finish_reason = e.finish_reason;
      open.attributes = e.attributes;
      CHECK_EQ(open.deltas, open.text);  // the deltas add up to the done text
      r.lines.push_back(open);
      open = SceneLine();
      continue;
    }
    CHECK(open.index < 0);  // no line is left open at the end
    r.final_type = e.type;
    if (e.type == NPC_EVENT_SCENE_END) {
      CHECK_EQ(std::string(x.speaker_id), std::string());
      r.finish_reason = e.finish_reason;
      r.end_lines = x.line;
      CHECK_EQ(r.end_lines, static_cast<int>(r.lines.size()));
    } else {
      CHECK_EQ(e.type, static_cast<int32_t>(NPC_EVENT_ERROR));
      r.status_code = e.status_code;
      r.message = e.text;
    }
    return r;
  }
  std::fprintf(stderr, "no end event for scene request %lld within %d ms\n", (long long)id, timeout_ms);
  std::exit(1);
}

npc_say_options Short() {
  npc_say_options o{};
  o.max_new_tokens = 6;
  o.seed = 5;
  return o;
}

SceneReply SceneSay(npc_client* c, const std::string& scene, const char* text, const char* ids = nullptr) {
  npc_say_options o = Short();
  npc_request_id id = npc_scene_say(c, scene.c_str(), text, ids, &o);
  CHECK(id > 0);
  return CollectScene(c, id, scene);
}

void ExpectEnd(const SceneReply& r, int finish = NPC_FINISH_STOP) {
  if (r.final_type != NPC_EVENT_SCENE_END)
    std::fprintf(stderr, "expected scene end, got type %d code %d: %s\n", r.final_type, r.status_code, r.message.c_str());
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_SCENE_END));
  CHECK_EQ(r.finish_reason, finish);
}

// The speaker ids of the scene's transcript, in order (GetScene with the transcript).
std::vector<std::string> TranscriptSpeakers(const std::string& json) {
  std::vector<std::string> out;
  size_t pos = json.find("\"transcript\":[");
  CHECK(pos != std::string::npos);
  const std::string key = "\"speaker_id\":\"";
  while ((pos = json.find(key, pos)) != std::string::npos) {
    size_t end = json.find('"', pos + key.size());
    out.push_back(json.substr(pos + key.size(), end - pos - key.size()));
    pos = end;
  }
  return out;
}

// The member ids of a Scene JSON, in order.
std::vector<std::string> Members(const std::string& json) {
  std::vector<std::string> out;
  const std::string key = "\"member_id\":\"";
  size_t pos = 0;
  while ((pos = json.find(key, pos)) != std::string::npos) {
    size_t end = json.find('"', pos + key.size());
    out.push_back(json.substr(pos + key.size(), end - pos - key.size()));
    pos = end;
  }
  return out;
}

// The JSON with every "attributes" object's keys sorted (maps have no order on the wire).
std::string SortedAttrs(std::string json) {
  const std::string key = "\"attributes\":{";
  size_t pos = 0;
  while ((pos = json.find(key, pos)) != std::string::npos) {
    size_t open = pos + key.size(), close = json.find('}', open);
    std::string body = json.substr(open, close - open);
    std::vector<std::string> items;
    size_t p = 0;
    while (p < body.size()) {
      size_t comma = body.find(',', p);
      if (comma == std::string::npos) comma = body.size();
      items.push_back(body.substr(p, comma - p));
      p = comma + 1;
    }
    std::sort(items.begin(), items.end());
    std::string sorted;
    for (auto& item : items) sorted += (sorted.empty() ? "" : ",") + item;
    json.replace(open, close - open, sorted);
    pos = open;
  }
  return json;
}

std::string SceneJson(npc_client* c, const std::string& scene, bool transcript = false) {
  return Ok(npc_scene_get(c, scene.c_str(), transcript ? 1 : 0));
}

void TestSceneAddressing() {
  ClientPtr c(NewClient());
  // Local argument checks.
  CHECK_EQ(npc_scene_say(c, nullptr, "hi", nullptr, nullptr), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  CHECK_EQ(npc_scene_say(c, "s", "hi", "brom,,marta", nullptr), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  CHECK(std::strstr(npc_last_error(), "member_ids") != nullptr);
  {
    npc_scene_member bad{};
    npc_scene_options o{};
    o.members = &bad;
    o.member_count = 1;
    Result r(npc_scene_create(c, &o));
    CHECK_EQ(r.status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
    CHECK(std::strstr(r.c_str(), "members[0].character_id") != nullptr);
    o.member_count = 0;
    o.context = "no equals sign here";
    Result r2(npc_scene_create(c, &o));
    CHECK_EQ(r2.status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
    CHECK(std::strstr(r2.c_str(), "context line 1") != nullptr);
  }
  CHECK_EQ(Result(npc_scene_get(c, "no-such-scene", 0)).status(), static_cast<int32_t>(NPC_NOT_FOUND));

  std::string scene = CreateTrio(c, "address");
  std::string json = SceneJson(c, scene);
  CHECK_EQ(Show(Members(json)), Show(std::vector<std::string>{"brom", "marta", "lysander"}));
  CHECK(json.find("\"name\":\"Brom Ironhand\"") != std::string::npos);
  CHECK(json.find("\"player_name\":\"Ayla\"") != std::string::npos);

  // By name in the text.
  SceneReply r = SceneSay(c, scene, "Brom, what do you think?");
  ExpectEnd(r);
  CHECK_EQ(Show(r.speakers()), Show(std::vector<std::string>{"brom"}));
  CHECK_EQ(r.lines[0].speaker, std::string("Brom Ironhand"));
  CHECK(r.lines[0].finish_reason == NPC_FINISH_STOP || r.lines[0].finish_reason == NPC_FINISH_LENGTH);
  CHECK(ParseAttrs(r.lines[0].attributes).count("humor") == 1);
  CHECK_EQ(npc_pending(c), 0);
  // By id: one done per speaking member, in the order addressed.
  r = SceneSay(c, scene, "And you two?", " lysander , marta ");
  ExpectEnd(r);
  CHECK_EQ(Show(r.speakers()), Show(std::vector<std::string>{"lysander", "marta"}));
  CHECK_EQ(r.lines[0].speaker, std::string("Lysander Quill"));
  CHECK_EQ(r.lines[1].speaker, std::string("Marta Greenhollow"));
  // Nobody addressed: the last member who spoke.
  r = SceneSay(c, scene, "Hm. Go on.");
  ExpectEnd(r);
  CHECK_EQ(Show(r.speakers()), Show(std::vector<std::string>{"marta"}));
  CHECK_EQ(Show(TranscriptSpeakers(SceneJson(c, scene, true))),
           Show(std::vector<std::string>{"player", "brom", "player", "lysander", "marta", "player", "marta"}));
  // An unknown member is NOT_FOUND (as an error event: the call itself never blocks).
  r = SceneSay(c, scene, "Hello?", "nobody");
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_NOT_FOUND));
  CHECK(r.message.find("nobody") != std::string::npos);
  r = SceneSay(c, UniqueId("missing"), "Hello?");
  CHECK_EQ(r.status_code, static_cast<int>(NPC_NOT_FOUND));
  CHECK_EQ(npc_pending(c), 0);
  CHECK_EQ(npc_scene_delete(c, scene.c_str()), 0);
  CHECK_EQ(npc_scene_delete(c, scene.c_str()), -NPC_NOT_FOUND);
}

void TestSceneBanter() {
  ClientPtr c(NewClient());
  std::string scene = CreateTrio(c, "banter");
  ExpectEnd(SceneSay(c, scene, "Brom, tell Marta about the sword."));
  npc_say_options o = Short();
  CHECK_EQ(npc_scene_continue(c, scene.c_str(), 0, &o), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  CHECK(std::strstr(npc_last_error(), "turns = 0") != nullptr);
  npc_say_options with_attrs = Short();
  with_attrs.attributes = "humor:4";
  CHECK_EQ(npc_scene_continue(c, scene.c_str(), 2, &with_attrs), static_cast<int64_t>(-NPC_INVALID_ARGUMENT));
  npc_request_id id = npc_scene_continue(c, scene.c_str(), 3, &o);
  CHECK(id > 0);
  CHECK_EQ(npc_pending(c), 1);
  SceneReply r = CollectScene(c, id, scene);
  ExpectEnd(r);
  CHECK_EQ(r.end_lines, 3);
  std::vector<std::string> speakers = r.speakers();
  // never the member who spoke last; Marta first (the player's line named her too)
  CHECK_EQ(speakers[0], std::string("marta"));
  CHECK(speakers[0] != "brom" && speakers[1] != speakers[0] && speakers[2] != speakers[1]);
  CHECK_EQ(npc_pending(c), 0);
  std::vector<std::string> transcript = TranscriptSpeakers(SceneJson(c, scene, true));
  CHECK_EQ(transcript.size(), static_cast<size_t>(5));
  CHECK_EQ(Show(std::vector<std::string>(transcript.begin() + 2, transcript.end())), Show(speakers));
  // Banter needs two members: FAILED_PRECONDITION.
  npc_scene_options lone{};
  npc_scene_member brom{};
  brom.character_id = "brom";
  std::string lone_id = UniqueId("lone");
  lone.scene_id = lone_id.c_str();
  lone.members = &brom;
  lone.member_count = 1;
  CHECK_EQ(Ok(npc_scene_create(c, &lone)), lone_id);
  r = CollectScene(c, npc_scene_continue(c, lone_id.c_str(), 2, &o), lone_id);
  CHECK_EQ(r.final_type, static_cast<int>(NPC_EVENT_ERROR));
  CHECK_EQ(r.status_code, static_cast<int>(NPC_FAILED_PRECONDITION));
  std::printf("banter: %s %s %s\n", speakers[0].c_str(), speakers[1].c_str(), speakers[2].c_str());
}

npc_say_options Long() {
  npc_say_options o{};
  o.max_new_tokens = 4000;  // still running when cancelled
  o.temperature = 1.0f;
  o.seed = 3;
  return o;
}

void TestSceneCancelMidBanter() {
  ClientPtr c(NewClient());
  std::string scene = CreateTrio(c, "cancel");
  npc_say_options o = Long();
  npc_request_id id = npc_scene_continue(c, scene.c_str(), 5, &o);
  CHECK(id > 0);
  bool cancelled = false;
  SceneReply r = CollectScene(c, id, scene, 120000, [&](const SceneReply&, const SceneLine& line) {
    if (!cancelled && line.delta_count >= 3) {
      CHECK_EQ(npc_cancel(c, id), 0);
      CHECK_EQ(npc_cancel(c, id), 0);  // asking twice is fine
      cancelled = true;
    }
  });
  CHECK(cancelled);
  ExpectEnd(r, NPC_FINISH_CANCELLED);
  CHECK(r.lines.size() >= 1 && r.lines.size() < 5);  // no line started after the cancel
  CHECK_EQ(r.lines.back().finish_reason, static_cast<int>(NPC_FINISH_CANCELLED));
  CHECK_EQ(npc_cancel(c, id), -NPC_NOT_FOUND);
  CHECK_EQ(npc_pending(c), 0);
  // The partial line was heard: it is in the transcript.
  CHECK(!r.lines.back().text.empty());
  CHECK_EQ(Show(TranscriptSpeakers(SceneJson(c, scene, true))), Show(r.speakers()));

  // A new player line interrupts a running banter, then answers.
  id = npc_scene_continue(c, scene.c_str(), 5, &o);
  CHECK(id > 0);
  // Wait for the banter's first delta, so that it is running when the player speaks.
  npc_event_ex x;
  for (;;) {
    int got = npc_poll_ex(c, &x, 100);
    CHECK(got >= 0);
    if (got == 1) break;
  }
  CHECK_EQ(x.event.request_id, id);
  CHECK_EQ(x.event.type, static_cast<int32_t>(NPC_EVENT_DELTA));
  std::string first_speaker = x.speaker_id;
  std::string first_delta(x.event.text, x.event.text_len);
  npc_say_options s = Short();
  npc_request_id say = npc_scene_say(c, scene.c_str(), "Enough! Lysander, a word.", nullptr, &s);
  CHECK(say > id);
  // Both requests' events interleave in the one queue: sort them by request id.
  std::vector<SceneLine> banter, answer;
  SceneLine open_banter, open_answer;
  open_banter.speaker_id = first_speaker;
  open_banter.deltas = first_delta;
  int banter_end = -1, answer_end = -1;
  auto start = Clock::now();
  while ((banter_end < 0 || answer_end < 0) && MsSince(start) < 120000) {
    int got = npc_poll_ex(c, &x, 100);
    CHECK(got >= 0);
    if (got == 0) continue;
    bool is_banter = x.event.request_id == id;
    CHECK(is_banter || x.event.request_id == say);
    SceneLine& open = is_banter ? open_banter : open_answer;
    if (x.event.type == NPC_EVENT_DELTA) {
      open.speaker_id = x.speaker_id;
      open.deltas.append(x.event.text, x.event.text_len);
    } else if (x.event.type == NPC_EVENT_DONE) {
      open.speaker_id = x.speaker_id;
      open.finish_reason = x.event.finish_reason;
      (is_banter ? banter : answer).push_back(open);
      open = SceneLine();
    } else {
      CHECK_EQ(x.event.type, static_cast<int32_t>(NPC_EVENT_SCENE_END));
      (is_banter ? banter_end : answer_end) = x.event.finish_reason;
    }
  }
  CHECK_EQ(banter_end, static_cast<int>(NPC_FINISH_CANCELLED));
  CHECK_EQ(banter.size(), static_cast<size_t>(1));
  CHECK_EQ(banter[0].finish_reason, static_cast<int>(NPC_FINISH_CANCELLED));
  CHECK_EQ(answer_end, static_cast<int>(NPC_FINISH_STOP));
  CHECK_EQ(answer.size(), static_cast<size_t>(1));
  CHECK_EQ(answer[0].speaker_id, std::string("lysander"));
  std::vector<std::string> transcript = TranscriptSpeakers(SceneJson(c, scene, true));
  CHECK_EQ(Show(std::vector<std::string>(transcript.end() - 2, transcript.end())),
           Show(std::vector<std::string>{"player", "lysander"}));
  CHECK_EQ(npc_pending(c), 0);
}

void TestSceneJoinLeave() {
  ClientPtr c(NewClient());
  std::string scene = CreateTrio(c, "door");
  npc_scene_member pip{};
  pip.character_id = "pip";
  CHECK_EQ(npc_scene_join(c, scene.c_str(), &pip), 0);
  CHECK_EQ(Show(Members(SceneJson(c, scene))), Show(std::vector<std::string>{"brom", "marta", "lysander", "pip"}));
  CHECK_EQ(npc_scene_join(c, scene.c_str(), &pip), -NPC_ALREADY_EXISTS);
  npc_scene_member nobody{};
  CHECK_EQ(npc_scene_join(c, scene.c_str(), &nobody), -NPC_INVALID_ARGUMENT);
  CHECK(std::strstr(npc_last_error(), "member.character_id") != nullptr);
  npc_scene_member bad = pip;
  bad.member_id = "pip2";
  bad.attributes = "humor:9";
  CHECK_EQ(npc_scene_join(c, scene.c_str(), &bad), -NPC_INVALID_ARGUMENT);
  CHECK(std::strstr(npc_last_error(), "humor = 9") != nullptr);
  CHECK_EQ(npc_scene_leave(c, scene.c_str(), "marta"), 0);
  CHECK_EQ(Show(Members(SceneJson(c, scene))), Show(std::vector<std::string>{"brom", "lysander", "pip"}));
  CHECK_EQ(npc_scene_leave(c, scene.c_str(), "marta"), -NPC_NOT_FOUND);
  SceneReply r = SceneSay(c, scene, "Marta?", "marta");
  CHECK_EQ(r.status_code, static_cast<int>(NPC_NOT_FOUND));
  CHECK(r.message.find("marta") != std::string::npos);
  r = SceneSay(c, scene, "Pip, hello!");
  ExpectEnd(r);
  CHECK_EQ(Show(r.speakers()), Show(std::vector<std::string>{"pip"}));
  CHECK_EQ(r.lines[0].speaker, std::string("Pip Greenhollow"));
  // Steering a member: the field named; an unknown member NOT_FOUND.
  CHECK_EQ(npc_scene_steer(c, scene.c_str(), "brom", nullptr, "humor:9", 0), -NPC_INVALID_ARGUMENT);
  CHECK(std::strstr(npc_last_error(), "member 'brom'") != nullptr);
  CHECK_EQ(npc_scene_steer(c, scene.c_str(), "marta", Mood().c_str(), nullptr, 0), -NPC_NOT_FOUND);
}

void TestSceneExportImport() {
  ClientPtr c(NewClient());
  std::string scene = CreateTrio(c, "save");
  CHECK_EQ(npc_scene_steer(c, scene.c_str(), "lysander", nullptr, "humor:4", 0), 0);
  ExpectEnd(SceneSay(c, scene, "Evening!", "brom,marta"));
  CHECK_EQ(npc_scene_leave(c, scene.c_str(), "marta"), 0);
  std::string before = SceneJson(c, scene, true);
  std::string data = Ok(npc_scene_export(c, scene.c_str()));
  CHECK(!data.empty());
  CHECK_EQ(npc_scene_delete(c, scene.c_str()), 0);
  CHECK_EQ(Result(npc_scene_get(c, scene.c_str(), 0)).status(), static_cast<int32_t>(NPC_NOT_FOUND));
  std::string id = Ok(npc_scene_import(c, reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  CHECK_EQ(id, scene);
  CHECK_EQ(SortedAttrs(SceneJson(c, scene, true)), SortedAttrs(before));
  CHECK_EQ(Show(TranscriptSpeakers(before)), Show(std::vector<std::string>{"player", "brom", "marta"}));
  CHECK_EQ(Show(Members(before)), Show(std::vector<std::string>{"brom", "lysander"}));
  CHECK(Ok(npc_scene_export(c, scene.c_str())) == data);
  // It goes on, the steer kept.
  SceneReply r = SceneSay(c, scene, "Lysander?");
  ExpectEnd(r);
  CHECK_EQ(Show(r.speakers()), Show(std::vector<std::string>{"lysander"}));
  CHECK_EQ(ParseAttrs(r.lines[0].attributes)["humor"], 4);
  // A single-session save imports as a one-member scene.
  std::string session = CreateSession(c, "brom");
  ExpectDone(SayAndCollect(c, session, "Fix my sword?"));
  std::string old = Ok(npc_session_export(c, session.c_str()));
  CHECK_EQ(Ok(npc_scene_import(c, reinterpret_cast<const uint8_t*>(old.data()), old.size())), session);
  CHECK_EQ(Show(Members(SceneJson(c, session))), Show(std::vector<std::string>{"brom"}));
  const uint8_t junk[] = {1, 2, 3};
  CHECK_EQ(Result(npc_scene_import(c, junk, sizeof junk)).status(), static_cast<int32_t>(NPC_INVALID_ARGUMENT));
  std::printf("scene snapshot %zu bytes\n", data.size());
}

struct Case {
  const char* name;
  void (*fn)();
};
const Case kCases[] = {
    {"version_and_args", TestVersionAndArgs},
    {"list_characters", TestListCharacters},
    {"create_session", TestCreateSession},
    {"say_streams_deltas_then_done", TestSayStreams},
    {"say_does_not_block", TestSayDoesNotBlock},
    {"steer_applies_attributes", TestSteer},
    {"per_reply_overrides", TestPerReplyOverrides},
    {"cancel_mid_reply", TestCancel},
    {"unknown_character_not_found", TestUnknownCharacter},
    {"unknown_session_error", TestUnknownSession},
    {"wrong_api_key_unauthenticated", TestWrongApiKey},
    {"bad_attribute_invalid_argument", TestBadAttribute},
    {"export_import_round_trip", TestExportImport},
    {"parallel_sessions", TestParallel},
    {"server_down_unavailable", TestServerDown},
    {"reconnect_after_restart", TestReconnect},
    {"long_results_one_rpc_each", TestLongResultsOneRpcEach},
    {"scene_addressing", TestSceneAddressing},
    {"scene_banter", TestSceneBanter},
    {"scene_cancel_mid_banter", TestSceneCancelMidBanter},
    {"scene_join_leave", TestSceneJoinLeave},
    {"scene_export_import", TestSceneExportImport},
};

// Cases that need the harness (a server to stop and restart, or the counting server): run by
// name only, never by "all", and not registered with ctest's default set.
bool HarnessOnly(const char* name) {
  return std::strcmp(name, "server_down_unavailable") == 0 || std::strcmp(name, "reconnect_after_restart") == 0 ||
         std::strcmp(name, "long_results_one_rpc_each") == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <case>|--list|all\n", argv[0]);
    return 2;
  }
  std::string which = argv[1];
  if (which == "--list") {
    for (const Case& c : kCases) std::printf("%s\n", c.name);
    return 0;
  }
  if (Target().empty()) {
    std::printf("STEERNPC_TEST_TARGET is not set (host:port of a running steernpc serve); skipped\n");
    return 77;
  }
  int ran = 0;
  for (const Case& c : kCases) {
    if (which == c.name || (which == "all" && !HarnessOnly(c.name))) {
      auto t0 = Clock::now();
      std::printf("== %s\n", c.name);
      std::fflush(stdout);
      c.fn();
      std::printf("ok %s (%.0f ms)\n", c.name, MsSince(t0));
      std::fflush(stdout);
      ++ran;
    }
  }
  if (ran == 0) {
    std::fprintf(stderr, "unknown case '%s' (see --list)\n", which.c_str());
    return 2;
  }
  return 0;
}
