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
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steernpc.compile import (
    CARD_FILE,
    ONNX_FILE,
    ONNX_PRECISIONS,
    TARGETS,
    builder_version,
    export_onnx,
    make_card,
    onnx_available,
    write_model_card,
)

TRITON_MOUNT = "/steernpc"  # where the bundle is mounted inside the Triton container
DEFAULT_TRTLLM = {"max_batch_size": 64, "max_num_tokens": 8192, "free_gpu_memory_fraction": 0.85}


@dataclass
class CompileConfig:
    base: str
    out: str
    targets: list[str] = field(default_factory=lambda: ["hf"])
    adapter: str | None = None
    format: str | None = None  # default: the adapter's (steernpc_train.json), the base's card, else chat
    schema: str | None = None  # default: the adapter's schema.yaml, the base's card, else npc
    stop: list[str] = field(default_factory=list)  # extra stop strings
    name: str | None = None
    dtype: str | None = None  # hf target dtype (default: as loaded, fp32 on CPU)
    onnx_precision: str = "q4_1"
    trtllm_dtype: str = "bfloat16"
    keep_adapter: bool = False  # trtllm: serve the LoRA unmerged (lora_config) instead of merging it
    max_batch_size: int = DEFAULT_TRTLLM["max_batch_size"]
    max_num_tokens: int = DEFAULT_TRTLLM["max_num_tokens"]
    max_seq_len: int | None = None
    free_gpu_memory_fraction: float = DEFAULT_TRTLLM["free_gpu_memory_fraction"]
    engine: bool = False
    force: bool = False


def _say(message: str) -> None:
    print(f"[compile] {message}", file=sys.stderr, flush=True)


# -- what the model was trained with ----------------------------------------------------------

def training_facts(cfg: CompileConfig, tokenizer: Any) -> tuple[str, Any, list[str]]:
    """(prompt format, AttributeSchema, stop strings) from the flags, else the adapter's
    training metadata, else the base model's card, else chat + the npc schema."""
    from steernpc.attributes import AttributeSchema
    from steernpc.compile import read_model_card
    from steernpc.prompt import FORMATS, stop_strings

    meta: dict = {}
    schema = None
    if cfg.adapter:
        adapter = Path(cfg.adapter)
        meta_file = adapter / "steernpc_train.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
        card = read_model_card(adapter)
        if card:
            meta.setdefault("format", card["format"])
            schema = card["schema_obj"]
        if schema is None and (adapter / "schema.yaml").exists():
            schema = AttributeSchema.load(adapter / "schema.yaml")
        if schema is None and isinstance(meta.get("schema"), str):
            schema = AttributeSchema.load(meta["schema"])
    base_path = Path(cfg.base)
    base_card = read_model_card(base_path) if base_path.is_dir() else None
    if base_card:
        meta.setdefault("format", base_card["format"])
        schema = schema or base_card["schema_obj"]
    fmt = cfg.format or meta.get("format") or "chat"
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}; choose from {', '.join(FORMATS)}")
    if cfg.schema:
        schema = AttributeSchema.load(cfg.schema)
    schema = schema or AttributeSchema.builtin("nemo" if fmt == "nemo" else "npc")
    stops = list(dict.fromkeys([*stop_strings(fmt, tokenizer), *(base_card or {}).get("stop", []), *cfg.stop]))
    return fmt, schema, stops


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
        elif value is not None:
            ids.add(int(value))
    return sorted(ids)


# -- targets ------------------------------------------------------------------------------------

