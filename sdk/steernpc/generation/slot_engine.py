"""The continuous-batching scheduler that the torch and onnx backends share.

One engine thread runs one loop for every request. Each iteration prefills at most one
chunk of a waiting prompt (batch 1), then decodes one token for every running request in
one batched forward pass.

KV cache: a fixed pool of slots, one conversation per slot. A finished request's slot
stays parked with its tokens, so the session's next turn only computes the new tokens
(longest common prefix). A new session copies the longest matching prefix (the
character's card) from any other slot instead of recomputing it. Running requests always
occupy slots 0..B-1, so a decode reads one contiguous view of the pool.

A backend supplies the tensors: the two forward passes, K/V copy and swap between slots,
and sampling (`SlotEngine`'s abstract methods). Everything else lives here once.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

from steernpc.generation.base import Backend, Delta, Finished, GenerationRequest, QueueFull, finished_from
from steernpc.generation.detokenize import TextAssembler
from steernpc.generation.stream import Stream


@dataclass
class Slot:
    tokens: list[int] = field(default_factory=list)  # token ids whose K/V are in the slot
    owner: str | None = None  # cache key (session) parked here
    last_used: float = 0.0


@dataclass
class Job:
    request: GenerationRequest
    stream: Stream
    prompt_ids: list[int]
    submitted: float
    assembler: TextAssembler
    stop_ids: frozenset = frozenset()  # stop strings that are one special token
    slot: int = -1
    prefilled: int = 0  # prompt tokens whose K/V are in the slot
    cached: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    rng: Any = None  # the backend's random generator for this request
    seen: Any = None  # the backend's set of token ids for the repetition penalty
    first_token_at: float | None = None
    hit_eos: bool = False


class SlotEngine(Backend):
    """Subclasses call `_start_engine(slots, max_len, ...)` at the end of __init__, after
    setting `tokenizer` and `eos_ids`."""

    thread_name = "steernpc-engine"

    def _start_engine(self, slots: int, max_len: int, max_batch: int, max_queue: int, prefill_chunk: int) -> None:
        self.max_len = max_len
        self.max_batch = max(1, min(max_batch, slots - 1))
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.slots = [Slot() for _ in range(slots)]
        special = getattr(self.tokenizer, "get_added_vocab", dict)() or {}
        self._special_ids = dict(special)
        self._pending: collections.deque[Job] = collections.deque()
        self._prefilling: Job | None = None
        self._running: list[Job] = []  # row i lives in slot i
        self._drops: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    # -- what a backend supplies -------------------------------------------------------------
    @abstractmethod
    def _prefill_logits(self, slot: int, start: int, chunk: list[int]) -> Any:
        """Run `chunk` (positions start..) into `slot`'s K/V; the last position's logits."""

    @abstractmethod
    def _decode_logits(self, lengths: list[int], tokens: list[int]) -> Any:
        """One token for each of rows 0..B-1 (row i already holds lengths[i] tokens); logits per row."""

    @abstractmethod
    def _copy_kv(self, dst: int, src: int, length: int) -> None: ...

    @abstractmethod
    def _swap_kv(self, a: int, b: int, length: int) -> None: ...

    @abstractmethod
    def _start_sampling(self, job: Job) -> None:
        """Set job.rng (seeded when the request has a seed) and job.seen (the prompt's ids)."""

    @abstractmethod
    def _sample(self, job: Job, logits: Any) -> int: ...

    @abstractmethod
    def _add_seen(self, job: Job, token: int) -> None: ...

    def _loop_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        stream = Stream(request.request_id)
        ids = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        # A stop string that is one special token also stops on its id (it never shows in
        # the decoded text, which skips special tokens).
        stops = [] if request.params.ignore_eos else request.stop
        stop_ids = frozenset(self._special_ids[s] for s in stops if s in self._special_ids)
        job = Job(request, stream, ids, time.perf_counter(), TextAssembler(self.tokenizer, stops), stop_ids)
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
    def _jobs(self) -> list[Job]:
        return [*self._running, *([self._prefilling] if self._prefilling else []), *self._pending]

    def _loop(self) -> None:
        try:
            with self._loop_context():
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
            for job in self._jobs():
                job.stream.push(Finished(job.assembler.text, "error", error=f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for job in self._jobs():  # (a stream ignores events after its first Finished)
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
            job.stream.push(finished_from(job, "cancelled"))
        if self._prefilling is not None and self._prefilling.stream.cancelled:
            job, self._prefilling = self._prefilling, None
            self.slots[job.slot].tokens = job.prompt_ids[: job.prefilled]
            self.slots[job.slot].owner = job.request.cache_key
            job.stream.push(finished_from(job, "cancelled"))
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
        keep = common_prefix(slot.tokens, job.prompt_ids)
        donor, donor_len = self._best_donor(job.prompt_ids, exclude=job.slot)
        if donor_len > keep:
            self._copy_kv(job.slot, donor, donor_len)
            keep = donor_len
        keep = min(keep, len(job.prompt_ids) - 1)  # always compute the last prompt token
        slot.tokens = job.prompt_ids[:keep]
        job.prefilled = job.cached = keep
        self._start_sampling(job)
        self._prefilling = job

    def _choose_slot(self, job: Job) -> int:
        candidates = range(len(self._running), len(self.slots))
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
                n = common_prefix(slot.tokens, ids)
                if n > best_len:
                    best, best_len = i, n
        return best, best_len

    def _prefill_step(self, job: Job) -> None:
        start = job.prefilled
        chunk = job.prompt_ids[start : start + self.prefill_chunk]
        logits = self._prefill_logits(job.slot, start, chunk)
        job.prefilled += len(chunk)
        self.slots[job.slot].tokens = job.prompt_ids[: job.prefilled]
        if job.prefilled < len(job.prompt_ids):
            return
        # Prompt done: move the job into the decode rows and take its first token.
        self._prefilling = None
        row = len(self._running)
        self._move(job.slot, row)
        job.slot = row
        self._running.append(job)
        self._emit(row, self._sample(job, logits))

    def _decode_step(self) -> None:
        jobs = self._running
        logits = self._decode_logits([len(self.slots[i].tokens) for i in range(len(jobs))], [j.next_token for j in jobs])
        for row, job in enumerate(jobs):
            self.slots[row].tokens.append(job.next_token)
        tokens = [self._sample(job, logits[row]) for row, job in enumerate(jobs)]
        for row in reversed(range(len(jobs))):
            self._emit(row, tokens[row])

    def _emit(self, row: int, token: int) -> None:
        job = self._running[row]
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if token in job.stop_ids or (token in self.eos_ids and not job.request.params.ignore_eos):
            job.hit_eos = True
            self._retire(row, "stop")
            return
        job.generated.append(token)
        job.next_token = token
        if job.request.params.repetition_penalty != 1.0:
            self._add_seen(job, token)
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
            slot.tokens = []  # nothing will come back for it; let others reuse the slot
        last = len(self._running)  # the last running row moves into the hole
        if row != last:
            self._move(last, row)
            self._running.insert(row, self._running.pop())
        tail = job.assembler.finish()
        if tail:
            job.stream.push(Delta(tail))
        job.stream.push(finished_from(job, reason))

    def _move(self, src: int, dst: int) -> None:
        """Swap the contents (K/V and bookkeeping) of two slots."""
        if src == dst:
            return
        length = max(len(self.slots[src].tokens), len(self.slots[dst].tokens))
        if length:
            self._swap_kv(src, dst, length)
        self.slots[src], self.slots[dst] = self.slots[dst], self.slots[src]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
