"""ONNX Runtime backend: the fast CPU path.

The model is an ONNX export with a KV cache made by `steernpc compile --target onnx` (or
on first use, into STEERNPC_HOME/onnx/, when given an HF model): onnxruntime-genai's
model builder graph, whose attention is ORT's fused GroupQueryAttention (rotary inside,
per-row sequence lengths) and whose int4/int8 weights are MatMulNBits.

The scheduler and the sampler are shared with the torch backend (scheduler.py: continuous
batching, session prefixes kept between turns; sampling.py); this file is the model
runner. Here the KV pool is
`[slots, kv_heads, max_len, head_dim]` per layer in numpy; ORT reads and writes it in
place (GroupQueryAttention's shared past/present buffer, bound by pointer through
IOBinding), so no step copies the cache. Running requests occupy slots 0..B-1, so a
decode binds one contiguous view.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from steernpc.generation.base import BackendUnavailable
from steernpc.generation.runner import RunnerBackend
from steernpc.generation.sampling import eos_ids

_PRECISION_ALIASES = {"float32": "fp32", "fp32": "fp32", "int8": "int8", "int4": "int4", "q4_1": "q4_1"}


def find_onnx_dir(spec: str | os.PathLike | None) -> Path | None:
    """An exported model folder (has model.onnx), or a `steernpc compile` output that has an
    onnx/ subfolder; None otherwise."""
    from steernpc.export import ONNX_FILE

    if not spec:
        return None
    path = Path(spec).expanduser()
    for candidate in (path, path / "onnx"):
        if (candidate / ONNX_FILE).is_file():
            return candidate
    return None


def ensure_onnx(model: Any = None, adapter: str | None = None, precision: str = "q4_1", quiet: bool = False) -> Path:
    """The ONNX folder for `model` (+ `adapter`): the folder itself when it is an export,
    else an export cached under STEERNPC_HOME/onnx/ (made once, ~15 s for SmolLM2)."""
    from steernpc import export as card_mod
    from steernpc import models

    found = find_onnx_dir(model)
    if found is not None:
        if adapter:
            raise ValueError(
                f"{found} is already an ONNX export; merge the adapter at compile time: "
                "steernpc compile --base MODEL --adapter DIR --target onnx --out OUT"
            )
        return found
    path = models.resolve(model)
    if path.suffix == ".gguf":
        raise ValueError(f"{path}: the onnx backend needs an HF folder (or `smollm2`), not a GGUF file")
    key = card_mod.folder_fingerprint(path, adapter)
    out = models.home() / "onnx" / f"{path.name}-{key}-{precision}"
    if (out / card_mod.ONNX_FILE).exists():
        return out
    if not quiet:
        import sys

        print(f"[steernpc] exporting {path.name}{' + adapter' if adapter else ''} to ONNX ({precision}) once: {out}",
              file=sys.stderr, flush=True)  # fmt: skip
    source = path
    tmp = None
    if adapter:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="steernpc-merge-")
        model_obj, tokenizer = models.load_model(path, adapter=adapter, device="cpu", dtype="float32")
        model_obj.save_pretrained(tmp.name, safe_serialization=True)
        tokenizer.save_pretrained(tmp.name)
        source = Path(tmp.name)
    try:
        card_mod.export_onnx(source, out, precision=precision)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


class OnnxBackend(RunnerBackend):
    """ONNX Runtime on CPU. Options:

    model: an ONNX export folder (`steernpc compile --target onnx`), a compile output root,
        or an HF model spec (exported once into STEERNPC_HOME/onnx/ at `precision`).
    adapter: a PEFT LoRA, merged before the export (HF model specs only).
    precision: q4_1 | int8 | int4 | fp32 (default q4_1: llama.cpp's Q4_1 quality at int4
        speed) for on-the-fly exports; `dtype` float32 is accepted as fp32.
    threads: ONNX Runtime intra-op threads (default: ORT's choice, one per core).
    spin: let ORT's worker threads spin between steps (faster on an otherwise idle
        machine, much slower when other processes share the cores; default off).
    """

    name = "onnx"
    thread_name = "steernpc-onnx-engine"

    def __init__(
        self,
        model: Any = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        precision: str | None = None,
        max_batch: int = 8,
        slots: int = 16,
        max_len: int = 1024,
        max_queue: int = 64,
        prefill_chunk: int = 256,
        threads: int | None = None,
        spin: bool = False,
        tokenizer: Any = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "the onnx backend needs onnxruntime: pip install 'steernpc[onnx]'"
            ) from None
        if device not in (None, "cpu", "auto"):
            raise ValueError(f"the onnx backend runs on CPU; device={device!r} is not supported (use the torch or trtllm backend on GPUs)")
        precision = _PRECISION_ALIASES.get(precision or dtype or "q4_1")
        if precision is None:
            raise ValueError(f"onnx precision/dtype {precision or dtype!r}: choose q4_1, int8, int4 or fp32 (float32)")
        from steernpc.export import ONNX_FILE
        from steernpc.model_card import read_model_card

        self.folder = ensure_onnx(model, adapter=adapter, precision=precision)
        self.card = read_model_card(self.folder)
        genai = json.loads((self.folder / "genai_config.json").read_text())["model"]
        dec = genai["decoder"]
        self.layers, self.kv_heads, self.head_dim = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
        self.vocab = genai["vocab_size"]
        names_in, names_out = dec["inputs"], dec["outputs"]
        self._past = [(names_in["past_key_names"] % i, names_in["past_value_names"] % i) for i in range(self.layers)]
        self._present = [(names_out["present_key_names"] % i, names_out["present_value_names"] % i) for i in range(self.layers)]
        self._ids_name, self._mask_name, self._logits_name = names_in["input_ids"], names_in["attention_mask"], names_out["logits"]

        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.folder)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(self.folder / ONNX_FILE), so, providers=["CPUExecutionProvider"])
        self._check_graph()
        self._io = self.session.io_binding()

        self.max_len = max_len = min(int(max_len), int(genai.get("context_length") or max_len))
        shape = (slots, self.kv_heads, max_len, self.head_dim)
        # np.zeros maps pages lazily: only the touched part of the pool costs memory.
        self.k = [np.zeros(shape, np.float32) for _ in range(self.layers)]
        self.v = [np.zeros(shape, np.float32) for _ in range(self.layers)]
        self._row_bytes = self.kv_heads * max_len * self.head_dim * 4
        self._start_scheduler(self._eos_ids(genai), slots, max_len, max_batch, max_queue, prefill_chunk)
        # logits of one step, rows 0..max_batch-1 (no request can arrive before __init__ returns)
        self._logits = np.zeros((self.scheduler.max_batch, 1, self.vocab), np.float32)

    def _check_graph(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        need = {self._ids_name, self._mask_name, *(n for pair in self._past for n in pair)}
        if not need <= inputs:
            raise ValueError(
                f"{self.folder} is not an export this backend understands (missing inputs {sorted(need - inputs)[:3]}); "
                "re-export it with `steernpc compile --target onnx`"
            )

    def _eos_ids(self, genai: dict) -> set[int]:
        gen = self.folder / "generation_config.json"
        return eos_ids(
            genai.get("eos_token_id"),
            getattr(self.tokenizer, "eos_token_id", None),
            json.loads(gen.read_text()).get("eos_token_id") if gen.exists() else None,
            (self.card or {}).get("eos_token_ids"),
        )

    # -- the ModelRunner -------------------------------------------------------------------
    def copy_kv(self, dst: int, src: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def swap_kv(self, a: int, b: int, length: int) -> None:
        idx, rev = [a, b], [b, a]
        for k, v in zip(self.k, self.v):
            k[idx, :, :length] = k[rev, :, :length]
            v[idx, :, :length] = v[rev, :, :length]

    def _run(self, first_row: int, rows: int, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One forward over slots [first_row, first_row + rows); K/V updated in place."""
        io = self._io
        shape = [rows, self.kv_heads, self.max_len, self.head_dim]
        offset = first_row * self._row_bytes
        for (pk, pv), (ok, ov), k, v in zip(self._past, self._present, self.k, self.v):
            kp, vp = k.ctypes.data + offset, v.ctypes.data + offset
            io.bind_input(pk, "cpu", 0, np.float32, shape, kp)
            io.bind_output(ok, "cpu", 0, np.float32, shape, kp)
            io.bind_input(pv, "cpu", 0, np.float32, shape, vp)
            io.bind_output(ov, "cpu", 0, np.float32, shape, vp)
        io.bind_cpu_input(self._ids_name, input_ids)
        io.bind_cpu_input(self._mask_name, mask)
        io.bind_output(self._logits_name, "cpu", 0, np.float32, [rows, 1, self.vocab], self._logits.ctypes.data)
        self.session.run_with_iobinding(io)
        return self._logits[:rows, 0]

    def prefill(self, slot: int, start: int, chunk: list[int]) -> np.ndarray:
        ids = np.asarray([chunk], dtype=np.int64)
        mask = np.ones((1, start + len(chunk)), dtype=np.int64)
        return self._run(slot, 1, ids, mask)[0].copy()

    def decode(self, lengths: list[int], tokens: list[int]) -> np.ndarray:
        rows = np.asarray(lengths, dtype=np.int64)
        mask = (np.arange(int(rows.max()) + 1)[None, :] <= rows[:, None]).astype(np.int64)
        ids = np.asarray([[t] for t in tokens], dtype=np.int64)
        return self._run(0, len(tokens), ids, mask).copy()
