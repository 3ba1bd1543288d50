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
import tempfile
import time
from pathlib import Path
from typing import Any

CARD_FILE = "steernpc.json"
CARD_VERSION = 1
TARGETS = ("hf", "onnx", "trtllm")
ONNX_PRECISIONS = ("q4_1", "int8", "int4", "fp32")
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
    precision: str = "q4_1",
    cache_dir: str | os.PathLike | None = None,
    quiet: bool = True,
) -> Path:
    """Export an HF causal LM folder to ONNX with a KV cache, for ONNX Runtime on CPU.

    Uses onnxruntime-genai's model builder (offline; it reads the local folder): fused
    GroupQueryAttention with rotary embeddings and SkipSimplifiedLayerNormalization; the LM
    head only computes the last position (prune_lm_head), which is all a prefill needs.
    Precisions: `fp32` (exact), `int8` and `int4` (the builder's MatMulNBits round-to-nearest,
    block 32, int8 activations), `q4_1` (llama.cpp's Q4_1 blocks + a Q8_0 LM head, see
    requantize_q4_1: int4 speed at llama.cpp's quality).
    Writes `model.onnx` (+ `model.onnx.data`), tokenizer files and genai_config.json.
    """
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"onnx precision {precision!r}; choose from {', '.join(ONNX_PRECISIONS)}")
    ok, why = onnx_available()
    if not ok:
        raise RuntimeError(why)
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    if precision == "q4_1":
        with tempfile.TemporaryDirectory(prefix="steernpc-onnx-", dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
            fp32 = export_onnx(hf_dir, Path(tmp) / "fp32", "fp32", cache_dir, quiet)
            return requantize_q4_1(fp32, out_dir)
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
    # template, special tokens, generation config, model card) from the HF folder too.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json", CARD_FILE):  # fmt: skip
        if (hf_dir / name).exists():
            shutil.copy2(hf_dir / name, tmp / name)
    if not quiet:
        print(proc.stdout[-2000:], file=sys.stderr)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def requantize_q4_1(src: str | os.PathLike, dst: str | os.PathLike, block: int = 32) -> Path:
    """Rewrite an fp32 export's MatMuls as llama.cpp-style Q4_1 (per block of 32: w ~ d*q + m,
    q in 0..15) and the LM head as Q8_0-style int8, on ONNX Runtime's MatMulNBits.

    MatMulNBits has integer zero points only, so the block minimum `m` is carried exactly
    by a correction term: A @ W = MatMulNBits(A, q - 8, d) + BlockSum(A) @ (m + 8d), where
    BlockSum sums A over each block of 32 inputs (a small fp32 MatMul). Weights that already
    sit on a Q4_1 / Q8_0 grid (the bundled SmolLM2 GGUF) are reproduced exactly; others get
    the same error llama.cpp's Q4_1 quantizer gives them.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src / ONNX_FILE))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    logits = {o.name for o in graph.output if o.name == "logits"}
    new_nodes, new_inits, drop = [], [], set()
    block_sums: dict[str, str] = {}

    def const(name: str, array) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight not in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[weight]).astype(np.float32)
        k, n = w.shape
        if k % block:
            new_nodes.append(node)
            continue
        nb = k // block
        wb = w.T.reshape(n, nb, block)
        base = node.name.strip("/").replace("/", "_") or weight
        if node.output[0] in logits:  # LM head: Q8_0-style symmetric int8
            scale = np.abs(wb).max(axis=2) / 127.0
            scale[scale == 0] = 1.0
            q = (np.clip(np.round(wb / scale[..., None]), -127, 127) + 128).astype(np.uint8)
            new_nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], const(f"{base}.q8", q), const(f"{base}.scales", scale.reshape(-1).astype(np.float32))],
                [node.output[0]], name=node.name + "_q8", domain="com.microsoft", K=k, N=n, bits=8, block_size=block,
                accuracy_level=4))  # fmt: skip
        else:  # Q4_1: d = (max - min) / 15, m = min, q = round((w - m) / d)
            lo, hi = wb.min(axis=2), wb.max(axis=2)
            d = (hi - lo) / 15.0
            d[d == 0] = 1e-12
            q = np.clip(np.floor((wb - lo[..., None]) / d[..., None] + 0.5), 0, 15).astype(np.uint8)
            packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
            y = node.output[0] + "_q4"
            new_nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], const(f"{base}.q4", packed), const(f"{base}.scales", d.reshape(-1).astype(np.float32))],
                [y], name=node.name + "_q4", domain="com.microsoft", K=k, N=n, bits=4, block_size=block, accuracy_level=4))  # fmt: skip
            a = node.input[0]
            if a not in block_sums:  # BlockSum(A) = A @ P, P the 0/1 [K, nb] block indicator
                sums = a + f"_blocksum{nb}"
                indicator = np.repeat(np.eye(nb, dtype=np.float32), block, axis=0)
                new_nodes.append(helper.make_node("MatMul", [a, const(f"{base}.blocks", indicator)], [sums], name=node.name + "_blocksum"))
                block_sums[a] = sums
            corr = node.output[0] + "_q4min"
            offset = (lo + 8.0 * d).T.astype(np.float32)  # [nb, n]
            new_nodes.append(helper.make_node("MatMul", [block_sums[a], const(f"{base}.min", offset)], [corr], name=node.name + "_min"))
            new_nodes.append(helper.make_node("Add", [y, corr], [node.output[0]], name=node.name + "_q4add"))
        uses[weight] -= 1
        if uses[weight] == 0:
            drop.add(weight)
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [i for i in graph.initializer if i.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    onnx.save_model(model, str(tmp / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=ONNX_FILE + ".data", size_threshold=1024)  # fmt: skip
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(ONNX_FILE):
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


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
