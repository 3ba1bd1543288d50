"""The trtllm target of `steernpc compile`: a bundle for an NVIDIA GPU server.

`model/` (the merged checkpoint; TensorRT-LLM >= 1.0 loads HF checkpoints directly),
`llm_api_options.yaml`, `serve.sh` (trtllm-serve), `triton/` (a model repository for
Triton's llmapi backend), a README and the model card; `engine/` with --engine.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

from steernpc.export.config import CompileConfig
from steernpc.export.hf import write_hf
from steernpc.model_card import write_model_card

TRITON_MOUNT = "/steernpc"  # where the bundle is mounted inside the Triton container


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
