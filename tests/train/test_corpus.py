"""The NPC corpus (samples/corpus): its counts, its labels, its held-out split and its
variety, checked on every run so that an edit cannot quietly break what the sample model
is trained and evaluated on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from steernpc.persona import load_personas
from steernpc_train.data import read_conversations
from steernpc_train.data_stats import collect, words

CORPUS = Path(__file__).resolve().parents[2] / "samples" / "corpus"
ATTRS = ("humor", "friendliness", "creativity", "verbosity")


def _checker():
    spec = importlib.util.spec_from_file_location("corpus_check", CORPUS / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (CORPUS / "lines" / name).read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def train():
    return [c for f in sorted((CORPUS / "dialogue").glob("*.jsonl")) for c in read_conversations(f, "npc")]


@pytest.fixture(scope="module")
def heldout_replies():
    return [c for f in sorted((CORPUS / "eval").glob("*.jsonl")) for c in read_conversations(f, "npc")]


def test_counts(train, heldout_replies):
    stats = collect(train)
    train_personas = list((CORPUS / "personas" / "train").glob("*.yaml"))
    heldout_personas = list((CORPUS / "personas" / "heldout").glob("*.yaml"))
    assert len(train_personas) >= 40 and len(heldout_personas) >= 8
    assert len(set(_lines("train.txt"))) >= 200 and len(set(_lines("heldout.txt"))) >= 50
    assert stats.replies >= 4000, stats.replies
    assert stats.conversations >= 0.10 * stats.records, (stats.conversations, stats.records)
    assert all(3 <= len(c.turns) <= 6 for c in train if len(c.turns) > 1)
    assert len(heldout_replies) >= 8 * 10 * 5  # every held-out persona: 10 lines x 5 vectors
    # every level of every attribute is well covered: at least half of an even share
    for name in ATTRS:
        assert all(stats.levels[name][v] >= 400 for v in range(5)), (name, dict(stats.levels[name]))


def test_every_reply_is_labelled_in_range_and_in_its_word_band(train, heldout_replies):
    check = _checker()
    for conv in train + heldout_replies:
        for turn in conv.turns:
            assert set(turn.labels) == set(ATTRS), conv.source
            assert all(0 <= v <= 4 for v in turn.labels.values()), conv.source
            assert turn.emotion in check.EMOTIONS, conv.source
            lo, hi = check.WORDS[turn.labels["verbosity"]]
            assert lo - check.SLACK <= len(words(turn.reply)) <= hi + check.SLACK, conv.source


def test_design_and_rubric_checks_pass():
    """samples/corpus/check.py: labels equal the design's vectors, ids, actions, duplicates."""
    check = _checker()
    problems: list[str] = []
    for task in sorted((CORPUS / "tasks").glob("*.json")):
        check.check_group(task.stem, problems)
    assert not problems, "\n".join(problems[:20])


def test_no_duplicate_replies_and_varied_wording(train, heldout_replies):
    stats = collect(train + heldout_replies)
    assert stats.duplicates == 0
    assert stats.distinct_bigram_ratio > 0.4, stats.distinct_bigram_ratio


def test_heldout_personas_and_lines_never_in_training_data(train):
    heldout_ids = {p.stem for p in (CORPUS / "personas" / "heldout").glob("*.yaml")}
    train_ids = {p.stem for p in (CORPUS / "personas" / "train").glob("*.yaml")}
    assert not heldout_ids & train_ids
    heldout_lines = {line.lower() for line in _lines("heldout.txt")}
    assert not heldout_lines & {line.lower() for line in _lines("train.txt")}
    for conv in train:
        assert conv.character in train_ids, conv.source
        for turn in conv.turns:
            assert turn.user.lower() not in heldout_lines, (conv.source, turn.user)


def test_personas_load_with_the_runtime_loader():
    for split in ("train", "heldout"):
        personas, problems = load_personas([CORPUS / "personas" / split])
        assert not problems, [str(p) for p in problems]
        assert len(personas) >= 8


def test_design_is_reproducible(tmp_path):
    """design.py decides the vectors from a fixed seed: the tasks on disk are its output."""
    spec = importlib.util.spec_from_file_location("corpus_design", CORPUS / "design.py")
    design = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(design)
    design.HERE = tmp_path
    (tmp_path / "lines").mkdir()
    for name in ("train.txt", "heldout.txt"):
        (tmp_path / "lines" / name).write_text((CORPUS / "lines" / name).read_text())
    design.main()
    for task in (CORPUS / "tasks").glob("*.json"):
        assert json.loads((tmp_path / "tasks" / task.name).read_text()) == json.loads(task.read_text()), task.name


def test_converts_to_nemo_with_each_personas_card(tmp_path):
    from steernpc_train.data import convert
    from steernpc_train.sft import load_personas_dict, persona_system

    personas = load_personas_dict([str(CORPUS / "personas" / "train")])
    cards = {pid: persona_system(p) for pid, p in personas.items()}
    convert(CORPUS / "dialogue" / "fort.jsonl", tmp_path / "fort.jsonl", "npc", "nemo", cards=cards)
    source = [json.loads(line) for line in (CORPUS / "dialogue" / "fort.jsonl").read_text().splitlines()]
    out = [json.loads(line) for line in (tmp_path / "fort.jsonl").read_text().splitlines()]
    assert len(out) == len(source)
    for src, rec in zip(source, out):
        assert rec["system"] == cards[src["character"]]
        replies = [c for c in rec["conversations"] if c["from"] == "Assistant"]
        assert [r["value"] for r in replies] == [t["reply"] for t in src["turns"]]
        assert replies[0]["label"].startswith("humor:")
