"""TensorRT-LLM backend: the LLM API in process, on NVIDIA GPUs.

Written against TensorRT-LLM's documented LLM API (>= 1.0, PyTorch backend, which loads
HF checkpoints directly) and imported lazily: where `tensorrt_llm` is missing the backend
raises BackendUnavailable with what to do instead. TensorRT-LLM cannot be installed on the
machines this project is developed on, so this module is tested only against a stand-in
that mimics the documented API (tests/backends/fake_tensorrt_llm); see deploy/README.md,
"Deploy on NVIDIA GPUs", for what is untested.

How it maps the runtime's interface onto the LLM API:

- `LLM(model=DIR, kv_cache_config=KvCacheConfig(enable_block_reuse=True,
  free_gpu_memory_fraction=...), max_batch_size=..., max_num_tokens=..., [max_seq_len],
  [lora_config=LoraConfig(...)])`; a `steernpc compile --target trtllm` bundle's
  llm_api_options.yaml supplies these when `model` is the bundle.
- each request: `llm.generate_async(prompt_token_ids, SamplingParams(...), streaming=True,
  lora_request=..., kv_cache_retention_config=...)`, iterated asynchronously on one
  event-loop thread; cancel calls `RequestOutput.abort()`.
- the prompt is tokenized here (no special tokens added), exactly as the torch and onnx
  backends do, and the reply is detokenized with the same TextAssembler.
- KV reuse: block reuse finds shared prefixes (a session's history, a character's card)
  by itself. The prefix a prompt shares with other sessions' recent prompts (the persona
  card) is marked with `KvCacheRetentionConfig(TokenRangeRetentionConfig(0, n, priority))`
  so it is the last to be evicted.
- the structured tail (GenerationRequest.tail): once the reply has streamed, a second
  `generate_async` on prompt + reply tokens + the format's marker, with
  `SamplingParams(guided_decoding=GuidedDecodingParams(grammar=GBNF))` (the LLM is built
  with `guided_decoding_backend="xgrammar"`, TensorRT-LLM's default grammar engine, or
  `guided_backend="llguidance"`); its tokens are parsed, never streamed. Block reuse
  serves the shared prefix, so the second request computes only the marker.
- per-character LoRA: adapters named in `adapters={name: folder}` (or `adapter=` for all
  requests) are served unmerged through `LoRARequest(name, id, folder)`; a request picks
  one with a `.adapter` attribute (GenerationRequest has none yet: the runtime sets it
  once personas name adapters), else the default.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steernpc.generation.base import (
    Backend, BackendUnavailable, Delta, Finished, GenerationRequest, QueueFull, finished_from, read_tail, refuse_guidance,
)  # fmt: skip
from steernpc.generation.detokenize import reply_token_count
from steernpc.generation.detokenize import TextAssembler
from steernpc.generation.kv_slots import common_prefix
from steernpc.generation.sampling import eos_ids
from steernpc.generation.stream import Stream

INSTALL_HINT = (
    "TensorRT-LLM is not installed. The trtllm backend runs on an NVIDIA GPU server with "
    "TensorRT-LLM >= 1.0 (`pip install tensorrt_llm`, or the NGC container "
    "nvcr.io/nvidia/tensorrt-llm/release). On CPU use --backend onnx or torch; to use a GPU "
    "server from here, run `trtllm-serve` there (steernpc compile --target trtllm writes "
    "serve.sh) and use --backend remote --backend-url http://GPU-HOST:8000. See "
    "deploy/README.md, 'Deploy on NVIDIA GPUs'."
)

# HF PEFT module names -> TensorRT-LLM LoRA module names (TensorRT-LLM's own default mapping
# for Llama-style models: get_default_trtllm_modules_to_hf_modules()).
HF_TO_TRTLLM_LORA = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_dense",
    "gate_proj": "mlp_h_to_4h",
    "down_proj": "mlp_4h_to_h",
    "up_proj": "mlp_gate",
}


class _Api:
    """The TensorRT-LLM classes this backend uses, looked up where each release documents them."""

    def __init__(self) -> None:
        try:
            import tensorrt_llm  # noqa: F401
        except ImportError:
            raise BackendUnavailable(INSTALL_HINT) from None
        except Exception as exc:  # noqa: BLE001 - a broken install (CUDA libs, MPI) is also "unavailable"
            raise BackendUnavailable(f"TensorRT-LLM is installed but failed to import: {type(exc).__name__}: {exc}") from None
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi import KvCacheConfig, KvCacheRetentionConfig

        self.module = tensorrt_llm
        self.version = getattr(tensorrt_llm, "__version__", "unknown")
        self.LLM, self.SamplingParams = LLM, SamplingParams
        self.KvCacheConfig, self.KvCacheRetentionConfig = KvCacheConfig, KvCacheRetentionConfig
        self.LoRARequest = _first_attr(("tensorrt_llm.llmapi", "tensorrt_llm.executor.request"), "LoRARequest")
        # guided decoding (the structured tail): documented in tensorrt_llm.llmapi
        self.GuidedDecodingParams = _first_attr(("tensorrt_llm.llmapi", "tensorrt_llm.sampling_params"), "GuidedDecodingParams")
        self.LoraConfig = _first_attr(
            ("tensorrt_llm.llmapi", "tensorrt_llm.lora_manager", "tensorrt_llm._torch.peft.lora.config"), "LoraConfig"
        )


def _first_attr(modules: tuple[str, ...], name: str) -> Any:
    import importlib

    for module in modules:
        try:
            value = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if value is not None:
            return value
    return None


def load_api() -> _Api:
    """Import TensorRT-LLM or raise BackendUnavailable saying what to do instead."""
    return _Api()


def resolve_bundle(model: Any) -> tuple[Path, dict, dict[str, str]]:
    """(checkpoint folder, LLM options, {adapter name: folder}) for a model spec: a
    `steernpc compile` trtllm bundle (its model/ or engine/, llm_api_options.yaml and
    adapters/), a compile output root with trtllm/, or an HF folder / prepared name."""
    from steernpc import models

    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ValueError("the trtllm backend takes a model folder, not a model object")
    path = Path(model).expanduser() if model else None
    for bundle in ([path, path / "trtllm"] if path else []):
        if (bundle / "llm_api_options.yaml").is_file():
            import yaml

            options = yaml.safe_load((bundle / "llm_api_options.yaml").read_text()) or {}
            options.pop("model", None)
            checkpoint = bundle / "engine" if (bundle / "engine").is_dir() else bundle / "model"
            lora = options.get("lora_config")
            if lora and lora.get("lora_dir"):  # paths in the file are relative to the bundle
                lora["lora_dir"] = [str((bundle / d).resolve()) for d in lora["lora_dir"]]
            card = {}
            if (bundle / "steernpc.json").is_file():
                card = json.loads((bundle / "steernpc.json").read_text())
            adapters = {name: str((bundle / rel).resolve()) for name, rel in ((card.get("trtllm") or {}).get("adapters") or {}).items()}
            return checkpoint, options, adapters
    resolved = models.resolve(model)
    if resolved.suffix == ".gguf":
        raise ValueError(f"{resolved}: TensorRT-LLM loads HF checkpoints, not GGUF; run `steernpc compile --target trtllm`")
    return resolved, {}, {}


def adapter_rank_and_targets(folder: str | os.PathLike) -> tuple[int, list[str]]:
    """A PEFT adapter's rank and its target modules in TensorRT-LLM's names."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    names = sorted({HF_TO_TRTLLM_LORA[t.split(".")[-1]] for t in targets if t.split(".")[-1] in HF_TO_TRTLLM_LORA})
    return int(config.get("r", 8)), names


