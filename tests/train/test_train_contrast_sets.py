"""Shared-prefix contrast-set examples and the label-contrast term (contrast_sets.py)."""

from __future__ import annotations

import json

import pytest
import torch

from steernpc import models
from steernpc.attributes import AttributeSchema

from steernpc_train import sft as S
from steernpc_train.contrast_sets import build_set_examples, moved_vector
from steernpc_train.data import Conversation, Turn

SCHEMA = AttributeSchema.builtin("npc")
SYSTEM = "You are Brann, the town guard of Emberfall."
LINE = "Why is the bridge closed?"
REPLIES = [
    ("Orders.", {"humor": 0, "friendliness": 1, "creativity": 0, "verbosity": 0}),
    ("The flood cracked a pillar; the captain closed it until the masons come.", {"humor": 1, "friendliness": 2, "creativity": 1, "verbosity": 2}),
    ("Trolls ate the middle bit, friend! Go round by the ford, it's lovely this time of year.", {"humor": 4, "friendliness": 4, "creativity": 3, "verbosity": 3}),
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return models.load_tokenizer(tiny_model_dir)


def contrast_set(line=LINE):
    return [Conversation([Turn(line, reply, dict(labels))], system=SYSTEM) for reply, labels in REPLIES]


def standalone(builder, conv):
    return builder.build(conv)[0]


def test_moved_vector_moves_one_attribute_two_levels_or_more():
    import random

    rng = random.Random(0)
    for level in range(5):
        labels = {"humor": level, "friendliness": 2, "creativity": 2, "verbosity": 2}
        moved = moved_vector(labels, "humor", 0, 4, rng)
        assert abs(moved["humor"] - level) >= 2 and {k: v for k, v in moved.items() if k != "humor"} == {k: v for k, v in labels.items() if k != "humor"}


def test_a_shared_prefix_segment_sees_exactly_what_its_own_sequence_sees(tiny_model_dir, tok):
    """Every reply in a shared-prefix example gets the same tokens, targets and logits as in
    its own ordinary example: the prefix is shared, nothing else is."""
    model, _ = models.load_model(tiny_model_dir, device="cpu", dtype="float32")
    builder = S.ExampleBuilder("nemo", SCHEMA, tok, max_length=1024)
    sets, rest = build_set_examples(builder, contrast_set(), contrast=False)
    assert len(sets) == 1 and not rest
    shared = sets[0]
    batch = S.collate([[shared]], tok.pad_token_id)
    with torch.no_grad():
        logits = model(**S.forward_kwargs(batch)).logits[0]
    prefix = shared.segments.count(0)
    for k, conv in enumerate(contrast_set(), start=1):
        own = standalone(builder, conv)
        at = [i for i, s in enumerate(shared.segments) if s == k]
        assert shared.input_ids[:prefix] + [shared.input_ids[i] for i in at] == own.input_ids
        assert [shared.labels[i] for i in at] == own.labels[prefix:]
        alone = S.collate([[own]], tok.pad_token_id)
        with torch.no_grad():
            want = model(**S.forward_kwargs(alone)).logits[0]
        assert torch.allclose(logits[at], want[prefix:], atol=1e-5)
        # and the targets line up: each segment's last token predicts nothing across segments
        assert batch["targets"][0][at[-1]] == S.IGNORE
    assert shared.n_trained == sum(standalone(builder, c).n_trained for c in contrast_set())
    # the check has teeth: without the segment mask the later replies would see earlier ones
    with torch.no_grad():
        unmasked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    last = [i for i, s in enumerate(shared.segments) if s == 3]
    assert not torch.allclose(unmasked[last], logits[last], atol=1e-3)


def test_contrast_segments_repeat_the_reply_under_moved_labels_without_sft_loss(tok):
    builder = S.ExampleBuilder("nemo", SCHEMA, tok, max_length=1024)
    sets, _ = build_set_examples(builder, contrast_set(), contrast=True)
    ex = sets[0]
    plain, _ = build_set_examples(builder, contrast_set(), contrast=False)
    assert ex.n_trained == plain[0].n_trained  # contrast tokens never count as SFT targets
    for pair in range(len(REPLIES)):
        own = [t for t, p, s in zip(ex.input_ids, ex.pair, ex.side) if p == pair and s == 1]
        other = [t for t, p, s in zip(ex.input_ids, ex.pair, ex.side) if p == pair and s == -1]
        assert own == other and own  # the same reply tokens
    # the label lines differ: one attribute moved
    lines = [tok.decode([t for t, s in zip(ex.input_ids, ex.segments) if s == k]).split("\n")[0] for k in (1, 2)]
    assert lines[0] != lines[1] and lines[0].startswith("<extra_id_2>humor:")
    batch = S.collate([[ex]], tok.pad_token_id)
    assert float(batch["weights"][0][batch["side"][0] < 0].abs().sum()) == 0.0
    assert set(batch["pair"][0][batch["side"][0] != 0].tolist()) == set(range(len(REPLIES)))


def test_contrast_term_rewards_a_reply_likelier_under_its_own_labels():
    pair = torch.tensor([0, 0, 0, 0, 1, 1])
    side = torch.tensor([1, 1, -1, -1, 1, -1])
    learned = torch.tensor([0.5, 0.5, 3.0, 3.0, 1.0, 1.0])  # pair 0: own labels make y much likelier
    term = S.contrast_term(learned, pair, side, beta=0.5)
    expected = 2 * torch.nn.functional.softplus(torch.tensor(-0.5 * 5.0)) + torch.nn.functional.softplus(torch.tensor(0.0))
    assert torch.allclose(term, expected)
    ignored = S.contrast_term(learned, torch.full_like(pair, -1), side, beta=0.5)
    assert float(ignored) == 0.0


def test_sft_cli_trains_with_shared_prefix_and_contrast(tiny_model_dir, tmp_path, cli):
    data = tmp_path / "sets.jsonl"
    rows = [{"id": f"s{i}", "character": None, "system": SYSTEM, "turns": [{"user": line, "reply": reply, "labels": labels}]}
            for i, line in enumerate([LINE, "Any work for me?"]) for reply, labels in REPLIES]
    rows.append({"system": SYSTEM, "turns": [{"user": "Hi", "reply": "Hm.", "labels": REPLIES[0][1]},
                                             {"user": "Bye", "reply": "Go.", "labels": REPLIES[0][1]},
                                             {"user": "Wait", "reply": "What now?", "labels": REPLIES[0][1]}]})
    data.write_text("\n".join(json.dumps({k: v for k, v in r.items() if v is not None}) for r in rows) + "\n")
    out = tmp_path / "run"
    result = cli("train", "sft", "--base", tiny_model_dir, "--data", data, "--format", "nemo", "--schema", "npc",
                 "--out", out, "--max-length", "512", "--micro-batch", "2", "--max-steps", "3", "--lora", "4",
                 "--contrast-weight", "1.0", "--log-every", "1")  # fmt: skip
    assert "2 shared-prefix example(s) from contrast sets with label-contrast segments" in result.stderr
    meta = json.loads((out / "training.json").read_text())
    assert meta["complete"] and meta["config"]["contrast_weight"] == 1.0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(r["loss"] == r["loss"] for r in log)  # no NaN
