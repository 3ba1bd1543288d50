"""The trtllm backend without TensorRT-LLM: the message when it is missing, and (against the
documented-API stand-in) how requests map onto SamplingParams, LoRARequest and
KvCacheRetentionConfig. None of this runs TensorRT-LLM itself."""

from __future__ import annotations

import sys

import pytest
from backend_helpers import fake_tensorrt_llm

from steernpc.generation import BackendUnavailable, GenerationRequest, SamplingParams, create_backend

CARD = "<|im_start|>system\n" + "You are Brom, the blacksmith of Emberfall; short, gruff sentences. " * 3 + "<|im_end|>\n"


def chat(user: str) -> str:
    return f"{CARD}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def test_missing_tensorrt_llm_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails as on a CPU machine
    with pytest.raises(BackendUnavailable) as err:
        create_backend("trtllm", model="smollm2")
    message = str(err.value)
    assert "TensorRT-LLM is not installed" in message
    assert "NVIDIA GPU" in message and "pip install tensorrt_llm" in message
    assert "--backend onnx" in message and "--backend remote" in message and "trtllm-serve" in message
    assert "deploy/README.md" in message


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    out = tmp_path_factory.mktemp("brom-lora")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(tiny_model_dir, lora):
    with fake_tensorrt_llm():
        from steernpc.generation.trtllm_backend import TrtllmBackend

        be = TrtllmBackend(tiny_model_dir, adapters={"brom": str(lora)}, max_batch=8, free_gpu_memory_fraction=0.5, prefix_min_tokens=8)
        yield be
        be.close()


def test_llm_is_built_with_block_reuse_limits_and_lora(backend, lora):
    kwargs = backend.llm_kwargs
    assert kwargs["kv_cache_config"].enable_block_reuse is True
    assert kwargs["kv_cache_config"].free_gpu_memory_fraction == 0.5
    assert kwargs["max_batch_size"] == 8
    config = kwargs["lora_config"]
    assert config.lora_dir == [str(lora.resolve())] and config.max_lora_rank == 8 and config.max_loras == 1
    assert set(config.lora_target_modules) == {"attn_q", "attn_v", "mlp_4h_to_h"}


def test_sampling_params_mapping(backend):
    greedy = backend.sampling_params(GenerationRequest("x", SamplingParams(max_new_tokens=7, temperature=0.0)))
    assert (greedy.max_tokens, greedy.temperature, greedy.top_k, greedy.seed) == (7, 0.0, None, None)
    assert greedy.end_id == backend.tokenizer.eos_token_id
    params = SamplingParams(max_new_tokens=9, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.2, seed=5)
    sampled = backend.sampling_params(GenerationRequest("x", params, stop=["<|im_end|>", "###"]))
    assert (sampled.temperature, sampled.top_p, sampled.top_k, sampled.repetition_penalty, sampled.seed) == (0.8, 0.9, 40, 1.2, 5)
    assert sampled.stop == ["<|im_end|>", "###"]
    assert backend.tokenizer.convert_tokens_to_ids("<|im_end|>") in sampled.stop_token_ids


def test_per_character_lora_request(backend, lora):
    request = GenerationRequest(chat("Fix my sword"), SamplingParams(max_new_tokens=3, temperature=0.0))
    assert backend.lora_request(request) is None  # no default adapter
    request.adapter = "brom"  # what the runtime sets once personas name adapters
    lora_request = backend.lora_request(request)
    assert (lora_request.lora_name, lora_request.lora_int_id, lora_request.lora_path) == ("brom", 0, str(lora.resolve()))
    final = backend.generate([request])[0]
    assert final.reason in ("length", "stop")
    assert backend.llm.requests[-1]["lora_request"] == lora_request
    request.adapter = "nobody"
    failed = backend.generate([request])[0]
    assert failed.reason == "error" and "unknown adapter 'nobody'" in failed.error


def test_shared_card_prefix_gets_a_retention_priority(backend):
    backend.generate([GenerationRequest(chat("Hello"), SamplingParams(max_new_tokens=2, temperature=0.0), cache_key="a")])
    assert backend.llm.requests[-1]["retention"] is None  # nothing shared yet
    backend.generate([GenerationRequest(chat("Good day"), SamplingParams(max_new_tokens=2, temperature=0.0), cache_key="b")])
    retention = backend.llm.requests[-1]["retention"]
    card_tokens = len(backend.tokenizer(CARD, add_special_tokens=False)["input_ids"])
    (token_range,) = retention.token_range_retention_configs
    assert token_range.token_start == 0 and token_range.token_end >= card_tokens and token_range.priority == 90
    assert retention.decode_retention_priority == 35
    sent_ids = backend.llm.requests[-1]["ids"]
    assert sent_ids == backend.tokenizer(chat("Good day"), add_special_tokens=False)["input_ids"]  # token ids, no BOS added


def test_non_gpu_device_is_refused(tiny_model_dir):
    with fake_tensorrt_llm():
        from steernpc.generation.trtllm_backend import TrtllmBackend

        with pytest.raises(ValueError, match="NVIDIA GPUs"):
            TrtllmBackend(tiny_model_dir, device="cpu")


def test_structured_tail_maps_to_guided_decoding(backend):
    """The tail: a second request on prompt + reply + marker with
    SamplingParams(guided_decoding=GuidedDecodingParams(grammar=...)); the stand-in
    applies the grammar (as TensorRT-LLM's grammar backend would), so the tail parses."""
    pytest.importorskip("llguidance")
    from steernpc.actions import ActionSpec, TailSpec, tail_grammar
    from steernpc.generation import TailRequest
    from steernpc.prompt import tail_marker

    assert backend.llm_kwargs["guided_decoding_backend"] == "xgrammar"
    spec = TailSpec(("neutral", "angry"), (ActionSpec("call_guards"), ActionSpec("open_shop")))
    request = GenerationRequest(chat("Thief!"), SamplingParams(max_new_tokens=5, temperature=0.7, seed=2), ["<tail>"],
                                tail=TailRequest(tail_marker("chat"), tail_grammar(spec), spec))
    before = len(backend.llm.requests)
    final = backend.submit(request).result(120)
    assert final.tail_error is None, final.tail_error
    assert final.tail.emotion in ("neutral", "angry") and final.tail_tokens >= 2
    assert "<tail>" not in final.text and final.tail_text not in final.text
    reply, tail = backend.llm.requests[before:]
    assert reply["sampling_params"].guided_decoding is None
    guided = tail["sampling_params"].guided_decoding
    assert guided.grammar == tail_grammar(spec) and guided.json is None and guided.regex is None
    marker = backend.tokenizer("\n<tail>", add_special_tokens=False)["input_ids"]
    assert tail["ids"][: len(reply["ids"])] == reply["ids"] and tail["ids"][-len(marker):] == marker
