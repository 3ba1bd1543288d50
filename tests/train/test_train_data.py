"""Dataset formats: exact round trips, converters on fixtures, bad-line handling."""

from __future__ import annotations

import json

import pytest

from steernpc.attributes import AttributeSchema
from steernpc.prompt import NEMO_SYSTEM

from steernpc_train import data as D


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


@pytest.mark.parametrize("fmt", ["nemo", "npc", "regression", "helpsteer"])
def test_round_trip_is_byte_exact(train_data, tmp_path, fmt):
    src = train_data / f"{fmt}.jsonl"
    out = tmp_path / f"{fmt}.jsonl"
    D.convert(src, out, fmt, fmt)
    assert out.read_bytes() == src.read_bytes()


def test_nemo_shape_exactly(train_data, tmp_path):
    out = tmp_path / "o.jsonl"
    D.convert(train_data / "npc.jsonl", out, "npc", "nemo")
    rec = read(out)[0]
    assert list(rec) == ["system", "mask", "type", "conversations"]
    assert rec["mask"] == "User" and rec["type"] == "VALUE_TO_TEXT"
    assert rec["system"] == NEMO_SYSTEM  # no system in the record: NeMo's default
    assert rec["conversations"][0] == {"from": "User", "value": "Halt! Who goes there?", "label": None}
    assert rec["conversations"][1] == {
        "from": "Assistant", "value": "State your business, stranger.",
        "label": "humor:0,friendliness:1,creativity:1,verbosity:1",
    }
    assert [list(m) for m in rec["conversations"]] == [["from", "value", "label"]] * 4


def test_npc_nemo_npc_keeps_turns_and_labels(train_data, tmp_path):
    D.convert(train_data / "npc.jsonl", tmp_path / "a.jsonl", "npc", "nemo")
    D.convert(tmp_path / "a.jsonl", tmp_path / "b.jsonl", "nemo", "npc")
    before, after = read(train_data / "npc.jsonl"), read(tmp_path / "b.jsonl")
    assert [r["turns"] for r in after] == [r["turns"] for r in before]


def test_regression_from_conversations(train_data, tmp_path):
    D.convert(train_data / "nemo.jsonl", tmp_path / "r.jsonl", "nemo", "regression", AttributeSchema.builtin("nemo"))
    rows = read(tmp_path / "r.jsonl")
    assert len(rows) == 4  # one per labelled reply, multi-turn included (NeMo does every turn)
    first = rows[0]
    assert first["text"] == (
        f"<extra_id_0>System\n{NEMO_SYSTEM}\n<extra_id_1>User\nWhere can I buy a sword?\n"
        "<extra_id_1>Assistant\nTry the smithy by the north gate.\n<extra_id_2>"
    )
    assert first["label"] == [4.0, 0.0, 0.0, 1.0, 4.0, 4.0, 4.0, 1.0, 1.0]
    assert '"label": [4.0, 0.0, 0.0, 1.0,' in (tmp_path / "r.jsonl").read_text()  # floats, as NeMo writes them
    # a partial label string: the rest are -100
    assert rows[3]["label"] == [-100.0, 0.0, 3.0, -100.0, -100.0, -100.0, -100.0, -100.0, -100.0]
    # the regression text parses back into the conversation
    system, turns = D.parse_nemo_context(rows[2]["text"])
    assert system == "You are Brann, the town guard." and [t.reply for t in turns][-1] == "Rumours of a dragon, and the ale."


def test_regression_reads_back_as_conversations(train_data):
    convs = list(D.read_conversations(train_data / "regression.jsonl", "regression", AttributeSchema.builtin("nemo")))
    assert convs[1].turns[1].labels == {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1}
    assert convs[1].turns[0].reply == "Hello there, traveller!" and convs[1].turns[0].labels is None


def test_helpsteer_rows(train_data):
    convs = list(D.read_conversations(train_data / "helpsteer.jsonl", "helpsteer"))
    assert convs[0].turns[0].labels == {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 1}
    # HelpSteer2's multi-turn prompt is split into turns (the NeMo text is unchanged)
    assert D.nemo_context(None, convs[1].exchanges()).split("<extra_id_1>User\n", 1)[1].startswith(
        "Hi there\n<extra_id_1>Assistant\nHello! How can I help?\n<extra_id_1>User\nRecommend a potion.\n")
    assert [(t.user, t.reply) for t in convs[1].turns] == [
        ("Hi there", "Hello! How can I help?"), ("Recommend a potion.", "A minor healing potion never hurts."),
    ]


