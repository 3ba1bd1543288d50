#include "client.h"

#include <cstdio>
#include <random>
#include <vector>

#include "util.h"

namespace steernpc {

namespace {

using Clock = std::chrono::steady_clock;

std::chrono::system_clock::time_point DeadlineIn(int ms) {
  return std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
}

std::string RandomPrefix() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
  char buf[24];
  std::snprintf(buf, sizeof buf, "npc-%012llx-",
                static_cast<unsigned long long>(gen() & 0xffffffffffffULL));
  return buf;
}

}  // namespace

// Describe a failed status so that a game developer knows what happened.
std::string DescribeStatus(const grpc::Status& status, const std::string& target) {
  std::string msg = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return "server unavailable at " + target + " (the client reconnects by itself): " + msg;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "deadline exceeded talking to " + target + ": " + msg;
    case grpc::StatusCode::UNAUTHENTICATED:
      return "unauthenticated (check the API key): " + msg;
    default:
      return msg.empty() ? "gRPC status " + std::to_string(status.error_code()) : msg;
  }
}

// ------------------------------------------------------------------------------------------
// Cancel: an async unary Cancel RPC on the client's completion queue.

class CancelOp : public Op {
 public:
  CancelOp(Client* client, std::shared_ptr<SayCall> call) : client_(client), call_(std::move(call)) {}

  void Start() {
    client_->PrepareContext(&context_, client_->options().default_deadline_ms);
    v1::CancelRequest request;
    request.set_interaction_id(call_->interaction_id());
    rpc_ = client_->stub()->PrepareAsyncCancel(&context_, request, client_->cq());
    rpc_->StartCall();
    TagHandOff(this);
    rpc_->Finish(&response_, &status_, this);
  }

  void TryCancel() { context_.TryCancel(); }

  void Proceed(bool ok) override {
    // The server did not (or could not) stop it: stop the stream from this side; the reply then
    // ends with CANCELLED, which SayCall reports as a done event with finish reason cancelled.
    if (!ok || !status_.ok() || !response_.cancelled()) {
      if (!call_->finished()) call_->TryCancel();
    }
    client_->CancelOpDone(this);  // deletes this
  }

 private:
  Client* client_;
  std::shared_ptr<SayCall> call_;
  grpc::ClientContext context_;
  v1::CancelResponse response_;
  grpc::Status status_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::CancelResponse>> rpc_;
};

// ------------------------------------------------------------------------------------------
// SayCall: StartCall -> Read* -> Finish, every step completing on the client's CQ thread.

void SayCall::Start(const v1::SayRequest& request) {
  client_->PrepareContext(&context_, client_->options().say_deadline_ms);
  reader_ = client_->stub()->PrepareAsyncSay(&context_, request, client_->cq());
  TagHandOff(&started_tag_);
  reader_->StartCall(&started_tag_);
}

Event SayCall::MakeEvent(EventType type) const {
  Event e;
  e.request_id = id_;
  e.type = type;
  e.session_id = session_id_;
  e.interaction_id = interaction_id_;
  return e;
}

void SayCall::OnStarted(bool ok) {
  if (ok) {
    reader_->Read(&incoming_, &read_tag_);
  } else {
    reader_->Finish(&status_, &finish_tag_);
  }
}

void SayCall::OnRead(bool ok) {
  if (!ok) {
    reader_->Finish(&status_, &finish_tag_);
    return;
  }
  if (!final_queued_) {
    switch (incoming_.event_case()) {
      case v1::SayEvent::kDelta: {
        Event e = MakeEvent(EventType::kDelta);
        e.text = incoming_.delta().text();
        text_ += e.text;
        client_->Push(std::move(e));
        break;
      }
      case v1::SayEvent::kDone: {
        const v1::ReplyDone& done = incoming_.done();
        Event e = MakeEvent(EventType::kDone);
        e.text = done.text().empty() ? text_ : done.text();
        e.finish_reason = static_cast<int32_t>(done.finish_reason());
        e.attributes = FormatAttributes(done.attributes());
        e.prompt_tokens = done.usage().prompt_tokens();
        e.completion_tokens = done.usage().completion_tokens();
        e.server_ttft_ms = done.usage().time_to_first_token_ms();
        e.server_total_ms = done.usage().total_ms();
        final_queued_ = true;
        client_->Push(std::move(e));
        break;
      }
      case v1::SayEvent::kError: {
        Event e = MakeEvent(EventType::kError);
        e.status_code = incoming_.error().code();
        e.text = incoming_.error().message();
        final_queued_ = true;
        client_->Push(std::move(e));
        break;
      }
      default:
        break;  // session updates (Converse only) are not reply events
    }
  }
  incoming_.Clear();
  reader_->Read(&incoming_, &read_tag_);
}

