"""Step 1 (APM) and step 2 (annotate)."""

from __future__ import annotations

import json

import pytest
import torch

from steernpc.attributes import AttributeSchema

from steernpc_train import apm as A
from steernpc_train.annotate import annotate
from steernpc_train.apm import clip_round


def test_masked_mse_ignores_missing_labels():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[2.0, -100.0, 1.0], [-100.0, -100.0, 4.0]])
    loss = A.masked_mse(pred, labels)
    assert loss.item() == pytest.approx((1.0 + 4.0 + 16.0) / 3)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 0] == 0 and pred.grad[1, 1] == 0
    assert pred.grad[0, 0] != 0
    # all missing: zero loss, no NaN
    assert A.masked_mse(pred, torch.full_like(labels, -100.0)).item() == 0.0


def test_clip_then_round_like_nemo():
    # NeMo: round(min(4, max(0, r))) with Python's round: halves go to the even integer
    assert clip_round(2.5, 0, 4) == 2
    assert clip_round(3.5, 0, 4) == 4
    assert clip_round(1.5, 0, 4) == 2
    assert clip_round(2.51, 0, 4) == 3
    assert clip_round(-0.7, 0, 4) == 0
    assert clip_round(6.2, 0, 4) == 4
    assert clip_round(4.5, 0, 4) == 4  # clipped first, then rounded
    assert clip_round(-0.5, -2, 2) == 0 and clip_round(1.5, 1, 3) == 2


def test_train_save_load_predict(train_data, tiny_encoder_dir, tmp_path):
    cfg = A.APMConfig(schema="nemo", backbone=str(tiny_encoder_dir), epochs=2, batch_size=4, holdout=0.34, lr=1e-3)
    meta = A.train_apm(cfg, [train_data / "regression.jsonl", train_data / "nemo.jsonl"], tmp_path / "apm")
    assert meta["pooling"] == "mean"  # an encoder
    assert meta["trained_attributes"] == AttributeSchema.builtin("nemo").names
    assert set(meta["heldout_metrics"]) == set(AttributeSchema.builtin("nemo").names)
    model = A.load_apm(tmp_path / "apm")
    assert model.schema.names == AttributeSchema.builtin("nemo").names  # the folder carries its schema
    preds = model.predict(["<extra_id_0>System\nx\n<extra_id_1>User\nhi\n<extra_id_1>Assistant\nyo\n<extra_id_2>", "b"])
    assert len(preds) == 2 and list(preds[0]) == model.schema.names
    assert all(isinstance(v, float) for v in preds[0].values())


def test_decoder_backbone_uses_last_token(tiny_model_dir, train_data, tmp_path):
    cfg = A.APMConfig(schema="npc", backbone=str(tiny_model_dir), epochs=1, batch_size=4, holdout=0.0)
    meta = A.train_apm(cfg, [train_data / "npc.jsonl"], tmp_path / "apm")
    assert meta["pooling"] == "last"
    model = A.load_apm(tmp_path / "apm")
    # last-token pooling ignores padding: a text's prediction does not depend on its batch-mates
    alone = model.predict(["short text"])[0]
    batched = model.predict(["short text", "a much longer text that forces padding of the first one"])[0]
    assert alone == pytest.approx(batched, abs=1e-4)


class FakeAPM:
    """Predicts from reply length; counts calls; can fail after N calls (an interruption)."""

    def __init__(self, schema, fail_after=None):
        self.schema = schema
        self.trained = [n for n in schema.names if n != "creativity"]
        self.calls = 0
        self.fail_after = fail_after
        self.cuts = {}

    level = A.APM.level

    def predict_exchanges(self, items, batch_size=32):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return [{n: len(ex[-1].reply) / 10 + i * 0.5 for i, n in enumerate(self.schema.names)} for _, ex in items]


def _many(tmp_path, n=23):
    src = tmp_path / "in.jsonl"
    with open(src, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "turns": [{"user": f"u{i}", "reply": "x" * (i % 37)}, {"user": "again", "reply": "y" * i}]}) + "\n")
    return src


def test_annotate_resumes_without_duplicates(tmp_path):
    schema = AttributeSchema.builtin("npc")
    src = _many(tmp_path)
    whole = tmp_path / "whole.jsonl"
    annotate(src, whole, tmp_path / "apm", batch_size=4, apm=FakeAPM(schema), progress=False)
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        annotate(src, part, tmp_path / "apm", batch_size=4, apm=FakeAPM(schema, fail_after=3), progress=False)
    with open(part, "a") as fh:
        fh.write('{"system": "half a li')  # a torn write from the kill
    annotate(src, part, tmp_path / "apm", batch_size=4, apm=FakeAPM(schema), progress=False)
    assert part.read_bytes() == whole.read_bytes()
    rows = [json.loads(l) for l in open(whole)]
    assert len(rows) == 23
    label = rows[5]["conversations"][3]["label"]  # reply "yyyyy": 0.5, 1.0, (1.5), 2.0 -> clip+round
    assert label == "humor:0,friendliness:1,creativity:2,verbosity:2"  # creativity: untrained -> default 2
    # a completed file is not redone
    fake = FakeAPM(schema)
    annotate(src, whole, tmp_path / "apm", batch_size=4, apm=fake, progress=False)
    assert fake.calls == 0


