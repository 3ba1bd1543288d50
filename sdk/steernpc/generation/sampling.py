"""The one token sampler of the torch and onnx backends, and the one reading of end ids.

Both backends hand the scheduler float32 numpy logits, and every request draws from a
numpy generator (seeded when the request has a seed), so the same logits and seed give the
same token whichever backend computed them. (trtllm and remote sample in their servers.)
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from steernpc.generation.base import SamplingParams


def eos_ids(*values: Any) -> set[int]:
    """The end-of-sequence ids named by any of `values` (each an id, a list of ids, or None),
    as model configs, tokenizers, generation configs and model cards spell them."""
    ids: set[int] = set()
    for value in values:
        if isinstance(value, (list, tuple, set, frozenset)):
            ids.update(int(v) for v in value)
        elif value is not None:
            ids.add(int(value))
    return ids


class Sampler:
    """Draws one request's tokens: repetition penalty, greedy or temperature / top-k /
    top-p sampling. `shared` is the generator of unseeded requests."""

    def __init__(self, params: SamplingParams, prompt_ids: Iterable[int], shared: np.random.Generator):
        self.params = params
        self.rng = np.random.default_rng(int(params.seed)) if params.seed is not None else shared
        self.seen = np.unique(np.asarray(list(prompt_ids), dtype=np.int64))  # for the repetition penalty

    def add(self, token: int) -> None:
        """Count a generated token for the repetition penalty."""
        if self.params.repetition_penalty != 1.0 and token not in self.seen:
            self.seen = np.append(self.seen, token)

    def sample(self, logits: np.ndarray) -> int:
        """The next token from one position's float32 logits (changed in place)."""
        p = self.params
        if p.repetition_penalty != 1.0:
            scores = logits[self.seen]
            logits[self.seen] = np.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if p.temperature <= 0:
            return int(np.argmax(logits))
        logits = logits.astype(np.float64) / p.temperature
        if p.top_k > 0 and p.top_k < logits.size:
            kth = np.partition(logits, -p.top_k)[-p.top_k]
            logits[logits < kth] = -np.inf
        if p.top_p < 1.0:
            self._top_p(logits, p.top_p)
        probs = np.exp(logits - logits.max())
        cdf = np.cumsum(probs)
        return int(min(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"), logits.size - 1))

    @staticmethod
    def _top_p(logits: np.ndarray, top_p: float) -> None:
        """Keep the smallest set of likeliest tokens whose mass reaches top_p (in place).
        Sorting the whole vocabulary for every token of every sequence cost ~3 ms a token;
        the nucleus almost always lies among the few hundred likeliest tokens, so those are
        sorted first (argpartition is linear) and the full sort is only the fallback."""
        probs_all = np.exp(logits - logits.max())
        total = probs_all.sum()
        for k in (256, logits.size):
            if k < logits.size:
                head = np.argpartition(-logits, k)[:k]
                order = head[np.argsort(-logits[head], kind="stable")]
            else:
                order = np.argsort(-logits, kind="stable")
            probs = probs_all[order] / total
            cum = np.cumsum(probs)
            if k == logits.size or cum[-1] > top_p:
                keep = order[: int(np.searchsorted(cum - probs > top_p, True))]  # keep the token that crosses top_p
                mask = np.full(logits.size, True)
                mask[keep] = False
                logits[mask] = -np.inf
                return
