"""What a compiled model carries, and the ONNX export both `steernpc compile` and the onnx
backend use.

`steernpc compile` (in the training toolkit) writes a `steernpc.json` model card next to
the weights, so a compiled model needs no other file to be served: the attribute schema
(names and ranges, in label-line order), the prompt format and the stop strings. The
runtime reads it with `read_model_card()`; everything here is runtime-side (no training
imports).

Card (JSON, version 1):

    {"card_version": 1, "target": "hf" | "onnx" | "trtllm",
     "format": "chat" | "nemo",            # the prompt format it was trained with
     "stop": ["<|im_end|>"],               # stop strings (backends also stop on EOS ids)
     "eos_token_ids": [2],
     "schema": {"name": "npc", "attributes": [{"name", "min", "max", "default", "description"}]},
     "base_model": "...", "adapter": "..." | null, "merged": true,
     "created": "2025-01-01T00:00:00Z", "steernpc_version": "0.1.0",
     "onnx": {"file": "model.onnx", "precision": "int4", ...}      # onnx target only
     "trtllm": {...}}                                               # trtllm target only
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CARD_FILE = "steernpc.json"
CARD_VERSION = 1
TARGETS = ("hf", "onnx", "trtllm")
ONNX_PRECISIONS = ("fp32", "int8", "int4")
ONNX_FILE = "model.onnx"


class ModelCardError(ValueError):
    pass


def schema_to_dict(schema: Any) -> dict:
    return {
        "name": schema.name,
        "attributes": [
            {"name": s.name, "min": s.min, "max": s.max, "default": s.default, "description": s.description}
            for s in schema.specs
        ],
    }


def schema_from_dict(data: dict, where: str = CARD_FILE) -> Any:
    """The card's schema as an AttributeSchema (validated like a schema YAML file)."""
    from steernpc.attributes import AttributeSchema
    from steernpc.yamlsource import parse_located

    # JSON is YAML: reuse the schema file validation, errors name the card.
    return AttributeSchema.from_located(parse_located(json.dumps(data, indent=1), f"{where}#schema"))


def make_card(
    target: str,
    fmt: str,
    stop: list[str],
    schema: Any,
    eos_token_ids: list[int] | None = None,
    base_model: str | None = None,
    adapter: str | None = None,
    merged: bool = True,
    **extra: Any,
) -> dict:
    from steernpc import __version__

    card = {
        "card_version": CARD_VERSION,
        "target": target,
        "format": fmt,
        "stop": list(stop),
        "eos_token_ids": sorted(set(eos_token_ids or [])),
        "schema": schema_to_dict(schema) if not isinstance(schema, dict) else schema,
        "base_model": base_model,
        "adapter": adapter,
        "merged": merged,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steernpc_version": __version__,
    }
    card.update(extra)
    return card


def write_model_card(folder: str | os.PathLike, card: dict) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def read_model_card(folder: str | os.PathLike | None) -> dict | None:
    """The folder's `steernpc.json` as a checked dict, or None when there is none.

    Accepts the model folder itself or a file inside it. Raises ModelCardError (naming the
    file and the field) when the card is there but malformed. The returned dict has the
    card's fields plus `"schema_obj"`: the AttributeSchema.
    """
    from steernpc.prompt import FORMATS

    if not folder:
        return None
    path = Path(folder)
    path = (path if path.is_dir() else path.parent) / CARD_FILE
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{path}: must be a JSON object")
    version = card.get("card_version", CARD_VERSION)
    if not isinstance(version, int) or version > CARD_VERSION:
        raise ModelCardError(f"{path}: card_version {version!r} is newer than this runtime understands ({CARD_VERSION})")
    if card.get("format") not in FORMATS:
        raise ModelCardError(f"{path}: format = {card.get('format')!r}; expected one of {', '.join(FORMATS)}")
    stop = card.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ModelCardError(f"{path}: stop must be a list of non-empty strings")
    eos = card.get("eos_token_ids", [])
    if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eos):
        raise ModelCardError(f"{path}: eos_token_ids must be a list of integers")
    if not isinstance(card.get("schema"), dict):
        raise ModelCardError(f"{path}: schema is required: {{name, attributes: [...]}}")
    try:
        schema = schema_from_dict(card["schema"], str(path))
    except ValueError as exc:
        raise ModelCardError(str(exc)) from None
    return {**card, "stop": stop, "eos_token_ids": eos, "schema_obj": schema}


# -- ONNX export ---------------------------------------------------------------------------

def onnx_available() -> tuple[bool, str]:
    """(can export, why not). Export needs onnxruntime-genai's model builder + onnx-ir."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxruntime_genai", "onnx_ir") if importlib.util.find_spec(m) is None]
    if missing:
        return False, (
            f"ONNX export needs {', '.join(missing)}: pip install 'steernpc[onnx]' "
            "(onnx, onnxruntime, onnxruntime-genai, onnx-ir)"
        )
    return True, ""


def export_onnx(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    precision: str = "int4",
    cache_dir: str | os.PathLike | None = None,
    quiet: bool = True,
) -> Path:
    """Export an HF causal LM folder to ONNX with a KV cache, for ONNX Runtime on CPU.

    Uses onnxruntime-genai's model builder (offline; it reads the local folder): fused
    GroupQueryAttention with rotary embeddings, SkipSimplifiedLayerNormalization, and for
    int4/int8 MatMulNBits weights (block 32, int8 activations: accuracy_level 4). The LM
    head only computes the last position (prune_lm_head), which is all a prefill needs.
    Writes `model.onnx` (+ `model.onnx.data`), tokenizer files and genai_config.json.
    """
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"onnx precision {precision!r}; choose from {', '.join(ONNX_PRECISIONS)}")
    ok, why = onnx_available()
    if not ok:
        raise RuntimeError(why)
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    own_cache = cache_dir is None
    cache = Path(cache_dir) if cache_dir else tmp / ".builder-cache"
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_dir), "-o", str(tmp), "-p", precision, "-e", "cpu", "-c", str(cache),
        "--extra_options", "prune_lm_head=true", "hf_remote=false",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not (tmp / ONNX_FILE).exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"ONNX export of {hf_dir} failed (exit {proc.returncode}):\n{tail}")
    if own_cache:
        shutil.rmtree(cache, ignore_errors=True)
    # The builder copies tokenizer.json/tokenizer_config.json; take the rest (chat
    # template, special tokens, generation config) from the HF folder too.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json", CARD_FILE):  # fmt: skip
        if (hf_dir / name).exists():
            shutil.copy2(hf_dir / name, tmp / name)
    if not quiet:
        print(proc.stdout[-2000:], file=sys.stderr)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def builder_version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxruntime-genai")
    except Exception:  # noqa: BLE001
        return "unknown"


def folder_fingerprint(*paths: str | os.PathLike | None) -> str:
    """A short hash of paths plus the size and mtime of the files in them (cache keys)."""
    h = hashlib.sha256()
    for p in paths:
        if p is None:
            h.update(b"-")
            continue
        p = Path(p).resolve()
        h.update(str(p).encode())
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]
