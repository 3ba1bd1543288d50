"""ONNX Runtime backend: the fast CPU path.

The model is an ONNX export with a KV cache made by `steernpc compile --target onnx` (or
on first use, into STEERNPC_HOME/onnx/, when given an HF model): onnxruntime-genai's
model builder graph, whose attention is ORT's fused GroupQueryAttention (rotary inside,
per-row sequence lengths) and whose int4/int8 weights are MatMulNBits.

Engine (same design as the torch backend): one thread runs one loop for every request.
Each iteration prefills at most one chunk of a waiting prompt (batch 1), then decodes one
token for every running request in one batched call. The KV cache is a pool of slots
`[slots, kv_heads, max_len, head_dim]` per layer in numpy; ORT reads and writes it in
place (GroupQueryAttention's shared past/present buffer, bound by pointer through
IOBinding), so no step copies the cache. Running requests occupy slots 0..B-1, so a
decode binds one contiguous view. A finished request's slot stays parked with its
tokens: the session's next turn computes only the new tokens (longest common prefix), and
a new session copies the longest matching prefix (the character card) from any slot.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steernpc.generation.base import Backend, BackendUnavailable, Delta, Finished, GenerationRequest, QueueFull, finished_from
from steernpc.generation.detokenize import TextAssembler
from steernpc.generation.stream import Stream

_PRECISION_ALIASES = {"float32": "fp32", "fp32": "fp32", "int8": "int8", "int4": "int4", "q4_1": "q4_1"}


def find_onnx_dir(spec: str | os.PathLike | None) -> Path | None:
    """An exported model folder (has model.onnx), or a `steernpc compile` output that has an
    onnx/ subfolder; None otherwise."""
    from steernpc.compile import ONNX_FILE

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
    from steernpc import compile as card_mod
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


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # token ids whose K/V are in the slot
    owner: str | None = None  # the cache key (session) parked here
    last_used: float = 0.0


@dataclass
class _Job:
    request: GenerationRequest
    stream: Stream
    prompt_ids: list[int]
    submitted: float
    assembler: TextAssembler
    stop_ids: frozenset
    slot: int = -1
    prefilled: int = 0
    cached: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    rng: Any = None
    first_token_at: float | None = None
    seen: np.ndarray | None = None
    hit_eos: bool = False


class OnnxBackend(Backend):
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
        from steernpc.compile import ONNX_FILE, read_model_card

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

        max_len = min(int(max_len), int(genai.get("context_length") or max_len))
        self.max_len = max_len
        self.max_batch = max(1, min(max_batch, slots - 1))
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        shape = (slots, self.kv_heads, max_len, self.head_dim)
        # np.zeros maps pages lazily: only the touched part of the pool costs memory.
        self.k = [np.zeros(shape, np.float32) for _ in range(self.layers)]
        self.v = [np.zeros(shape, np.float32) for _ in range(self.layers)]
        self._row_bytes = self.kv_heads * max_len * self.head_dim * 4
        self._logits = np.zeros((self.max_batch, 1, self.vocab), np.float32)
        self.slots = [_Slot() for _ in range(slots)]
        self.eos_ids = self._eos_ids(genai)
        self._special = {tok: i for tok, i in (getattr(tokenizer, "get_added_vocab", dict)() or {}).items()}
        self._rng = np.random.default_rng()

        self._pending: collections.deque[_Job] = collections.deque()
        self._prefilling: _Job | None = None
        self._running: list[_Job] = []
        self._drops: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="steernpc-onnx-engine", daemon=True)
        self._thread.start()

    def _check_graph(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        need = {self._ids_name, self._mask_name, *(n for pair in self._past for n in pair)}
        if not need <= inputs:
            raise ValueError(
                f"{self.folder} is not an export this backend understands (missing inputs {sorted(need - inputs)[:3]}); "
                "re-export it with `steernpc compile --target onnx`"
            )

    def _eos_ids(self, genai: dict) -> set[int]:
        ids: set[int] = set()

        def add(value: Any) -> None:
            if isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
            elif value is not None:
                ids.add(int(value))

        add(genai.get("eos_token_id"))
        add(getattr(self.tokenizer, "eos_token_id", None))
        gen = self.folder / "generation_config.json"
        if gen.exists():
            add(json.loads(gen.read_text()).get("eos_token_id"))
        if self.card:
            add(self.card.get("eos_token_ids"))
        return ids

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        stream = Stream(request.request_id)
        ids = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        # A stop string that is one special token also stops on its id (it never shows in
        # the decoded text, which skips special tokens).
        stop_ids = frozenset(self._special[s] for s in request.stop if s in self._special)
        job = _Job(request, stream, ids, time.perf_counter(), TextAssembler(self.tokenizer, request.stop), stop_ids)
        with self._cond:
            if self._closed:
                raise RuntimeError("backend is closed")
            if self._error is not None:
                raise RuntimeError(f"generation engine failed: {self._error}")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"generation queue is full ({self.max_queue} waiting); retry shortly")
            if not ids:
                raise ValueError("empty prompt")
            if len(ids) + 1 >= self.max_len:
                raise ValueError(f"prompt is {len(ids)} tokens; this backend holds at most {self.max_len - 1}")
            self._pending.append(job)
            self._cond.notify()
        return stream

    def drop_cache(self, cache_key: str) -> None:
        with self._cond:
            self._drops.append(cache_key)
            self._cond.notify()

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {
                "queue_depth": len(self._pending) + (1 if self._prefilling else 0),
                "running": len(self._running),
                "parked_sessions": sum(1 for s in self.slots if s.owner is not None),
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._closed or self._pending or self._prefilling or self._running or self._drops):
                        self._cond.wait()
                    if self._closed:
                        break
                    drops, self._drops = self._drops, []
                for key in drops:
                    self._forget(key)
                self._reap_cancelled()
                self._admit()
                if self._prefilling is not None:
                    self._prefill_step(self._prefilling)
                if self._running:
                    self._decode_step()
        except BaseException as exc:  # a bug: fail every waiter instead of hanging them
            self._error = exc
            for job in [*self._running, *([self._prefilling] if self._prefilling else []), *self._pending]:
                job.stream.push(Finished(job.assembler.text, "error", error=f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for job in [*self._running, *([self._prefilling] if self._prefilling else []), *self._pending]:
                job.stream.push(Finished(job.assembler.text, "cancelled"))

    def _forget(self, key: str) -> None:
        for i, slot in enumerate(self.slots):
            busy = i < len(self._running) or (self._prefilling is not None and self._prefilling.slot == i)
            if slot.owner == key and not busy:
                slot.owner, slot.tokens = None, []

    def _reap_cancelled(self) -> None:
        with self._cond:
            waiting = [j for j in self._pending if j.stream.cancelled]
            for job in waiting:
                self._pending.remove(job)
        for job in waiting:
            job.stream.push(self._finished(job, "cancelled"))
        if self._prefilling is not None and self._prefilling.stream.cancelled:
            job, self._prefilling = self._prefilling, None
            self.slots[job.slot].tokens = job.prompt_ids[: job.prefilled]
            self.slots[job.slot].owner = job.request.cache_key
            job.stream.push(self._finished(job, "cancelled"))
        for row in reversed(range(len(self._running))):
            if self._running[row].stream.cancelled:
                self._retire(row, "cancelled")

    def _admit(self) -> None:
        if self._prefilling is not None or len(self._running) >= self.max_batch:
            return
        with self._cond:
            if not self._pending:
                return
            busy = {j.request.cache_key for j in self._running if j.request.cache_key}
            job = next((j for j in self._pending if j.request.cache_key is None or j.request.cache_key not in busy), None)
            if job is None:
                return
            self._pending.remove(job)
        job.slot = self._choose_slot(job)
        slot = self.slots[job.slot]
        slot.owner, slot.last_used = job.request.cache_key, time.monotonic()
        keep = _common_prefix(slot.tokens, job.prompt_ids)
        donor, donor_len = self._best_donor(job.prompt_ids, exclude=job.slot)
        if donor_len > keep:
            for k, v in zip(self.k, self.v):
                k[job.slot, :, :donor_len] = k[donor, :, :donor_len]
                v[job.slot, :, :donor_len] = v[donor, :, :donor_len]
            keep = donor_len
        keep = min(keep, len(job.prompt_ids) - 1)  # always compute the last prompt token
        slot.tokens = job.prompt_ids[:keep]
        job.prefilled = job.cached = keep
        seed = job.request.params.seed
        job.rng = np.random.default_rng(int(seed)) if seed is not None else self._rng
        job.seen = np.unique(np.asarray(job.prompt_ids, dtype=np.int64))
        self._prefilling = job

    def _choose_slot(self, job: _Job) -> int:
        candidates = range(len(self._running), len(self.slots))
        key = job.request.cache_key
        if key is not None:
            for i in candidates:
                if self.slots[i].owner == key:
                    return i
        free = [i for i in candidates if self.slots[i].owner is None]
        if free:
            return min(free, key=lambda i: len(self.slots[i].tokens))
        return min(candidates, key=lambda i: self.slots[i].last_used)  # evict the LRU session

    def _best_donor(self, ids: list[int], exclude: int) -> tuple[int, int]:
        best, best_len = -1, 0
        for i, slot in enumerate(self.slots):
            if i != exclude and slot.tokens:
                n = _common_prefix(slot.tokens, ids)
                if n > best_len:
                    best, best_len = i, n
        return best, best_len

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

    def _prefill_step(self, job: _Job) -> None:
        start = job.prefilled
        chunk = job.prompt_ids[start : start + self.prefill_chunk]
        n = len(chunk)
        ids = np.asarray([chunk], dtype=np.int64)
        mask = np.ones((1, start + n), dtype=np.int64)
        logits = self._run(job.slot, 1, ids, mask)
        job.prefilled += n
        self.slots[job.slot].tokens = job.prompt_ids[: job.prefilled]
        if job.prefilled < len(job.prompt_ids):
            return
        self._prefilling = None
        row = len(self._running)
        self._move(job.slot, row)
        job.slot = row
        self._running.append(job)
        self._emit(row, self._sample(job, logits[0].copy()))

    def _decode_step(self) -> None:
        jobs = self._running
        lengths = np.asarray([len(self.slots[i].tokens) for i in range(len(jobs))], dtype=np.int64)
        total = int(lengths.max()) + 1
        mask = (np.arange(total)[None, :] <= lengths[:, None]).astype(np.int64)
        ids = np.asarray([[j.next_token] for j in jobs], dtype=np.int64)
        logits = self._run(0, len(jobs), ids, mask)
        for row, job in enumerate(jobs):
            self.slots[row].tokens.append(job.next_token)
        tokens = [self._sample(job, logits[row].copy()) for row, job in enumerate(jobs)]
        for row in reversed(range(len(jobs))):
            self._emit(row, tokens[row])

    def _sample(self, job: _Job, logits: np.ndarray) -> int:
        p = job.request.params
        if p.repetition_penalty != 1.0:
            scores = logits[job.seen]
            logits[job.seen] = np.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if p.temperature <= 0:
            return int(np.argmax(logits))
        logits = logits.astype(np.float64) / p.temperature
        if p.top_k > 0 and p.top_k < logits.size:
            kth = np.partition(logits, -p.top_k)[-p.top_k]
            logits[logits < kth] = -np.inf
        if p.top_p < 1.0:
            order = np.argsort(-logits)
            sorted_logits = logits[order]
            probs = np.exp(sorted_logits - sorted_logits[0])
            probs /= probs.sum()
            drop = np.cumsum(probs) - probs > p.top_p  # keep the token that crosses top_p
            logits[order[drop]] = -np.inf
        probs = np.exp(logits - logits.max())
        cdf = np.cumsum(probs)
        return int(min(np.searchsorted(cdf, job.rng.random() * cdf[-1], side="right"), logits.size - 1))

    def _emit(self, row: int, token: int) -> None:
        job = self._running[row]
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if token in self.eos_ids or token in job.stop_ids:
            job.hit_eos = True
            self._retire(row, "stop")
            return
        job.generated.append(token)
        job.next_token = token
        if job.request.params.repetition_penalty != 1.0 and token not in job.seen:
            job.seen = np.append(job.seen, token)
        delta = job.assembler.add(token)
        if delta:
            job.stream.push(Delta(delta))
        if job.assembler.stopped:
            self._retire(row, "stop")
        elif len(job.generated) >= job.request.params.max_new_tokens:
            self._retire(row, "length")
        elif len(self.slots[row].tokens) + 1 >= self.max_len:
            self._retire(row, "length")

    def _retire(self, row: int, reason: str) -> None:
        job = self._running.pop(row)
        slot = self.slots[row]
        slot.owner, slot.last_used = job.request.cache_key, time.monotonic()
        if job.request.cache_key is None:
            slot.tokens = []
        last = len(self._running)
        if row != last:
            self._move(last, row)
            self._running.insert(row, self._running.pop())
        tail = job.assembler.finish()
        if tail:
            job.stream.push(Delta(tail))
        job.stream.push(self._finished(job, reason))

    def _move(self, src: int, dst: int) -> None:
        """Swap the contents (K/V and bookkeeping) of two slots."""
        if src == dst:
            return
        n = max(len(self.slots[src].tokens), len(self.slots[dst].tokens))
        if n:
            idx, rev = [src, dst], [dst, src]
            for k, v in zip(self.k, self.v):
                k[idx, :, :n] = k[rev, :, :n]
                v[idx, :, :n] = v[rev, :, :n]
        self.slots[src], self.slots[dst] = self.slots[dst], self.slots[src]

    def _finished(self, job: _Job, reason: str) -> Finished:
        return finished_from(job, reason)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
