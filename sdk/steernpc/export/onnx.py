"""The ONNX export that `steernpc compile --target onnx` and the onnx backend both use.

An HF causal LM folder becomes `model.onnx` (+ `model.onnx.data`) with a KV cache, for
ONNX Runtime on CPU. The `q4_1` precision rewrites an fp32 export's weights as llama.cpp's
Q4_1 blocks (see q4_1.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from steernpc.model_card import CARD_FILE, write_model_card

if TYPE_CHECKING:
    from steernpc.export.config import CompileConfig

ONNX_PRECISIONS = ("q4_1", "int8", "int4", "fp32")
ONNX_FILE = "model.onnx"


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
    """Copy the fp32 export `src` to `dst` with its MatMuls rewritten as llama.cpp-style Q4_1
    and its LM head as Q8_0-style int8 (q4_1.rewrite_q4_1)."""
    import onnx

    from steernpc.export.q4_1 import rewrite_q4_1

    src, dst = Path(src), Path(dst)
    model = rewrite_q4_1(onnx.load(str(src / ONNX_FILE)), block)
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


def write_onnx(cfg: "CompileConfig", hf_dir: Path, out: Path, hf_card: dict) -> dict:
    """The onnx target of `steernpc compile`: export the merged HF folder, card it."""
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