def test_oasst_trees_paths_and_label_scaling(train_data):
    convs = list(D.read_conversations(train_data / "oasst_trees.jsonl", "oasst"))
    assert len(convs) == 2  # two root-to-leaf paths
    deep, short = convs
    assert [t.reply for t in deep.turns] == ["There once was a cat named Lou...", "Lou lost her last mouse..."]
    # round(v * 4), Python rounding: 0.875*4 = 3.5 -> 4, 0.625*4 = 2.5 -> 2, 0.375*4 = 1.5 -> 2
    assert deep.turns[0].labels == {"quality": 4, "toxicity": 0, "humor": 2, "creativity": 2}
    assert deep.turns[1].labels == {"quality": 2, "toxicity": 0, "humor": 0, "creativity": 2}
    assert short.turns[0].labels == {"quality": 1, "toxicity": 0, "humor": 0, "creativity": 0}


def test_chitchat_fixture(train_data):
    convs = list(D.read_conversations(train_data / "chitchat.json", "chitchat"))
    assert [c.id for c in convs] == ["c1", "c2"]  # c3 has no reply
    c1 = convs[0]
    assert c1.turns[0].user == "Hello How are you doing today?" and c1.turns[0].reply == "im doing good how are you?"
    # witty 7 -> 2.67 -> 3; upbeat 10 -> 4; interesting 5 -> 1.78 -> 2; 6 words -> verbosity 1
    assert c1.turns[0].labels == {"humor": 3, "friendliness": 4, "creativity": 2, "verbosity": 1}
    assert c1.turns[1].labels["verbosity"] == 0
    assert convs[1].turns[0].labels == {"verbosity": 1}  # unrated conversation


def test_chitchat_package_shape():
    """The installed dataset: 7,168 conversations, rated 1..10 on witty/upbeat/interesting."""
    data = json.load(open(D.chitchat_path("chitchat"), encoding="utf-8"))
    assert len(data) == 7168
    rated = [c["ratings"] for c in data.values() if "ratings" in c]
    assert set(rated[0]) == {"witty", "upbeat", "interesting"}
    assert all(1 <= v <= 10 for r in rated[:500] for v in r.values())


def test_scale_and_buckets():
    assert [D.scale_rating(v) for v in range(1, 11)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [D.verbosity_bucket("w " * n) for n in (1, 3, 4, 7, 8, 15, 16, 30, 31)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]


def test_bad_line_names_file_and_line(train_data, tmp_path):
    with pytest.raises(D.DataError) as err:
        D.convert(train_data / "nemo_bad.jsonl", tmp_path / "o.jsonl", "nemo", "nemo")
    assert str(err.value).startswith(f"{train_data / 'nemo_bad.jsonl'}:2: not valid JSON")


def test_bad_record_names_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"turns": [{"user": "hi", "reply": "yo"}]}\n{"turns": [{"user": 3}]}\n')
    with pytest.raises(D.DataError, match=r"bad.jsonl:2: turns\[0\]\.'user' must be a string"):
        list(D.read_conversations(src, "npc"))


def test_skip_bad_counts(train_data, tmp_path):
    stats = D.convert(train_data / "nemo_bad.jsonl", tmp_path / "o.jsonl", "nemo", "nemo", skip_bad=True)
    assert (stats.records, stats.skipped) == (2, 2)
    assert len(read(tmp_path / "o.jsonl")) == 2
    assert "nemo_bad.jsonl:3: conversations[0].from = 'Bot'" in stats.first_errors[1]


def test_sniff(train_data):
    for fmt in ("nemo", "npc", "regression", "helpsteer"):
        assert D.sniff_format(train_data / f"{fmt}.jsonl") == fmt
    assert D.sniff_format(train_data / "oasst_trees.jsonl") == "oasst"


def test_cli_convert(train_data, tmp_path, capsys):
    from steernpc.cli import main

    out = tmp_path / "c.jsonl"
    assert main(["data", "convert", "--from", "chitchat", "--to", "nemo", str(train_data / "chitchat.json"), str(out)]) == 0
    assert len(read(out)) == 2
    assert main(["data", "convert", "--to", "nemo", str(train_data / "nemo_bad.jsonl"), str(out)]) == 2
    assert "nemo_bad.jsonl:2:" in capsys.readouterr().err
    assert main(["data", "convert", "--to", "nemo", "--skip-bad", str(train_data / "nemo_bad.jsonl"), str(out)]) == 0
    assert "skipped 2 bad record(s)" in capsys.readouterr().err
