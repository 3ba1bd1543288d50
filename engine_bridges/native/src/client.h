// The native client: one gRPC channel, one completion-queue thread, one dispatch thread, one
// event queue.
//
// Streamed replies (Say, and the scene streams SceneSay / SceneContinue) run on the grpc++
// async API. The dispatch thread starts them (and the
// Cancel RPCs) so that engine threads never pay for creating a call; their operations then
// complete on the CQ thread (Loop), the only one that reads the completion queue, which turns
// stream messages into Events and appends them to a mutex-guarded queue. Engine threads only
// take events out (Poll). Unary calls are blocking calls on the caller's thread with the
// default deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <functional>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "steernpc/v1/npc.grpc.pb.h"

namespace steernpc {

enum class EventType : int32_t { kNone = 0, kDelta = 1, kDone = 2, kError = 3, kSceneEnd = 4 };

struct Event {
  int64_t request_id = 0;
  EventType type = EventType::kNone;
  int32_t finish_reason = 0;
  int32_t status_code = 0;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  float server_ttft_ms = 0.f;
  float server_total_ms = 0.f;
  std::string text;
  std::string attributes;
  std::string session_id;       // a scene event: the scene's id
  std::string interaction_id;
  // Scene events only ("" / 0 otherwise).
  std::string scene_id;
  std::string speaker_id;
  std::string speaker;
  int32_t line = 0;             // delta / done: the line's index in its request; end: lines done
  bool final = false;           // the request's last event (npc_pending counts it down)
};

struct ClientOptions {
  std::string target;
  std::string api_key;
  std::string root_certs_pem;
  bool use_tls = false;
  int default_deadline_ms = 10000;
  int say_deadline_ms = 0;
  int max_reconnect_backoff_ms = 5000;
  bool wait_for_ready = false;
};

struct SayOptions {
  google::protobuf::Map<std::string, int32_t> attributes;
  int32_t max_new_tokens = 0;
  float temperature = 0.f;
  float top_p = 0.f;
  int32_t top_k = 0;
  uint64_t seed = 0;
};

class Client;
class CancelOp;

// ThreadSanitizer cannot see the synchronisation inside an uninstrumented grpc (Debian's, or
// any prebuilt one): an operation started on an engine thread and completed on the CQ thread
// would look like a race. Every tag handed to grpc is released before and acquired after the
// completion queue returns it, which is exactly the ordering grpc guarantees.
#if defined(__SANITIZE_THREAD__)
#define STEERNPC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STEERNPC_TSAN 1
#endif
#endif
#ifdef STEERNPC_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void TagHandOff(void* tag) { __tsan_release(tag); }
inline void TagReceived(void* tag) { __tsan_acquire(tag); }
#else
inline void TagHandOff(void*) {}
inline void TagReceived(void*) {}
#endif

// Something waiting on the completion queue. The tag passed to grpc is an Op*.
struct Op {
  virtual ~Op() = default;
  virtual void Proceed(bool ok) = 0;
};

// One server-streaming call whose events go to the client's queue: the part Cancel and the
// client's bookkeeping need (SayCall and SceneCall fill in the stream).
class StreamCall {
 public:
  StreamCall(Client* client, int64_t id, std::string interaction_id)
      : client_(client), id_(id), interaction_id_(std::move(interaction_id)) {}
  virtual ~StreamCall() = default;

  // Local cancellation (the server did not stop it, or the client is going away).
  void TryCancel() { context_.TryCancel(); }
  bool MarkCancelRequested() { return !cancel_requested_.exchange(true); }
  bool cancel_requested() const { return cancel_requested_.load(); }
  bool finished() const { return finished_.load(); }
  bool final_queued() const { return final_queued_.load(); }
  int64_t id() const { return id_; }
  const std::string& interaction_id() const { return interaction_id_; }
  std::chrono::steady_clock::time_point cancel_deadline;  // guarded by Client::mu_

 protected:
  template <typename C>
  struct Tag : Op {
    C* call;
    void (C::*fn)(bool);
    Tag(C* c, void (C::*f)(bool)) : call(c), fn(f) {}
    void Proceed(bool ok) override { (call->*fn)(ok); }
  };

  Client* client_;
  const int64_t id_;
  const std::string interaction_id_;
  grpc::ClientContext context_;
  grpc::Status status_;
  std::atomic<bool> final_queued_{false};  // a final event was queued
  std::atomic<bool> cancel_requested_{false};
  std::atomic<bool> finished_{false};
};

// One streamed reply.
class SayCall : public StreamCall {
 public:
  SayCall(Client* client, int64_t id, std::string session_id, std::string interaction_id)
      : StreamCall(client, id, std::move(interaction_id)), session_id_(std::move(session_id)) {}

  void Start(const v1::SayRequest& request);

 private:
  void OnStarted(bool ok);
  void OnRead(bool ok);
  void OnFinished(bool ok);
  Event MakeEvent(EventType type) const;

