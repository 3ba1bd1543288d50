"""Step 3 (SFT): loss positions, packing isolation, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from steernpc import models
from steernpc.attributes import AttributeSchema
from steernpc.prompt import Exchange, build_prompt, segments

from steernpc_train import sft as S
from steernpc_train.data import Conversation, Turn

SCHEMA = AttributeSchema.builtin("npc")
V1 = {"humor": 1, "friendliness": 2, "creativity": 2, "verbosity": 1}
V2 = {"humor": 4, "friendliness": 0, "creativity": 3, "verbosity": 4}
SYSTEM = "You are Brann, the town guard."


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return models.load_tokenizer(tiny_model_dir)


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def trained_positions(labels):
    return [i for i, v in enumerate(labels) if v != S.IGNORE]


def test_nemo_single_turn_loss_positions(tok):
    ex = [Exchange("Halt!", "Who goes there?", V1)]
    ids, labels = S.tokenize_segments(segments("nemo", SYSTEM, ex, SCHEMA), tok)
    served = build_prompt("nemo", SYSTEM, [], "Halt!", V1, SCHEMA)
    prompt_ids = ids_of(tok, served)  # exactly what the runtime feeds the model
    reply_ids = ids_of(tok, "Who goes there?\n<extra_id_1>")
    assert ids == prompt_ids + reply_ids
    assert trained_positions(labels) == list(range(len(prompt_ids), len(prompt_ids) + len(reply_ids)))
    assert [labels[i] for i in trained_positions(labels)] == reply_ids


def test_nemo_multi_turn_loss_positions(tok):
    ex = [Exchange("Halt!", "Who goes there?", V1), Exchange("A friend.", "Then pass.", V2)]
    ids, labels = S.tokenize_segments(segments("nemo", SYSTEM, ex, SCHEMA), tok)
    p1 = ids_of(tok, build_prompt("nemo", SYSTEM, [], "Halt!", V1, SCHEMA))
    r1 = ids_of(tok, "Who goes there?\n<extra_id_1>")
    p2 = ids_of(tok, f"User\nA friend.\n<extra_id_1>Assistant\n<extra_id_2>{SCHEMA.encode(V2)}\n")
    r2 = ids_of(tok, "Then pass.\n<extra_id_1>")
    assert ids == p1 + r1 + p2 + r2
    a = len(p1)
    b = a + len(r1) + len(p2)
    # every reply and its end-of-turn marker, nothing of the system, user or label text
    assert trained_positions(labels) == list(range(a, a + len(r1))) + list(range(b, b + len(r2)))
    assert tok.decode([ids[i] for i in trained_positions(labels)]) == "Who goes there?\n<extra_id_1>Then pass.\n<extra_id_1>"


def test_chat_single_turn_loss_positions(tok):
    ex = [Exchange("Halt!", "Who goes there?", V1)]
    ids, labels = S.tokenize_segments(segments("chat", SYSTEM, ex, SCHEMA, tok), tok)
    prompt_ids = ids_of(tok, build_prompt("chat", SYSTEM, [], "Halt!", V1, SCHEMA, tok))
    reply_ids = ids_of(tok, "Who goes there?<|im_end|>\n")
    assert ids == prompt_ids + reply_ids
    assert trained_positions(labels) == list(range(len(prompt_ids), len(ids)))
    assert tok.convert_ids_to_tokens(ids[trained_positions(labels)[-2]]) == "<|im_end|>"  # end of turn is learned


def test_chat_multi_turn_trains_last_reply_only(tok):
    ex = [Exchange("Halt!", "Who goes there?", V1), Exchange("A friend.", "Then pass.", V2)]
    ids, labels = S.tokenize_segments(segments("chat", SYSTEM, ex, SCHEMA, tok), tok)
    prompt = build_prompt("chat", SYSTEM, ex[:1], "A friend.", V2, SCHEMA, tok)
    prompt_ids = ids_of(tok, prompt)
    assert "Attributes: " + SCHEMA.encode(V2) in prompt  # the last exchange's labels
    assert ids[: len(prompt_ids)] == prompt_ids
    assert trained_positions(labels) == list(range(len(prompt_ids), len(ids)))
    assert tok.decode([ids[i] for i in trained_positions(labels)]) == "Then pass.<|im_end|>\n"


def test_builder_expands_chat_turns_with_history(tok):
    conv = Conversation([Turn("a", "b", V1), Turn("c", "d", V2), Turn("e", "f", V1)], system=SYSTEM)
    chat = S.ExampleBuilder("chat", SCHEMA, tok, history=1).build(conv)
    assert len(chat) == 3  # one example per reply
    assert [tok.decode([i for i, l in zip(e.input_ids, e.labels) if l != S.IGNORE]) for e in chat] == ["b<|im_end|>\n", "d<|im_end|>\n", "f<|im_end|>\n"]
    assert "<|im_start|>user\na" not in tok.decode(chat[2].input_ids)  # history 1: only c/d before e
    nemo = S.ExampleBuilder("nemo", SCHEMA, tok).build(conv)
    assert len(nemo) == 1  # all replies in one sequence
    with pytest.raises(Exception, match="no label for"):
        S.ExampleBuilder("nemo", SCHEMA, tok).build(Conversation([Turn("a", "b", {"humor": 1})]))
    filled = S.ExampleBuilder("nemo", SCHEMA, tok, fill_missing=True).build(Conversation([Turn("a", "b", {"humor": 3})]))
    assert "humor:3,friendliness:2,creativity:2,verbosity:2" in tok.decode(filled[0].input_ids)


@pytest.mark.parametrize("fmt", ["nemo", "chat"])
def test_end_weight_lands_on_each_end_of_turn_marker(tok, fmt):
    conv = Conversation([Turn("Halt!", "Who goes there?", V1), Turn("A friend.", "Then pass.", V2)], system=SYSTEM)
    plain = S.ExampleBuilder(fmt, SCHEMA, tok).build(conv)
    weighted = S.ExampleBuilder(fmt, SCHEMA, tok, end_weight=5.0).build(conv)
    assert [e.input_ids for e in weighted] == [e.input_ids for e in plain]
    assert [e.labels for e in weighted] == [e.labels for e in plain] and plain[0].token_weights is None
    ex = weighted[-1]
    heavy = tok.decode([i for i, w in zip(ex.input_ids, ex.token_weights) if w == 5.0])
    marker = "\n<extra_id_1>" if fmt == "nemo" else "<|im_end|>\n"
    # the reply's last token (the one the end decision follows) and the marker, per trained reply
    replies = ["Who goes there?", "Then pass."] if fmt == "nemo" else ["Then pass."]
    assert heavy == "".join("?" * (r.endswith("?")) + "." * (r.endswith(".")) + marker for r in replies)
    assert all(w == 1.0 for w, label in zip(ex.token_weights, ex.labels) if label == S.IGNORE)
    batch = S.collate([[ex]], pad_id=0)  # targets are shifted: weight i belongs to token i + 1
    heavy_targets = batch["targets"][0][batch["weights"][0] == 5.0].tolist()
    assert tok.decode(heavy_targets) == heavy


def test_packing_isolates_examples(tiny_model_dir, tok):
    model, _ = models.load_model(tiny_model_dir, device="cpu", dtype="float32")
    a = S.Example(*S.tokenize_segments(segments("nemo", SYSTEM, [Exchange("Halt!", "Who goes there?", V1)], SCHEMA), tok))
    b = S.Example(*S.tokenize_segments(segments("chat", "x", [Exchange("Hi", "Hello, friend.", V2)], SCHEMA, tok), tok))

    def logits(rows):
        batch = S.collate(rows, tok.pad_token_id)
        with torch.no_grad():
            return model(**S.forward_kwargs(batch)).logits, batch

    packed, pb = logits([[a, b], [b]])  # two rows, the second padded
    alone_a, _ = logits([[a]])
    alone_b, _ = logits([[b]])
    na, nb = len(a.input_ids), len(b.input_ids)
    assert torch.allclose(packed[0, :na], alone_a[0], atol=1e-5)
    assert torch.allclose(packed[0, na:na + nb], alone_b[0], atol=1e-5)
    assert torch.allclose(packed[1, :nb], alone_b[0], atol=1e-5)
    # the check has teeth: one causal sequence without the position reset would differ
    with torch.no_grad():
        naive = model(input_ids=pb["input_ids"][:1]).logits
    assert not torch.allclose(naive[0, na:na + nb], alone_b[0], atol=1e-3)
    # targets are shifted within each example; nothing crosses the boundary
    t = pb["targets"][0]
    assert t[na - 1] == S.IGNORE and t[-1] == S.IGNORE
    assert [int(x) for x in t[:na] if x != S.IGNORE] == [l for l in a.labels[1:] if l != S.IGNORE]


def test_plan_is_deterministic_and_packs():
    lengths = [30, 50, 20, 70, 10, 40]
    plan = S.Plan(lengths, capacity=100, rows_per_step=2, seed=3)
    rows = plan.epoch_rows(0)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 100 for r in rows)
    assert len(rows) < 6
    again = S.Plan(lengths, capacity=100, rows_per_step=2, seed=3)
    assert [again.step_rows(s) for s in range(5)] == [plan.step_rows(s) for s in range(5)]
    assert plan.epoch_rows(1) != plan.epoch_rows(0) or len(rows) == 1


def _sft_args(tiny_model_dir, data, out, *extra):
    return ["train", "sft", "--base", tiny_model_dir, "--data", data, "--format", "chat", "--fill-missing",
            "--out", out, "--max-length", "96", "--micro-batch", "1", "--log-every", "1", "--lr", "5e-3", *extra]


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_equals_uninterrupted(tiny_model_dir, train_data, tmp_path, cli):
    data = train_data / "npc.jsonl"
    common = ("--max-steps", "6", "--save-every", "2", "--lora", "4", "--lora-dropout", "0.1")
    cli(*_sft_args(tiny_model_dir, data, tmp_path / "whole", *common))
    killed = cli(*_sft_args(tiny_model_dir, data, tmp_path / "resumed", *common, "--halt-after-step", "5"), check=False)
    assert killed.returncode == 3
    assert not (tmp_path / "resumed" / "adapter_model.safetensors").exists()
    assert [p.name for p in S.checkpoints(tmp_path / "resumed")] == ["step-0000002", "step-0000004"]
    resumed = cli(*_sft_args(tiny_model_dir, data, tmp_path / "resumed", *common))
    assert "resumed from" in resumed.stderr and "at step 4" in resumed.stderr
    whole, again = _adapter(tmp_path / "whole"), _adapter(tmp_path / "resumed")
    assert whole.keys() == again.keys()
    for name in whole:
        assert torch.allclose(whole[name], again[name], atol=1e-6), name
    # SIGTERM (as a scheduler or `kill` sends it): checkpoint after the current step, exit 143
    args = _sft_args(tiny_model_dir, data, tmp_path / "signalled", *common)
    proc = subprocess.Popen([sys.executable, "-m", "steernpc_train", *map(str, args)], stderr=subprocess.PIPE, text=True,
                            cwd=str(S.Path(__file__).resolve().parents[2]), env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stderr:
        if " examples (" in line:  # the run is about to start its first step
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, rest[-2000:]
    assert "checkpoint saved" in rest
    assert [p.name for p in S.checkpoints(tmp_path / "signalled")] == ["step-0000001"]
    cli(*args)
    again = _adapter(tmp_path / "signalled")
    for name in whole:
        assert torch.allclose(whole[name], again[name], atol=1e-6), name
    # training moved the weights (the comparison is not vacuous)
    assert any(v.abs().sum() > 0 for k, v in whole.items() if "lora_B" in k)
    log = [json.loads(l) for l in open(tmp_path / "whole" / "train_log.jsonl")]
    assert log[-1]["step"] == 6 and log[-1]["tokens_per_s"] > 0
    meta = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert meta["format"] == "chat" and meta["schema"] == "npc" and meta["kind"] == "lora"


def test_ddp_two_processes_match_one_process(tiny_model_dir, train_data, tmp_path, cli):
    """torchrun --nproc_per_node 2 (gloo on CPU) == one process with grad-accum 2."""
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    data = train_data / "npc.jsonl"
    common = ("--max-steps", "3", "--save-every", "0", "--lora", "4", "--lora-dropout", "0")
    cli(*_sft_args(tiny_model_dir, data, tmp_path / "single", *common, "--grad-accum", "2"))
    cmd = f"{torchrun} --standalone --nproc_per_node 2 -m steernpc_train " + " ".join(
        map(str, _sft_args(tiny_model_dir, data, tmp_path / "ddp", *common, "--grad-accum", "1")))
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "world 2 on cpu" in proc.stderr
    one, two = _adapter(tmp_path / "single"), _adapter(tmp_path / "ddp")
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name


def test_full_fine_tuning_saves_a_model(tiny_model_dir, train_data, tmp_path):
    cfg = S.SFTConfig(base=str(tiny_model_dir), data=[str(train_data / "nemo.jsonl")], format="nemo", fill_missing=True,
                      out=str(tmp_path / "full"), full=True, max_steps=2, save_every=0, max_length=256, micro_batch=2)
    meta = S.train_sft(cfg)
    assert meta["kind"] == "full" and meta["schema"] == "nemo"
    model, _ = models.load_model(tmp_path / "full", device="cpu")
    assert model.config.model_type == "llama"
