"""Bridge latency: the native client core (libsteernpc, as an engine uses it) against the
Python gRPC client, on the same `steernpc serve`.

For each request (a fresh session each time, the same prompt and settings on both paths) it
measures, client side:
  - time to first token (TTFT): from the call (npc_say / stub.Say) to the first delta in hand;
  - TTFT overhead: client TTFT minus the server's own TTFT (usage.time_to_first_token_ms), i.e.
    what transport, servicer and client add;
  - gaps between consecutive deltas;
  - native only: the game-thread cost of one npc_poll that returns an event (a spin-polled pass).
Requests alternate between the two paths (ABBA order) so that drift hits both alike.

    python benchmarks/bridge_bench.py                      # tiny random model, 30 requests each
    python benchmarks/bridge_bench.py --model smollm2 --n 30 --max-new-tokens 32
    python benchmarks/bridge_bench.py --target 127.0.0.1:50051 --api-key KEY   # a running server

Prints a table and writes benchmarks/results/bridge.md. Target: the native path adds < 1 ms to TTFT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from steernpc.server.process import ServerProcess, StartFailed, free_port, grpc_health

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "engine_bridges" / "native"
RESULTS = REPO / "benchmarks" / "results" / "bridge.md"
PROMPT = "Good day! What news from the mountain?"


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(values):
    return percentile(values, 0.5)


def p90(values):
    return percentile(values, 0.9)


# ---------------------------------------------------------------------------------------------
# native build and server


def build_native(build: Path) -> Path:
    for tool in ("cmake", "protoc", "grpc_cpp_plugin"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (Debian: apt-get install cmake g++ libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc)")
    configure = ["cmake", "-S", str(NATIVE), "-B", str(build), "-DSTEERNPC_SANITIZE="]
    if not (build / "CMakeCache.txt").exists():
        configure.append("-DCMAKE_BUILD_TYPE=Release")
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", "2", "--target", "steernpc_bench"], check=True, stdout=subprocess.DEVNULL)
    return build / "steernpc_bench"


def start_server(model: str, workdir: Path, api_key: str, port: int) -> ServerProcess:
    cmd = [sys.executable, "-m", "steernpc.cli", "serve", "--personas", str(REPO / "samples" / "personas"),
           "--model", model, "--adapter", "none", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
           "--store", "memory", "--api-key", api_key]  # fmt: skip
    server = ServerProcess(cmd, grpc_health(f"127.0.0.1:{port}"), name="steernpc serve", log=workdir / "server.log",
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=REPO, new_session=True)  # fmt: skip
    return started(server, timeout=300)


def started(server: ServerProcess, timeout: float) -> ServerProcess:
    """server.start(), or exit with what went wrong."""
    try:
        return server.start(timeout, interval=0.3)
    except StartFailed as exc:
        sys.exit(str(exc))


# ---------------------------------------------------------------------------------------------
# the two paths


class PythonPath:
    def __init__(self, target: str, api_key: str, character: str, max_new_tokens: int):
        import grpc

        from steernpc.wire import pb, pb_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb_grpc.NpcServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.character = character
        self.max_new_tokens = max_new_tokens

    def run(self, index: int) -> dict:
        pb = self.pb
        session = self.stub.CreateSession(pb.CreateSessionRequest(character_id=self.character), metadata=self.metadata).session_id
        request = pb.SayRequest(session_id=session, text=PROMPT,
                                options=pb.GenerationOptions(max_new_tokens=self.max_new_tokens, temperature=0.7, seed=1234 + index))  # fmt: skip
        gaps, first, last, deltas, done = [], None, None, 0, None
        t0 = time.perf_counter()
        for event in self.stub.Say(request, metadata=self.metadata):
            now = time.perf_counter()
            kind = event.WhichOneof("event")
            if kind == "delta":
                if first is None:
                    first = (now - t0) * 1000
                else:
                    gaps.append((now - last) * 1000)
                last = now
                deltas += 1
            elif kind == "done":
                done = event.done
                total = (now - t0) * 1000
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session), metadata=self.metadata)
        return {"path": "python", "ttft_ms": first, "total_ms": total, "deltas": deltas, "gaps_ms": gaps,
                "server_ttft_ms": done.usage.time_to_first_token_ms, "completion_tokens": done.usage.completion_tokens}  # fmt: skip

    def close(self):
        self.channel.close()


class NativePath:
    def __init__(self, exe: Path, target: str, api_key: str, character: str, max_new_tokens: int, poll: str = "wait"):
        self.proc = subprocess.Popen([str(exe), "--target", target, "--api-key", api_key, "--character", character,
                                      "--max-new-tokens", str(max_new_tokens), "--poll", poll, "--stdin"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            sys.exit("steernpc_bench did not start")

    def run(self, index: int) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"steernpc_bench exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict:
    ttft = [r["ttft_ms"] for r in rows]
    overhead = [r["ttft_ms"] - r["server_ttft_ms"] for r in rows]
    gaps = [g for r in rows for g in r["gaps_ms"]]
    return {
        "n": len(rows),
        "ttft_med": med(ttft), "ttft_p90": p90(ttft),
        "over_med": med(overhead), "over_p90": p90(overhead),
        "gap_med": med(gaps), "gap_p90": p90(gaps),
        "deltas": sum(r["deltas"] for r in rows) / len(rows),
        "total_med": med([r["total_ms"] for r in rows]),
    }  # fmt: skip


def measure(exe: Path, target: str, api_key: str, args, spin_pass: bool) -> dict:
    """Interleaved (ABBA) requests on both paths against one server; returns the report."""
    python = PythonPath(target, api_key, args.character, args.max_new_tokens)
    native = NativePath(exe, target, api_key, args.character, args.max_new_tokens)
    rows = {"python": [], "native": []}
    try:
        for i in range(args.warmup):
            python.run(i)
            native.run(i)
        for i in range(args.n):
            order = (python, native) if i % 2 == 0 else (native, python)
            for path in order:
                time.sleep(args.pause_ms / 1000)  # let the server settle after the previous reply
                r = path.run(1000 + i)
                rows[r["path"]].append(r)
    finally:
        python.close()
        native.close()
    poll_us: list[float] = []
    if spin_pass:  # game-thread cost of npc_poll per event: spin-polled (it keeps a core busy)
        spin = NativePath(exe, target, api_key, args.character, args.max_new_tokens, poll="spin")
        try:
            poll_us = [p for i in range(min(10, args.n)) for p in spin.run(2000 + i)["poll_us"]]
        finally:
            spin.close()
    py, nat = summarize(rows["python"]), summarize(rows["native"])
    # Paired (request i of each path ran back to back): robust against the server's own jitter.
    paired = [(n["ttft_ms"] - n["server_ttft_ms"]) - (p["ttft_ms"] - p["server_ttft_ms"])
              for n, p in zip(rows["native"], rows["python"])]  # fmt: skip
    return {"py": py, "nat": nat, "paired": paired, "poll_us": poll_us,
            "say_us": [r["say_call_us"] for r in rows["native"]]}  # fmt: skip


def render(title: str, rep: dict) -> str:
    py, nat, paired = rep["py"], rep["nat"], rep["paired"]
    lines = [
        f"### {title}",
        "",
        "| path | requests | TTFT median (ms) | TTFT p90 (ms) | TTFT over server median (ms) | over server p90 (ms) | inter-delta median (ms) | inter-delta p90 (ms) | deltas/reply | total median (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in (("Python grpc stub", py), ("native libsteernpc", nat)):
        lines.append(f"| {name} | {s['n']} | {s['ttft_med']:.2f} | {s['ttft_p90']:.2f} | {s['over_med']:.2f} | {s['over_p90']:.2f} | "
                     f"{s['gap_med']:.2f} | {s['gap_p90']:.2f} | {s['deltas']:.1f} | {s['total_med']:.1f} |")  # fmt: skip
    lines += [
        "",
        f"- native minus Python, paired per request (TTFT over the server's own TTFT): median **{med(paired):+.2f} ms**, p90 {p90(paired):+.2f} ms",
        f"- native minus Python, medians: TTFT {nat['ttft_med'] - py['ttft_med']:+.2f} ms; "
        f"inter-delta {nat['gap_med'] - py['gap_med']:+.3f} ms (per-delta overhead)",
        f"- npc_say on the calling thread (returns before the network): median {med(rep['say_us']):.1f} us, p90 {p90(rep['say_us']):.1f} us",
    ]
    if rep["poll_us"]:
        lines.append(f"- npc_poll returning an event, on the calling thread ({len(rep['poll_us'])} events): "
                     f"median {med(rep['poll_us']):.2f} us, p90 {p90(rep['poll_us']):.2f} us")  # fmt: skip
    return "\n".join(lines)


def start_stub(workdir: Path, port: int, deltas: int) -> ServerProcess:
    cmd = [sys.executable, str(Path(__file__).with_name("bridge_bench_stub_server.py")), "--port", str(port),
           "--deltas", str(deltas), "--gap-ms", "2"]  # fmt: skip
    server = ServerProcess(cmd, grpc_health(f"127.0.0.1:{port}"), name="stub server", log=workdir / "stub.log", cwd=REPO,
                           new_session=True)  # fmt: skip
    return started(server, timeout=30)


def stop(server: ServerProcess | None) -> None:
    if server is not None:
        server.stop(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="requests per path")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--character", default="brom")
    ap.add_argument("--model", default=None, help="model for the server this script starts (default: a tiny random Llama)")
    ap.add_argument("--target", default=None, help="use a running server instead of starting one")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--no-stub", action="store_true", help="skip the transport-only run against the stub server")
    ap.add_argument("--build-dir", default=str(NATIVE / "build"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--pause-ms", type=float, default=30.0, help="idle time before each measured request")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    exe = build_native(Path(args.build_dir))
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    server = None
    target, api_key, model_desc = args.target, args.api_key, "(external server)"
    try:
        if target is None:
            if args.model is None:
                from steernpc import models

                model = str(models.random_model(workdir / "tiny", layers=2, hidden=64, seed=0))
                model_desc = "tiny random Llama (2 layers, hidden 64, SmolLM2 tokenizer)"
            else:
                model, model_desc = args.model, args.model
            api_key = api_key or secrets.token_hex(8)
            port = free_port()
            server = start_server(model, workdir, api_key, port)
            target = f"127.0.0.1:{port}"
        print(f"server {target}; model {model_desc}; {args.n} requests per path, max_new_tokens {args.max_new_tokens}", file=sys.stderr)
        real = measure(exe, target, api_key, args, spin_pass=True)
    finally:
        stop(server)
    stub_rep = None
    if not args.no_stub:
        port = free_port()
        stub = start_stub(workdir, port, deltas=16)
        try:
            stub_rep = measure(exe, f"127.0.0.1:{port}", "", args, spin_pass=False)
        finally:
            stop(stub)

    verdict_value = med(real["paired"]) if stub_rep is None else max(med(real["paired"]), stub_rep["nat"]["ttft_med"] - stub_rep["py"]["ttft_med"])
    verdict = "PASS" if verdict_value < 1.0 else "FAIL"
    body = render(f"`steernpc serve`, {model_desc}", real)
    if stub_rep is not None:
        body += "\n\n" + render("Transport only: stub server (answers at once, 16 deltas 2 ms apart)", stub_rep)
    body += f"\n\n**Target: the native path adds < 1 ms to time to first token: {verdict}** (worst of the paired real-server median and the stub-server median difference: {verdict_value:+.2f} ms)"
    print(body)
    if not args.no_write:
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            "# Bridge latency: native client core vs Python gRPC client\n\n"
            f"Generated by `python benchmarks/bridge_bench.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n\n"
            f"- machine: {os.cpu_count()} cores, {cpu}; {platform.system()} {platform.release()}; no GPU\n"
            f"- server: `steernpc serve` on loopback, CPU, sessions in memory; model: {model_desc}\n"
            f"- {args.n} requests per path after {args.warmup} warm-up each, alternating ABBA, {args.pause_ms:.0f} ms idle before each; "
            f"a fresh session per request; prompt \"{PROMPT}\", max_new_tokens {args.max_new_tokens}, temperature 0.7\n"
            "- TTFT: from the call (npc_say / stub.Say) to the first delta in the caller's hands. "
            "\"Over server\" = client TTFT - the server's usage.time_to_first_token_ms (transport, servicer and client). "
            "Native events are taken with npc_poll_wait (wakes on arrival); a game polling once per frame adds up to one frame.\n"
            "- The Python client runs its gRPC stream on the calling thread; the native core streams on its own threads and "
            "hands events over through its queue, which is what an engine needs (no blocking, no callbacks on the game thread).\n\n"
            f"{body}\n"
        )
        print(f"wrote {out}", file=sys.stderr)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
