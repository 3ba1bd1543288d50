"""Model preparation and loading: the bundled SmolLM2 GGUF becomes an HF folder once;
HF folders, GGUF files, prepared names and LoRA adapters all load."""

import json

import pytest
import torch

from steernpc import models
from steernpc.runtime_defaults import model_format


def test_prepare_is_idempotent_and_prints_the_folder(smollm2_dir, monkeypatch):
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat()

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("prepare() converted the GGUF again")

    monkeypatch.setattr(models, "_load_gguf", no_second_conversion)
    again = models.prepare(quiet=True)
    assert again == smollm2_dir
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # nothing rewritten
    assert (smollm2_dir / "config.json").exists() and (smollm2_dir / "model.safetensors").exists()
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())


def test_resolve_accepts_folder_gguf_and_names(smollm2_dir, tmp_path):
    assert models.resolve("smollm2") == smollm2_dir
    assert models.resolve(str(smollm2_dir)) == smollm2_dir
    assert models.resolve(models.bundled_gguf()).suffix == ".gguf"
    with pytest.raises(models.ModelNotFound, match="not found"):
        models.resolve("no-such-model")
    with pytest.raises(models.ModelNotFound, match="no config.json"):
        models.resolve(tmp_path)


@pytest.mark.integration
def test_gguf_and_prepared_folder_give_the_same_logits(smollm2_dir):
    folder_model, tokenizer = models.load_model(smollm2_dir, device="cpu")
    gguf_model, _ = models.load_model(models.bundled_gguf(), device="cpu")
    ids = tokenizer("The blacksmith said", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(folder_model(ids).logits, gguf_model(ids).logits, atol=1e-4)


def test_lora_adapter_loads_merged_and_changes_the_output(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    plain, tokenizer = models.load_model(tiny_model_dir, device="cpu")
    merged, _ = models.load_model(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu")
    ids = tokenizer("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, merged(ids).logits)
    with pytest.raises(models.ModelNotFound, match="adapter_config.json"):
        models.load_model(tiny_model_dir, adapter=tmp_path, device="cpu")


def test_prompt_format_comes_from_the_adapter_card(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"format": "nemo"}))
    assert model_format("smollm2", str(tmp_path)) == "nemo"
    assert model_format("smollm2") == "chat"
