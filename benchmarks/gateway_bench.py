"""Gateway overhead: the HTTP/JSON + SSE gateway against gRPC, on the same `steernpc serve`
(one process, one model, one servicer: `--studio-port`).

Per request, client side, the two paths alternate (ABBA order, so drift hits both alike):
  - unary: GetSession over gRPC (Python stub) vs GET /api/v1/sessions/{id} over HTTP/1.1
    (stdlib http.client, a kept-alive connection);
  - say: a fresh session each time, the same line, seed and settings (ignore_eos, a fixed
    number of tokens): time to first token, total time, and both minus the server's own
    usage.time_to_first_token_ms / total_ms, i.e. what transport, front end and client add.
Medians (and p90) per path and the HTTP/gRPC ratio of the medians.

    python benchmarks/gateway_bench.py                       # tiny random model, 40 requests each
    python benchmarks/gateway_bench.py --model smollm2 --n 20 --max-new-tokens 16

Prints a table and writes benchmarks/results/gateway_cpu.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from steernpc.server.process import ServerProcess, free_port, grpc_health, http_probe

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gateway_cpu.md"
PROMPT = "Good day! What news from the mountain?"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class HttpPath:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        return self.conn.getresponse()

    def get_session(self, session_id: str) -> None:
        resp = self.request("GET", f"/api/v1/sessions/{session_id}")
        assert resp.status == 200, resp.read()
        resp.read()

    def create(self, character: str) -> str:
        resp = self.request("POST", "/api/v1/sessions", {"character_id": character})
        body = json.loads(resp.read())
        assert resp.status == 200, body
        return body["session_id"]

    def say(self, session_id: str, tokens: int, seed: int) -> tuple[float, float, dict]:
        start = time.perf_counter()
        resp = self.request("POST", f"/api/v1/sessions/{session_id}/say",
                            {"text": PROMPT, "options": {"max_new_tokens": tokens, "ignore_eos": True, "seed": seed}})  # fmt: skip
        assert resp.status == 200, resp.read()
        first = None
        kind, done = None, None
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                if kind == "delta" and first is None:
                    first = time.perf_counter()
                elif kind == "done":
                    done = json.loads(line[5:])
        total = time.perf_counter() - start
        resp.read()
        return (first - start) * 1000, total * 1000, done["usage"]


class GrpcPath:
    def __init__(self, target: str):
        from steernpc.client import NpcClient

        self.client = NpcClient(target, timeout=60)

    def get_session(self, session_id: str) -> None:
        self.client.get_session(session_id)

    def create(self, character: str) -> str:
        return self.client.create_session(character).session_id

    def say(self, session_id: str, tokens: int, seed: int) -> tuple[float, float, dict]:
        start = time.perf_counter()
        first = None
        usage = None
        for event in self.client.say_events(session_id, PROMPT, max_new_tokens=tokens, ignore_eos=True, seed=seed):
            if event.WhichOneof("event") == "delta" and first is None:
                first = time.perf_counter()
            elif event.WhichOneof("event") == "done":
                u = event.done.usage
                usage = {"time_to_first_token_ms": u.time_to_first_token_ms, "total_ms": u.total_ms}
        total = time.perf_counter() - start
        return (first - start) * 1000, total * 1000, usage


def run(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    model = args.model
    if model is None:
        from steernpc import models

        model = str(models.random_model(home / "tiny", layers=2, hidden=64, seed=0))
    port, studio = free_port(), free_port()
    env = dict(os.environ, STEERNPC_HOME=str(home), OMP_NUM_THREADS="1", STEERNPC_ADAPTER="none", HF_HUB_OFFLINE="1")
    server = ServerProcess([sys.executable, "-m", "steernpc.cli", "serve", "--model", model, "--adapter", "none", "--store", "memory",
                            "--port", str(port), "--studio-port", str(studio)], grpc_health(f"127.0.0.1:{port}"),
                           log=home / "server.log", env=env)  # fmt: skip
    server.start(timeout=300)
    try:
        http_probe(f"http://127.0.0.1:{studio}/healthz")()
        paths = {"grpc": GrpcPath(f"127.0.0.1:{port}"), "http": HttpPath(studio)}
        rows = {name: {"unary": [], "ttft": [], "total": [], "ttft_over": [], "total_over": []} for name in paths}
        shared = {name: p.create("brom") for name, p in paths.items()}
        for name, p in paths.items():  # warm-up: connections, the character's cached prefix
            for _ in range(3):
                p.get_session(shared[name])
            p.say(p.create("brom"), args.max_new_tokens, 1)
        order = ["grpc", "http", "http", "grpc"]
        for i in range(args.n):
            for name in order if i % 2 == 0 else order[::-1]:
                p = paths[name]
                t = time.perf_counter()
                p.get_session(shared[name])
                rows[name]["unary"].append((time.perf_counter() - t) * 1000)
            for name in order[:2] if i % 2 == 0 else order[2:]:
                p = paths[name]
                sid = p.create("brom")
                ttft, total, usage = p.say(sid, args.max_new_tokens, 100 + i)
                rows[name]["ttft"].append(ttft)
                rows[name]["total"].append(total)
                rows[name]["ttft_over"].append(ttft - usage["time_to_first_token_ms"])
                rows[name]["total_over"].append(total - usage["total_ms"])
        return {"rows": rows, "model": model if args.model else "tiny random Llama (2 layers, 64 wide)"}
    finally:
        server.stop()


def table(result: dict, args) -> str:
    rows = result["rows"]
    metrics = [("unary", "GetSession round trip"), ("ttft", "say: time to first token"), ("ttft_over", "say: TTFT minus the server's own"),
               ("total", f"say: {args.max_new_tokens} tokens, total"), ("total_over", "say: total minus the server's own")]  # fmt: skip
    lines = ["| measure (ms) | gRPC median | HTTP/SSE median | HTTP - gRPC | ratio | gRPC p90 | HTTP p90 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in metrics:
        g, h = percentile(rows["grpc"][key], 0.5), percentile(rows["http"][key], 0.5)
        lines.append(f"| {label} | {g:.2f} | {h:.2f} | {h - g:+.2f} | {h / g:.2f}x | {percentile(rows['grpc'][key], 0.9):.2f} | "
                     f"{percentile(rows['http'][key], 0.9):.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: a tiny random Llama (measures the front ends, not the model)")
    parser.add_argument("--n", type=int, default=40, help="requests per path and measure")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    started = time.time()
    result = run(args)
    text = table(result, args)
    print(text)
    load = os.getloadavg()
    md = f"""# Gateway overhead: HTTP/JSON + SSE vs gRPC on the same server

`python benchmarks/gateway_bench.py --n {args.n} --max-new-tokens {args.max_new_tokens}` ({datetime.now(timezone.utc):%Y-%m-%d}),
{platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} at the end (other jobs shared the machine), {time.time() - started:.0f} s.
One `steernpc serve --studio-port` process: model {result['model']}, torch backend, memory store. Clients on the same
machine over loopback: the Python gRPC client vs stdlib `http.client` (one kept-alive HTTP/1.1 connection, SSE read
line by line). Paths alternate in ABBA order; each say is a fresh session with the same line and seed, `ignore_eos`.
"Minus the server's own" subtracts the reply's `usage` timings, leaving transport, front end and client.

{text}
"""
    Path(args.out).write_text(md)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
