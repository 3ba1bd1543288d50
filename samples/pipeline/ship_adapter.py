"""Copy a trained LoRA adapter into samples/models/ in fp16 (half the size; the runtime
loads it in the base model's dtype). Keeps DST/README.md, the model card, as it is.

    python samples/pipeline/ship_adapter.py runs/sample/sft samples/models/steernpc-npc-lora
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = ("adapter_config.json", "training.json", "schema.yaml")


def main(src: str, dst: str) -> int:
    from safetensors.torch import load_file, save_file

    source, target = Path(src), Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(source / "adapter_model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(target / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    for name in KEEP:
        shutil.copyfile(source / name, target / name)
    size = (target / "adapter_model.safetensors").stat().st_size / 1e6
    print(f"shipped {source} -> {target} ({size:.1f} MB fp16)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
