"""The engine's guarantees (steernpc.generation.scheduler and kv_slots), over both model
runners that it drives, torch and onnx (the tiny random Llama; onnx from its fp32 export): batched,
chunked and cached decoding gives exactly what plain transformers greedy decoding gives,
whatever the batch, the slot or the cache state; a session's next turn and a new session
reuse cached prefixes; the queue and the cache are bounded with clear errors; one seed
samples the same reply from both. (The same without a model, in milliseconds:
test_scheduler.py, test_kv_slots.py.)"""

from __future__ import annotations

import time

import pytest
import torch
from backend_helpers import CARD, chat

from steernpc import models
from steernpc.generation import GenerationRequest, QueueFull, SamplingParams

ENGINES = ["torch", "onnx"]


@pytest.fixture(scope="module")
def build(request, tiny_model_dir):
    """build(kind, **options) -> a fresh backend of that kind over the tiny model."""

    def make(kind: str, **options):
        if kind == "torch":
            from steernpc.generation.torch_backend import TorchBackend

            return TorchBackend(tiny_model_dir, device="cpu", **options)
        from steernpc.generation.onnx_backend import OnnxBackend

        return OnnxBackend(request.getfixturevalue("onnx_tiny_dir"), **options)

    return make


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, build):
    backend = build(request.param, slots=6, max_batch=4, max_len=512, prefill_chunk=16)
    backend.eos_ids = set()  # a random model must not stop early: compare full lengths
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    model, tokenizer = models.load_model(tiny_model_dir, device="cpu")

    def greedy(prompt: str, n: int) -> list[int]:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
        return out[0, ids["input_ids"].shape[1] :].tolist()

    return greedy


def greedy_request(prompt: str, n: int, key: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, temperature=0.0), cache_key=key)


def test_batch_matches_transformers_greedy(engine, reference):
    prompts = [chat("Hello"), chat("Can you fix my sword? It broke on a troll."), "Once upon a time", chat("Hi", "Hm.", "Bye")]
    results = engine.generate([greedy_request(p, 12) for p in prompts])
    for prompt, result in zip(prompts, results):
        assert result.reason == "length"
        assert result.token_ids == reference(prompt, 12)


def test_guidance_pairs_rows_over_the_real_runner(engine, reference):
    """A guided request at strength 0 is its guide prompt's greedy reply (the guide row reads
    the same tokens); at strength 1 it is its own; both batched with a plain request."""
    own, guide = "Once upon a time", "The quick brown fox"  # (the random model's replies differ)

    def guided(g: float) -> GenerationRequest:
        return GenerationRequest(own, SamplingParams(max_new_tokens=10, temperature=0.0, guidance=g), guide_prompt=guide)

    results = engine.generate([guided(0.0), greedy_request("Hello", 10), guided(1.0)])
    assert [r.token_ids for r in results] == [reference(guide, 10), reference("Hello", 10), reference(own, 10)]
    assert reference(guide, 10) != reference(own, 10)


def test_long_prompt_is_prefilled_in_chunks(engine, reference):
    prompt = chat("Tell me about " + ", ".join(f"the sword number {i}" for i in range(12)))  # > 3 chunks of 16
    result = engine.generate([greedy_request(prompt, 8)])[0]
    assert result.prompt_tokens > 48
    assert result.token_ids == reference(prompt, 8)


def test_next_turn_reuses_the_session_cache(engine, reference):
    first = engine.generate([greedy_request(chat("Good morning"), 8, key="s-reuse")])[0]
    second_prompt = chat("Good morning", "Morning.", "Any swords for sale?")
    second = engine.generate([greedy_request(second_prompt, 8, key="s-reuse")])[0]
    assert second.cached_tokens >= first.prompt_tokens - 2
    assert second.token_ids == reference(second_prompt, 8)


def test_new_session_copies_the_shared_card_prefix(engine, reference):
    engine.generate([greedy_request(chat("First visitor"), 4, key="donor")])
    fresh = engine.generate([greedy_request(chat("A different visitor entirely"), 6, key="fresh")])[0]
    card_tokens = len(engine.tokenizer(CARD, add_special_tokens=False)["input_ids"])
    assert fresh.cached_tokens >= card_tokens
    assert fresh.token_ids == reference(chat("A different visitor entirely"), 6)


def test_more_sessions_than_slots_stay_correct(engine, reference):
    """12 sessions through 6 slots: evicted sessions are recomputed, never mixed up."""
    history = {f"evict-{i}": [f"Player {i} says hello"] for i in range(12)}
    for _round in range(2):
        keys = list(history)
        prompts = {k: chat(*history[k]) for k in keys}
        results = engine.generate([greedy_request(prompts[k], 5, key=k) for k in keys])
        for key, result in zip(keys, results):
            assert result.token_ids == reference(prompts[key], 5), key
            history[key] += ["Hm.", f"and again, {key}"]