def test_calibrated_annotation_makes_every_level_equally_common(tmp_path):
    from collections import Counter

    schema = AttributeSchema.builtin("npc")
    src = _many(tmp_path, n=30)  # 60 replies; FakeAPM's raw predictions crowd no particular level
    (tmp_path / "apm").mkdir()
    plain, calibrated = tmp_path / "plain.jsonl", tmp_path / "calibrated.jsonl"
    annotate(src, plain, tmp_path / "apm", apm=FakeAPM(schema), progress=False)
    assert not (tmp_path / "apm" / A.CALIBRATION_FILE).exists()
    annotate(src, calibrated, tmp_path / "apm", apm=FakeAPM(schema), progress=False, calibrate=True)

    def counts(path, name):
        return Counter(schema.decode(m["label"])[name] for row in map(json.loads, open(path))
                       for m in row["conversations"] if m["from"] == "Assistant")

    assert counts(plain, "verbosity") == {2: 22, 3: 18, 4: 20}  # clip + round: no 0 or 1 at all
    for name in ("humor", "friendliness", "verbosity"):
        assert sorted(counts(calibrated, name).values()) == [12] * 5, name
    assert counts(calibrated, "creativity") == {2: 60}  # untrained: still the schema default
    saved = json.loads((tmp_path / "apm" / A.CALIBRATION_FILE).read_text())
    assert saved["method"] == "quantile" and saved["predictions"] == 60
    assert set(saved["cuts"]) == {"humor", "friendliness", "verbosity"} and len(saved["cuts"]["humor"]) == 4


def test_apm_level_without_and_with_calibration():
    class Probe:
        schema = AttributeSchema.builtin("npc")
        cuts = {}
        level = A.APM.level

    probe = Probe()
    assert [probe.level("humor", v) for v in (-1.0, 1.5, 2.5, 3.49, 9.0)] == [0, 2, 2, 3, 4]  # clip + round
    probe.cuts = {"humor": [1.9, 2.0, 2.1, 2.2]}
    assert [probe.level("humor", v) for v in (1.0, 1.9, 1.95, 2.15, 2.2, 7.0)] == [0, 1, 1, 3, 4, 4]


def test_annotate_cli_with_real_apm(train_data, tiny_encoder_dir, tmp_path):
    from steernpc.cli import main

    A.train_apm(A.APMConfig(schema="npc", backbone=str(tiny_encoder_dir), epochs=1, holdout=0), [train_data / "npc.jsonl"], tmp_path / "apm")
    out = tmp_path / "labelled.jsonl"
    assert main(["annotate", str(train_data / "npc.jsonl"), str(out), "--apm", str(tmp_path / "apm"), "--batch-size", "2",
                 "--calibrate"]) == 0
    assert A.load_apm(tmp_path / "apm").cuts.keys() == set(A.load_apm(tmp_path / "apm").trained)  # saved and reloaded
    rows = [json.loads(l) for l in open(out)]
    assert len(rows) == 3
    schema = AttributeSchema.builtin("npc")
    for row in rows:
        for msg in row["conversations"]:
            if msg["from"] == "Assistant":
                vec = schema.decode(msg["label"])  # every attribute, in range
                assert list(vec) == schema.names


def test_eval_files_replace_the_random_split(train_data, tiny_encoder_dir, tmp_path):
    """--eval: the held-out metrics come from other files (other personas), all records train."""
    lines = (train_data / "npc.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    (tmp_path / "heldout.jsonl").write_text("\n".join(lines[-2:]) + "\n")
    cfg = A.APMConfig(schema="npc", backbone=str(tiny_encoder_dir), epochs=1, batch_size=4, holdout=0.5,
                      eval_data=(str(tmp_path / "heldout.jsonl"),))  # fmt: skip
    meta = A.train_apm(cfg, [tmp_path / "train.jsonl"], tmp_path / "apm")
    def labelled(rows):
        return sum(1 for line in rows for t in json.loads(line)["turns"] if t.get("labels") and t.get("reply"))

    held = labelled(lines[-2:])
    assert meta["heldout_examples"] == held and meta["heldout_from"] == [str(tmp_path / "heldout.jsonl")]
    assert held > 0 and meta["train_examples"] == labelled(lines[:-2])
    assert all(m["n"] == held and "mae_baseline" in m for m in meta["heldout_metrics"].values())
