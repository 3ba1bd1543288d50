"""A stand-in for TensorRT-LLM's LLM API, for testing steernpc's trtllm backend where
TensorRT-LLM cannot be installed. It is NOT TensorRT-LLM.

It accepts exactly the constructor and method signatures TensorRT-LLM documents for the
names the backend uses (unknown keyword arguments raise TypeError, so a misspelt option
fails here as it would there), and generates with a small transformers model on CPU so
that the backend's streaming, stop, cancel and seeding paths run for real.

Documented signatures mirrored (TensorRT-LLM LLM API reference, nvidia.github.io/TensorRT-LLM):
  LLM(model, tokenizer=None, ..., **kwargs) with kwargs from LlmArgs (max_batch_size,
      max_num_tokens, max_seq_len, kv_cache_config, lora_config, dtype, ...)
  LLM.generate_async(inputs, sampling_params=None, lora_request=None,
      prompt_adapter_request=None, streaming=False, queries=None,
      kv_cache_retention_config=None, disaggregated_params=None) -> RequestOutput
  RequestOutput: async-iterable when streaming; .outputs[0].{text, token_ids,
      finish_reason in stop|length|timeout|cancelled}; .abort(); .finished
  SamplingParams(*, end_id, pad_id, max_tokens=32, stop, stop_token_ids, top_k, top_p,
      seed, temperature, repetition_penalty, ...) - keyword-only
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.0.0+fake"

# SamplingParams fields as documented (tensorrt_llm.llmapi.SamplingParams reference page).
SAMPLING_FIELDS = {
    "end_id", "pad_id", "max_tokens", "bad", "bad_token_ids", "stop", "stop_token_ids",
    "include_stop_str_in_output", "embedding_bias", "logits_processor", "apply_batched_logits_processor",
    "n", "best_of", "use_beam_search", "top_k", "top_p", "top_p_min", "top_p_reset_ids", "top_p_decay",
    "seed", "temperature", "min_tokens", "beam_search_diversity_rate", "repetition_penalty",
    "presence_penalty", "frequency_penalty", "length_penalty", "early_stopping", "no_repeat_ngram_size",
    "min_p", "logprobs", "prompt_logprobs", "return_context_logits", "return_generation_logits",
    "exclude_input_from_output", "return_encoder_output", "return_perf_metrics", "detokenize",
    "add_special_tokens", "truncate_prompt_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "ignore_eos", "guided_decoding",
}  # fmt: skip

# LLM() keyword arguments this stand-in accepts (TorchLlmArgs fields the backend may pass).
LLM_FIELDS = {
    "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
    "pipeline_parallel_size", "dtype", "revision", "tokenizer_revision", "backend", "max_batch_size",
    "max_num_tokens", "max_seq_len", "max_beam_width", "kv_cache_config", "lora_config", "enable_lora",
    "peft_cache_config", "scheduler_config", "enable_chunked_prefill", "cuda_graph_config",
    "guided_decoding_backend",
}  # fmt: skip


class SamplingParams:
    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.max_tokens = 32
        self.temperature = None
        self.top_p = None
        self.top_k = None
        self.seed = None
        self.stop = None
        self.stop_token_ids = None
        self.end_id = None
        self.repetition_penalty = None
        self.ignore_eos = False
        self.guided_decoding = None
        for key, value in kwargs.items():
            setattr(self, key, value)


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: Any = None


class RequestOutput:
    def __init__(self, request_id: int, prompt_token_ids: list[int], loop: asyncio.AbstractEventLoop):
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.outputs = [CompletionOutput(0)]
        self.finished = False
        self._aborted = False
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()

    def abort(self) -> None:
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def _post(self, token_ids: list[int], text: str, finish: str | None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (list(token_ids), text, finish))

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.finished:
            raise StopAsyncIteration
        token_ids, text, finish = await self._queue.get()
        out = self.outputs[0]
        out.token_ids, out.text, out.finish_reason = token_ids, text, finish
        self.finished = finish is not None
        return self


class LLM:
    instances: list["LLM"] = []

    def __init__(self, model: str, **kwargs: Any):
        unknown = set(kwargs) - LLM_FIELDS
        if unknown:
            raise TypeError(f"LLM got unexpected keyword arguments {sorted(unknown)}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = model
        self.kwargs = kwargs
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.requests: list[dict] = []
        self._next_id = 0
        self._lock = threading.Lock()  # one forward at a time, like one GPU
        LLM.instances.append(self)

    def generate_async(
        self,
        inputs: Any,
        sampling_params: SamplingParams | None = None,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        streaming: bool = False,
        queries: Any = None,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
    ) -> RequestOutput:
        sp = sampling_params or SamplingParams()
        if isinstance(inputs, str):
            ids = self.tokenizer(inputs)["input_ids"]
        elif isinstance(inputs, dict):
            ids = list(inputs["prompt_token_ids"])
        else:
            ids = list(inputs)
        if lora_request is not None:
            lora_dirs = getattr(self.kwargs.get("lora_config"), "lora_dir", None) or []
            if lora_request.lora_path not in lora_dirs:
                raise ValueError(f"LoRA {lora_request.lora_path} was not declared in lora_config.lora_dir")
        self._next_id += 1
        result = RequestOutput(self._next_id, ids, asyncio.get_running_loop())
        self.requests.append({"ids": ids, "sampling_params": sp, "lora_request": lora_request,
                              "retention": kv_cache_retention_config, "streaming": streaming})  # fmt: skip
        threading.Thread(target=self._generate, args=(result, ids, sp, streaming), daemon=True).start()
        return result

    def _generate(self, result: RequestOutput, ids: list[int], sp: SamplingParams, streaming: bool) -> None:
        import torch

        generator = torch.Generator().manual_seed(int(sp.seed)) if sp.seed is not None else None
        stops = [s for s in ([sp.stop] if isinstance(sp.stop, str) else (sp.stop or [])) if s]
        stop_ids = set(sp.stop_token_ids or []) | ({sp.end_id} if sp.end_id is not None and not sp.ignore_eos else set())
        out: list[int] = []
        past = None
        inputs = torch.tensor([ids])
        matcher = None
        guide = sp.guided_decoding
        if guide is not None:
            if not self.kwargs.get("guided_decoding_backend"):
                raise ValueError("guided decoding needs LLM(guided_decoding_backend=...)")
            from steernpc.generation.grammar import TailConstraint  # llguidance over a GBNF grammar

            matcher = TailConstraint(self.tokenizer, guide.grammar)
        finish = None
        while finish is None:
            if result._aborted:
                finish = "cancelled"
                break
            with self._lock, torch.no_grad():
                o = self.model(input_ids=inputs, use_cache=True, **{self._cache_kwarg: past})
            past = getattr(o, "cache", None) or o.past_key_values
            logits = o.logits[0, -1].float()
            if matcher is not None:  # guided decoding: the grammar's token bitmask (as xgrammar/llguidance do there)
                allowed = matcher.allowed(logits.shape[-1])
                logits = logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))
            if not sp.temperature:
                token = int(torch.argmax(logits))
            else:
                logits = logits / sp.temperature
                if sp.top_k:
                    kth = torch.topk(logits, sp.top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            if token in stop_ids:
                finish = "stop"
                break
            out.append(token)
            if matcher is not None:
                matcher.accept(token)
                if matcher.done:
                    finish = "stop"
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if finish is not None:
                pass
            elif any(s in text for s in stops):
                finish = "stop"
            elif len(out) >= sp.max_tokens:
                finish = "length"
            if streaming and finish is None:
                result._post(out, text, None)
            inputs = torch.tensor([[token]])
        result._post(out, self.tokenizer.decode(out, skip_special_tokens=True), finish)

    def shutdown(self) -> None:
        pass
