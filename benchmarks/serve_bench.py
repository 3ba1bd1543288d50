"""Serving benchmark: multi-turn conversations over gRPC vs plain transformers generate.

For 1, 4 and 16 concurrent sessions, each session plays a 10-turn conversation with one
character through a real `steernpc serve` on loopback. Reported: aggregate completion
tokens/s, time to first token (TTFT) p50/p99, inter-token gap p50/p99, and TTFT at turn 10.

Baseline, in the same run: the very same prompts (replayed from the server's sessions)
served one at a time with plain `model.generate` (no batching, no KV reuse: each turn
re-reads the whole history), generating the same number of tokens per reply.

Scenes row: --scenes concurrent scenes of --scene-members NPCs (brom, marta, lysander, ...)
play --scene-exchanges player lines each, every line addressed by name to the next member
in turn (SceneSay), each answer followed by one banter line (SceneContinue 1). Reported:
aggregate completion tokens/s over all scenes, TTFT per NPC line p50/p99, prompt tokens
from the members' caches.

    python benchmarks/serve_bench.py [--model smollm2] [--sessions 1 4 16] [--turns 10] [--scenes 4]
    python benchmarks/serve_bench.py --sessions --scenes 4 --out benchmarks/results/serve_scenes_cpu.md   # scenes only

Writes benchmarks/results/serve_cpu.md (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from steernpc.server.process import ServerProcess, free_port, grpc_health

REPO = Path(__file__).resolve().parents[1]

LINES = [
    "Good morning! Are you open today?",
    "I need my sword repaired, the edge is chipped.",
    "How long will that take?",
    "What do you charge for that kind of work?",
    "That's steep. Can you do it cheaper?",
    "Have you heard any news from the mountain pass?",
    "Who else in town could help me with supplies?",
    "Tell me about the old mine north of here.",
    "Is it safe to travel at night?",
    "Alright, thank you. I'll be back tomorrow.",
    "One more thing: do you sell arrows?",
    "Farewell, friend.",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def start_server(args, port: int, home: str) -> ServerProcess:
    """`steernpc serve` on `port`, SERVING when this returns; its output goes to home/server.log."""
    env = dict(os.environ, STEERNPC_HOME=home, STEERNPC_ADAPTER=args.adapter or "none")
    cmd = [sys.executable, "-m", "steernpc.cli", "serve", "--port", str(port), "--store", "memory",
           "--max-batch", str(max([*args.sessions, args.scenes, 1])), "--max-queue", "256", "--log-level", "WARNING"]  # fmt: skip
    if args.model:
        cmd += ["--model", args.model]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    server = ServerProcess(cmd, grpc_health(f"127.0.0.1:{port}"), name="steernpc serve", log=Path(home) / "server.log", env=env)
    return server.start(timeout=300, interval=0.5)


async def conversation(client, character: str, turns: int, max_tokens: int, index: int, record: dict) -> None:
    session = await client.create_session(character, session_id=f"bench-{index}-{time.time_ns()}")
    for turn in range(turns):
        line = LINES[(turn + index) % len(LINES)]
        started = time.perf_counter()
        stamps = []
        done = None
        async for event in client.say_events(session.session_id, line, max_new_tokens=max_tokens, seed=1000 * index + turn + 1):
            if event.HasField("delta"):
                stamps.append(time.perf_counter())
            else:
                done = event.done
        record["ttft"].append((stamps[0] - started) * 1000 if stamps else float("nan"))
        record["gaps"].extend((b - a) * 1000 for a, b in zip(stamps, stamps[1:]))
        record["tokens"] += done.usage.completion_tokens
        record["cached"] += done.usage.cached_tokens
        record["prompt"] += done.usage.prompt_tokens
        if turn == turns - 1:
            record["ttft_last"].append((stamps[0] - started) * 1000 if stamps else float("nan"))
    record["sessions"].append(session.session_id)


async def run_level(target: str, n: int, args) -> dict:
    from steernpc.client import AsyncNpcClient

    record = {"ttft": [], "gaps": [], "tokens": 0, "cached": 0, "prompt": 0, "ttft_last": [], "sessions": []}
    async with AsyncNpcClient(target, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(conversation(client, args.character, args.turns, args.max_tokens, i, record) for i in range(n)))
        record["wall"] = time.perf_counter() - started
        record["snapshots"] = [await client.export_session(s) for s in record["sessions"][:1]]
    return record


SCENE_CAST = ["brom", "marta", "lysander", "pip", "hilde", "tobias", "garrick", "nettle"]


async def scene_play(client, index: int, args, record: dict) -> None:
    from steernpc.client import member_spec, scene_continue_request, scene_say_request
    from steernpc.persona import load_persona
    from steernpc.wire import pb

    cast = SCENE_CAST[: args.scene_members]
    names = [load_persona(REPO / "samples" / "personas" / f"{c}.yaml").name.split()[0] for c in cast]
    scene_id = f"bench-scene-{index}-{time.time_ns()}"
    request = pb.CreateSceneRequest(scene_id=scene_id, player_name="Ayla", seed=index + 1, members=[member_spec(c) for c in cast])
    await client.stub.CreateScene(request, timeout=600)
    for turn in range(args.scene_exchanges):
        line = f"{names[turn % len(names)]}, {LINES[(turn + index) % len(LINES)].lower()}"
        options = {"max_new_tokens": args.max_tokens, "seed": 1000 * index + turn + 1}
        for call in (client.stub.SceneSay(scene_say_request(scene_id, line, **options), timeout=600),
                     client.stub.SceneContinue(scene_continue_request(scene_id, 1, **options), timeout=600)):  # fmt: skip
            started, first = time.perf_counter(), None
            async for event in call:
                if event.HasField("delta") and first is None:
                    first = time.perf_counter()
                elif event.HasField("done"):
                    if first is not None:  # (a line that ends at once has no first token to time)
                        record["ttft"].append((first - started) * 1000)
                    record["tokens"] += event.done.usage.completion_tokens
                    record["cached"] += event.done.usage.cached_tokens
                    record["prompt"] += event.done.usage.prompt_tokens
                    record["lines"] += 1
                    started, first = time.perf_counter(), None


async def run_scenes(target: str, args) -> dict:
    from steernpc.client import AsyncNpcClient

    record = {"ttft": [], "tokens": 0, "cached": 0, "prompt": 0, "lines": 0}
    async with AsyncNpcClient(target, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(scene_play(client, i, args, record) for i in range(args.scenes)))
        record["wall"] = time.perf_counter() - started
    return record


def baseline(args, snapshot: bytes) -> dict:
    """Replay one session's turns with plain transformers generate, one at a time."""
    import torch

    from steernpc import models
    from steernpc.conversation import system_text
    from steernpc.persona import load_personas
    from steernpc.prompt import build_prompt
    from steernpc.sessions import import_snapshot

    session = import_snapshot(snapshot)
    personas, _ = load_personas([REPO / "samples" / "personas"])
    persona = personas[session.character_id]
    model, tokenizer = models.load_model(args.model, dtype=args.dtype)
    ttft, tokens, seconds = [], 0, 0.0
    with torch.inference_mode():  # warm-up
        model.generate(**tokenizer("Hello", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    for turn, exchange in enumerate(session.history):
        history = session.history[:turn]
        vector = persona.resolve(steer=exchange.labels)
        prompt = build_prompt("chat", system_text(persona), history, exchange.user, vector, persona.schema, tokenizer)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        n = max(1, len(tokenizer(exchange.reply, add_special_tokens=False)["input_ids"]))
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, do_sample=False)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=0.7, top_p=0.9)
            spent = time.perf_counter() - t0
        ttft.append(first * 1000)
        tokens += n
        seconds += spent
    return {"ttft": ttft, "tokens_per_s": tokens / seconds, "ttft_last": ttft[-1], "prompt_tokens_last": ids["input_ids"].shape[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: the prepared SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", default="none")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--character", default="brom")
    parser.add_argument("--sessions", type=int, nargs="*", default=[1, 4, 16], help="session levels (none: scenes only)")
    parser.add_argument("--scenes", type=int, default=4, help="concurrent scenes for the scenes row (0: none)")
    parser.add_argument("--scene-members", type=int, default=3)
    parser.add_argument("--scene-exchanges", type=int, default=10)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_cpu.md"))
    args = parser.parse_args()

    from steernpc import models

    models.prepare()
    port = free_port()
    target = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        os.makedirs(Path(home) / "models", exist_ok=True)
        os.symlink(models.prepared_dir(), Path(home) / "models" / models.DEFAULT_MODEL)
        server = start_server(args, port, home)
        try:
            asyncio.run(run_level(target, 1, argparse.Namespace(**{**vars(args), "turns": 2})))  # warm-up
            results = {n: asyncio.run(run_level(target, n, args)) for n in args.sessions}
            scenes = asyncio.run(run_scenes(target, args)) if args.scenes else None
        finally:
            server.stop(timeout=30)

    import torch

    scene_lines = []
    if scenes is not None:
        scene_lines = [
            "",
            f"**Scenes**: {args.scenes} concurrent scenes of {args.scene_members} NPCs, {args.scene_exchanges} exchanges each "
            f"(a player line addressed by name, its answer, one banter line), up to {args.max_tokens} tokens per line.",
            "",
            "| scenes | NPC lines | tokens | aggregate tok/s | TTFT per line p50 ms | TTFT per line p99 ms | prompt tokens from cache |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {args.scenes} x {args.scene_members} NPCs | {scenes['lines']} | {scenes['tokens']} | {scenes['tokens'] / scenes['wall']:.1f} | "
            f"{percentile(scenes['ttft'], .5):.0f} | {percentile(scenes['ttft'], .99):.0f} | "
            f"{100 * scenes['cached'] / max(1, scenes['prompt']):.0f}% |",
        ]
    header = [
        "# Serving benchmark (CPU)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
        f"Model: {args.model or 'SmolLM2-135M-Instruct'} ({args.dtype or 'float32'}), character `{args.character}`, "
        f"{args.turns} turns per session, up to {args.max_tokens} tokens per reply, sampling T=0.7 top-p 0.9.",
    ]
    if not args.sessions:
        text = "\n".join([*header, *scene_lines, ""])
        print(text)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        return 0
    base = baseline(args, results[min(args.sessions)]["snapshots"][0])

    rows = []
    for n, r in results.items():
        rate = r["tokens"] / r["wall"]
        rows.append(
            f"| {n} | {r['tokens']} | {rate:.1f} | {rate / base['tokens_per_s']:.2f}x | "
            f"{percentile(r['ttft'], .5):.0f} | {percentile(r['ttft'], .99):.0f} | "
            f"{percentile(r['gaps'], .5):.1f} | {percentile(r['gaps'], .99):.1f} | "
            f"{statistics.median(r['ttft_last']):.0f} | {100 * r['cached'] / max(1, r['prompt']):.0f}% |"
        )
    one = results[min(args.sessions)]
    ttft_ratio = base["ttft_last"] / statistics.median(one["ttft_last"])
    top = results[max(args.sessions)]
    agg_ratio = (top["tokens"] / top["wall"]) / base["tokens_per_s"]
    text = "\n".join([
        *header,
        "",
        "| sessions | tokens | aggregate tok/s | vs baseline | TTFT p50 ms | TTFT p99 ms | inter-token p50 ms | inter-token p99 ms | TTFT last turn ms | prompt tokens from cache |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Baseline (same prompts, one at a time, plain `generate`, whole history re-read each turn): "
        f"**{base['tokens_per_s']:.1f} tok/s**, TTFT at turn {args.turns}: **{base['ttft_last']:.0f} ms** "
        f"({base['prompt_tokens_last']} prompt tokens).",
        "",
        f"- Aggregate tokens/s at {max(args.sessions)} sessions vs baseline: **{agg_ratio:.2f}x** (target >= 5x).",
        f"- TTFT at turn {args.turns}, re-reading the history vs SteerNPC's session cache: **{ttft_ratio:.2f}x lower** (target >= 3x).",
        *scene_lines,
        "",
        "Medians and percentiles over every reply of the run; the machine is shared and noisy, so compare ratios.",
        "",
    ])  # fmt: skip
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