void SayCall::OnFinished(bool /*ok*/) {
  finished_ = true;
  if (!final_queued_) {
    final_queued_ = true;
    if (status_.ok()) {
      Event e = MakeEvent(EventType::kError);
      e.status_code = static_cast<int32_t>(grpc::StatusCode::INTERNAL);
      e.text = "the reply stream ended without a done event";
      client_->Push(std::move(e));
    } else if (status_.error_code() == grpc::StatusCode::CANCELLED && cancel_requested_) {
      Event e = MakeEvent(EventType::kDone);
      e.text = text_;
      e.finish_reason = static_cast<int32_t>(v1::FINISH_REASON_CANCELLED);
      client_->Push(std::move(e));
    } else {
      Event e = MakeEvent(EventType::kError);
      e.status_code = static_cast<int32_t>(status_.error_code());
      e.text = DescribeStatus(status_, client_->options().target);
      client_->Push(std::move(e));
    }
  }
  client_->CallFinished(id_);  // may destroy this; nothing may follow
}

// ------------------------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options) : options_(std::move(options)), id_prefix_(RandomPrefix()) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a server restart: 250 ms, x1.6 per attempt, capped (default 5 s)
  // instead of gRPC's 1 s .. 120 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, options_.max_reconnect_backoff_ms);
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);  // session snapshots
  args.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, "steernpc-native/0.1.0");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options_.use_tls || !options_.root_certs_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.root_certs_pem;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  channel_ = grpc::CreateCustomChannel(options_.target, creds, args);
  stub_ = v1::NpcService::NewStub(channel_);
  thread_ = std::thread([this] { Loop(); });
  dispatch_thread_ = std::thread([this] { Dispatch(); });
}

Client::~Client() {
  shutting_down_ = true;
  std::vector<std::shared_ptr<SayCall>> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
      for (auto& kv : calls_) calls.push_back(kv.second);
    // A cancel op is deleted only after it left cancel_ops_ under mu_: safe to touch here.
    for (CancelOp* op : cancel_ops_) op->TryCancel();
  }
  for (auto& call : calls) call->TryCancel();
  calls.clear();
  {
    // Every started operation must complete before the queue may shut down.
    std::unique_lock<std::mutex> lock(mu_);
    drained_cv_.wait(lock, [this] {
      return calls_.empty() && cancel_ops_.empty() && tasks_.empty() && !running_task_;
    });
    stop_dispatch_ = true;
  }
  tasks_cv_.notify_all();
  if (dispatch_thread_.joinable()) dispatch_thread_.join();
  cq_.Shutdown();
  if (thread_.joinable()) thread_.join();
}

void Client::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  tasks_cv_.notify_one();
}

void Client::Dispatch() {
  std::vector<std::function<void()>> tasks;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    tasks_cv_.wait(lock, [this] { return stop_dispatch_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stop_dispatch_, and nothing left to start
    tasks.swap(tasks_);
    running_task_ = true;
    lock.unlock();
    for (auto& task : tasks) task();
    tasks.clear();
    lock.lock();
    running_task_ = false;
    drained_cv_.notify_all();
  }
}

void Client::Loop() {
  void* tag = nullptr;
  bool ok = false;
  for (;;) {
    // Wake at least every 100 ms to enforce cancel deadlines.
    auto status = cq_.AsyncNext(&tag, &ok, DeadlineIn(100));
    if (status == grpc::CompletionQueue::SHUTDOWN) break;
    if (status == grpc::CompletionQueue::GOT_EVENT) {
      TagReceived(tag);
      static_cast<Op*>(tag)->Proceed(ok);
    }
    CheckCancelDeadlines();
  }
}

void Client::CheckCancelDeadlines() {
  std::vector<std::shared_ptr<SayCall>> overdue;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (calls_.empty()) return;
    auto now = Clock::now();
    for (auto& kv : calls_) {
      SayCall& call = *kv.second;
      if (call.cancel_requested() && !call.finished() && now >= call.cancel_deadline) {
        call.cancel_deadline = now + std::chrono::hours(24);
        overdue.push_back(kv.second);
      }
    }
  }
  for (auto& call : overdue) call->TryCancel();
}

void Client::PrepareContext(grpc::ClientContext* ctx, int deadline_ms) const {
  if (deadline_ms > 0) ctx->set_deadline(DeadlineIn(deadline_ms));
  ctx->set_wait_for_ready(options_.wait_for_ready);
  if (!options_.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.api_key);
}

