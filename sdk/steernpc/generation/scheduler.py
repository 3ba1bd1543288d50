"""The continuous-batching scheduler that the torch and onnx backends share: admission,
the batch, cancel.

One engine thread runs one loop for every request. Each iteration prefills one chunk of
each prompt being prefilled (up to `prefill_batch` prompts, in one batched forward pass
where the runner has `prefill_many`: several sessions' or scene members' new lines at
once), then decodes one token for every running request in one batched forward pass. Running requests always occupy KV slots 0..B-1 (see kv_slots),
so a decode reads one contiguous view of the pool.

The model is a `ModelRunner` (runner.py): the forward passes and the K/V copies. Tokens
come from the shared `Sampler` (sampling.py).

A guided request (classifier-free guidance, SamplingParams.guidance) runs as a pair of
rows: its own prompt and a *guide* row holding the guide prompt. Both prefill side by
side and join the batch together, both decode in the same forward pass, and each token is
drawn once from the combined log-probs and fed to both rows. The guide row streams
nothing and leaves the batch with its request; its K/V parks under the session's guide
key, so the next guided turn of that session also computes only its new tokens.

A request with a structured tail (GenerationRequest.tail, steernpc.actions) has two
phases. The reply phase samples freely and streams; it ends where the reply would end
(an end-of-turn token, a stop string, the tail marker in the text, or max_new_tokens). The
reply's tokens stay; whatever followed the reply's text (a stop string, a marker the model
began) leaves the KV slot (the slot's length is cut back), and the runtime writes the
format's marker itself in one prefill chunk (on both rows of a guided pair). The tail
phase then draws every token through the request's grammar (a token bitmask on the
logits, steernpc.generation.grammar), streams nothing and ends when the grammar is
complete; the Finished event carries the parsed tail.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from steernpc.generation.base import (
    Delta, Finished, GenerationRequest, PromptTooLong, QueueFull, finished_from, read_tail,
)  # fmt: skip
from steernpc.generation.detokenize import TextAssembler, reply_token_count
from steernpc.generation.kv_slots import KvSlots
from steernpc.generation.sampling import Sampler
from steernpc.generation.stream import Stream

if TYPE_CHECKING:
    from steernpc.generation.runner import ModelRunner


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
    sampler: Sampler | None = None
    first_token_at: float | None = None
    hit_eos: bool = False
    guide: "Job | None" = None  # a guided request's guide row (a Job that streams nothing)
    guides: "Job | None" = None  # on a guide row: the request it guides
    last_logits: Any = None  # a pair member's prompt logits, until its partner is prefilled too
    constraint: Any = None  # the tail's grammar matcher (generation.grammar.TailConstraint) once the tail began
    tail_ids: list[int] = field(default_factory=list)
    reply_reason: str = ""  # why the reply phase ended (the Finished reason of a tailed request)
    reply_flushed: bool = False
    tail_started_at: float = 0.0

    @property
    def cache_key(self) -> str | None:
        key = self.request.cache_key
        return None if key is None else (key + GUIDE_KEY_SUFFIX if self.guides is not None else key)

    @property
    def pair(self) -> "list[Job]":
        """The rows that join and leave the batch together: the request, then its guide row."""
        owner = self.guides or self
        return [owner] if owner.guide is None else [owner, owner.guide]


GUIDE_KEY_SUFFIX = "\x00guide"  # a session's guide rows park under its key + this


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max()
    return logits - (top + np.log(np.exp(logits - top).sum()))


def guided_logits(own: np.ndarray, guide: np.ndarray, guidance: float) -> np.ndarray:
    """log p(.|guide) + guidance * (log p(.|own) - log p(.|guide)) (float32, one position)."""
    lg = log_softmax(guide.astype(np.float64))
    return (lg + guidance * (log_softmax(own.astype(np.float64)) - lg)).astype(np.float32)


class Scheduler:
    """Drives `runner` over `slots` KV slots of `max_len` tokens from its own thread.
    `eos_ids` end a reply (unless the request ignores them); callers may replace the set."""

    def __init__(
        self,
        runner: "ModelRunner",
        tokenizer: Any,
        eos_ids: set[int],
        *,
        slots: int,
        max_len: int,
        max_batch: int,
        max_queue: int,
        prefill_chunk: int,
        thread_name: str = "steernpc-engine",
        prefill_batch: int = 4,
    ):
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_len = max_len
        self.max_batch = max(1, min(max_batch, slots - 1))  # one slot stays free for the prefill
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prefill_batch = max(1, prefill_batch)
        self.kv = KvSlots(slots, runner)
        self._special_ids = dict(getattr(tokenizer, "get_added_vocab", dict)() or {})
        self._rng = np.random.default_rng()  # unseeded requests share it
        self._pending: collections.deque[Job] = collections.deque()
        self._prefilling: list[Job] = []  # each in its own slot >= len(self._running)
        self._running: list[Job] = []  # row i lives in slot i
        self._drops: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        if request.guided and self.max_batch < 2:
            raise ValueError("guidance needs a batch of at least 2 (the request and its guide row); raise max_batch")
        stream = Stream(request.request_id)
        ids = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        # A stop string that is one special token also stops on its id (it never shows in
        # the decoded text, which skips special tokens).
        stops = [] if request.params.ignore_eos else request.stop
        stop_ids = frozenset(self._special_ids[s] for s in stops if s in self._special_ids)
        job = Job(request, stream, ids, time.perf_counter(), TextAssembler(self.tokenizer, stops), stop_ids)
        if request.tail is not None:
            from steernpc.generation.grammar import TailConstraint

            job.constraint = TailConstraint(self.tokenizer, request.tail.grammar)  # (raises on a bad grammar)
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
                # "holds": the prompt and at least one token of reply
                raise PromptTooLong(len(ids), self.max_len - 2, f"prompt is {len(ids)} tokens; this backend holds at most {self.max_len - 1}")
            if request.guided:
                guide_ids = self.tokenizer(request.guide_prompt, add_special_tokens=False)["input_ids"]
                if not guide_ids or len(guide_ids) + 1 >= self.max_len:
                    raise PromptTooLong(len(guide_ids), self.max_len - 2, f"guide prompt is {len(guide_ids)} tokens; this backend holds at most {self.max_len - 1}")
                job.guide = Job(request, Stream(request.request_id), guide_ids, job.submitted, TextAssembler(self.tokenizer, []))
                job.guide.guides = job
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
                "queue_depth": len(self._pending) + len(self._prefilling),
                "running": len(self._running),
                "parked_sessions": self.kv.parked(),
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # -- the loop --------------------------------------------------------------------------
    def _jobs(self) -> list[Job]:
        return [*self._running, *self._prefilling, *self._pending]

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
                    for owner in (key, key + GUIDE_KEY_SUFFIX):
                        self.kv.forget(owner, busy=self._busy_slots())
                self._reap_cancelled()
                self._admit()
                if self._prefilling:
                    self._prefill_step()
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

    def _busy_slots(self) -> set[int]:
        return set(range(len(self._running))) | {job.slot for job in self._prefilling}

    def _reap_cancelled(self) -> None:
        with self._cond:
            waiting = [j for j in self._pending if j.stream.cancelled]
            for job in waiting:
                self._pending.remove(job)
        for job in waiting:
            job.stream.push(finished_from(job, "cancelled"))
        for job in [j for j in self._prefilling if j.pair[0].stream.cancelled]:
            # Its slot keeps the prefilled part of the prompt, parked under its cache key.
            self._prefilling.remove(job)
            if job.guides is None:
                job.stream.push(finished_from(job, "cancelled"))
        for job in [j for j in self._running if j.stream.cancelled and j.guides is None]:
            self._retire(job, "cancelled")

    def _admit(self) -> None:
        # Running and prefilling requests together stay within max_batch (so a prefill
        # that ends always finds a decode row).
        # A guided request brings its guide row: it needs two free rows.
        while len(self._prefilling) < self.prefill_batch and len(self._running) + len(self._prefilling) < self.max_batch:
            room = self.max_batch - len(self._running) - len(self._prefilling)
            with self._cond:
                if not self._pending:
                    return
                # A session's next turn waits while its previous turn still runs.
                busy = {j.request.cache_key for j in (*self._running, *self._prefilling) if j.request.cache_key}
                job = next((j for j in self._pending if (j.request.cache_key is None or j.request.cache_key not in busy)
                            and len(j.pair) <= room), None)  # fmt: skip
                if job is None:
                    return
                self._pending.remove(job)
            for member in job.pair:
                taken = {j.slot for j in self._prefilling}
                member.slot, keep = self.kv.claim(member.cache_key, member.prompt_ids, first=len(self._running), exclude=taken)
                member.prefilled = member.cached = keep
                self._prefilling.append(member)
            job.sampler = Sampler(job.request.params, job.prompt_ids, self._rng)

    def _prefill_step(self) -> None:
        jobs = [j for j in self._prefilling if j.prefilled < len(j.prompt_ids)]  # (a pair member may wait for its partner)
        parts = [(job.slot, job.prefilled, job.prompt_ids[job.prefilled : job.prefilled + self.prefill_chunk]) for job in jobs]
        many = getattr(self.runner, "prefill_many", None)
        if many is not None and len(parts) > 1:
            logits = many(parts)
        else:
            logits = [self.runner.prefill(*part) for part in parts]
        for job, (_, _, chunk), row_logits in zip(jobs, parts, logits):
            job.prefilled += len(chunk)
            self.kv[job.slot].tokens = job.prompt_ids[: job.prefilled]
            if job.prefilled < len(job.prompt_ids):
                continue
            job.last_logits = row_logits
            pair = job.pair
            if any(m.prefilled < len(m.prompt_ids) for m in pair):
                continue  # the guide row or its request is still prefilling
            # Prompt done: move the job (a pair: the request, then its guide row) into the
            # decode rows and take its first token.
            for member in pair:
                self._prefilling.remove(member)
            for member in pair:
                row = len(self._running)
                for other in [*self._prefilling, *pair]:  # a prefill that sat in that row swaps places with it
                    if other is not member and other.slot == row:
                        other.slot = member.slot
                self.kv.move(member.slot, row)
                member.slot = row
                self._running.append(member)
            owner = pair[0]
            logits = owner.last_logits
            if owner.guide is not None:
                logits = guided_logits(logits, owner.guide.last_logits, owner.request.params.guidance)
            for member in pair:
                member.last_logits = None
            self._emit(owner, owner.sampler.sample(logits))

    def _decode_step(self) -> None:
        jobs = list(self._running)
        logits = self.runner.decode([len(self.kv[i].tokens) for i in range(len(jobs))], [j.next_token for j in jobs])
        for row, job in enumerate(jobs):
            self.kv[row].tokens.append(job.next_token)
        tokens = {}
        for row, job in enumerate(jobs):
            if job.guides is not None:
                continue
            own = logits[row]
            if job.guide is not None:
                own = guided_logits(own, logits[jobs.index(job.guide)], job.request.params.guidance)
            if job.tail_started_at:
                own = job.constraint.mask(np.array(own, dtype=np.float32))
            tokens[id(job)] = job.sampler.sample(own)
        for job in jobs:
            if job.guides is None:
                self._emit(job, tokens[id(job)])

    def _emit(self, job: Job, token: int) -> None:
        if job.guide is not None:
            job.guide.next_token = token  # the guide row reads the same reply
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if job.tail_started_at:
            self._emit_tail(job, token)
            return
        if token in job.stop_ids or (token in self.eos_ids and not job.request.params.ignore_eos):
            if job.request.tail is not None:
                self._start_tail(job, "stop")
                return
            job.hit_eos = True
            self._retire(job, "stop")
            return
        job.generated.append(token)
        job.next_token = token
        job.sampler.add(token)
        delta = job.assembler.add(token)
        if delta:
            job.stream.push(Delta(delta))
        reason = None
        if job.assembler.stopped:
            reason = "stop"
        elif len(job.generated) >= job.request.params.max_new_tokens:
            reason = "length"
        elif max(len(self.kv[self._running.index(m)].tokens) for m in job.pair) + 1 >= self.max_len:
            reason = "length"
        if reason is None:
            return
        if job.request.tail is not None:
            self._start_tail(job, reason)
        else:
            self._retire(job, reason)

    # -- the structured tail -----------------------------------------------------------------
    def _start_tail(self, job: Job, reason: str) -> None:
        """End the reply phase: flush the reply's text, cut the slot back to the reply, write
        the marker (one prefill chunk per row) and draw the tail's first token."""
        job.reply_reason = reason
        rest = job.assembler.finish()
        job.reply_flushed = True
        if rest:
            job.stream.push(Delta(rest))
        job.tail_started_at = time.perf_counter()
        if job.assembler.stopped:
            job.generated = job.generated[: reply_token_count(self.tokenizer, job.generated, job.request.stop)]
        marker = self.tokenizer(job.request.tail.marker, add_special_tokens=False)["input_ids"]
        room = self.max_len - 1 - job.request.tail.max_tokens
        if max(len(m.prompt_ids) for m in job.pair) + len(job.generated) + len(marker) > room:
            self._retire(job, reason, tail_error=f"no room for the tail: the model holds {self.max_len} tokens")
            return
        rows = []
        for member in job.pair:
            row = self._running.index(member)
            slot = self.kv[row]
            sequence = member.prompt_ids + job.generated
            have = min(len(slot.tokens), len(sequence))
            del slot.tokens[have:]  # what followed the reply's text leaves the slot
            chunk = sequence[have:] + marker
            rows.append(self.runner.prefill(row, have, chunk))
            slot.tokens.extend(chunk)
        logits = rows[0]
        if job.guide is not None:
            logits = guided_logits(logits, rows[1], job.request.params.guidance)
        self._emit(job, job.sampler.sample(job.constraint.mask(np.array(logits, dtype=np.float32))))

    def _emit_tail(self, job: Job, token: int) -> None:
        ended = token in self.eos_ids or token in job.stop_ids
        if not ended:
            if not job.constraint.accept(token):  # (cannot happen under the mask; kept as a guard)
                self._retire(job, job.reply_reason, tail_error=f"the grammar refused token {token}: {job.constraint.error}")
                return
            job.tail_ids.append(token)
            job.next_token = token
        if ended or job.constraint.done:
            self._retire(job, job.reply_reason)
        elif len(job.tail_ids) >= job.request.tail.max_tokens:
            self._retire(job, job.reply_reason, tail_error=f"the tail did not end within {job.request.tail.max_tokens} tokens")
        elif max(len(self.kv[self._running.index(m)].tokens) for m in job.pair) + 1 >= self.max_len:
            self._retire(job, job.reply_reason, tail_error="the tail ran out of room in the model's context")

    def _retire(self, job: Job, reason: str, tail_error: str | None = None) -> None:
        for member in reversed(job.pair):
            self._leave(member)
        if not job.reply_flushed:
            rest = job.assembler.finish()
            if rest:
                job.stream.push(Delta(rest))
        final = finished_from(job, reason)
        if job.tail_started_at and reason != "cancelled":
            final.tail_tokens = len(job.tail_ids)
            final.tail_ms = (time.perf_counter() - job.tail_started_at) * 1000.0
            if tail_error:
                final.tail_error = tail_error
                final.tail_text = self.tokenizer.decode(job.tail_ids, skip_special_tokens=True)
            else:
                read_tail(job.request, self.tokenizer.decode(job.tail_ids, skip_special_tokens=True), final)
        job.stream.push(final)

    def _leave(self, job: Job) -> None:
        """Take `job`'s row out of the batch and park its slot; the last row fills the hole."""
        row = self._running.index(job)
        self._running.pop(row)
        self.kv.release(row, job.cache_key)
        last = len(self._running)
        if row != last:
            self.kv.move(last, row)
            self._running.insert(row, self._running.pop())
