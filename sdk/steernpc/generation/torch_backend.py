"""The embedded default backend: PyTorch + transformers, CPU or CUDA.

One engine thread runs one generation loop for every request (continuous batching):
each iteration prefills at most one chunk of a waiting prompt, then decodes one token
for every running request in a single batched forward pass.

KV cache: a fixed pool of slots, one conversation per slot (`SlotCache`). A finished
request's slot stays parked with its tokens, so the session's next turn only computes
the new tokens (longest common prefix). A new session copies the longest matching
prefix (the character's card) from any other slot instead of recomputing it. Running
requests always occupy slots 0..B-1, so the batched attention reads a view of the pool,
never a gathered copy.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from steernpc.generation.base import Backend, Delta, Finished, GenerationRequest, QueueFull, finished_from
from steernpc.generation.detokenize import TextAssembler
from steernpc.generation.stream import Stream


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA over the slot pool. Unlike transformers' sdpa path, which copies K/V with
    repeat_kv whenever a mask is given, this keeps grouped-query attention native."""
    causal = attention_mask is None and query.shape[2] > 1  # a plain HF forward on the same model
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, is_causal=causal, scale=scaling, enable_gqa=key.shape[1] != query.shape[1]
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("steernpc_slots", slot_attention)


class SlotCache:
    """Per-layer K/V pools [slots, kv_heads, max_len, head_dim], used as HF `past_key_values`.

    Before each forward the engine sets either a prefill (one slot, a start position) or a
    decode (rows 0..B-1, one position each); `update()` writes the new keys/values there and
    returns the keys/values the attention should read.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (slots, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.max_len = max_len
        self._mode = "decode"
        self._slot = 0
        self._start = 0
        self._positions: torch.Tensor | None = None
        self._kv_len = 0

    def set_prefill(self, slot: int, start: int, count: int) -> None:
        self._mode, self._slot, self._start, self._kv_len = "prefill", slot, start, start + count

    def set_decode(self, positions: torch.Tensor, kv_len: int) -> None:
        self._mode, self._positions, self._kv_len = "decode", positions, kv_len

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.k[layer_idx], self.v[layer_idx]
        if self._mode == "prefill":
            s, a, b = self._slot, self._start, self._kv_len
            k[s, :, a:b] = key[0]
            v[s, :, a:b] = value[0]
            return k[s : s + 1, :, :b], v[s : s + 1, :, :b]
        rows = torch.arange(key.shape[0], device=key.device)
        k[rows, :, self._positions] = key[:, :, 0]
        v[rows, :, self._positions] = value[:, :, 0]
        return k[: key.shape[0], :, : self._kv_len], v[: key.shape[0], :, : self._kv_len]

    def copy(self, dst: int, src: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        if a == b or length == 0:
            return
        idx, rev = torch.tensor([a, b]), torch.tensor([b, a])
        for k, v in zip(self.k, self.v):
            k[idx, :, :length] = k[rev, :, :length]
            v[idx, :, :length] = v[rev, :, :length]

    # transformers may ask these of a cache object
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def __len__(self) -> int:
        return len(self.k)


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # token ids whose K/V are in the slot
    owner: str | None = None  # cache key (session) parked here
    last_used: float = 0.0


@dataclass
class _Job:
    request: GenerationRequest
    stream: Stream
    prompt_ids: list[int]
    submitted: float
    assembler: TextAssembler
    slot: int = -1
    prefilled: int = 0  # prompt tokens whose K/V are in the slot
    cached: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    generator: torch.Generator | None = None
    first_token_at: float | None = None
    seen: torch.Tensor | None = None  # unique ids for the repetition penalty
    hit_eos: bool = False


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        model: Any = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 16,
        slots: int = 32,
        max_len: int = 2048,
        max_queue: int = 64,
        prefill_chunk: int = 512,
        tokenizer: Any = None,
    ):
        from steernpc import models

        if isinstance(model, torch.nn.Module):
            self.model, self.tokenizer = model.eval(), tokenizer
        else:
            self.model, self.tokenizer = models.load_model(model, adapter=adapter, device=device, dtype=dtype)
        config = self.model.config
        self.model.set_attn_implementation("steernpc_slots")
        self.device = next(self.model.parameters()).device
        self.max_batch = min(max_batch, slots - 1)
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dtype_ = next(self.model.parameters()).dtype
        self.cache = SlotCache(config.num_hidden_layers, slots, kv_heads, max_len, head_dim, dtype_, self.device)
        self.slots = [_Slot() for _ in range(slots)]
        self.eos_ids = self._eos_ids()
        self._decoder = self.model.get_decoder()
        self._lm_head = self.model.get_output_embeddings()
        # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40)
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._pending: collections.deque[_Job] = collections.deque()
        self._prefilling: _Job | None = None
        self._running: list[_Job] = []  # row i lives in slot i
        self._drops: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="steernpc-torch-engine", daemon=True)
        self._thread.start()

    def _eos_ids(self) -> set[int]:
        ids = set()
        for source in (self.model.generation_config, self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            ids.update(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
        return ids

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        stream = Stream(request.request_id)
        ids = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        job = _Job(request, stream, ids, time.perf_counter(), TextAssembler(self.tokenizer, request.stop))
        with self._cond:
            if self._closed:
                raise RuntimeError("backend is closed")
            if self._error is not None:
                raise RuntimeError(f"generation engine failed: {self._error}")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"generation queue is full ({self.max_queue} waiting); retry shortly")
            if len(ids) + 1 >= self.cache.max_len:
                raise ValueError(f"prompt is {len(ids)} tokens; this backend holds at most {self.cache.max_len - 1}")
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
            with torch.inference_mode():
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
        except BaseException as exc:  # a bug or OOM: fail every waiter instead of hanging them
            self._error = exc
            for job in [*self._running, *([self._prefilling] if self._prefilling else []), *self._pending]:
                job.stream.push(Finished(job.assembler.text, "error", error=f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for job in [*self._running, *self._pending]:
                job.stream.push(Finished(job.assembler.text, "cancelled"))

    def _forget(self, key: str) -> None:
        for i, slot in enumerate(self.slots):
            if slot.owner == key and i >= len(self._running) and (self._prefilling is None or self._prefilling.slot != i):
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
            # A session's next turn waits while its previous turn still runs.
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
            self.cache.copy(job.slot, donor, donor_len)
            keep = donor_len
        keep = min(keep, len(job.prompt_ids) - 1)  # always compute the last prompt token
        slot.tokens = job.prompt_ids[:keep]
        job.prefilled = job.cached = keep
        if job.request.params.seed is not None:
            job.generator = torch.Generator(device=self.device).manual_seed(int(job.request.params.seed))
        job.seen = torch.tensor(sorted(set(job.prompt_ids)), dtype=torch.long, device=self.device)
        self._prefilling = job

    def _choose_slot(self, job: _Job) -> int:
        first_free = len(self._running)
        candidates = range(first_free, len(self.slots))
        key = job.request.cache_key
        if key is not None:
            for i in candidates:
                if self.slots[i].owner == key:
                    return i
        free = [i for i in candidates if self.slots[i].owner is None]
        if free:
            # Prefer an empty slot; else the free slot whose tokens are least useful.
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

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self._decoder(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_kwarg: self.cache}
        )
        return self._lm_head(out.last_hidden_state[:, -1]).float()

    def _prefill_step(self, job: _Job) -> None:
        start = job.prefilled
        chunk = job.prompt_ids[start : start + self.prefill_chunk]
        n = len(chunk)
        ids = torch.tensor([chunk], device=self.device)
        positions = torch.arange(start, start + n, device=self.device).unsqueeze(0)
        keys = torch.arange(start + n, device=self.device)
        mask = (keys.unsqueeze(0) <= positions[0].unsqueeze(1)).view(1, 1, n, start + n)
        self.cache.set_prefill(job.slot, start, n)
        logits = self._forward(ids, positions, mask)
        job.prefilled += n
        self.slots[job.slot].tokens = job.prompt_ids[: job.prefilled]
        if job.prefilled < len(job.prompt_ids):
            return
        # Prompt done: move the job into the decode rows and take its first token.
        self._prefilling = None
        row = len(self._running)
        self._move(job.slot, row)
        job.slot = row
        self._running.append(job)
        self._emit(row, self._sample(job, logits[0]))

    def _decode_step(self) -> None:
        jobs = self._running
        positions = torch.tensor([len(self.slots[i].tokens) for i in range(len(jobs))], device=self.device)
        kv_len = int(positions.max()) + 1
        ids = torch.tensor([[j.next_token] for j in jobs], device=self.device)
        mask = (torch.arange(kv_len, device=self.device).unsqueeze(0) <= positions.unsqueeze(1)).view(len(jobs), 1, 1, kv_len)
        self.cache.set_decode(positions, kv_len)
        logits = self._forward(ids, positions.unsqueeze(1), mask)
        for row, job in enumerate(jobs):
            self.slots[row].tokens.append(job.next_token)
        tokens = [self._sample(job, logits[row]) for row, job in enumerate(jobs)]
        for row in reversed(range(len(jobs))):
            self._emit(row, tokens[row])

    def _sample(self, job: _Job, logits: torch.Tensor) -> int:
        p = job.request.params
        if p.repetition_penalty != 1.0:
            scores = logits[job.seen]
            logits[job.seen] = torch.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if p.temperature <= 0:
            return int(torch.argmax(logits))
        # Work on the top-k candidates only (sorted), not the whole vocabulary.
        if p.top_k > 0:
            values, index = torch.topk(logits, min(p.top_k, logits.numel()))
        else:
            values, index = torch.sort(logits, descending=True)
        values = values / p.temperature
        if p.top_p < 1.0:
            probs = torch.softmax(values, dim=-1)
            beyond = probs.cumsum(-1) - probs > p.top_p  # keep the token that crosses top_p
            values = values.masked_fill(beyond, float("-inf"))
        choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=job.generator)
        return int(index[choice])

    def _emit(self, row: int, token: int) -> None:
        job = self._running[row]
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if token in self.eos_ids:
            job.hit_eos = True
            self._retire(row, "stop")
            return
        job.generated.append(token)
        job.next_token = token
        if job.request.params.repetition_penalty != 1.0:
            job.seen = torch.cat([job.seen, torch.tensor([token], device=self.device)])
        delta = job.assembler.add(token)
        if delta:
            job.stream.push(Delta(delta))
        if job.assembler.stopped:
            self._retire(row, "stop")
        elif len(job.generated) >= job.request.params.max_new_tokens:
            self._retire(row, "length")
        elif len(self.slots[row].tokens) + 1 >= self.cache.max_len:
            self._retire(row, "length")

    def _retire(self, row: int, reason: str) -> None:
        job = self._running.pop(row)
        slot = self.slots[row]
        slot.owner, slot.last_used = job.request.cache_key, time.monotonic()
        if job.request.cache_key is None:
            slot.tokens = []  # nothing will come back for it; let others reuse the slot
        last = len(self._running)  # the last running row moves into the hole
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
        length = max(len(self.slots[src].tokens), len(self.slots[dst].tokens))
        self.cache.swap(src, dst, length)
        self.slots[src], self.slots[dst] = self.slots[dst], self.slots[src]

    def _finished(self, job: _Job, reason: str) -> Finished:
        return finished_from(job, reason)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
