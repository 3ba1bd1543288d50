"""The hf target of `steernpc compile`: the LoRA merged into the base, saved as an HF folder
with its model card (steernpc.json), so the folder alone is servable."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from steernpc.export.config import CompileConfig
from steernpc.model_card import make_card, read_model_card, trained_with, write_model_card


# -- what the model was trained with ----------------------------------------------------------

def training_facts(cfg: CompileConfig, tokenizer: Any) -> tuple[str, Any, list[str]]:
    """(prompt format, AttributeSchema, stop strings) from the flags, else what the adapter
    says it was trained with, else the base model's card, else chat + the npc schema."""
    from steernpc.attributes import AttributeSchema
    from steernpc.prompt import FORMATS, stop_strings

    fmt, schema = trained_with(cfg.adapter) if cfg.adapter else (None, None)
    base_path = Path(cfg.base)
    base_card = read_model_card(base_path) if base_path.is_dir() else None
    if base_card:
        fmt = fmt or base_card["format"]
        schema = schema or base_card["schema_obj"]
    fmt = cfg.format or fmt or "chat"
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}; choose from {', '.join(FORMATS)}")
    if cfg.schema:
        schema = AttributeSchema.load(cfg.schema)
    schema = schema or AttributeSchema.builtin("nemo" if fmt == "nemo" else "npc")
    stops = list(dict.fromkeys([*stop_strings(fmt, tokenizer), *(base_card or {}).get("stop", []), *cfg.stop]))
    return fmt, schema, stops


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
        elif value is not None:
            ids.add(int(value))
    return sorted(ids)


def write_hf(cfg: CompileConfig, out: Path, dtype: str | None = None, merge: bool = True) -> dict:
    """Merge the adapter (unless merge=False) and save an HF folder with its model card."""
    from steernpc import models

    model, tokenizer = models.load_model(cfg.base, adapter=cfg.adapter if merge else None, device="cpu", dtype=dtype or cfg.dtype)
    fmt, schema, stops = training_facts(cfg, tokenizer)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    card = make_card(
        "hf", fmt, stops, schema, eos_ids(model, tokenizer),
        base_model=str(cfg.base), adapter=str(cfg.adapter) if cfg.adapter else None,
        merged=bool(cfg.adapter) and merge, name=cfg.name or _default_name(cfg),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
    )  # fmt: skip
    write_model_card(tmp, card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return card


def _default_name(cfg: CompileConfig) -> str:
    return Path(cfg.adapter or cfg.base).name or "steernpc-model"