def lora_options(adapters: dict[str, str]) -> dict:
    """The documented `lora_config` fields for serving `adapters` unmerged."""
    if not adapters:
        return {}
    ranks, targets = [], set()
    for folder in adapters.values():
        rank, names = adapter_rank_and_targets(folder)
        ranks.append(rank)
        targets.update(names)
    return {
        "lora_dir": [str(Path(p).resolve()) for p in adapters.values()],
        "max_lora_rank": max(ranks),
        "max_loras": len(adapters),
        "max_cpu_loras": len(adapters),
        "lora_target_modules": sorted(targets),
    }


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    stream: Stream
    prompt_ids: list[int]
    submitted: float
    assembler: TextAssembler
    handle: Any = None
    seen_tokens: int = 0
    generated: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    cached: int = 0
    hit_eos: bool = False


class TrtllmBackend(Backend):
    """Options: model (a trtllm bundle, an HF folder or a prepared name), adapter (a LoRA
    for every request, served unmerged), adapters ({name: folder} selectable per request),
    max_batch, max_num_tokens, max_seq_len, free_gpu_memory_fraction, max_queue (requests
    in flight before QueueFull), prefix_priority (retention priority 0-100 for the prefix a
    prompt shares with other sessions; 35 is TensorRT-LLM's default), llm_options (extra
    LLM() keyword arguments, overriding the bundle's)."""

    name = "trtllm"

    def __init__(
        self,
        model: Any = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        adapters: dict[str, str] | None = None,
        max_batch: int | None = None,
        max_num_tokens: int | None = None,
        max_seq_len: int | None = None,
        free_gpu_memory_fraction: float | None = None,
        max_queue: int = 256,
        prefix_priority: int = 90,
        prefix_min_tokens: int = 32,
        llm_options: dict | None = None,
        tokenizer: Any = None,
        guided_backend: str | None = "xgrammar",
    ):
        api = load_api()
        if device not in (None, "auto") and not str(device).startswith("cuda"):
            raise ValueError(f"the trtllm backend runs on NVIDIA GPUs; device={device!r} is not supported")
        checkpoint, options, bundled = resolve_bundle(model)
        from steernpc.model_card import read_model_card

        self.card = read_model_card(checkpoint) or read_model_card(checkpoint.parent)
        self.adapters = {**bundled, **(adapters or {})}
        self.default_adapter = None
        if adapter:
            self.adapters["default"] = str(adapter)
            self.default_adapter = "default"
        elif len(bundled) == 1 and not adapters:  # compiled with --keep-adapter: use it by default
            self.default_adapter = next(iter(bundled))
        options = dict(options)
        kv = dict(options.pop("kv_cache_config", None) or {})
        kv.setdefault("enable_block_reuse", True)
        if free_gpu_memory_fraction is not None:
            kv["free_gpu_memory_fraction"] = free_gpu_memory_fraction
        for key, value in (("max_batch_size", max_batch), ("max_num_tokens", max_num_tokens), ("max_seq_len", max_seq_len)):
            if value is not None:
                options[key] = value
        if dtype:
            options["dtype"] = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(dtype, dtype)
        lora = dict(options.pop("lora_config", None) or {})
        if self.adapters:
            lora.update(lora_options(self.adapters))
        if guided_backend and api.GuidedDecodingParams is not None:
            options.setdefault("guided_decoding_backend", guided_backend)  # the structured tail's grammar engine
        options.update(llm_options or {})
        kwargs: dict[str, Any] = {"model": str(checkpoint), "kv_cache_config": api.KvCacheConfig(**kv)}
        if lora:
            if api.LoraConfig is None:
                raise BackendUnavailable(f"this TensorRT-LLM ({api.version}) has no LoraConfig; serve merged adapters instead")
            kwargs["lora_config"] = api.LoraConfig(**lora)
        kwargs.update(options)
        self.api = api
        self.llm_kwargs = kwargs
        self.llm = api.LLM(**kwargs)
        if tokenizer is None:
            from steernpc import models

            tokenizer = models.load_tokenizer(checkpoint if (checkpoint / "tokenizer_config.json").exists() else checkpoint.parent)
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids(getattr(tokenizer, "eos_token_id", None), (self.card or {}).get("eos_token_ids"))
        self.max_queue = max_queue
        self.prefix_priority = int(prefix_priority)
        self.prefix_min_tokens = int(prefix_min_tokens)
        self._lora_ids = {name: i for i, name in enumerate(self.adapters)}
        self._recent: collections.OrderedDict[str, list[int]] = collections.OrderedDict()  # cache_key -> prompt ids
        self._special = dict(getattr(tokenizer, "get_added_vocab", dict)() or {})
        self._jobs: set[_Job] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="steernpc-trtllm-loop", daemon=True)
        self._thread.start()
        self._watch_future = asyncio.run_coroutine_threadsafe(self._watch(), self._loop)

    # -- request mapping (pure; unit-tested) ---------------------------------------------
    def sampling_params(self, request: GenerationRequest) -> Any:
        p = request.params
        kwargs: dict[str, Any] = {"max_tokens": p.max_new_tokens, "temperature": p.temperature}
        if p.temperature > 0:
            kwargs["top_p"] = p.top_p
            if p.top_k > 0:
                kwargs["top_k"] = p.top_k
        if p.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = p.repetition_penalty
        if p.seed is not None:
            kwargs["seed"] = int(p.seed)
        if p.ignore_eos:
            kwargs["ignore_eos"] = True
            return self.api.SamplingParams(**kwargs)
        if request.stop:
            kwargs["stop"] = list(request.stop)
        stop_ids = sorted({self._special[s] for s in request.stop if s in self._special} | (self.eos_ids - {self.tokenizer.eos_token_id}))
        if stop_ids:
            kwargs["stop_token_ids"] = stop_ids
        if self.tokenizer.eos_token_id is not None:
            kwargs["end_id"] = int(self.tokenizer.eos_token_id)
        return self.api.SamplingParams(**kwargs)

    def tail_sampling_params(self, request: GenerationRequest) -> Any:
        """The tail's request: at most tail.max_tokens tokens under the persona's grammar."""
        if self.api.GuidedDecodingParams is None:
            raise BackendUnavailable(f"this TensorRT-LLM ({self.api.version}) has no GuidedDecodingParams; "
                                     "the structured tail needs guided decoding (or send tail off)")  # fmt: skip
        p = request.params
        kwargs: dict[str, Any] = {"max_tokens": request.tail.max_tokens, "temperature": p.temperature,
                                  "guided_decoding": self.api.GuidedDecodingParams(grammar=request.tail.grammar)}  # fmt: skip
        if p.temperature > 0:
            kwargs["top_p"] = p.top_p
        if p.seed is not None:
            kwargs["seed"] = int(p.seed)
        if self.tokenizer.eos_token_id is not None:
            kwargs["end_id"] = int(self.tokenizer.eos_token_id)
        return self.api.SamplingParams(**kwargs)

    def lora_request(self, request: GenerationRequest) -> Any:
        name = getattr(request, "adapter", None) or self.default_adapter
        if not name:
            return None
        if name not in self.adapters:
            raise ValueError(f"unknown adapter {name!r}; this backend serves {', '.join(self.adapters) or 'none'}")
        return self.api.LoRARequest(name, self._lora_ids[name], str(Path(self.adapters[name]).resolve()))

    def shared_prefix(self, ids: list[int], cache_key: str | None) -> int:
        """Tokens `ids` shares with a recent prompt of another session (the character card)."""
        best = 0
        for key, other in self._recent.items():
            if key != cache_key:
                best = max(best, common_prefix(other, ids))
        return best

    def retention_config(self, ids: list[int], cache_key: str | None) -> Any:
        shared = self.shared_prefix(ids, cache_key)
        with self._lock:
            if cache_key is not None:
                self._recent[cache_key] = ids
                self._recent.move_to_end(cache_key)
                while len(self._recent) > 64:
                    self._recent.popitem(last=False)
        if shared < self.prefix_min_tokens:
            return None
        rc = self.api.KvCacheRetentionConfig
        token_range = rc.TokenRangeRetentionConfig(0, shared, self.prefix_priority, None)
        return rc(token_range_retention_configs=[token_range], decode_retention_priority=35, decode_duration_ms=None)

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        refuse_guidance(request, self.name)
        stream = Stream(request.request_id)
        ids = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("empty prompt")
        job = _Job(request, stream, ids, time.perf_counter(), TextAssembler(self.tokenizer, request.stop))
        with self._lock:
            if self._closed:
                raise RuntimeError("backend is closed")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} requests in flight; retry shortly")
            self._jobs.add(job)
        asyncio.run_coroutine_threadsafe(self._serve(job), self._loop)
        return stream

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {"running": len(self._jobs), "sessions_tracked": len(self._recent)}

    def drop_cache(self, cache_key: str) -> None:
        with self._lock:
            self._recent.pop(cache_key, None)  # its blocks age out of TensorRT-LLM's cache

    def close(self) -> None:
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
        for job in jobs:
            job.stream.cancel()
        deadline = time.time() + 10
        while time.time() < deadline and self._jobs:
            time.sleep(0.02)
        self._loop.call_soon_threadsafe(self._watch_future.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        shutdown = getattr(self.llm, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # -- the event loop ----------------------------------------------------------------------
    async def _serve(self, job: _Job) -> None:
        reason, error = "stop", None
        try:
            if job.stream.cancelled:
                reason = "cancelled"
                return
            handle = self.llm.generate_async(
                job.prompt_ids,
                sampling_params=self.sampling_params(job.request),
                lora_request=self.lora_request(job.request),
                streaming=True,
                kv_cache_retention_config=self.retention_config(job.prompt_ids, job.request.cache_key),
            )
            job.handle = handle
            finish = None
            async for output in handle:
                completion = output.outputs[0]
                tokens = list(completion.token_ids or [])
                for token in tokens[job.seen_tokens :]:
                    if job.first_token_at is None:
                        job.first_token_at = time.perf_counter()
                    if token in self.eos_ids:
                        job.hit_eos = True
                        continue
                    job.generated.append(token)
                    delta = job.assembler.add(token)
                    if delta:
                        job.stream.push(Delta(delta))
                job.seen_tokens = len(tokens)
                finish = completion.finish_reason or finish
                if job.assembler.stopped:
                    finish = "stop"
                    _abort(handle)
                    break
                if job.stream.cancelled:
                    finish = "cancelled"
                    _abort(handle)
                    break
            reason = {"length": "length", "cancelled": "cancelled", "timeout": "error"}.get(finish or "stop", "stop")
            if job.stream.cancelled:
                reason = "cancelled"
            if reason == "error":
                error = "TensorRT-LLM timed the request out"
        except Exception as exc:  # noqa: BLE001 - reported on the stream
            reason, error = ("cancelled", None) if job.stream.cancelled else ("error", f"{type(exc).__name__}: {exc}")
        finally:
            if reason in ("stop", "length"):
                tail = job.assembler.finish()
                if tail:
                    job.stream.push(Delta(tail))
            final = self._finished(job, reason, error)
            if reason in ("stop", "length") and job.request.tail is not None and not job.stream.cancelled:
                await self._tail(job, final)
            job.stream.push(final)
            with self._lock:
                self._jobs.discard(job)

    async def _tail(self, job: _Job, final: Finished) -> None:
        """The structured tail, generated under the grammar after the reply (see the module doc)."""
        started = time.perf_counter()
        try:
            reply = job.generated[: reply_token_count(self.tokenizer, job.generated, job.request.stop)]
            marker = self.tokenizer(job.request.tail.marker, add_special_tokens=False)["input_ids"]
            handle = self.llm.generate_async(job.prompt_ids + reply + marker, sampling_params=self.tail_sampling_params(job.request),
                                             lora_request=self.lora_request(job.request), streaming=True)  # fmt: skip
            job.handle = handle
            tokens: list[int] = []
            async for output in handle:
                tokens = [t for t in (output.outputs[0].token_ids or []) if t not in self.eos_ids]
                if job.stream.cancelled:
                    _abort(handle)
                    return
            read_tail(job.request, self.tokenizer.decode(tokens, skip_special_tokens=True), final)
            final.tail_tokens = len(tokens)
        except Exception as exc:  # noqa: BLE001 - reported on the reply's final event
            final.tail_error = f"the tail could not be generated: {type(exc).__name__}: {exc}"
        final.tail_ms = (time.perf_counter() - started) * 1000.0

    async def _watch(self) -> None:
        """Abort cancelled requests promptly, even while they wait for their next token."""
        while True:
            with self._lock:
                jobs = [j for j in self._jobs if j.stream.cancelled and j.handle is not None]
            for job in jobs:
                _abort(job.handle)
            await asyncio.sleep(0.02)

    def _finished(self, job: _Job, reason: str, error: str | None = None) -> Finished:
        return finished_from(job, reason, error)


def _abort(handle: Any) -> None:
    try:
        if not getattr(handle, "_aborted", False):
            handle.abort()
    except Exception:  # noqa: BLE001 - already finished
        pass
