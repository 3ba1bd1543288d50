"""What only the onnx backend does: option checks, exports made once and cached, the q4_1
export. (Its scheduler's guarantees: test_slot_engines.py, test_scheduler.py; the Backend contract:
test_conformance.py.)"""

from __future__ import annotations

import pytest
import torch
from backend_helpers import chat, onnx_export_available

from steernpc.generation import GenerationRequest, SamplingParams

pytestmark = pytest.mark.skipif(not onnx_export_available(), reason="needs onnx, onnxruntime, onnxruntime-genai, onnx-ir")


def greedy_request(prompt: str, n: int) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, temperature=0.0))


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


def test_q4_1_export_reproduces_q4_1_grid_weights(tiny_model_dir, tmp_path):
    """Weights already on a Q4_1 grid (as the bundled SmolLM2 GGUF's are) survive the q4_1
    export: its logits match the fp32 export's up to int8 activation rounding."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steernpc.export import export_onnx

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
