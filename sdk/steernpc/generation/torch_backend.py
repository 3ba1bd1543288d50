"""The embedded default backend: PyTorch + transformers, CPU or CUDA.

The scheduler (continuous batching over a pool of KV slots, session prefixes kept
between turns) and the sampler are shared with the onnx backend (scheduler.py,
kv_slots.py, sampling.py); this file is the model runner: `SlotCache`, the slot pool as
per-layer K/V tensors that transformers' attention writes into, and the forward passes.
Running requests occupy slots 0..B-1, so the batched attention reads a view of the pool,
never a gathered copy.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from steernpc.generation.runner import RunnerBackend
from steernpc.generation.sampling import eos_ids


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA over the slot pool. Unlike transformers' sdpa path, which copies K/V with
    repeat_kv whenever a mask is given, this keeps grouped-query attention native."""
    causal = attention_mask is None and query.shape[2] > 1  # a plain HF forward on the same model
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, is_causal=causal, scale=scaling, enable_gqa=key.shape[1] != query.shape[1]
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("steernpc_slots", slot_attention)


class SlotCache:
    """Per-layer K/V pools [slots, kv_heads, max_len, head_dim], used as HF `past_key_values`.

    Before each forward the engine sets either a prefill (one slot, a start position) or a
    decode (rows 0..B-1, one position each); `update()` writes the new keys/values there and
    returns the keys/values the attention should read.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (slots, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.max_len = max_len
        self._mode = "decode"
        self._slot = 0
        self._start = 0
        self._positions: torch.Tensor | None = None
        self._kv_len = 0

    def set_prefill(self, slot: int, start: int, count: int) -> None:
        self._mode, self._slot, self._start, self._kv_len = "prefill", slot, start, start + count

    def set_prefill_many(self, slots: list[int], starts: list[int], counts: list[int]) -> None:
        self._mode, self._rows, self._kv_len = "prefill_many", list(zip(slots, starts, counts)), max(a + n for a, n in zip(starts, counts))

    def set_decode(self, positions: torch.Tensor, kv_len: int) -> None:
        self._mode, self._positions, self._kv_len = "decode", positions, kv_len

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.k[layer_idx], self.v[layer_idx]
        if self._mode == "prefill":
            s, a, b = self._slot, self._start, self._kv_len
            k[s, :, a:b] = key[0]
            v[s, :, a:b] = value[0]
            return k[s : s + 1, :, :b], v[s : s + 1, :, :b]
        if self._mode == "prefill_many":  # row r: its chunk's first n positions go to its slot
            for r, (s, a, n) in enumerate(self._rows):
                k[s, :, a : a + n] = key[r, :, :n]
                v[s, :, a : a + n] = value[r, :, :n]
            index = torch.tensor([s for s, _, _ in self._rows], device=key.device)
            return k[index, :, : self._kv_len], v[index, :, : self._kv_len]
        rows = torch.arange(key.shape[0], device=key.device)
        k[rows, :, self._positions] = key[:, :, 0]
        v[rows, :, self._positions] = value[:, :, 0]
        return k[: key.shape[0], :, : self._kv_len], v[: key.shape[0], :, : self._kv_len]

    def copy(self, dst: int, src: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        if a == b or length == 0:
            return
        idx, rev = torch.tensor([a, b]), torch.tensor([b, a])
        for k, v in zip(self.k, self.v):
            k[idx, :, :length] = k[rev, :, :length]
            v[idx, :, :length] = v[rev, :, :length]

    # transformers may ask these of a cache object
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def __len__(self) -> int:
        return len(self.k)


class TorchBackend(RunnerBackend):
    name = "torch"
    thread_name = "steernpc-torch-engine"

    def __init__(
        self,
        model: Any = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 16,
        slots: int = 32,
        max_len: int = 2048,
        max_queue: int = 64,
        prefill_chunk: int = 512,
        tokenizer: Any = None,
    ):
        from steernpc import models

        if isinstance(model, torch.nn.Module):
            self.model, self.tokenizer = model.eval(), tokenizer
        else:
            self.model, self.tokenizer = models.load_model(model, adapter=adapter, device=device, dtype=dtype)
        config = self.model.config
        self.model.set_attn_implementation("steernpc_slots")
        self.device = next(self.model.parameters()).device
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dtype_ = next(self.model.parameters()).dtype
        self.cache = SlotCache(config.num_hidden_layers, slots, kv_heads, max_len, head_dim, dtype_, self.device)
        self._decoder = self.model.get_decoder()
        self._lm_head = self.model.get_output_embeddings()
        # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40)
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        ends = eos_ids(*(getattr(s, "eos_token_id", None) for s in (self.model.generation_config, config, self.tokenizer)))
        self._start_scheduler(ends, slots, max_len, max_batch, max_queue, prefill_chunk)

    # -- the ModelRunner -------------------------------------------------------------------
    @torch.inference_mode()
    def copy_kv(self, dst: int, src: int, length: int) -> None:
        self.cache.copy(dst, src, length)

    @torch.inference_mode()
    def swap_kv(self, a: int, b: int, length: int) -> None:
        self.cache.swap(a, b, length)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self._decoder(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_kwarg: self.cache}
        )
        return self._lm_head(out.last_hidden_state[:, -1]).float()

    @torch.inference_mode()
    def prefill(self, slot: int, start: int, chunk: list[int]) -> np.ndarray:
        n = len(chunk)
        ids = torch.tensor([chunk], device=self.device)
        positions = torch.arange(start, start + n, device=self.device).unsqueeze(0)
        keys = torch.arange(start + n, device=self.device)
        mask = (keys.unsqueeze(0) <= positions[0].unsqueeze(1)).view(1, 1, n, start + n)
        self.cache.set_prefill(slot, start, n)
        return self._forward(ids, positions, mask)[0].cpu().numpy()

    @torch.inference_mode()
    def prefill_many(self, parts: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        """Several prefills (slot, start, chunk) in one forward pass, chunks padded to the
        longest; the last real position's logits of each."""
        width = max(len(chunk) for _, _, chunk in parts)
        slots, starts, counts = [p[0] for p in parts], [p[1] for p in parts], [len(p[2]) for p in parts]
        ids = torch.tensor([chunk + [chunk[-1]] * (width - len(chunk)) for _, _, chunk in parts], device=self.device)
        positions = torch.tensor(starts, device=self.device).unsqueeze(1) + torch.arange(width, device=self.device)
        kv_len = max(a + n for a, n in zip(starts, counts))
        keys = torch.arange(kv_len, device=self.device)
        # a query sees its own slot's keys up to its position; padding sees key 0 only
        limit = torch.minimum(positions, (torch.tensor(starts, device=self.device) + torch.tensor(counts, device=self.device) - 1).unsqueeze(1))
        mask = (keys.view(1, 1, -1) <= limit.unsqueeze(2)).unsqueeze(1)
        self.cache.set_prefill_many(slots, starts, counts)
        out = self._decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_kwarg: self.cache})
        last = out.last_hidden_state[torch.arange(len(parts), device=self.device), torch.tensor(counts, device=self.device) - 1]
        logits = self._lm_head(last).float().cpu().numpy()
        return [logits[r] for r in range(len(parts))]

    @torch.inference_mode()
    def decode(self, lengths: list[int], tokens: list[int]) -> np.ndarray:
        positions = torch.tensor(lengths, device=self.device)
        kv_len = int(positions.max()) + 1
        ids = torch.tensor([[t] for t in tokens], device=self.device)
        mask = (torch.arange(kv_len, device=self.device).unsqueeze(0) <= positions.unsqueeze(1)).view(len(tokens), 1, 1, kv_len)
        self.cache.set_decode(positions, kv_len)
        return self._forward(ids, positions.unsqueeze(1), mask).cpu().numpy()