def write_hf(cfg: CompileConfig, out: Path, dtype: str | None = None, merge: bool = True) -> dict:
    """Merge the adapter (unless merge=False) and save an HF folder with its model card."""
    from steernpc import models

    model, tokenizer = models.load_model(cfg.base, adapter=cfg.adapter if merge else None, device="cpu", dtype=dtype or cfg.dtype)
    fmt, schema, stops = training_facts(cfg, tokenizer)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    card = make_card(
        "hf", fmt, stops, schema, eos_ids(model, tokenizer),
        base_model=str(cfg.base), adapter=str(cfg.adapter) if cfg.adapter else None,
        merged=bool(cfg.adapter) and merge, name=cfg.name or _default_name(cfg),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
    )  # fmt: skip
    write_model_card(tmp, card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return card


def _default_name(cfg: CompileConfig) -> str:
    return Path(cfg.adapter or cfg.base).name or "steernpc-model"


def write_onnx(cfg: CompileConfig, hf_dir: Path, out: Path, hf_card: dict) -> dict:
    ok, why = onnx_available()
    if not ok:
        raise RuntimeError(why)
    started = time.time()
    export_onnx(hf_dir, out, precision=cfg.onnx_precision)
    card = {**hf_card, "target": "onnx",
            "onnx": {"file": ONNX_FILE, "precision": cfg.onnx_precision, "builder": f"onnxruntime-genai {builder_version()}",
                     "execution_provider": "cpu", "seconds": round(time.time() - started, 1)}}  # fmt: skip
    write_model_card(out, card)
    return card


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder, hard-linking files where the filesystem allows (no second copy of weights)."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def trtllm_options(cfg: CompileConfig, adapters: dict[str, str] | None = None) -> dict:
    """The LLM API options of the bundle (LLM(**options), trtllm-serve --config)."""
    from steernpc.generation.trtllm_backend import lora_options

    options: dict[str, Any] = {
        "max_batch_size": cfg.max_batch_size,
        "max_num_tokens": cfg.max_num_tokens,
        "kv_cache_config": {"enable_block_reuse": True, "free_gpu_memory_fraction": cfg.free_gpu_memory_fraction},
    }
    if cfg.max_seq_len:
        options["max_seq_len"] = cfg.max_seq_len
    if adapters:
        lora = lora_options(adapters)
        lora["lora_dir"] = list(adapters.values())  # relative to the bundle (serve.sh runs there)
        options["lora_config"] = lora
    return options


def write_trtllm(cfg: CompileConfig, out: Path, hf_dir: Path | None, hf_card: dict) -> dict:
    """The GPU-server bundle. `hf_dir` is the merged checkpoint to copy (None: write one here)."""
    import yaml

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keep = bool(cfg.keep_adapter and cfg.adapter)
    model_dir = tmp / "model"
    if keep:  # base weights + the adapter served unmerged
        card = write_hf(CompileConfig(**{**cfg.__dict__, "adapter": cfg.adapter}), model_dir, dtype=cfg.trtllm_dtype, merge=False)
    elif hf_dir is not None and hf_card.get("dtype") == cfg.trtllm_dtype:
        _link_tree(hf_dir, model_dir)
        card = hf_card
    else:
        card = write_hf(cfg, model_dir, dtype=cfg.trtllm_dtype)
    adapters: dict[str, str] = {}
    if keep:
        name = Path(cfg.adapter).name or "adapter"
        shutil.copytree(cfg.adapter, tmp / "adapters" / name)
        adapters[name] = f"adapters/{name}"
    options = trtllm_options(cfg, {k: str(tmp / v) for k, v in adapters.items()})
    if adapters:
        options["lora_config"]["lora_dir"] = list(adapters.values())
    header = ("# TensorRT-LLM LLM API options written by `steernpc compile --target trtllm`.\n"
              "# Used as `trtllm-serve model --config llm_api_options.yaml` (older releases:\n"
              "# --extra_llm_api_options) and by steernpc's in-process trtllm backend (LLM(**options)).\n")  # fmt: skip
    (tmp / "llm_api_options.yaml").write_text(header + yaml.safe_dump(options, sort_keys=False))
    engine_note = None
    if cfg.engine:
        engine_note = build_engine(model_dir, tmp / "engine", cfg)
    (tmp / "serve.sh").write_text(SERVE_SH)
    (tmp / "serve.sh").chmod(0o755)
    write_triton_repo(tmp / "triton", options, engine=cfg.engine)
    bundle_card = {**card, "target": "trtllm", "trtllm": {
        "checkpoint": "engine" if cfg.engine else "model", "llm_api_options": "llm_api_options.yaml",
        "adapters": adapters, "dtype": cfg.trtllm_dtype, "engine": engine_note,
    }}  # fmt: skip
    write_model_card(tmp, bundle_card)
    (tmp / "README.md").write_text(bundle_readme(bundle_card, options))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return bundle_card


SERVE_SH = """#!/usr/bin/env bash
# Start TensorRT-LLM's OpenAI-compatible server on this bundle (run on the GPU server).
# Written by `steernpc compile --target trtllm`. Then, from the game server:
#   steernpc serve --backend remote --backend-url http://THIS-HOST:${PORT:-8000} --model model
# Extra arguments go to trtllm-serve (e.g. --tp_size 2).
set -euo pipefail
cd "$(dirname "$0")"
HOST="${HOST:-0.0.0.0}"
PORT="${PORT:-8000}"
# --config replaced --extra_llm_api_options in newer TensorRT-LLM releases; use what this one has.
if trtllm-serve --help 2>&1 | grep -q -- "--config"; then OPTS=(--config llm_api_options.yaml); else OPTS=(--extra_llm_api_options llm_api_options.yaml); fi
if [ -d engine ]; then
  exec trtllm-serve engine --tokenizer model --backend tensorrt --host "$HOST" --port "$PORT" "${OPTS[@]}" "$@"
fi
exec trtllm-serve model --host "$HOST" --port "$PORT" "${OPTS[@]}" "$@"
"""


def write_triton_repo(root: Path, options: dict, engine: bool = False) -> None:
    """A Triton model repository for TensorRT-LLM's Python `llmapi` backend: config.pbtxt +
    1/model.yaml (whose keys, except triton_config, go to LLM()). model.py and helpers.py
    come from the TensorRT-LLM release that matches the container (see the README)."""
    import yaml

    model_dir = root / "tensorrt_llm"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(TRITON_CONFIG)
    llm = {"model": f"{TRITON_MOUNT}/{'engine' if engine else 'model'}", "backend": "tensorrt" if engine else "pytorch",
           "tensor_parallel_size": 1, "pipeline_parallel_size": 1}  # fmt: skip
    if engine:
        llm["tokenizer"] = f"{TRITON_MOUNT}/model"
    body = {**llm, **options}
    if "lora_config" in body:
        body["lora_config"] = {**body["lora_config"], "lora_dir": [f"{TRITON_MOUNT}/{d}" for d in body["lora_config"]["lora_dir"]]}
    body["triton_config"] = {"max_batch_size": 0, "decoupled": True}
    header = ("# TensorRT-LLM LLM() arguments for Triton's llmapi backend (every key but triton_config).\n"
              f"# Paths assume this bundle is mounted at {TRITON_MOUNT} in the container.\n"
              "# decoupled: true streams tokens (set the 'streaming' input per request).\n")  # fmt: skip
    (model_dir / "1" / "model.yaml").write_text(header + yaml.safe_dump(body, sort_keys=False))


TRITON_CONFIG = """# Triton model configuration for TensorRT-LLM's llmapi (Python) backend, written by
# `steernpc compile`. max_batch_size and decoupled come from 1/model.yaml (triton_config).
# Copy 1/model.py and 1/helpers.py from triton_backend/all_models/llmapi/tensorrt_llm/ of the
# TensorRT-LLM release in your container; if that release's config.pbtxt differs, use it.
name: "tensorrt_llm"
backend: "python"

instance_group [ { count: 1, kind: KIND_CPU } ]

input [
  { name: "text_input", data_type: TYPE_STRING, dims: [ -1 ] },
  { name: "streaming", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "sampling_param_temperature", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "sampling_param_top_k", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "sampling_param_top_p", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "sampling_param_max_tokens", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "sampling_param_stop", data_type: TYPE_STRING, dims: [ -1 ], optional: true },
  { name: "sampling_param_seed", data_type: TYPE_UINT64, dims: [ 1 ], optional: true },
  { name: "sampling_param_exclude_input_from_output", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "return_finish_reason", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "lora_id", data_type: TYPE_UINT64, dims: [ 1 ], optional: true },
  { name: "lora_name", data_type: TYPE_STRING, dims: [ 1 ], optional: true },
  { name: "lora_path", data_type: TYPE_STRING, dims: [ 1 ], optional: true }
]
output [
  { name: "text_output", data_type: TYPE_STRING, dims: [ -1 ] },
  { name: "finish_reason", data_type: TYPE_STRING, dims: [ -1 ] }
]
"""


def bundle_readme(card: dict, options: dict) -> str:
    stops = ", ".join(repr(s) for s in card.get("stop", [])) or "(EOS only)"
    schema = card["schema"]
    attrs = ", ".join(f"{a['name']} {a['min']}..{a['max']}" for a in schema["attributes"])
    lora = card["trtllm"].get("adapters") or {}
    lora_text = (
        f"The adapter(s) {', '.join(lora)} are served unmerged (lora_config in llm_api_options.yaml); "
        "requests select one with `lora_request` (trtllm-serve) or the trtllm backend's `adapters`."
        if lora else "Any LoRA adapter is merged into model/."
    )
    return textwrap.dedent(f"""\
        # SteerNPC model bundle for TensorRT-LLM

        Written by `steernpc compile --target trtllm` ({card.get('created')}). Prompt format
        `{card['format']}`, stop strings {stops}, attribute schema `{schema['name']}` ({attrs}).
        {lora_text}

        Contents: `model/` (HF checkpoint, {card['trtllm']['dtype']}{', plus `engine/`' if card['trtllm'].get('engine') else ''}),
        `llm_api_options.yaml`, `serve.sh`, `triton/`, `steernpc.json` (the model card).

        Needs an NVIDIA GPU server with TensorRT-LLM >= 1.0 (`pip install tensorrt_llm`, or the
        NGC container `nvcr.io/nvidia/tensorrt-llm/release`).

        ## 1. trtllm-serve (OpenAI-compatible) + steernpc remote backend

            ./serve.sh                       # HOST=0.0.0.0 PORT=8000 by default
            # on the game server:
            steernpc serve --backend remote --backend-url http://GPU-HOST:8000 --model model

        `--model` there names the served model and gives the runtime its tokenizer and this
        card: copy `model/` (or just its tokenizer files and steernpc.json) next to the runtime.

        ## 2. In process (steernpc on the GPU server)

            steernpc serve --backend trtllm --model /path/to/this/bundle

        ## 3. Triton Inference Server (llmapi backend)

            cp TensorRT-LLM/triton_backend/all_models/llmapi/tensorrt_llm/1/{{model.py,helpers.py}} triton/tensorrt_llm/1/
            docker run --gpus all --net host -v $PWD:{TRITON_MOUNT} nvcr.io/nvidia/tritonserver:<xx.yy>-trtllm-python-py3 \\
                tritonserver --model-repository {TRITON_MOUNT}/triton

        Take model.py/helpers.py from the TensorRT-LLM tag that matches the container's
        `tensorrt_llm.__version__`. Send the SteerLM prompt as `text_input` with `streaming`
        true; the stop strings above go in `sampling_param_stop`.

        KV cache: block reuse is on, so a session's history and a character's card are
        computed once and reused while they stay cached; batch limits: max_batch_size
        {options['max_batch_size']}, max_num_tokens {options['max_num_tokens']}.
        """)


def build_engine(model_dir: Path, engine_dir: Path, cfg: CompileConfig) -> str:
    """A TensorRT engine via the LLM API's TensorRT flow (TensorRT-LLM 1.0 - 1.2 only)."""
    try:
        import tensorrt_llm
    except ImportError:
        raise RuntimeError("--engine needs TensorRT-LLM 1.0 - 1.2 on a GPU machine (pip install 'tensorrt_llm<1.3')") from None
    version = getattr(tensorrt_llm, "__version__", "0")
    major_minor = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if major_minor > (1, 2):
        raise RuntimeError(
            f"TensorRT-LLM {version} no longer builds engines (removed after 1.2); its PyTorch backend "
            "loads model/ directly, so drop --engine"
        )
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM
    from tensorrt_llm.llmapi import BuildConfig, KvCacheConfig

    build = {"max_batch_size": cfg.max_batch_size, "max_num_tokens": cfg.max_num_tokens}
    if cfg.max_seq_len:
        build["max_seq_len"] = cfg.max_seq_len
    llm = EngineLLM(model=str(model_dir), build_config=BuildConfig(**build), kv_cache_config=KvCacheConfig(enable_block_reuse=True))
    try:
        llm.save(str(engine_dir))
    finally:
        getattr(llm, "shutdown", lambda: None)()
    return f"TensorRT-LLM {version}"


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
