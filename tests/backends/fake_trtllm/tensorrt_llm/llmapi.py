"""Stand-ins for tensorrt_llm.llmapi classes, with the documented field names only.

Sources (TensorRT-LLM LLM API reference, nvidia.github.io/TensorRT-LLM/llm-api/reference/):
  KvCacheConfig(*, enable_block_reuse=True, max_tokens=None, free_gpu_memory_fraction=0.9,
      host_cache_size=None, enable_partial_reuse=True, copy_on_partial_reuse=True,
      tokens_per_block=32, dtype='auto', ...)
  KvCacheRetentionConfig(token_range_retention_configs, decode_retention_priority,
      decode_duration_ms) with nested TokenRangeRetentionConfig(token_start, token_end,
      priority, duration_ms) (examples/kvcacheretentionconfig.md)
  LoRARequest(lora_name, lora_int_id, lora_path='', lora_ckpt_source='hf')
  LoraConfig(lora_dir, max_lora_rank, max_loras, max_cpu_loras, lora_target_modules,
      trtllm_modules_to_hf_modules, lora_ckpt_source) (docs/source/features/lora.md)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tensorrt_llm import LLM, SamplingParams  # noqa: F401  (re-exported like the real package)

KV_CACHE_FIELDS = {
    "enable_block_reuse", "max_tokens", "max_attention_window", "sink_token_length", "free_gpu_memory_fraction",
    "host_cache_size", "disk_cache_size", "disk_cache_path", "cross_kv_cache_fraction",
    "secondary_offload_min_priority", "event_buffer_max_size", "enable_partial_reuse", "copy_on_partial_reuse",
    "use_uvm", "max_gpu_total_bytes", "dtype", "tokens_per_block",
}  # fmt: skip


class KvCacheConfig:
    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - KV_CACHE_FIELDS
        if unknown:
            raise TypeError(f"KvCacheConfig got unexpected keyword arguments {sorted(unknown)}")
        self.enable_block_reuse = True
        self.free_gpu_memory_fraction = 0.9
        for key, value in kwargs.items():
            setattr(self, key, value)


class KvCacheRetentionConfig:
    class TokenRangeRetentionConfig:
        def __init__(self, token_start: int, token_end: int | None = None, priority: int = 35, duration_ms: Any = None):
            if not 0 <= priority <= 100:
                raise ValueError("priority must be in 0..100")
            self.token_start, self.token_end, self.priority, self.duration_ms = token_start, token_end, priority, duration_ms

    def __init__(self, token_range_retention_configs: list, decode_retention_priority: int = 35, decode_duration_ms: Any = None):
        self.token_range_retention_configs = list(token_range_retention_configs)
        self.decode_retention_priority = decode_retention_priority
        self.decode_duration_ms = decode_duration_ms


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    lora_ckpt_source: str = "hf"


@dataclass
class LoraConfig:
    lora_dir: list = field(default_factory=list)
    lora_ckpt_source: str = "hf"
    max_lora_rank: int = 64
    lora_target_modules: list = field(default_factory=list)
    trtllm_modules_to_hf_modules: dict = field(default_factory=dict)
    max_loras: int | None = None
    max_cpu_loras: int | None = None


@dataclass(kw_only=True)
class GuidedDecodingParams:
    """tensorrt_llm.llmapi.GuidedDecodingParams: only one of the fields is effective."""

    json: Any = None
    regex: str | None = None
    grammar: str | None = None  # EBNF (GBNF)
    json_object: bool = False
    structural_tag: str | None = None
