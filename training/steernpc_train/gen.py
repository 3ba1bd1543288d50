"""Batched generation and sequence log-probabilities with plain HF transformers, shared by
the bootstrap (step 4) and the steerability report."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from steernpc.prompt import stop_strings


def load_generator(model: str, adapter: str | None = None, merge: bool = True, device: str | None = None) -> tuple[Any, Any]:
    from steernpc import models

    m, tok = models.load_model(model, adapter=adapter, device=device, merge_adapter=merge)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return m.eval(), tok


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    at = min([i for i in (text.find(s) for s in stops if s) if i >= 0], default=-1)
    return text[:at] if at >= 0 else text


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    fmt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    progress: str | None = None,
    negatives: Sequence[str] | None = None,
    guidance: float = 1.0,
) -> list[dict]:
    """One reply per prompt: {"text", "tokens", "finish": "stop"|"length"}. Greedy when
    temperature == 0, else sampling seeded per batch (reproducible for a given batching).
    Prompts are tokenized without special tokens, exactly as the runtime does.

    With `negatives` (one prompt per prompt) and guidance != 1, every step decodes from
    log p_neg + guidance * (log p - log p_neg): classifier-free guidance, where the negative
    prompt is the same conversation under the persona's own vector, so the difference the
    requested vector makes is amplified (transformers' unbatched CFG processor)."""
    import torch
    from .progress import progress_bar
    from transformers import GenerationConfig

    stops = stop_strings(fmt, tokenizer)
    text_stops = [s for s in stops if s != tokenizer.eos_token]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stop_strings=text_stops or None,
    )
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[dict] = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
    results: dict[int, dict] = {}
    try:
        bar = progress_bar(len(prompts), progress or "generate", "reply", enabled=bool(progress))
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tokenizer([prompts[i] for i in idx], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
            extra = {}
            if negatives is not None and guidance != 1.0:
                neg = tokenizer([negatives[i] for i in idx], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
                extra = {"guidance_scale": guidance, "negative_prompt_ids": neg["input_ids"],
                         "negative_prompt_attention_mask": neg["attention_mask"]}
            torch.manual_seed(seed * 1_000_003 + b)
            with torch.no_grad():
                seqs = model.generate(**enc, generation_config=config, tokenizer=tokenizer, **extra)
            new = seqs[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                ids = row.tolist()
                if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
                    ids = [t for t in ids if t != tokenizer.pad_token_id]
                ended = tokenizer.eos_token_id in ids
                if ended:
                    ids = ids[: ids.index(tokenizer.eos_token_id)]
                raw = tokenizer.decode(ids, skip_special_tokens=True)
                text = cut_at_stops(raw, text_stops)
                finished = ended or text != raw
                results[i] = {"text": text.strip(), "tokens": len(ids), "finish": "stop" if finished else "length"}
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = side
    return [results[i] for i in range(len(prompts))]


def sequence_logprobs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """sum log p(completion | prompt) for (prompt, completion) text pairs, each tokenized on
    its own (as training and serving do)."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = []
    for b in range(0, len(pairs), batch_size):
        chunk = pairs[b:b + batch_size]
        seqs, spans = [], []
        for prompt, completion in chunk:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            seqs.append(p + c)
            spans.append((len(p), len(p) + len(c)))
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for r, (start, end) in enumerate(spans):
            out.append(float(logp[r, start - 1:end - 1].sum()) if end > start else 0.0)
    return out


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    z = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - z for v in values]


def read_prompt_lines(path: str | os.PathLike) -> list[str]:
    """Player lines: a .txt file (one per line, '#' comments) or records of any data format
    (the last user line of each record)."""
    path = Path(path)
    if path.suffix == ".txt":
        return [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and not l.lstrip().startswith("#")]
    from steernpc_train.data import read_conversations

    return [conv.turns[-1].user for conv in read_conversations(path)]
