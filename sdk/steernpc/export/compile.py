"""`steernpc compile`: turn a base model (+ a SteerLM LoRA) into what each runtime serves.

    steernpc compile --base MODEL [--adapter DIR] --out DIR --target hf|onnx|trtllm [--target ...]

Writes one folder per target under --out:

- `hf/`: the LoRA merged into the base, safetensors + tokenizer + `steernpc.json` (the
  attribute schema, prompt format and stop strings), so the folder alone is servable
  (`steernpc serve --model OUT/hf`).
- `onnx/`: an ONNX export with a KV cache for ONNX Runtime on CPU (`--backend onnx`),
  Q4_1 weights by default (`--onnx-precision q4_1|int8|int4|fp32`).
- `trtllm/`: a bundle for an NVIDIA GPU server: `model/` (the merged checkpoint in bf16;
  TensorRT-LLM >= 1.0 loads HF checkpoints directly), `llm_api_options.yaml` (block reuse,
  batch/token limits, free_gpu_memory_fraction, lora_config with --keep-adapter),
  `serve.sh` (trtllm-serve), `triton/` (a model repository for Triton's llmapi backend)
  and a README. `--engine` also builds a TensorRT engine where a TensorRT-LLM <= 1.2 is
  importable (engine builds were removed after 1.2).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from steernpc.export.config import DEFAULT_TRTLLM, TARGETS, CompileConfig
from steernpc.export.hf import write_hf
from steernpc.export.onnx import ONNX_PRECISIONS, onnx_available, write_onnx
from steernpc.export.trtllm import write_trtllm


def _say(message: str) -> None:
    print(f"[compile] {message}", file=sys.stderr, flush=True)


# -- the command --------------------------------------------------------------------------------

def compile_model(cfg: CompileConfig) -> dict[str, dict]:
    """Build every target of `cfg`; returns {target: model card}."""
    targets = list(dict.fromkeys(cfg.targets))
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"unknown target(s) {', '.join(bad)}; targets: {', '.join(TARGETS)}")
    if cfg.onnx_precision not in ONNX_PRECISIONS:
        raise ValueError(f"--onnx-precision {cfg.onnx_precision!r}; choose from {', '.join(ONNX_PRECISIONS)}")
    if cfg.adapter and not (Path(cfg.adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{cfg.adapter} is not a PEFT adapter folder (no adapter_config.json)")
    if "onnx" in targets:
        ok, why = onnx_available()
        if not ok:
            raise RuntimeError(why)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cards: dict[str, dict] = {}
    scratch = None
    hf_dir = out / "hf"
    need_hf = "hf" in targets or "onnx" in targets or ("trtllm" in targets and not (cfg.keep_adapter and cfg.adapter))
    if need_hf:
        if "hf" not in targets:
            scratch = tempfile.TemporaryDirectory(prefix="steernpc-compile-", dir=out)
            hf_dir = Path(scratch.name) / "hf"
        started = time.time()
        _say(f"hf: merging {'the adapter into ' if cfg.adapter else ''}{cfg.base} -> {hf_dir}")
        cards["hf"] = write_hf(cfg, hf_dir)
        _say(f"hf: done in {time.time() - started:.0f} s (format {cards['hf']['format']}, schema {cards['hf']['schema']['name']})")
    try:
        if "onnx" in targets:
            started = time.time()
            _say(f"onnx: exporting ({cfg.onnx_precision}) -> {out / 'onnx'}")
            cards["onnx"] = write_onnx(cfg, hf_dir, out / "onnx", cards["hf"])
            _say(f"onnx: done in {time.time() - started:.0f} s")
        if "trtllm" in targets:
            started = time.time()
            _say(f"trtllm: writing the GPU bundle -> {out / 'trtllm'}")
            cards["trtllm"] = write_trtllm(cfg, out / "trtllm", hf_dir if need_hf else None, cards.get("hf", {}))
            _say(f"trtllm: done in {time.time() - started:.0f} s")
    finally:
        if scratch is not None:
            scratch.cleanup()
    if "hf" not in targets:
        cards.pop("hf", None)
    return cards


def cmd_compile(args: argparse.Namespace) -> int:
    cfg = CompileConfig(
        base=args.base, out=args.out, targets=args.target or ["hf"], adapter=args.adapter, format=args.format,
        schema=args.schema, stop=args.stop or [], name=args.name, dtype=args.dtype, onnx_precision=args.onnx_precision,
        trtllm_dtype=args.trtllm_dtype, keep_adapter=args.keep_adapter, max_batch_size=args.max_batch_size,
        max_num_tokens=args.max_num_tokens, max_seq_len=args.max_seq_len,
        free_gpu_memory_fraction=args.free_gpu_memory_fraction, engine=args.engine,
    )  # fmt: skip
    if cfg.engine and "trtllm" not in cfg.targets:
        raise ValueError("--engine belongs to --target trtllm")
    cards = compile_model(cfg)
    for target in cards:
        print(Path(cfg.out) / target)
    return 0


def register_compile(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `steernpc compile` to a `steernpc` subparsers object."""
    from steernpc.prompt import FORMATS

    p = sub.add_parser("compile", help="export for serving: merged HF (+ model card), ONNX (CPU), TensorRT-LLM bundle (GPU)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--base", required=True, help="base model: HF folder, .gguf, or 'smollm2'")
    p.add_argument("--adapter", default=None, help="PEFT LoRA folder from `steernpc train sft`")
    p.add_argument("--out", required=True, help="output folder (one subfolder per target)")
    p.add_argument("--target", action="append", choices=TARGETS, help="hf, onnx, trtllm (repeatable; default hf)")
    p.add_argument("--format", choices=FORMATS, default=None, help="prompt format (default: the adapter's, else chat)")
    p.add_argument("--schema", default=None, help="attribute schema: nemo, npc or a YAML file (default: the adapter's)")
    p.add_argument("--stop", action="append", help="an extra stop string (repeatable)")
    p.add_argument("--name", default=None, help="model name recorded in steernpc.json")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="hf target dtype (default float32 on CPU)")
    g = p.add_argument_group("onnx")
    g.add_argument("--onnx-precision", choices=ONNX_PRECISIONS, default="q4_1",
                   help="weights: q4_1 (default: llama.cpp Q4_1 quality, int4 speed), int8, int4 (fastest, lossier), fp32 (exact)")  # fmt: skip
    g = p.add_argument_group("trtllm")
    g.add_argument("--trtllm-dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    g.add_argument("--keep-adapter", action="store_true", help="serve the LoRA unmerged (lora_config) instead of merging it")
    g.add_argument("--max-batch-size", type=int, default=DEFAULT_TRTLLM["max_batch_size"])
    g.add_argument("--max-num-tokens", type=int, default=DEFAULT_TRTLLM["max_num_tokens"])
    g.add_argument("--max-seq-len", type=int, default=None)
    g.add_argument("--free-gpu-memory-fraction", type=float, default=DEFAULT_TRTLLM["free_gpu_memory_fraction"])
    g.add_argument("--engine", action="store_true", help="also build a TensorRT engine (TensorRT-LLM 1.0 - 1.2 only)")
    p.set_defaults(func=cmd_compile)
    return p
