// Latency bench of the native path: time from npc_say to the first delta event, gaps between
// deltas, and the game-thread cost of npc_poll per event. Driven by benchmarks/bridge_bench.py,
// which interleaves it request by request with the Python gRPC client on the same server.
//
//   steernpc_bench --target HOST:PORT [--api-key KEY] [--character brom] [--max-new-tokens 32]
//                  [--poll wait|spin] [--n 30 | --stdin]
//
// --stdin: run one request per input line ("run"), so a driver can interleave; otherwise run
// --n requests. One JSON object per request on stdout.
#include <steernpc/steernpc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Args {
  std::string target, api_key, character = "brom", poll = "wait";
  int max_new_tokens = 32, n = 30;
  bool from_stdin = false;
};

int RunOne(npc_client* client, const Args& args, int index) {
  npc_result* created = npc_session_create(client, args.character.c_str());
  const std::string session_id = npc_result_text(created);
  const int32_t status = npc_result_status(created);
  npc_result_free(created);
  if (status != NPC_OK) {
    std::fprintf(stderr, "session create failed: %s\n", session_id.c_str());
    return 1;
  }
  const char* session = session_id.c_str();
  npc_say_options o{};
  o.max_new_tokens = args.max_new_tokens;
  o.temperature = 0.7f;
  o.seed = 1234 + index;
  const bool spin = args.poll == "spin";
  npc_event e;
  std::vector<double> gaps;
  std::vector<double> poll_us;  // game-thread cost of an npc_poll that returned an event
  double first_ms = -1, done_ms = -1;
  int deltas = 0;
  float server_ttft = 0;
  int completion_tokens = 0;
  std::string finish = "none";

  auto t0 = Clock::now();
  npc_request_id id = npc_say_ex(client, session, "Good day! What news from the mountain?", &o);
  auto t_said = Clock::now();
  if (id <= 0) {
    std::fprintf(stderr, "npc_say failed: %s\n", npc_last_error());
    return 1;
  }
  auto last = t0;
  for (;;) {
    int got;
    Clock::time_point before, after;
    if (spin) {
      before = Clock::now();
      got = npc_poll(client, &e);
      after = Clock::now();
      if (got == 0) {
        std::this_thread::yield();
        continue;
      }
    } else {
      got = npc_poll_wait(client, &e, 30000);
      before = after = Clock::now();
      if (got == 0) {
        std::fprintf(stderr, "timeout waiting for events\n");
        return 1;
      }
    }
    if (spin) poll_us.push_back(std::chrono::duration<double, std::micro>(after - before).count());
    auto now = after;
    if (e.type == NPC_EVENT_DELTA) {
      if (deltas == 0) first_ms = Ms(t0, now);
      else gaps.push_back(Ms(last, now));
      last = now;
      ++deltas;
      continue;
    }
    done_ms = Ms(t0, now);
    if (e.type == NPC_EVENT_DONE) {
      server_ttft = e.server_ttft_ms;
      completion_tokens = e.completion_tokens;
      finish = std::to_string(e.finish_reason);
    } else {
      std::fprintf(stderr, "error event %d: %s\n", e.status_code, e.text);
      return 1;
    }
    break;
  }
  npc_session_delete(client, session);
  std::string gap_list, poll_list;
  for (double g : gaps) gap_list += (gap_list.empty() ? "" : ",") + std::to_string(g);
  for (double p : poll_us) poll_list += (poll_list.empty() ? "" : ",") + std::to_string(p);
  std::printf(
      "{\"path\":\"native\",\"ttft_ms\":%.4f,\"total_ms\":%.4f,\"say_call_us\":%.2f,\"deltas\":%d,"
      "\"server_ttft_ms\":%.4f,\"completion_tokens\":%d,\"finish\":%s,\"gaps_ms\":[%s],\"poll_us\":[%s]}\n",
      first_ms, done_ms, std::chrono::duration<double, std::micro>(t_said - t0).count(), deltas,
      server_ttft, completion_tokens, finish.c_str(), gap_list.c_str(), poll_list.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--target") args.target = next();
    else if (a == "--api-key") args.api_key = next();
    else if (a == "--character") args.character = next();
    else if (a == "--max-new-tokens") args.max_new_tokens = std::atoi(next().c_str());
    else if (a == "--poll") args.poll = next();
    else if (a == "--n") args.n = std::atoi(next().c_str());
    else if (a == "--stdin") args.from_stdin = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (args.target.empty()) {
    std::fprintf(stderr, "--target is required\n");
    return 2;
  }
  npc_client_options o{};
  o.target = args.target.c_str();
  o.api_key = args.api_key.c_str();
  npc_client* client = npc_client_create(&o);
  if (!client) {
    std::fprintf(stderr, "client: %s\n", npc_last_error());
    return 1;
  }
  if (npc_client_wait_connected(client, 30000) != 0) {
    std::fprintf(stderr, "not connected: %s\n", npc_last_error());
    return 1;
  }
  std::printf("{\"ready\":true}\n");
  std::fflush(stdout);
  int rc = 0, index = 0;
  if (args.from_stdin) {
    std::string line;
    while (rc == 0 && std::getline(std::cin, line)) {
      if (line == "quit") break;
      rc = RunOne(client, args, index++);
    }
  } else {
    for (int i = 0; i < args.n && rc == 0; ++i) rc = RunOne(client, args, index++);
  }
  npc_client_destroy(client);
  return rc;
}