  const std::string session_id_;
  std::unique_ptr<grpc::ClientAsyncReader<v1::SayEvent>> reader_;
  v1::SayEvent incoming_;
  std::string text_;            // deltas so far
  Tag<SayCall> started_tag_{this, &SayCall::OnStarted};
  Tag<SayCall> read_tag_{this, &SayCall::OnRead};
  Tag<SayCall> finish_tag_{this, &SayCall::OnFinished};
};

// One SceneSay or SceneContinue: several members' lines (deltas, then one done per line), then
// one scene-end event (or an error).
class SceneCall : public StreamCall {
 public:
  SceneCall(Client* client, int64_t id, std::string scene_id, std::string interaction_id)
      : StreamCall(client, id, std::move(interaction_id)), scene_id_(std::move(scene_id)) {}

  void StartSay(const v1::SceneSayRequest& request);
  void StartContinue(const v1::SceneContinueRequest& request);

 private:
  void OnStarted(bool ok);
  void OnRead(bool ok);
  void OnFinished(bool ok);
  Event MakeEvent(EventType type) const;

  const std::string scene_id_;
  std::unique_ptr<grpc::ClientAsyncReader<v1::SceneEvent>> reader_;
  v1::SceneEvent incoming_;
  // The line being streamed (CQ thread only).
  bool line_open_ = false;
  std::string speaker_id_, speaker_, text_;
  int32_t lines_ = 0;           // lines done
  int32_t last_finish_ = 0;     // finish reason of the last line done
  Tag<SceneCall> started_tag_{this, &SceneCall::OnStarted};
  Tag<SceneCall> read_tag_{this, &SceneCall::OnRead};
  Tag<SceneCall> finish_tag_{this, &SceneCall::OnFinished};
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();

  // Blocking unary calls: return a grpc::Status; the C layer maps it.
  grpc::Status ListCharacters(v1::ListCharactersResponse* out);
  grpc::Status CreateSession(const v1::CreateSessionRequest& req, v1::Session* out);
  grpc::Status GetSession(const std::string& session_id, v1::Session* out);
  grpc::Status DeleteSession(const std::string& session_id);
  grpc::Status Steer(const v1::SteerRequest& req, v1::Session* out);
  grpc::Status ExportSession(const std::string& session_id, v1::SessionSnapshot* out);
  grpc::Status ImportSession(const std::string& data, v1::Session* out);
  grpc::Status CreateScene(const v1::CreateSceneRequest& req, v1::Scene* out);
  grpc::Status GetScene(const v1::GetSceneRequest& req, v1::Scene* out);
  grpc::Status DeleteScene(const std::string& scene_id);
  grpc::Status JoinScene(const v1::JoinSceneRequest& req, v1::Scene* out);
  grpc::Status LeaveScene(const v1::LeaveSceneRequest& req, v1::Scene* out);
  grpc::Status ExportScene(const std::string& scene_id, v1::SceneSnapshot* out);
  grpc::Status ImportScene(const std::string& data, v1::Scene* out);

  // Non-blocking.
  int64_t Say(const std::string& session_id, const std::string& text, const SayOptions& options);
  // The request's interaction id is set here (the client's own, as for Say).
  int64_t SceneSay(v1::SceneSayRequest request);
  int64_t SceneContinue(v1::SceneContinueRequest request);
  bool Cancel(int64_t request_id);
  bool Poll(Event* out, int timeout_ms);
  int Pending();
  int State(bool try_to_connect);
  bool WaitConnected(int timeout_ms);

  // Run `task` on the client's dispatch thread, which starts every async grpc operation:
  // creating a call and sending its first batch costs ~50-100 us, which the game thread should
  // not pay. (A grpc::Alarm could wake the CQ thread instead, but its EventEngine hop adds
  // ~0.5 ms to the time to first token; a condition variable adds ~0.05 ms.)
  void Post(std::function<void()> task);

  // Used by the stream calls (CQ thread).
  void Push(Event event);
  void CallFinished(int64_t id);
  void PrepareContext(grpc::ClientContext* ctx, int deadline_ms) const;
  v1::NpcService::Stub* stub() { return stub_.get(); }
  grpc::CompletionQueue* cq() { return &cq_; }
  const ClientOptions& options() const { return options_; }

 private:
  friend class CancelOp;
  template <typename Request, typename Response>
  grpc::Status Unary(grpc::Status (v1::NpcService::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                     const Request& req, Response* out);
  void Loop();
  void CheckCancelDeadlines();
  void CancelOpDone(Op* op);
  void Dispatch();
  int64_t Track(std::shared_ptr<StreamCall> call);  // registers a call before it starts

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::NpcService::Stub> stub_;
  grpc::CompletionQueue cq_;
  std::thread thread_;
  std::string id_prefix_;
  std::atomic<int64_t> next_id_{1};
  std::atomic<bool> shutting_down_{false};

  std::mutex mu_;
  std::condition_variable events_cv_;   // an event was queued
  std::condition_variable drained_cv_;  // a call or cancel op finished (destroy waits)
  std::deque<Event> events_;
  std::unordered_map<int64_t, std::shared_ptr<StreamCall>> calls_;
  std::unordered_set<CancelOp*> cancel_ops_;
  int pending_ = 0;  // calls whose final event is not queued yet
  std::vector<std::function<void()>> tasks_;  // for the dispatch thread
  bool running_task_ = false;                 // the dispatch thread is running tasks
  bool stop_dispatch_ = false;
  std::condition_variable tasks_cv_;
  std::thread dispatch_thread_;
};

}  // namespace steernpc