def test_dropped_session_starts_cold(engine):
    engine.generate([greedy_request(chat("Remember me"), 4, key="s-drop")])
    engine.drop_cache("s-drop")
    again = engine.generate([greedy_request(chat("Remember me", "Hm.", "Well?"), 4, key="s-drop")])[0]
    # only a prefix every session shares (card + user header) may come from another slot now
    shared = len(engine.tokenizer(CARD + "<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    assert again.cached_tokens <= shared


@pytest.mark.parametrize("kind", ENGINES)
def test_queue_bound_answers_queue_full(build, kind):
    backend = build(kind, slots=3, max_batch=1, max_queue=2)
    try:
        streams = []
        with pytest.raises(QueueFull):
            for _ in range(10):
                streams.append(backend.submit(greedy_request(chat("Wait in line"), 300)))
        for stream in streams:
            stream.cancel()
        deadline = time.time() + 30
        for stream in streams:
            assert stream.result(timeout=max(1.0, deadline - time.time())).reason == "cancelled"
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ENGINES)
def test_prompts_the_cache_cannot_hold_are_refused(build, kind):
    backend = build(kind, slots=2, max_len=64)
    try:
        with pytest.raises(ValueError, match="at most 63"):
            backend.submit(greedy_request(chat("word " * 100), 4))
        with pytest.raises(ValueError, match="empty prompt"):
            backend.submit(greedy_request("", 4))
    finally:
        backend.close()


def test_one_seed_samples_the_same_reply_from_torch_and_onnx(build):
    """Both runners feed one sampler (steernpc.generation.sampling), and the fp32 export
    computes the torch model's logits: one seed, one reply."""
    replies = []
    for kind in ENGINES:
        backend = build(kind, slots=3, max_batch=2)
        backend.eos_ids = set()
        try:
            params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
            replies.append(backend.generate([GenerationRequest(chat("Tell me a story."), params)])[0].token_ids)
        finally:
            backend.close()
    assert len(replies[0]) == 16
    assert replies[0] == replies[1]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ENGINES)
def test_smollm2_batched_greedy_matches_transformers(kind, smollm2_dir, tmp_path_factory):
    if kind == "torch":
        from steernpc.generation.torch_backend import TorchBackend

        backend = TorchBackend(smollm2_dir, device="cpu", slots=4, max_batch=3)
    else:
        from steernpc.export import export_onnx
        from steernpc.generation.onnx_backend import OnnxBackend

        backend = OnnxBackend(export_onnx(smollm2_dir, tmp_path_factory.mktemp("smollm2-onnx") / "fp32", precision="fp32"),
                              slots=4, max_batch=3)  # fmt: skip
    try:
        model, tokenizer = models.load_model(smollm2_dir, device="cpu")
        prompts = [chat("What is the capital of France?"), chat("Can you fix my sword?"), chat("Hi", "Hm.", "Bye then")]
        results = backend.generate([greedy_request(p, 16) for p in prompts])
        for prompt, result in zip(prompts, results):
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, max_new_tokens=16, do_sample=False)
            expected = [t for t in out[0, ids["input_ids"].shape[1] :].tolist() if t not in backend.eos_ids]
            assert result.token_ids == expected
    finally:
        backend.close()


def test_several_prompts_prefill_in_one_batched_pass(build, reference):
    """Prompts of different lengths and cache states (a session's next turn beside new
    ones, chunked beside short) prefill together in torch's prefill_many and still give
    exactly transformers' greedy tokens."""
    backend = build("torch", slots=8, max_batch=6, max_len=512, prefill_chunk=16)
    backend.eos_ids = set()
    calls = []
    real = backend.prefill_many
    backend.prefill_many = lambda parts: calls.append(len(parts)) or real(parts)
    try:
        backend.generate([greedy_request(chat("Good evening"), 3, key="m-a")])
        prompts = {"m-a": chat("Good evening", "Evening.", "A table for three?"), "m-b": chat("Is the stew hot?"),
                   "m-c": chat("Tell me of " + ", ".join(f"the road number {i}" for i in range(8))), None: "Once upon a time"}  # fmt: skip
        results = backend.generate([greedy_request(p, 6, key=k) for k, p in prompts.items()])
        assert calls and max(calls) >= 3, calls
        for (key, prompt), result in zip(prompts.items(), results):
            assert result.token_ids == reference(prompt, 6), key
        assert results[0].cached_tokens > 0
    finally:
        backend.close()
