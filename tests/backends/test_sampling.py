"""The one sampler of the torch and onnx backends (steernpc.generation.sampling): the same
logits and seed give the same token whichever backend computed the logits, and greedy,
top-k, top-p, temperature and the repetition penalty do what they say. No model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steernpc.generation import SamplingParams
from steernpc.generation.onnx_backend import OnnxBackend
from steernpc.generation.runner import RunnerBackend
from steernpc.generation.sampling import Sampler, eos_ids
from steernpc.generation.torch_backend import TorchBackend

VOCAB = 300


def random_logits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (n, VOCAB)).astype(np.float32)


def draw(params: SamplingParams, rows, prompt=(1, 2, 3)) -> list[int]:
    sampler = Sampler(params, prompt, np.random.default_rng())
    out = []
    for row in rows:
        out.append(sampler.sample(row.copy()))
        sampler.add(out[-1])
    return out


def test_torch_and_onnx_share_the_scheduler_and_its_sampler():
    assert issubclass(TorchBackend, RunnerBackend) and issubclass(OnnxBackend, RunnerBackend)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0, seed=7),
    SamplingParams(temperature=0.7, top_p=0.9, seed=7),
    SamplingParams(temperature=1.3, top_k=20, top_p=0.95, repetition_penalty=1.3, seed=7),
])  # fmt: skip
def test_the_same_logits_and_seed_give_the_same_tokens_from_torch_or_onnx(params):
    """The torch runner hands over its float32 tensor's numpy view; the onnx runner hands
    over ORT's float32 array: equal logits, equal seed, equal tokens."""
    logits = random_logits(40)
    from_onnx = draw(params, logits)
    from_torch = draw(params, [t.numpy() for t in torch.from_numpy(logits.copy())])
    assert from_torch == from_onnx
    assert draw(params, logits) == from_onnx  # and again: reproducible
    other = SamplingParams(**{**params.__dict__, "seed": 8})
    assert draw(other, logits) != from_onnx


def test_greedy_is_the_argmax():
    logits = random_logits(10)
    assert draw(SamplingParams(temperature=0.0), logits) == [int(np.argmax(r)) for r in logits]


def test_top_k_of_one_and_a_tiny_top_p_are_greedy():
    logits = random_logits(10)
    best = [int(np.argmax(r)) for r in logits]
    assert draw(SamplingParams(temperature=1.0, top_k=1), logits) == best
    assert draw(SamplingParams(temperature=1.0, top_p=1e-6), logits) == best


def test_top_k_and_top_p_keep_only_the_best_tokens():
    logits = random_logits(200)
    for token, row in zip(draw(SamplingParams(temperature=2.0, top_k=5), logits), logits):
        assert token in np.argsort(-row)[:5]
    for token, row in zip(draw(SamplingParams(temperature=1.0, top_p=0.5), logits), logits):
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        order = np.argsort(-probs)
        nucleus = order[: int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1]  # up to the token that crosses 0.5
        assert token in nucleus


def test_temperature_one_samples_the_softmax():
    probs = np.array([0.6, 0.3, 0.1])
    row = np.log(probs).astype(np.float32)
    tokens = draw(SamplingParams(temperature=1.0, seed=3), [row] * 6000, prompt=())
    assert np.allclose(np.bincount(tokens, minlength=3) / len(tokens), probs, atol=0.02)


def test_the_repetition_penalty_demotes_seen_tokens():
    row = np.zeros(VOCAB, np.float32)
    row[[2, 5]] = [3.0, 2.0]  # token 2 is in the prompt
    assert draw(SamplingParams(temperature=0.0), [row]) == [2]
    assert draw(SamplingParams(temperature=0.0, repetition_penalty=2.0), [row]) == [5]
    # generated tokens count too: once drawn, 5 (2.0 -> 1.0) falls below 2 (1.5)
    assert draw(SamplingParams(temperature=0.0, repetition_penalty=2.0), [row, row]) == [5, 2]


def test_unseeded_requests_draw_from_the_shared_generator():
    params = SamplingParams(temperature=1.0)
    logits = random_logits(20)
    a = Sampler(params, (), np.random.default_rng(5))
    b = Sampler(params, (), np.random.default_rng(5))
    assert [a.sample(r.copy()) for r in logits] == [b.sample(r.copy()) for r in logits]
    assert Sampler(SamplingParams(seed=1), (), np.random.default_rng(5)).rng is not a.rng


def test_eos_ids_reads_every_spelling():
    assert eos_ids(2, None, [2, 7], (9,), {11}) == {2, 7, 9, 11}
    assert eos_ids() == set() and eos_ids(None) == set()


def test_top_p_keeps_exactly_the_nucleus_of_a_full_sort():
    # the fast path sorts only the likeliest few hundred tokens; it must keep the same set
    # as sorting the whole vocabulary, for peaked and for flat distributions alike
    rng = np.random.default_rng(0)
    for _ in range(40):
        logits = rng.standard_normal(49152) * rng.uniform(0.5, 6.0)
        top_p = rng.uniform(0.05, 0.999)
        fast = logits.copy()
        Sampler._top_p(fast, top_p)
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(logits[order] - logits[order][0])
        probs /= probs.sum()
        full = logits.copy()
        full[order[np.cumsum(probs) - probs > top_p]] = -np.inf
        assert np.array_equal(np.isinf(fast), np.isinf(full))
