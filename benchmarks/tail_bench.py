"""The structured tail's cost: its share of a reply's total time, on the torch backend.

Each request has a fixed-length reply (`--reply-tokens`, run to length) followed by its
tail under the persona's grammar (the gate guard of tests/backends/test_tail.py: three
emotions, four actions with enum, integer and string arguments). The share is
sum(tail_ms) / sum(total_ms) over all requests, at each batch size; the same requests
without a tail give the reply-only time for comparison.

    python benchmarks/tail_bench.py --model smollm2 --batches 1 8 --reply-tokens 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from steernpc.actions import tail_grammar
from steernpc.generation.base import GenerationRequest, SamplingParams, TailRequest
from steernpc.persona import persona_from_located
from steernpc.prompt import build_prompt, stop_strings, tail_marker
from steernpc.conversation import system_text
from steernpc.yamlsource import Located

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "backends"))
from test_tail import GUARD  # noqa: E402

LINES = ["Halt! Who goes there?", "I need to get through the gate.", "Here, take this coin.", "Thief! Stop him!",
         "Can you sell me a sword?", "Is the road north safe?", "What happened at the mill?", "Let me pass, or else."]  # fmt: skip


def persona():
    import yaml

    return persona_from_located(Located("guard.yaml", yaml.safe_load(GUARD)))


def requests(backend, guard, n, reply_tokens, tail, fmt):
    out = []
    for i in range(n):
        prompt = build_prompt(fmt, system_text(guard, tails=True), [], LINES[i % len(LINES)], guard.resolve(), guard.schema, backend.tokenizer)
        params = SamplingParams(max_new_tokens=reply_tokens, temperature=0.7, seed=i, ignore_eos=True)
        r = GenerationRequest(prompt, params, stop_strings(fmt, backend.tokenizer, tail=tail))
        if tail:
            r.tail = TailRequest(tail_marker(fmt), tail_grammar(guard.tail_spec), guard.tail_spec)
        out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--format", default="nemo")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reply-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from steernpc.generation.torch_backend import TorchBackend

    backend = TorchBackend(args.model, device="cpu", max_batch=max(args.batches), slots=2 * max(args.batches) + 2, max_len=1024)
    guard = persona()
    backend.generate(requests(backend, guard, 1, 4, True, args.format))  # warm-up (and the grammar's tokenizer)
    print(f"| batch | reply tokens | tail tokens (mean) | reply+tail s | tail share | reply-only s | tails parsed |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        finals, with_tail, without = [], 0.0, 0.0
        for _ in range(args.rounds):
            t = time.perf_counter()
            finals += backend.generate(requests(backend, guard, batch, args.reply_tokens, True, args.format))
            with_tail += time.perf_counter() - t
            t = time.perf_counter()
            backend.generate(requests(backend, guard, batch, args.reply_tokens, False, args.format))
            without += time.perf_counter() - t
        share = sum(f.tail_ms for f in finals) / sum(f.total_ms for f in finals)
        parsed = sum(f.tail is not None for f in finals)
        print(f"| {batch} | {args.reply_tokens} | {statistics.mean(f.tail_tokens for f in finals):.1f} | "
              f"{with_tail / args.rounds:.2f} | {share:.1%} | {without / args.rounds:.2f} | {parsed}/{len(finals)} |", flush=True)
    backend.close()


if __name__ == "__main__":
    main()
