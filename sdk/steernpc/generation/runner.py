"""What a model supplies to the shared scheduler (`ModelRunner`), and the Backend made of
a runner and that scheduler (`RunnerBackend`; the torch and onnx backends are both)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from steernpc.generation.base import Backend, GenerationRequest
from steernpc.generation.scheduler import Scheduler
from steernpc.generation.stream import Stream


class ModelRunner(Protocol):
    """The forward passes over a pool of KV slots, and K/V moves between slots. Logits
    come back as float32 numpy arrays (what the shared sampler reads)."""

    def prefill(self, slot: int, start: int, chunk: list[int]) -> np.ndarray:
        """Run `chunk` (positions start..) into `slot`'s K/V; the last position's logits [vocab]."""

    def decode(self, lengths: list[int], tokens: list[int]) -> np.ndarray:
        """One token for each of slots 0..B-1 (slot i already holds lengths[i] tokens); logits [B, vocab]."""

    def copy_kv(self, dst: int, src: int, length: int) -> None:
        """Copy the first `length` positions of slot `src` into slot `dst`."""

    def swap_kv(self, a: int, b: int, length: int) -> None:
        """Exchange the first `length` positions of slots `a` and `b`."""


class RunnerBackend(Backend):
    """A Backend that is a ModelRunner: requests go to a `Scheduler` that drives it.
    Subclasses call `_start_scheduler(...)` at the end of __init__, once `tokenizer` is set
    and the runner can run."""

    thread_name = "steernpc-engine"
    scheduler: Scheduler

    def _start_scheduler(self, eos_ids: set[int], slots: int, max_len: int, max_batch: int, max_queue: int,
                         prefill_chunk: int) -> None:  # fmt: skip
        self.scheduler = Scheduler(self, self.tokenizer, eos_ids, slots=slots, max_len=max_len, max_batch=max_batch,
                                   max_queue=max_queue, prefill_chunk=prefill_chunk, thread_name=self.thread_name)  # fmt: skip

    @property
    def max_prompt_tokens(self) -> int:
        return self.scheduler.max_len - 2  # one position stays free for the first reply token

    @property
    def eos_ids(self) -> set[int]:
        return self.scheduler.eos_ids

    @eos_ids.setter
    def eos_ids(self, ids: set[int]) -> None:  # e.g. benchmarks decode a fixed length
        self.scheduler.eos_ids = ids

    def submit(self, request: GenerationRequest) -> Stream:
        return self.scheduler.submit(request)

    def drop_cache(self, cache_key: str) -> None:
        self.scheduler.drop_cache(cache_key)

    def stats(self) -> dict[str, float]:
        return self.scheduler.stats()

    def close(self) -> None:
        self.scheduler.close()
