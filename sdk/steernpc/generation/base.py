"""The one interface every backend (torch, onnx, trtllm, remote) implements.

A caller submits a GenerationRequest (the full prompt text the runtime built, sampling
settings, stop strings, and optionally a cache key such as a session id) and gets a
Stream of Delta events followed by exactly one Finished event.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The backend's bounded queue is full; try again later (gRPC RESOURCE_EXHAUSTED)."""


class BackendUnavailable(RuntimeError):
    """A backend's runtime is not installed or cannot start (e.g. TensorRT-LLM on CPU)."""


MAX_GUIDANCE = 8.0


@dataclass
class SamplingParams:
    max_new_tokens: int = 96
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Run to max_new_tokens: neither an end-of-turn token nor a stop string ends the reply
    # (fixed-length replies for benchmarks and load tests; vLLM and TensorRT-LLM call it so too).
    ignore_eos: bool = False
    # Classifier-free guidance over the label line: each token is drawn from
    # log p(.|guide) + guidance * (log p(.|prompt) - log p(.|guide)), where the guide prompt
    # is the same conversation under the persona's own vector (GenerationRequest.guide_prompt).
    # 1 = off; 2-3 amplify how far the requested vector moves the reply.
    guidance: float = 1.0

    def validate(self) -> "SamplingParams":
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError(f"max_new_tokens = {self.max_new_tokens} is outside 1..4096")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature = {self.temperature} is outside 0..5")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p = {self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k = {self.top_k} must be >= 0")
        if not 0.0 < self.repetition_penalty <= 10.0:
            raise ValueError(f"repetition_penalty = {self.repetition_penalty} must be in (0, 10]")
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance = {self.guidance} is outside 0..{MAX_GUIDANCE:g} (1 = off)")
        return self


MAX_TAIL_TOKENS = 64


@dataclass
class TailRequest:
    """Ask for the structured tail (steernpc.actions) after the reply: the runtime writes
    `marker` where the reply ends, then decodes at most `max_tokens` tokens under `grammar`
    (GBNF) and parses them against `spec` (a steernpc.actions.TailSpec)."""

    marker: str
    grammar: str
    spec: Any
    max_tokens: int = MAX_TAIL_TOKENS


@dataclass
class GenerationRequest:
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    # Requests with the same cache key (a session) may reuse each other's KV cache: the
    # next turn's prompt extends the previous one, so only the new tokens are computed.
    cache_key: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # With params.guidance != 1: the prompt that guidance steers away from (the same
    # conversation under the persona's own vector). Without one, guidance is off.
    guide_prompt: str | None = None
    # The structured tail after the reply (None: no tail; the reply is all there is).
    tail: TailRequest | None = None

    @property
    def guided(self) -> bool:
        # (a guide identical to the prompt changes nothing: no second row for it)
        return self.guide_prompt is not None and self.params.guidance != 1.0 and self.guide_prompt != self.prompt


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    text: str
    reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens that were served from a KV / prefix cache
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)  # the reply's tokens (without EOS), where known
    # The structured tail (when the request asked for one): parsed (steernpc.actions.Tail),
    # its raw line, and why there is none if it could not be read.
    tail: Any = None
    tail_text: str = ""
    tail_error: str | None = None
    tail_tokens: int = 0
    tail_ms: float = 0.0  # time from the end of the reply to the end of the tail


def read_tail(request: GenerationRequest, text: str, final: Finished) -> Finished:
    """Parse a tail line for `request` into `final` (tail, tail_text or tail_error)."""
    from steernpc.actions import TailError, parse_tail

    final.tail_text = text.rstrip("\n")
    try:
        final.tail = parse_tail(text, request.tail.spec)
    except TailError as exc:
        final.tail_error = f"invalid tail {final.tail_text!r}: {exc}"
    return final


def finished_from(job: Any, reason: str, error: str | None = None) -> Finished:
    """The Finished event of a token-level backend's job (torch, onnx, trtllm share the
    fields: assembler, prompt_ids, generated, hit_eos, cached, submitted, first_token_at)."""
    now = time.perf_counter()
    first = job.first_token_at or now
    return Finished(
        text=job.assembler.text,
        reason=reason,
        prompt_tokens=len(job.prompt_ids),
        completion_tokens=len(job.generated) + (1 if job.hit_eos else 0),
        cached_tokens=job.cached,
        ttft_ms=(first - job.submitted) * 1000.0,
        total_ms=(now - job.submitted) * 1000.0,
        error=error,
        token_ids=list(job.generated),
    )


def refuse_guidance(request: GenerationRequest, backend: str) -> None:
    """For backends whose server samples (trtllm, remote): guidance needs the logits."""
    if request.guided:
        raise ValueError(f"guidance = {request.params.guidance:g} needs the torch or onnx backend; "
                         f"this server runs {backend} (send guidance 1, or leave it unset)")


class PromptTooLong(ValueError):
    """A prompt of `tokens` tokens, longer than the longest the backend takes (`limit`)."""

    def __init__(self, tokens: int, limit: int, message: str | None = None):
        self.tokens, self.limit = tokens, limit
        super().__init__(message or f"prompt is {tokens} tokens; the longest prompt this backend takes is {limit}")


class Backend(ABC):
    """A text generator that streams. Implementations must be thread-safe for submit()."""

    name: str = "backend"
    tokenizer: Any = None
    max_prompt_tokens: int | None = None  # the longest prompt submit() takes (None: not known here)

    @abstractmethod
    def submit(self, request: GenerationRequest) -> "Stream":  # noqa: F821
        """Queue a request; raise QueueFull when the bounded queue is full."""

    def generate(self, requests: list[GenerationRequest]) -> list[Finished]:
        """Run several requests together (batched where the backend can) and wait."""
        streams = [self.submit(r) for r in requests]
        return [s.result() for s in streams]

    def stream(self, request: GenerationRequest):
        """Sync iterator of text deltas (convenience over submit())."""
        for event in self.submit(request):
            if isinstance(event, Delta):
                yield event.text

    def drop_cache(self, cache_key: str) -> None:
        """Forget what is cached for `cache_key` (a deleted session)."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stats(self) -> dict[str, float]:
        """Numbers for metrics: queue depth, running requests, cached sessions."""
        return {}

    def close(self) -> None:
        pass
