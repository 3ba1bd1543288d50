"""A deterministic stand-in for a model, to test the scheduler and the KV slots in
milliseconds (imported by name, like backend_helpers).

`FakeRunner` keeps, per slot, the token at each cached position (what real K/V encode),
and its "logits" pick the next token from the whole cached sequence. A scheduler that
reads a wrong slot, copies a wrong prefix or loses a move therefore produces a different
reply than `reference()`, which computes the reply from the prompt alone.
"""

from __future__ import annotations

import threading
import zlib

import numpy as np

from steernpc.generation import GenerationRequest, SamplingParams
from steernpc.generation.scheduler import Scheduler

END = "<|end|>"
END_ID = 256
VOCAB = 257


class FakeTokenizer:
    """One token per character (its code point, < 256), and one special token, END."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids: list[int] = []
        for i, part in enumerate(text.split(END)):
            ids += ([END_ID] if i else []) + [ord(c) for c in part]
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i != END_ID)

    def get_added_vocab(self) -> dict[str, int]:
        return {END: END_ID}


def letter_after(seq: list[int]) -> int:
    """The next token of a sequence: a lowercase letter that depends on every token."""
    return ord("a") + zlib.crc32(np.asarray(seq, np.int32).tobytes()) % 26


def reference(prompt: str, n: int, next_token=letter_after) -> list[int]:
    """The greedy reply of `n` tokens that the fake model gives `prompt`, computed directly."""
    seq = FakeTokenizer()(prompt)["input_ids"]
    out = []
    for _ in range(n):
        out.append(next_token(seq))
        seq.append(out[-1])
    return out


class FakeRunner:
    """A ModelRunner without a model. With `gated`, each forward pass waits for a
    `release()`, so a test can act between two steps of the engine."""

    def __init__(self, slots: int, next_token=letter_after, gated: bool = False):
        self.kv: list[list[int]] = [[] for _ in range(slots)]
        self.next_token = next_token
        self.calls: list[tuple] = []  # ("prefill", slot, start, n) | ("decode", rows) | ("copy", dst, src, n) | ("swap", a, b, n)
        self.fail: BaseException | None = None  # raised by the next forward pass
        self._gated = gated
        self._cond = threading.Condition()
        self._permits = 0
        self._entered = 0

    # -- gating ----------------------------------------------------------------------------
    def release(self, steps: int = 1) -> None:
        with self._cond:
            self._permits += steps
            self._cond.notify_all()

    def wait_entered(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` forward passes have started (the last may wait for a release)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._entered >= count, timeout):
                raise TimeoutError(f"only {self._entered} of {count} forward passes started")

    def _step(self) -> None:
        with self._cond:
            self._entered += 1
            self._cond.notify_all()
            if self._gated:
                if not self._cond.wait_for(lambda: self._permits > 0, 10):
                    raise TimeoutError("the test never released this step")
                self._permits -= 1
        if self.fail is not None:
            raise self.fail

    # -- the ModelRunner -------------------------------------------------------------------
    def _logits(self, seq: list[int]) -> np.ndarray:
        logits = np.zeros(VOCAB, np.float32)
        logits[self.next_token(seq)] = 1.0
        return logits

    def prefill(self, slot: int, start: int, chunk: list[int]) -> np.ndarray:
        self._step()
        kv = self.kv[slot]
        assert len(kv) >= start, f"slot {slot} holds {len(kv)} positions; prefill starts at {start}"
        del kv[start:]
        kv += chunk
        self.calls.append(("prefill", slot, start, len(chunk)))
        return self._logits(kv)

    def decode(self, lengths: list[int], tokens: list[int]) -> np.ndarray:
        self._step()
        out = np.empty((len(tokens), VOCAB), np.float32)
        for row, (n, token) in enumerate(zip(lengths, tokens)):
            kv = self.kv[row]
            assert len(kv) >= n, f"slot {row} holds {len(kv)} positions; decode writes position {n}"
            del kv[n:]
            kv.append(token)
            out[row] = self._logits(kv)
        self.calls.append(("decode", len(tokens)))
        return out

    def copy_kv(self, dst: int, src: int, length: int) -> None:
        self.kv[dst] = self.kv[src][:length] + self.kv[dst][length:]
        self.calls.append(("copy", dst, src, length))

    def swap_kv(self, a: int, b: int, length: int) -> None:
        ka, kb = self.kv[a], self.kv[b]
        self.kv[a], self.kv[b] = kb[:length] + ka[length:], ka[:length] + kb[length:]
        self.calls.append(("swap", a, b, length))

    def decode_batches(self) -> list[int]:
        return [c[1] for c in self.calls if c[0] == "decode"]


def make_scheduler(slots: int = 4, max_batch: int = 3, max_len: int = 256, max_queue: int = 16, prefill_chunk: int = 64,
                   gated: bool = False, next_token=letter_after, eos_ids=frozenset()) -> tuple[Scheduler, FakeRunner]:  # fmt: skip
    runner = FakeRunner(slots, next_token=next_token, gated=gated)
    scheduler = Scheduler(runner, FakeTokenizer(), set(eos_ids), slots=slots, max_len=max_len, max_batch=max_batch,
                          max_queue=max_queue, prefill_chunk=prefill_chunk)  # fmt: skip
    return scheduler, runner


def greedy(prompt: str, n: int, key: str | None = None, **params) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, temperature=0.0, **params), cache_key=key)
