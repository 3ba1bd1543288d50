"""What `steernpc compile` is asked to build: the targets and their settings."""

from __future__ import annotations

from dataclasses import dataclass, field

TARGETS = ("hf", "onnx", "trtllm")
DEFAULT_TRTLLM = {"max_batch_size": 64, "max_num_tokens": 8192, "free_gpu_memory_fraction": 0.85}


@dataclass
class CompileConfig:
    base: str
    out: str
    targets: list[str] = field(default_factory=lambda: ["hf"])
    adapter: str | None = None
    format: str | None = None  # default: the adapter's (training metadata), the base's card, else chat
    schema: str | None = None  # default: the adapter's schema.yaml, the base's card, else npc
    stop: list[str] = field(default_factory=list)  # extra stop strings
    name: str | None = None
    dtype: str | None = None  # hf target dtype (default: as loaded, fp32 on CPU)
    onnx_precision: str = "q4_1"
    trtllm_dtype: str = "bfloat16"
    keep_adapter: bool = False  # trtllm: serve the LoRA unmerged (lora_config) instead of merging it
    max_batch_size: int = DEFAULT_TRTLLM["max_batch_size"]
    max_num_tokens: int = DEFAULT_TRTLLM["max_num_tokens"]
    max_seq_len: int | None = None
    free_gpu_memory_fraction: float = DEFAULT_TRTLLM["free_gpu_memory_fraction"]
    engine: bool = False
    force: bool = False
