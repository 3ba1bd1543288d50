"""`steernpc compile` (steernpc.export): the merged HF target serves exactly what base +
adapter serve, the model card round-trips, the TensorRT-LLM bundle uses only documented
option names, and the ONNX target loads in the onnx backend with the merged model's greedy
output."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from steernpc.model_card import read_model_card

PROMPTS = [
    "<|im_start|>system\nYou are Brom, the blacksmith.\nAttributes: humor:1,friendliness:2<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nCan you fix my sword?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "The capital of France is",
]

# -- TensorRT-LLM option names, as documented ------------------------------------------------
# Top-level LLM API / trtllm-serve YAML keys (TorchLlmArgs): LLM API reference
# https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html ("max_batch_size",
# "max_num_tokens", "max_seq_len", "kv_cache_config", "lora_config", "backend",
# "tensor_parallel_size", "pipeline_parallel_size", "tokenizer"), and
# docs/source/commands/trtllm-serve/trtllm-serve.rst ("Configuring with YAML Files":
# the file configures tensorrt_llm.llmapi.LlmArgs).
DOCUMENTED_LLM_ARGS = {"max_batch_size", "max_num_tokens", "max_seq_len", "kv_cache_config", "lora_config", "backend",
                       "tensor_parallel_size", "pipeline_parallel_size", "tokenizer", "model"}  # fmt: skip
# KvCacheConfig fields: https://nvidia.github.io/TensorRT-LLM/llm-api/reference/KvCacheConfig.html
DOCUMENTED_KV_CACHE = {"enable_block_reuse", "free_gpu_memory_fraction", "max_tokens", "host_cache_size",
                       "enable_partial_reuse", "copy_on_partial_reuse", "tokens_per_block", "dtype"}  # fmt: skip
# LoraConfig YAML fields: docs/source/features/lora.md ("TRTLLM serve with LoRA", "YAML Configuration").
DOCUMENTED_LORA = {"lora_dir", "max_lora_rank", "max_loras", "max_cpu_loras", "lora_target_modules",
                   "trtllm_modules_to_hf_modules", "lora_ckpt_source"}  # fmt: skip
# LoRA module names: tensorrt_llm get_default_trtllm_modules_to_hf_modules() (lora_manager).
DOCUMENTED_LORA_MODULES = {"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate"}
# Triton llmapi model.yaml: every key but triton_config goes to LLM(); triton_config has
# max_batch_size and decoupled (triton_backend/all_models/llmapi/tensorrt_llm/1/model.yaml, model.py).
DOCUMENTED_TRITON_CONFIG = {"max_batch_size", "decoupled", "cancellation_check_period_ms"}
# Triton llmapi config.pbtxt input/output names (triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt).
DOCUMENTED_TRITON_IO = {
    "text_input", "streaming", "image_url", "sampling_param_best_of", "sampling_param_temperature",
    "sampling_param_top_k", "sampling_param_top_p", "sampling_param_frequency_penalty",
    "sampling_param_presence_penalty", "sampling_param_max_tokens", "sampling_param_stop", "sampling_param_seed",
    "sampling_param_exclude_input_from_output", "sampling_param_return_perf_metrics", "return_finish_reason",
    "return_stop_reason", "return_cumulative_logprob", "stop", "lora_id", "lora_name", "lora_path",
    "lora_ckpt_source", "text_output", "finish_reason", "stop_reason", "cumulative_logprob",
}  # fmt: skip
# trtllm-serve flags: docs/source/commands/trtllm-serve/trtllm-serve.rst and the 0.18 command
# reference (--host, --port, --backend, --tokenizer, --extra_llm_api_options; --config in 1.x).
DOCUMENTED_SERVE_FLAGS = {"--host", "--port", "--backend", "--tokenizer", "--config", "--extra_llm_api_options"}


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A random-initialised LoRA on every projection of the tiny model, B != 0."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    out = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def compiled(tiny_model_dir, lora_dir, tmp_path_factory) -> Path:
    from steernpc.export.compile import CompileConfig, compile_model

    out = tmp_path_factory.mktemp("compiled")
    compile_model(CompileConfig(base=str(tiny_model_dir), adapter=str(lora_dir), out=str(out), targets=["hf", "trtllm"]))
    return out


def greedy(model, tokenizer, prompt: str, n: int = 16) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def test_merged_hf_matches_base_plus_unmerged_adapter(compiled, tiny_model_dir, lora_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(compiled / "hf")
    merged = AutoModelForCausalLM.from_pretrained(compiled / "hf", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), lora_dir).eval()
    differs = False
    for prompt in PROMPTS:
        expected = greedy(unmerged, tokenizer, prompt)
        assert greedy(merged, tokenizer, prompt) == expected, prompt
        differs |= greedy(base, tokenizer, prompt) != expected
    assert differs, "the adapter changed nothing: the test would not catch a missing merge"


def test_model_card_carries_schema_format_and_stops(compiled):
    card = read_model_card(compiled / "hf")
    assert card["target"] == "hf" and card["format"] == "chat" and card["merged"] is True
    assert card["stop"] == ["<|im_end|>"]
    assert card["eos_token_ids"] == [2]
    from steernpc.attributes import AttributeSchema

    assert card["schema_obj"].names == AttributeSchema.builtin("npc").names
    assert read_model_card(compiled / "hf" / "model.safetensors")["format"] == "chat"  # a file inside works too
    from steernpc.runtime_defaults import model_format

    assert model_format(str(compiled / "hf")) == "chat"


def test_trtllm_bundle_uses_documented_names(compiled):
    bundle = compiled / "trtllm"
    for name in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/steernpc.json",
                 "llm_api_options.yaml", "serve.sh", "README.md", "steernpc.json",
                 "triton/tensorrt_llm/config.pbtxt", "triton/tensorrt_llm/1/model.yaml"):  # fmt: skip
        assert (bundle / name).is_file(), name
    options = yaml.safe_load((bundle / "llm_api_options.yaml").read_text())
    assert set(options) <= DOCUMENTED_LLM_ARGS
    assert options["kv_cache_config"]["enable_block_reuse"] is True
    assert set(options["kv_cache_config"]) <= DOCUMENTED_KV_CACHE
    assert "lora_config" not in options  # the adapter is merged
    assert json.loads((bundle / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    triton = yaml.safe_load((bundle / "triton/tensorrt_llm/1/model.yaml").read_text())
    assert set(triton) - {"triton_config"} <= DOCUMENTED_LLM_ARGS
    assert set(triton["triton_config"]) <= DOCUMENTED_TRITON_CONFIG
    assert triton["triton_config"]["decoupled"] is True and triton["backend"] == "pytorch"
    assert triton["kv_cache_config"] == options["kv_cache_config"]
    pbtxt = (bundle / "triton/tensorrt_llm/config.pbtxt").read_text()
    import re

    assert 'backend: "python"' in pbtxt
    assert set(re.findall(r'name: "(\w+)"', pbtxt)) - {"tensorrt_llm"} <= DOCUMENTED_TRITON_IO
    serve = "\n".join(line for line in (bundle / "serve.sh").read_text().splitlines() if not line.lstrip().startswith("#"))
    assert set(re.findall(r"(--[a-z_]+)", serve)) - {"--help"} <= DOCUMENTED_SERVE_FLAGS
    assert subprocess.run(["bash", "-n", str(bundle / "serve.sh")]).returncode == 0
    card = read_model_card(bundle)
    assert card["target"] == "trtllm" and card["trtllm"]["checkpoint"] == "model"


def test_trtllm_bundle_keep_adapter_declares_lora(tiny_model_dir, lora_dir, tmp_path):
    from steernpc.export.compile import CompileConfig, compile_model

    compile_model(CompileConfig(base=str(tiny_model_dir), adapter=str(lora_dir), out=str(tmp_path), targets=["trtllm"], keep_adapter=True))
    bundle = tmp_path / "trtllm"
    options = yaml.safe_load((bundle / "llm_api_options.yaml").read_text())
    lora = options["lora_config"]
    assert set(lora) <= DOCUMENTED_LORA
    assert set(lora["lora_target_modules"]) <= DOCUMENTED_LORA_MODULES
    assert set(lora["lora_target_modules"]) == {"attn_q", "attn_k", "attn_v", "attn_dense", "mlp_h_to_4h", "mlp_gate", "mlp_4h_to_h"}
    assert lora["max_lora_rank"] == 4
    for folder in lora["lora_dir"]:
        assert (bundle / folder / "adapter_config.json").is_file()
    assert not (tmp_path / "hf").exists()
    assert read_model_card(bundle / "model")["merged"] is False
    triton = yaml.safe_load((bundle / "triton/tensorrt_llm/1/model.yaml").read_text())
    assert all(d.startswith("/steernpc/adapters/") for d in triton["lora_config"]["lora_dir"])


def test_trtllm_backend_loads_the_bundle(compiled, tiny_model_dir, lora_dir, tmp_path):
    """The in-process backend reads the bundle's options and (kept) adapters; against the
    TensorRT-LLM API stand-in, so what reaches LLM() is checked, not TensorRT-LLM itself."""
    sys.path.insert(0, str(Path(__file__).parent / "backends"))
    try:
        from backend_helpers import fake_tensorrt_llm
    finally:
        sys.path.pop(0)
    from steernpc.export.compile import CompileConfig, compile_model

    compile_model(CompileConfig(base=str(tiny_model_dir), adapter=str(lora_dir), out=str(tmp_path), targets=["trtllm"], keep_adapter=True))
    with fake_tensorrt_llm():
        from steernpc.generation import GenerationRequest, SamplingParams
        from steernpc.generation.trtllm_backend import TrtllmBackend

        backend = TrtllmBackend(tmp_path)  # the compile root: finds trtllm/
        try:
            kwargs = backend.llm_kwargs
            assert kwargs["model"].endswith("trtllm/model")
            assert kwargs["max_batch_size"] == 64 and kwargs["kv_cache_config"].enable_block_reuse is True
            assert kwargs["lora_config"].lora_dir == [str((tmp_path / "trtllm/adapters" / lora_dir.name).resolve())]
            result = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(max_new_tokens=4, temperature=0.0))])[0]
            assert result.reason in ("length", "stop")
            sent = backend.llm.requests[-1]["lora_request"]
            assert (sent.lora_name, sent.lora_path) == (lora_dir.name, kwargs["lora_config"].lora_dir[0])
        finally:
            backend.close()


def test_compile_cli(tiny_model_dir, tmp_path, capsys):
    from steernpc.export.compile import register_compile

    parser = argparse.ArgumentParser(prog="steernpc")
    register_compile(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compile", "--base", str(tiny_model_dir), "--out", str(tmp_path), "--target", "hf",
                              "--format", "nemo", "--schema", "nemo", "--stop", "###"])  # fmt: skip
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "hf")
    card = read_model_card(tmp_path / "hf")
    assert card["format"] == "nemo" and card["stop"] == ["<extra_id_1>", "###"] and card["schema"]["name"] == "nemo"
    assert card["adapter"] is None and card["merged"] is False
    with pytest.raises(SystemExit):
        parser.parse_args(["compile", "--base", "x", "--out", "y", "--target", "tflite"])


def test_engine_needs_an_old_tensorrt_llm(tiny_model_dir, tmp_path, monkeypatch):
    from steernpc.export.compile import CompileConfig, compile_model

    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # importing it raises ImportError
    with pytest.raises(RuntimeError, match="TensorRT-LLM 1.0 - 1.2"):
        compile_model(CompileConfig(base=str(tiny_model_dir), out=str(tmp_path), targets=["trtllm"], engine=True))


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxruntime_genai", "onnx_ir")),
    reason="needs onnx, onnxruntime, onnxruntime-genai, onnx-ir",
)
def test_onnx_target_serves_the_merged_model(tiny_model_dir, lora_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steernpc.generation import GenerationRequest, SamplingParams
    from steernpc.generation.onnx_backend import OnnxBackend
    from steernpc.export.compile import CompileConfig, compile_model

    compile_model(CompileConfig(base=str(tiny_model_dir), adapter=str(lora_dir), out=str(tmp_path), targets=["hf", "onnx"],
                                onnx_precision="fp32"))  # fmt: skip
    card = read_model_card(tmp_path / "onnx")
    assert card["target"] == "onnx" and card["onnx"]["precision"] == "fp32" and card["format"] == "chat"
    backend = OnnxBackend(tmp_path)  # the compile root: finds onnx/
    backend.eos_ids = set()
    try:
        results = backend.generate([GenerationRequest(p, SamplingParams(max_new_tokens=12, temperature=0.0)) for p in PROMPTS])
    finally:
        backend.close()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    for prompt, result in zip(PROMPTS, results):
        assert result.token_ids == greedy(merged, tokenizer, prompt, 12), prompt
