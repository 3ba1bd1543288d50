"""What a model is: its prompt format, attribute schema, stop strings and provenance.

This module is the one reader and writer of the files in which a model folder describes
itself:

- `steernpc.json`, the model card that `steernpc compile` writes next to the weights, so a
  compiled model needs no other file to be served. It is read with `read_model_card()`.
- the training metadata (TRAIN_META_FILE) and `schema.yaml`, which `steernpc train sft`
  writes into an adapter (or full model) folder. They are read with `read_train_meta()`.

`read_card()` answers "which format does this folder say it was trained with" from either
file, and `trained_with()` answers "which format and schema".

Card (JSON, version 1):

    {"card_version": 1, "target": "hf" | "onnx" | "trtllm",
     "format": "chat" | "nemo" | "verbal",            # the prompt format it was trained with
     "stop": ["<|im_end|>"],               # stop strings (backends also stop on EOS ids)
     "eos_token_ids": [2],
     "schema": {"name": "npc", "attributes": [{"name", "min", "max", "default", "description"}]},
     "base_model": "...", "adapter": "..." | null, "merged": true,
     "created": "2025-01-01T00:00:00Z", "steernpc_version": "0.1.0",
     "tail": true,                          # optional: trained to write the structured tail
     "onnx": {"file": "model.onnx", "precision": "int4", ...}      # onnx target only
     "trtllm": {...}}                                               # trtllm target only
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from steernpc.attributes import AttributeSchema

CARD_FILE = "steernpc.json"
CARD_VERSION = 1
TRAIN_META_FILE = "training.json"  # what training wrote: format, schema, base, recipe
SCHEMA_FILE = "schema.yaml"


class ModelCardError(ValueError):
    pass


# -- steernpc.json ------------------------------------------------------------------------

def make_card(
    target: str,
    fmt: str,
    stop: list[str],
    schema: AttributeSchema | dict,
    eos_token_ids: list[int] | None = None,
    base_model: str | None = None,
    adapter: str | None = None,
    merged: bool = True,
    **extra: Any,
) -> dict:
    from steernpc import __version__

    card = {
        "card_version": CARD_VERSION,
        "target": target,
        "format": fmt,
        "stop": list(stop),
        "eos_token_ids": sorted(set(eos_token_ids or [])),
        "schema": schema if isinstance(schema, dict) else schema.to_dict(),
        "base_model": base_model,
        "adapter": adapter,
        "merged": merged,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steernpc_version": __version__,
    }
    card.update(extra)
    return card


def write_model_card(folder: str | os.PathLike, card: dict) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def read_model_card(folder: str | os.PathLike | None) -> dict | None:
    """The folder's `steernpc.json` as a checked dict, or None when there is none.

    Accepts the model folder itself or a file inside it. Raises ModelCardError (naming the
    file and the field) when the card is there but malformed. The returned dict has the
    card's fields plus `"schema_obj"`: the AttributeSchema.
    """
    from steernpc.prompt import FORMATS

    if not folder:
        return None
    path = _folder(folder) / CARD_FILE
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{path}: must be a JSON object")
    version = card.get("card_version", CARD_VERSION)
    if not isinstance(version, int) or version > CARD_VERSION:
        raise ModelCardError(f"{path}: card_version {version!r} is newer than this runtime understands ({CARD_VERSION})")
    if card.get("format") not in FORMATS:
        raise ModelCardError(f"{path}: format = {card.get('format')!r}; expected one of {', '.join(FORMATS)}")
    stop = card.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ModelCardError(f"{path}: stop must be a list of non-empty strings")
    eos = card.get("eos_token_ids", [])
    if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eos):
        raise ModelCardError(f"{path}: eos_token_ids must be a list of integers")
    if not isinstance(card.get("schema"), dict):
        raise ModelCardError(f"{path}: schema is required: {{name, attributes: [...]}}")
    if not isinstance(card.get("tail", False), bool):
        raise ModelCardError(f"{path}: tail = {card.get('tail')!r} must be true or false (trained to write the structured tail)")
    try:
        schema = AttributeSchema.from_dict(card["schema"], f"{path}#schema")
    except ValueError as exc:
        raise ModelCardError(str(exc)) from None
    return {**card, "stop": stop, "eos_token_ids": eos, "schema_obj": schema}


# -- training metadata + schema.yaml -------------------------------------------------------

def write_schema(folder: str | os.PathLike, schema: AttributeSchema) -> Path:
    """`schema.yaml`: the attribute schema, loadable with AttributeSchema.load."""
    import yaml

    path = Path(folder) / SCHEMA_FILE
    path.write_text(yaml.safe_dump(schema.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_train_meta(folder: str | os.PathLike, meta: dict) -> Path:
    path = Path(folder) / TRAIN_META_FILE
    path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return path


def read_train_meta(folder: str | os.PathLike | None) -> dict:
    """The training metadata (TRAIN_META_FILE) of a training output folder, or {} when
    there is none."""
    if not folder:
        return {}
    path = Path(folder) / TRAIN_META_FILE
    return json.loads(path.read_text()) if path.exists() else {}


# -- what a folder says it was trained with -------------------------------------------------

def read_card(folder: str | os.PathLike | None) -> dict:
    """What a model or adapter folder says about itself: its `steernpc.json` (validated),
    else its training metadata (unreadable counts as absent), else {}."""
    if not folder:
        return {}
    path = _folder(folder)
    card = read_model_card(path)
    if card:
        return card
    try:
        return read_train_meta(path)
    except (OSError, json.JSONDecodeError):
        return {}


def trained_with(folder: str | os.PathLike) -> tuple[str | None, AttributeSchema | None]:
    """(prompt format, AttributeSchema) an adapter or model folder was trained with, each
    None when the folder does not say. The format: the training metadata's, else the
    card's. The schema: the card's, else `schema.yaml`, else the one the metadata names."""
    folder = Path(folder)
    meta = read_train_meta(folder)
    card = read_model_card(folder)
    fmt = meta.get("format") or (card["format"] if card else None)
    schema = card["schema_obj"] if card else None
    if schema is None and (folder / SCHEMA_FILE).exists():
        schema = AttributeSchema.load(folder / SCHEMA_FILE)
    if schema is None and isinstance(meta.get("schema"), str):
        schema = AttributeSchema.load(meta["schema"])
    return fmt, schema


def writes_tail(folder: str | os.PathLike | None) -> bool:
    """Whether a model or adapter folder says it was trained to write the structured tail
    (steernpc.actions): `"tail": true` in its card or its training metadata."""
    return read_card(folder).get("tail") is True


def _folder(path: str | os.PathLike) -> Path:
    """A model folder given as the folder itself or a file inside it."""
    path = Path(path)
    return path if path.is_dir() else path.parent
