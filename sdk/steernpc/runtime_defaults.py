"""Defaults the runtime picks when the user gives none: which adapter, which prompt format.

A served model folder may carry a `steernpc.json` written by `steernpc compile`, an
adapter folder the training metadata written by `steernpc train sft`; both name the
prompt format ("chat" | "nemo" | "verbal") the model was trained with (see steernpc.model_card).
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_ADAPTER = "steernpc-npc-lora"


def repo_samples() -> Path:
    """samples/ of a source checkout (editable install); absent in a plain wheel."""
    return Path(__file__).resolve().parents[2] / "samples"


def default_adapter(model: str | None) -> str | None:
    """The shipped sample adapter, when serving the default base model and it exists.
    STEERNPC_ADAPTER overrides; STEERNPC_ADAPTER=none disables."""
    env = os.environ.get("STEERNPC_ADAPTER")
    if env:
        return None if env.lower() == "none" else env
    if model not in (None, "", "smollm2", "smollm2-135m-instruct"):
        return None
    folder = repo_samples() / "models" / SAMPLE_ADAPTER
    return str(folder) if (folder / "adapter_config.json").exists() else None


def model_format(model: str | None, adapter: str | None = None) -> str:
    """The prompt format a model was trained with: the adapter's card, the model's card
    (an HF, ONNX or compiled folder), else `chat` (base chat models)."""
    from steernpc.model_card import read_card
    from steernpc.prompt import FORMATS

    local_model = model if model and Path(model).exists() else None
    for folder in (adapter, local_model):
        fmt = read_card(folder).get("format")
        if fmt in FORMATS:
            return fmt
    return "chat"


def model_tails(model: str | None, adapter: str | None = None) -> bool:
    """Whether the served model writes the structured tail: its adapter's or its own card says
    `"tail": true` (steernpc.model_card.writes_tail). Without it no request gets a tail."""
    from steernpc.model_card import writes_tail

    local_model = model if model and Path(model).exists() else None
    return any(writes_tail(folder) for folder in (adapter, local_model) if folder)
