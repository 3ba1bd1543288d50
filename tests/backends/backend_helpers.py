"""Helpers shared by the backend tests (imported by name, like tests/server/server_harness.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

FAKE_TRTLLM = Path(__file__).resolve().parent / "fake_trtllm"

CARD = "<|im_start|>system\nYou are Brom, the blacksmith of Emberfall. Short, gruff sentences.<|im_end|>\n"


def chat(*turns: str) -> str:
    """A chat-template prompt: user, assistant, user, ... ending at the generation point."""
    text = CARD
    for i, turn in enumerate(turns):
        text += f"<|im_start|>{'user' if i % 2 == 0 else 'assistant'}\n{turn}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def onnx_export_available() -> bool:
    return all(have(m) for m in ("onnx", "onnxruntime", "onnxruntime_genai", "onnx_ir"))


@contextlib.contextmanager
def fake_tensorrt_llm():
    """Import the TensorRT-LLM stand-in as `tensorrt_llm` for the duration."""
    saved = {k: v for k, v in sys.modules.items() if k == "tensorrt_llm" or k.startswith("tensorrt_llm.")}
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, str(FAKE_TRTLLM))
    try:
        yield
    finally:
        sys.path.remove(str(FAKE_TRTLLM))
        for key in [k for k in sys.modules if k == "tensorrt_llm" or k.startswith("tensorrt_llm.")]:
            del sys.modules[key]
        sys.modules.update(saved)
