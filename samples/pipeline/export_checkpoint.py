"""Turn an SFT checkpoint (runs/.../checkpoints/step-N) into a servable PEFT adapter folder,
stored in fp16 to halve its size. Used to ship a partly trained sample adapter when a CPU
run had to stop before its epoch ended (the run itself can resume later).

    python samples/pipeline/export_checkpoint.py CHECKPOINT_DIR OUT_DIR [--base smollm2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--rank", type=int, default=16, help="the run's --lora")
    parser.add_argument("--alpha", type=int, default=None, help="the run's --lora-alpha (default 2 x rank)")
    parser.add_argument("--format", default="chat", help="the run's --format")
    parser.add_argument("--schema", default="npc")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from steernpc import models

    ckpt = Path(args.checkpoint)
    state = json.loads((ckpt / "state.json").read_text())
    rank = args.rank
    model, _ = models.load_model(args.base, device="cpu", dtype="float32")
    lora = LoraConfig(r=rank, lora_alpha=args.alpha or 2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise SystemExit(f"{ckpt}: {len(unknown)} weights do not fit a rank-{rank} LoRA (e.g. {unknown[0]})")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    model = model.half()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    meta = {"format": args.format, "schema": args.schema, "base": args.base, "kind": "lora",
            "checkpoint_step": state.get("step"), "total_steps": state.get("total_steps"),
            "tokens_seen": state.get("tokens_seen"), "loss": state.get("loss")}  # fmt: skip
    (out / "training.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"exported {ckpt} (step {state.get('step')}) -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