void Client::Push(Event event) {
  bool final = event.type == EventType::kDone || event.type == EventType::kError;
  if (shutting_down_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final) --pending_;
    events_.push_back(std::move(event));
  }
  events_cv_.notify_all();
}

void Client::CallFinished(int64_t id) {
  std::shared_ptr<SayCall> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(id);
    if (it != calls_.end()) {
      call = std::move(it->second);
      calls_.erase(it);
    }
  }
  drained_cv_.notify_all();
  // `call` may be the last reference: the SayCall is destroyed here, outside the lock.
}

void Client::CancelOpDone(Op* op) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_ops_.erase(static_cast<CancelOp*>(op));
  }
  delete op;
  drained_cv_.notify_all();
}

int64_t Client::Say(const std::string& session_id, const std::string& text,
                    const SayOptions& options) {
  int64_t id = next_id_.fetch_add(1);
  v1::SayRequest request;
  request.set_session_id(session_id);
  request.set_text(text);
  *request.mutable_attributes() = options.attributes;
  request.set_interaction_id(id_prefix_ + std::to_string(id));
  if (options.max_new_tokens || options.temperature != 0.f || options.top_p != 0.f ||
      options.top_k || options.seed) {
    auto* gen = request.mutable_options();
    gen->set_max_new_tokens(options.max_new_tokens);
    gen->set_temperature(options.temperature);
    gen->set_top_p(options.top_p);
    gen->set_top_k(options.top_k);
    gen->set_seed(options.seed);
  }
  auto call = std::make_shared<SayCall>(this, id, session_id, request.interaction_id());
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls_[id] = call;
    ++pending_;
  }
  // Started on the dispatch thread: npc_say costs the game thread a few microseconds.
  Post([call, request = std::move(request)]() { call->Start(request); });
  return id;
}

bool Client::Cancel(int64_t request_id) {
  std::shared_ptr<SayCall> call;
  CancelOp* op = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(request_id);
    if (it == calls_.end() || it->second->final_queued()) return false;
    call = it->second;
    if (!call->MarkCancelRequested()) return true;  // already asked
    // If the server has not ended the stream 3 s after the Cancel RPC, cut it locally.
    call->cancel_deadline = Clock::now() + std::chrono::milliseconds(3000);
    op = new CancelOp(this, call);
    cancel_ops_.insert(op);
  }
  Post([op]() { op->Start(); });
  return true;
}

bool Client::Poll(Event* out, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (events_.empty() && timeout_ms > 0) {
    events_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [this] { return !events_.empty(); });
  }
  if (events_.empty()) return false;
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

int Client::Pending() {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

int Client::State(bool try_to_connect) {
  return static_cast<int>(channel_->GetState(try_to_connect));
}

bool Client::WaitConnected(int timeout_ms) {
  auto deadline = DeadlineIn(timeout_ms);
  for (;;) {
    grpc_connectivity_state state = channel_->GetState(true);
    if (state == GRPC_CHANNEL_READY) return true;
    if (!channel_->WaitForStateChange(state, deadline)) return false;
  }
}

// ------------------------------------------------------------------------------------------
// Blocking unary calls.

grpc::Status Client::ListCharacters(v1::ListCharactersResponse* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  return stub_->ListCharacters(&ctx, v1::ListCharactersRequest(), out);
}

grpc::Status Client::CreateSession(const v1::CreateSessionRequest& req, v1::Session* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  return stub_->CreateSession(&ctx, req, out);
}

grpc::Status Client::GetSession(const std::string& session_id, v1::Session* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  v1::GetSessionRequest req;
  req.set_session_id(session_id);
  return stub_->GetSession(&ctx, req, out);
}

grpc::Status Client::DeleteSession(const std::string& session_id) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  v1::DeleteSessionRequest req;
  req.set_session_id(session_id);
  v1::DeleteSessionResponse resp;
  return stub_->DeleteSession(&ctx, req, &resp);
}

grpc::Status Client::Steer(const v1::SteerRequest& req, v1::Session* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  return stub_->Steer(&ctx, req, out);
}

grpc::Status Client::ExportSession(const std::string& session_id, v1::SessionSnapshot* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  v1::ExportSessionRequest req;
  req.set_session_id(session_id);
  return stub_->ExportSession(&ctx, req, out);
}

grpc::Status Client::ImportSession(const std::string& data, v1::Session* out) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.default_deadline_ms);
  v1::ImportSessionRequest req;
  req.set_data(data);
  return stub_->ImportSession(&ctx, req, out);
}

}  // namespace steernpc
