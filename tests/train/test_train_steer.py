"""Step 4 (bootstrap) and the steerability report, on the tiny random Llama."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict

import pytest

from steernpc.attributes import AttributeSchema

from steernpc_train import stats as st
from steernpc_train.apm import APMConfig, train_apm
from steernpc_train.bootstrap import BootstrapConfig, run_bootstrap, unconditioned_prompt
from steernpc_train.data import read_conversations
from steernpc_train.evaluate import SteerConfig, steerability_report
from steernpc_train.sft import SFTConfig, train_sft

PERSONA = """id: tess
name: Tess
role: a tester
attributes: {humor: 1, friendliness: 2, creativity: 2, verbosity: 2}
"""
LINES = ["Hello", "Who are you?", "Any news?", "Bye"]
LONG = "the old road runs north past the mill and over the river to the hills where the wolves sing".split()
FIRST = ["no", "yes", "well", "listen", "ah"]


@pytest.fixture(scope="module")
def apm_dir(tiny_encoder_dir, train_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("apm") / "apm"
    train_apm(APMConfig(schema="npc", backbone=str(tiny_encoder_dir), epochs=1, holdout=0), [train_data / "npc.jsonl"], out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    (root / "personas").mkdir()
    (root / "personas" / "tess.yaml").write_text(PERSONA)
    (root / "lines.txt").write_text("# player lines\n" + "\n".join(LINES) + "\n")
    rng = random.Random(0)
    with open(root / "follow.jsonl", "w") as f, open(root / "ignore.jsonl", "w") as g:
        for i in range(200):
            line, v = LINES[i % 4], rng.randint(0, 4)
            labels = {"humor": 1, "friendliness": 2, "creativity": 2, "verbosity": v}
            # follow: the reply's length is set by the verbosity label
            f.write(json.dumps({"character": "tess", "turns": [{"user": line, "reply": " ".join([FIRST[v]] + LONG[:4 * v]), "labels": labels}]}) + "\n")
            # ignore: the reply's length is set by the player line; the label says nothing
            k = LINES.index(line)
            g.write(json.dumps({"character": "tess", "turns": [{"user": line, "reply": " ".join([FIRST[k]] + LONG[:3 * k]), "labels": labels}]}) + "\n")
    return root


def _train(tiny_model_dir, world, name):
    cfg = SFTConfig(base=str(tiny_model_dir), data=[str(world / f"{name}.jsonl")], personas=[str(world / "personas")],
                    format="chat", out=str(world / name), full=True, lr=1e-2, max_steps=200, micro_batch=2,
                    max_length=256, save_every=0, log_every=50, warmup=0.05, resume="never")
    train_sft(cfg)
    return world / name


def _report(tiny_model_dir, world, model, apm_dir, name, backend="hf"):
    return steerability_report(SteerConfig(model=str(model), apm=str(apm_dir), personas=[str(world / "personas")],
                                           prompts=str(world / "lines.txt"), out=str(world / f"report-{name}"),
                                           max_new_tokens=24, batch_size=20, backend=backend))


def test_report_numbers_come_from_generations(tiny_model_dir, world, apm_dir, one_thread):
    follow_model = _train(tiny_model_dir, world, "follow")
    follow = _report(tiny_model_dir, world, follow_model, apm_dir, "follow")
    ignore = _report(tiny_model_dir, world, _train(tiny_model_dir, world, "ignore"), apm_dir, "ignore")
    assert follow["format"] == "chat"  # read from the trained model's metadata
    # the model trained so that reply length follows verbosity: high rho
    assert follow["attributes"]["verbosity"]["words"]["spearman"] > 0.8
    # the model trained to ignore the label: rho near 0
    assert abs(ignore["attributes"]["verbosity"]["words"]["spearman"]) < 0.2
    # the same sweep through the runtime's own engine (what `steernpc serve` runs) agrees
    served = _report(tiny_model_dir, world, follow_model, apm_dir, "follow-served", backend="torch")
    assert served["attributes"]["verbosity"]["words"]["spearman"] > 0.8
    assert served["generations"] == follow["generations"]
    # and guided against the persona's own vector in the runtime's engine (the guide rows batched)
    guided = steerability_report(SteerConfig(model=str(follow_model), apm=str(apm_dir), personas=[str(world / "personas")],
                                             prompts=str(world / "lines.txt"), out=str(world / "report-guided"),
                                             max_new_tokens=24, batch_size=20, backend="torch", guidance=2.0))
    assert guided["attributes"]["verbosity"]["words"]["spearman"] > 0.8
    assert "guidance 2 against the persona's own vector" in (world / "report-guided" / "report.md").read_text()
    # every attribute is swept over its whole range, 4 lines each
    schema = AttributeSchema.builtin("npc")
    assert list(follow["attributes"]) == schema.names
    for name, entry in follow["attributes"].items():
        assert entry["levels"] == [0, 1, 2, 3, 4]
        assert sum(v["n"] for v in entry["apm"]["per_target"].values()) == 5 * len(LINES)
    # the numbers are recomputed from the stored generations
    rows = [json.loads(l) for l in open(world / "report-follow" / "generations.jsonl")]
    verb = [r for r in rows if r["attribute"] == "verbosity"]
    assert len(rows) == 4 * 5 * len(LINES) and all(r["words"] == len(r["reply"].split()) for r in rows)
    assert st.spearman([r["target"] for r in verb], [r["words"] for r in verb]) == pytest.approx(
        follow["attributes"]["verbosity"]["words"]["spearman"], abs=1e-3)
    means = defaultdict(list)
    for r in verb:
        means[r["target"]].append(r["words"])
    assert follow["attributes"]["verbosity"]["words"]["per_target"]["4"]["mean"] == pytest.approx(sum(means[4]) / len(means[4]))
    for r in verb:
        assert f"verbosity:{r['target']}" in json.dumps(r["attributes"]) or r["attributes"]["verbosity"] == r["target"]
    # friendliness has a second measure that shares nothing with the APM: VADER sentiment
    friendly = [r for r in rows if r["attribute"] == "friendliness"]
    assert all(-1.0 <= r["sentiment"] <= 1.0 for r in friendly)
    assert follow["attributes"]["friendliness"]["sentiment"]["n"] == len(friendly)
    out = world / "report-follow"
    assert "(VADER)" in (out / "report.md").read_text()
    assert (out / "report.md").read_text().startswith("# Steerability report")
    assert "| verbosity |" in (out / "report.md").read_text()
    for name in schema.names:
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_spearman_with_ties():
    assert st.rank([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert st.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # average ranks [1.5,1.5,3.5,3.5,5.5,5.5] vs [1,2.5,2.5,5,5,5]: r = 13 / sqrt(16 * 15)
    assert st.spearman([0, 0, 1, 1, 2, 2], [1, 2, 2, 3, 3, 3]) == pytest.approx(13 / math.sqrt(240))
    assert math.isnan(st.spearman([0, 1, 2], [5, 5, 5]))


@pytest.mark.parametrize("weighting", ["none", "steerlm2"])
def test_bootstrap_builds_a_valid_round2(tiny_model_dir, train_data, apm_dir, tmp_path, weighting, one_thread):
    r1 = tmp_path / "r1"
    train_sft(SFTConfig(base=str(tiny_model_dir), data=[str(train_data / "npc.jsonl")], format="chat", fill_missing=True,
                        out=str(r1), lora=4, max_steps=1, save_every=0))
    k = 3
    cfg = BootstrapConfig(model=str(tiny_model_dir), adapter=str(r1), apm=str(apm_dir),
                          prompts=[str(train_data / "npc.jsonl"), str(train_data / "helpsteer.jsonl")], out=str(tmp_path / "boot"),
                          samples=k, max_new_tokens=12, weighting=weighting, train=weighting == "steerlm2",
                          keep_cut=True,  # a random model never ends a reply: every sample is cut at 12 tokens
                          sft=SFTConfig(max_steps=1, save_every=0, micro_batch=2))
    summary = run_bootstrap(cfg)
    assert summary["format"] == "chat" and summary["prompts"] == 5 and summary["samples"] == 5 * k
    schema = AttributeSchema.builtin("npc")
    convs = list(read_conversations(tmp_path / "boot" / "round2.jsonl", "nemo"))
    assert len(convs) == summary["round2_records"] > 0
    samples = [json.loads(l) for l in open(tmp_path / "boot" / "samples.jsonl")]
    for conv in convs:
        last = conv.turns[-1]
        assert list(schema.check_vector(last.labels)) == schema.names  # every attribute, in range, schema order
    if weighting == "none":
        # labels are what the APM measured (clip + round), not the targets
        for s in samples:
            assert s["labels"] == {n: min(4, max(0, round(s["apm"][n]))) for n in schema.names}
        assert all(c.weight is None for c in convs)
    else:
        by_prompt = defaultdict(float)
        for s in samples:
            if s["reply"]:
                assert s["score"] == pytest.approx(s["log_p_a"] + s["log_p_y"] - s["log_q"])
                by_prompt[s["prompt_index"]] += s["weight"]
        for p, total in by_prompt.items():
            n = sum(1 for s in samples if s["prompt_index"] == p and s["reply"])
            assert total == pytest.approx(n, rel=1e-6)  # softmax over the k samples, times k
        assert all(c.weight is not None for c in convs)
        assert [c.turns[-1].labels for c in convs] == [s["target"] for s in samples if s["reply"]]  # trained on targets
        assert (tmp_path / "boot" / "round2" / "adapter_model.safetensors").exists()
        meta = json.loads((tmp_path / "boot" / "round2" / "training.json").read_text())
        assert meta["config"]["init_adapter"] == str(r1)


def test_bootstrap_leaves_replies_cut_by_the_token_limit_out_of_round2(tiny_model_dir, train_data, apm_dir, tmp_path, one_thread):
    cfg = BootstrapConfig(model=str(tiny_model_dir), apm=str(apm_dir), prompts=[str(train_data / "npc.jsonl")], format="nemo",
                          out=str(tmp_path / "boot"), samples=3, max_new_tokens=6, train=False)
    summary = run_bootstrap(cfg)
    samples = [json.loads(l) for l in open(tmp_path / "boot" / "samples.jsonl")]
    complete = [s for s in samples if s["reply"] and s["finish"] != "length"]
    cut = [s for s in samples if s["reply"] and s["finish"] == "length"]
    assert cut, "a random model should run into a 6-token limit"
    assert summary["cut_replies_dropped"] == len(cut) and summary["round2_records"] == len(complete)
    round2 = list(read_conversations(tmp_path / "boot" / "round2.jsonl", "nemo"))
    assert [c.turns[-1].reply for c in round2] == [s["reply"] for s in complete]
    # (seeded, so deterministic:) this random model ends none of them, and training on nothing
    # is a clear error naming the fix, not a missing round2/ folder for the next step to trip on
    assert not complete
    with pytest.raises(ValueError, match="no complete replies.*--keep-cut"):
        run_bootstrap(BootstrapConfig(**{**cfg.__dict__, "train": True, "out": str(tmp_path / "boot2")}))


def test_unconditioned_prompt_drops_the_label_line(tiny_model_dir):
    from steernpc import models
    from steernpc.prompt import build_prompt

    tok = models.load_tokenizer(tiny_model_dir)
    schema = AttributeSchema.builtin("npc")
    v = {"humor": 1, "friendliness": 2, "creativity": 3, "verbosity": 4}
    chat = build_prompt("chat", "You are Tess.", [], "Hi", v, schema, tok)
    assert unconditioned_prompt(chat, "chat", schema, v) == tok.apply_chat_template(
        [{"role": "system", "content": "You are Tess."}, {"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    nemo = build_prompt("nemo", "You are Tess.", [], "Hi", v, schema)
    assert unconditioned_prompt(nemo, "nemo", schema, v) == "<extra_id_0>System\nYou are Tess.\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\n"


def test_guidance_amplifies_only_what_the_negative_prompt_changes(tiny_model_dir, one_thread):
    from steernpc_train.gen import generate, load_generator

    model, tok = load_generator(str(tiny_model_dir))
    prompts = [f"<|im_start|>user\n{line}<|im_end|>\n<|im_start|>assistant\n" for line in LINES]
    others = [f"<|im_start|>user\nSomething else entirely, {line}<|im_end|>\n<|im_start|>assistant\n" for line in LINES]
    plain = [r["text"] for r in generate(model, tok, prompts, "chat", max_new_tokens=12, batch_size=4)]
    # guided against itself, the difference is zero: greedy decoding is unchanged
    same = [r["text"] for r in generate(model, tok, prompts, "chat", max_new_tokens=12, batch_size=4,
                                        negatives=prompts, guidance=3.0)]
    assert same == plain
    # guided against another prompt, the amplified difference changes what is decoded
    guided = [r["text"] for r in generate(model, tok, prompts, "chat", max_new_tokens=12, batch_size=4,
                                          negatives=others, guidance=3.0)]
    assert guided != plain
