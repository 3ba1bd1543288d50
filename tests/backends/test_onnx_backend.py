"""The onnx backend's own guarantees: greedy tokens identical to torch/transformers (fp32
export), whatever the batch, slot or cache state; session and card-prefix KV reuse; the
bounded queue; exports made once and cached."""

from __future__ import annotations

import time

import pytest
import torch
from backend_helpers import onnx_export_available

from steernpc import models
from steernpc.generation import GenerationRequest, QueueFull, SamplingParams

pytestmark = pytest.mark.skipif(not onnx_export_available(), reason="needs onnx, onnxruntime, onnxruntime-genai, onnx-ir")

CARD = "<|im_start|>system\nYou are Brom, the blacksmith of Emberfall. Short, gruff sentences.<|im_end|>\n"


def chat(*turns: str) -> str:
    text = CARD
    for i, turn in enumerate(turns):
        text += f"<|im_start|>{'user' if i % 2 == 0 else 'assistant'}\n{turn}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def greedy_request(prompt: str, n: int, key: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, temperature=0.0), cache_key=key)


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
def engine(onnx_tiny_dir):
    from steernpc.generation.onnx_backend import OnnxBackend

    backend = OnnxBackend(onnx_tiny_dir, slots=6, max_batch=4, max_len=512, prefill_chunk=16)
    backend.eos_ids = set()
    yield backend
    backend.close()


def test_batch_matches_transformers_greedy(engine, reference):
    prompts = [chat("Hello"), chat("Can you fix my sword? It broke on a troll."), "Once upon a time", chat("Hi", "Hm.", "Bye")]
    results = engine.generate([greedy_request(p, 12) for p in prompts])
    for prompt, result in zip(prompts, results):
        assert result.reason == "length"
        assert result.token_ids == reference(prompt, 12)


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
    history = {f"evict-{i}": [f"Player {i} says hello"] for i in range(10)}
    for _round in range(2):
        keys = list(history)
        prompts = {k: chat(*history[k]) for k in keys}
        results = engine.generate([greedy_request(prompts[k], 5, key=k) for k in keys])
        for key, result in zip(keys, results):
            assert result.token_ids == reference(prompts[key], 5), key
            history[key] += ["Hm.", f"and again, {key}"]


def test_queue_bound_answers_queue_full(onnx_tiny_dir):
    from steernpc.generation.onnx_backend import OnnxBackend

    backend = OnnxBackend(onnx_tiny_dir, slots=3, max_batch=1, max_queue=2)
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


def test_prompt_longer_than_the_cache_is_refused(onnx_tiny_dir):
    from steernpc.generation.onnx_backend import OnnxBackend

    backend = OnnxBackend(onnx_tiny_dir, slots=2, max_len=64)
    try:
        with pytest.raises(ValueError, match="at most 63"):
            backend.submit(greedy_request(chat("word " * 100), 4))
    finally:
        backend.close()


def test_options_are_checked(onnx_tiny_dir):
    from steernpc.generation.onnx_backend import OnnxBackend

    with pytest.raises(ValueError, match="runs on CPU"):
        OnnxBackend(onnx_tiny_dir, device="cuda")
    with pytest.raises(ValueError, match="fp32"):
        OnnxBackend(onnx_tiny_dir, precision="int3")
    with pytest.raises(ValueError, match="merge the adapter at compile time"):
        OnnxBackend(onnx_tiny_dir, adapter="some-lora")


def test_hf_model_is_exported_once_and_cached(tiny_model_dir, tmp_path, monkeypatch):
    """Given an HF folder, the backend exports it (int4 here) under STEERNPC_HOME/onnx once."""
    from steernpc.generation.onnx_backend import OnnxBackend, ensure_onnx

    monkeypatch.setenv("STEERNPC_HOME", str(tmp_path))
    backend = OnnxBackend(tiny_model_dir, precision="int4", slots=2)
    try:
        folder = backend.folder
        assert folder.parent == tmp_path / "onnx" and folder.name.endswith("-int4")
        nodes = _op_types(folder)
        assert "MatMulNBits" in nodes and "GroupQueryAttention" in nodes
        result = backend.generate([greedy_request(chat("Hello"), 6)])[0]
        assert result.reason in ("length", "stop") and result.completion_tokens >= 1
    finally:
        backend.close()
    stamp = (folder / "model.onnx").stat().st_mtime
    assert ensure_onnx(tiny_model_dir, precision="int4") == folder
    assert (folder / "model.onnx").stat().st_mtime == stamp


def _op_types(folder) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node}


@pytest.mark.integration
def test_smollm2_greedy_matches_transformers(smollm2_dir, tmp_path_factory):
    from steernpc.compile import export_onnx
    from steernpc.generation.onnx_backend import OnnxBackend

    folder = export_onnx(smollm2_dir, tmp_path_factory.mktemp("smollm2-onnx") / "fp32", precision="fp32")
    backend = OnnxBackend(folder, slots=4, max_batch=3)
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


def test_q4_1_export_reproduces_q4_1_grid_weights(tiny_model_dir, tmp_path):
    """Weights already on a Q4_1 grid (as the bundled SmolLM2 GGUF's are) survive the q4_1
    export: its logits match the fp32 export's up to int8 activation rounding."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steernpc.compile import export_onnx

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name and param.shape[1] % 32 == 0:
                blocks = param.view(param.shape[0], -1, 32)
                lo, hi = blocks.min(-1, keepdim=True).values, blocks.max(-1, keepdim=True).values
                d = (hi - lo) / 15
                param.copy_((torch.round((blocks - lo) / d) * d + lo).view_as(param))
    snapped = tmp_path / "snapped"
    model.save_pretrained(snapped)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(snapped)
    fp32 = export_onnx(snapped, tmp_path / "fp32", precision="fp32")
    q41 = export_onnx(snapped, tmp_path / "q4_1", precision="q4_1")
    ops = _op_types(q41)
    assert "MatMulNBits" in ops and "GroupQueryAttention" in ops

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def last_logits(folder, prompt):
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        ids = np.array([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for i in range(model.config.num_hidden_layers):
            for kv in ("key", "value"):
                feeds[f"past_key_values.{i}.{kv}"] = np.zeros((1, model.config.num_key_value_heads, 0, 16), np.float32)
        return session.run(["logits"], feeds)[0][0, -1]

    for prompt in (chat("Hello"), chat("Can you fix my sword?"), "Once upon a time"):
        exact, quant = last_logits(fp32, prompt), last_logits(q41, prompt)
        assert np.linalg.norm(quant - exact) / np.linalg.norm(exact) < 0.02
        assert int(np.argmax(quant)) == int(np.argmax(exact))
