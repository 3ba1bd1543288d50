"""SteerLM end to end on a small slice, on CPU: data -> APM (step 1) -> annotate (step 2)
-> SFT (step 3) -> bootstrap (step 4) -> steerability report.

Every step is the real `steernpc` command (run in this process); each command line is
printed so that it can be copied and scaled up.

    python samples/pipeline/run.py --tiny            # random tiny models: proves the flow (~1 min)
    python samples/pipeline/run.py                   # MiniLM APM + SmolLM2-135M LoRA on a slice (CPU: tens of minutes)
    python samples/pipeline/run.py --out runs/pipeline --conversations 400 --sft-steps 200

--tiny trains a random 2-layer Llama (SmolLM2's tokenizer) and a random tiny BERT, so the
numbers mean nothing; the default uses the real models, still on a small slice.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def step(title: str, argv: list[str]) -> None:
    from steernpc.cli import main

    print(f"\n== {title}\n$ steernpc {shlex.join(argv)}", file=sys.stderr, flush=True)
    started = time.time()
    code = main(argv)
    if code:
        raise SystemExit(f"step failed ({code}): steernpc {shlex.join(argv)}")
    print(f"   ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="random tiny models (tests, a quick look at the flow)")
    parser.add_argument("--out", default=str(REPO / "runs" / "pipeline"))
    parser.add_argument("--conversations", type=int, default=0, help="chitchat conversations in the slice (default 40 tiny, 300 real)")
    parser.add_argument("--sft-steps", type=int, default=0, help="SFT steps (default 20 tiny, 60 real)")
    parser.add_argument("--personas", default=str(REPO / "samples" / "personas"))
    parser.add_argument("--lines", default=str(REPO / "samples" / "data" / "player_lines_heldout.txt"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.tiny
    conversations = args.conversations or (40 if tiny else 300)
    sft_steps = args.sft_steps or (20 if tiny else 60)
    started = time.time()

    if tiny:
        from steernpc import models
        from steernpc_train.apm import tiny_encoder

        base = str(models.random_model(out / "tiny-llama", layers=2, hidden=64))
        backbone = str(tiny_encoder(out / "tiny-bert"))
        sizes = dict(apm_examples="400", max_length="512", micro="2", k="2", prompts="4", new_tokens="16",
                     report_lines="2", personas="1", round2_steps="4")
    else:
        base, backbone = "smollm2", "minilm"
        sizes = dict(apm_examples="3000", max_length="512", micro="2", k="4", prompts="12", new_tokens="48",
                     report_lines="4", personas="2", round2_steps="30")

    data = out / "chitchat.jsonl"
    step("data: chitchat -> npc JSONL (labels: humor<-witty, friendliness<-upbeat, creativity<-interesting, verbosity<-length)",
         ["data", "convert", "--from", "chitchat", "--to", "npc", "--limit", str(conversations), "chitchat", str(data)])
    step("step 1: attribute prediction model",
         ["train", "apm", "--schema", "npc", "--data", str(data), "--backbone", backbone, "--out", str(out / "apm"),
          "--epochs", "1", "--max-examples", sizes["apm_examples"], "--max-length", "128", "--batch-size", "16"])
    step("step 2: annotate every reply with the APM (clip + round)",
         ["annotate", str(data), str(out / "annotated.jsonl"), "--apm", str(out / "apm"), "--restart"])
    step("step 3: attribute-conditioned SFT (LoRA, chat format)",
         ["train", "sft", "--base", base, "--data", str(out / "annotated.jsonl"), "--format", "chat", "--lora", "8",
          "--out", str(out / "sft"), "--max-steps", str(sft_steps), "--max-length", sizes["max_length"],
          "--micro-batch", sizes["micro"], "--save-every", str(max(1, sft_steps // 2)), "--log-every", "5",
          "--history", "1", "--resume", "never"] + (["--lr", "3e-3"] if tiny else []))
    step("step 4: bootstrap (sample k per prompt, annotate, train round 2; SteerLM 2.0 weights)",
         ["train", "bootstrap", "--model", base, "--adapter", str(out / "sft"), "--apm", str(out / "apm"),
          "--prompts", args.lines, "--personas", args.personas, "--max-prompts", sizes["prompts"], "-k", sizes["k"],
          "--weighting", "steerlm2", "--max-new-tokens", sizes["new_tokens"], "--out", str(out / "bootstrap"),
          "--max-steps", sizes["round2_steps"], "--max-length", sizes["max_length"], "--micro-batch", sizes["micro"],
          "--save-every", "0", "--resume", "never"] + (["--keep-cut"] if tiny else []))  # a random model never ends a reply
    step("report: steerability of the round-2 model",
         ["eval", "steerability", "--model", base, "--adapter", str(out / "bootstrap" / "round2"), "--apm", str(out / "apm"),
          "--personas", args.personas, "--prompts", args.lines, "--max-prompts", sizes["report_lines"],
          "--max-personas", sizes["personas"], "--max-new-tokens", sizes["new_tokens"], "--out", str(out / "report")])
    summary = {"out": str(out), "tiny": tiny, "seconds": round(time.time() - started, 1),
               "report": str(out / "report" / "report.md")}
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print(f"\npipeline done in {summary['seconds']:.0f} s; report: {summary['report']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
