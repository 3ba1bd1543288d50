"""The torch engine's own guarantees: batched, cached decoding gives exactly what plain
transformers greedy decoding gives, whatever the batch, the slot or the cache state."""

from __future__ import annotations

import time

import pytest
import torch

from steernpc import models
from steernpc.generation import GenerationRequest, QueueFull, SamplingParams
from steernpc.generation.torch_backend import TorchBackend

CARD = "<|im_start|>system\nYou are Brom, the blacksmith of Emberfall. Short, gruff sentences.<|im_end|>\n"


def chat(*turns: str) -> str:
    """A chat-template prompt: user, assistant, user, ... ending at the generation point."""
    text = CARD
    for i, turn in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        text += f"<|im_start|>{role}\n{turn}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    model, tokenizer = models.load_model(tiny_model_dir, device="cpu")

    def greedy(prompt: str, n: int) -> list[int]:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
        return out[0, ids["input_ids"].shape[1] :].tolist()

    return greedy


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    backend = TorchBackend(tiny_model_dir, device="cpu", slots=6, max_batch=4, max_len=1024)
    backend.eos_ids = set()  # a random model must not stop early: compare full lengths
    yield backend
    backend.close()


def greedy_request(prompt: str, n: int, key: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, temperature=0.0), cache_key=key)


def test_batch_matches_transformers_greedy(engine, reference):
    prompts = [chat("Hello"), chat("Can you fix my sword? It broke on a troll."), "Once upon a time", chat("Hi", "Hm.", "Bye")]
    results = engine.generate([greedy_request(p, 12) for p in prompts])
    for prompt, result in zip(prompts, results):
        assert result.reason == "length"
        assert result.token_ids == reference(prompt, 12)


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


def test_cancel_stops_at_the_next_step(engine):
    request = GenerationRequest(chat("Tell me everything"), SamplingParams(max_new_tokens=900, temperature=1.0, seed=1))
    stream = engine.submit(request)
    seen = 0
    for event in stream:
        seen += 1
        if seen == 3:  # three visible deltas, i.e. a few tokens in
            stream.cancel()
            break
    final = stream.result(timeout=30)
    assert final.reason == "cancelled"
    assert final.completion_tokens < 12


def test_stop_string_ends_the_reply(engine):
    def run(stop):
        params = SamplingParams(max_new_tokens=20, temperature=1.0, seed=11)
        return engine.generate([GenerationRequest(chat("Say something"), params, stop=stop)])[0]

    free = run([])
    words = free.text.split()
    assert len(words) >= 4, free.text
    stop = words[2]
    cut = run([stop])
    assert cut.reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)].rstrip()


def test_seeded_sampling_is_reproducible(engine):
    def sample(seed):
        request = GenerationRequest(chat("Roll a die"), SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=40, seed=seed))
        return engine.generate([request])[0].token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_queue_bound_answers_queue_full(tiny_model_dir):
    backend = TorchBackend(tiny_model_dir, device="cpu", slots=3, max_batch=1, max_queue=2)
    try:
        streams = []
        with pytest.raises(QueueFull):
            for _ in range(10):
                streams.append(backend.submit(greedy_request(chat("Wait in line"), 200)))
        for stream in streams:
            stream.cancel()
        deadline = time.time() + 30
        for stream in streams:
            assert stream.result(timeout=max(1.0, deadline - time.time())).reason == "cancelled"
    finally:
        backend.close()


def test_deltas_concatenate_to_the_final_text(engine):
    request = GenerationRequest(chat("Sing"), SamplingParams(max_new_tokens=30, temperature=1.0, seed=3))
    stream = engine.submit(request)
    deltas = [e.text for e in stream if not hasattr(e, "reason")]
    assert "".join(deltas) == stream.result().text


@pytest.mark.integration
def test_smollm2_batched_greedy_matches_transformers(smollm2_dir):
    backend = TorchBackend(smollm2_dir, device="cpu", slots=4, max_batch=3)
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
