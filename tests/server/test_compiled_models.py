"""`steernpc compile` outputs serve through `steernpc serve`: the merged `hf` folder on
the torch backend and the `onnx` export on the onnx backend give the same greedy reply."""

from __future__ import annotations

import pytest

from harness import NpcServer

from steernpc.client import NpcClient


@pytest.fixture(scope="module")
def compiled(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from steernpc.export import onnx_available
    from steernpc.export.compile import CompileConfig, compile_model

    ok, why = onnx_available()
    assert ok, why
    root = tmp_path_factory.mktemp("compiled")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    adapter.save_pretrained(root / "adapter")
    out = root / "out"
    compile_model(CompileConfig(base=str(tiny_model_dir), adapter=str(root / "adapter"), out=str(out),
                                targets=["hf", "onnx"], onnx_precision="fp32"))  # fmt: skip
    return out


def greedy_reply(server: NpcServer) -> tuple[str, dict]:
    with NpcClient(server.target, timeout=120) as npc:
        session = npc.create_session("brom")
        done = npc.reply(session.session_id, "Can you fix my sword?", max_new_tokens=16, temperature=0.0001, top_k=1)
        return done.text, dict(done.attributes)


def test_compiled_hf_and_onnx_serve_the_same_reply(compiled, tmp_path):
    servers = [
        NpcServer(compiled / "hf", tmp_path / "hf", store="memory", name="hf"),
        NpcServer(compiled / "onnx", tmp_path / "onnx", store="memory", name="onnx", extra=["--backend", "onnx"]),
    ]
    try:
        for server in servers:
            server.start()
        (hf_text, hf_attrs), (onnx_text, onnx_attrs) = (greedy_reply(s) for s in servers)
    finally:
        for server in servers:
            server.stop()
    assert hf_attrs == onnx_attrs and hf_attrs["humor"] == 0
    assert hf_text.strip(), "the tiny model gave an empty reply: nothing to compare"
    assert hf_text == onnx_text
