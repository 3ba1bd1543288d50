"""steernpc.model_card: the one reader and writer of what a model folder says it is (its
steernpc.json card, its training metadata and schema.yaml)."""

from __future__ import annotations

import json

import pytest

from steernpc.attributes import AttributeSchema
from steernpc.model_card import (
    CARD_FILE,
    SCHEMA_FILE,
    TRAIN_META_FILE,
    ModelCardError,
    make_card,
    read_card,
    read_model_card,
    read_train_meta,
    trained_with,
    write_model_card,
    write_schema,
    write_train_meta,
)


def test_read_model_card_errors_name_the_field(tmp_path):
    assert read_model_card(tmp_path) is None
    (tmp_path / CARD_FILE).write_text(json.dumps({"format": "yaml", "schema": {}}))
    with pytest.raises(ModelCardError, match="format"):
        read_model_card(tmp_path)
    (tmp_path / CARD_FILE).write_text(json.dumps({"format": "chat", "stop": [""], "schema": {"name": "x", "attributes": []}}))
    with pytest.raises(ModelCardError, match="stop"):
        read_model_card(tmp_path)
    bad_schema = {"name": "x", "attributes": [{"name": "humor", "min": 0, "max": 4, "default": 9}]}
    (tmp_path / CARD_FILE).write_text(json.dumps({"format": "nemo", "schema": bad_schema}))
    with pytest.raises(ModelCardError, match="humor.default"):
        read_model_card(tmp_path)
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelCardError, match="JSON"):
        read_model_card(tmp_path)


def test_schema_round_trips_through_dict_and_yaml(tmp_path):
    schema = AttributeSchema.builtin("npc")
    assert AttributeSchema.from_dict(schema.to_dict(), "x").specs == schema.specs
    assert AttributeSchema.load(write_schema(tmp_path, schema)).specs == schema.specs
    assert (tmp_path / SCHEMA_FILE).read_text().startswith("name: npc\nattributes:\n")


def test_card_round_trips(tmp_path):
    schema = AttributeSchema.builtin("nemo")
    write_model_card(tmp_path, make_card("hf", "nemo", ["<extra_id_1>"], schema, [2, 2, 0], base_model="b", name="n"))
    card = read_model_card(tmp_path)
    assert card["format"] == "nemo" and card["stop"] == ["<extra_id_1>"] and card["eos_token_ids"] == [0, 2]
    assert card["schema"] == schema.to_dict() and card["schema_obj"].specs == schema.specs and card["name"] == "n"


def test_read_card_prefers_the_card_and_tolerates_bad_training_metadata(tmp_path):
    assert read_card(None) == {} and read_card(tmp_path) == {}
    (tmp_path / TRAIN_META_FILE).write_text("{not json")
    assert read_card(tmp_path) == {}
    with pytest.raises(json.JSONDecodeError):
        read_train_meta(tmp_path)  # training reads its own metadata strictly
    write_train_meta(tmp_path, {"format": "nemo"})
    assert read_card(tmp_path) == {"format": "nemo"} == read_train_meta(tmp_path)
    write_model_card(tmp_path, make_card("hf", "chat", [], AttributeSchema.builtin("npc")))
    assert read_card(tmp_path / "weights.bin")["format"] == "chat"  # a file inside works too


def test_trained_with(tmp_path):
    assert trained_with(tmp_path) == (None, None)
    write_train_meta(tmp_path, {"format": "nemo", "schema": "nemo"})
    fmt, schema = trained_with(tmp_path)
    assert fmt == "nemo" and schema.name == "nemo"  # the schema the metadata names
    write_schema(tmp_path, AttributeSchema.builtin("npc"))
    assert trained_with(tmp_path)[1].name == "npc"  # schema.yaml comes before the metadata's name
    write_model_card(tmp_path, make_card("hf", "chat", [], AttributeSchema("card", AttributeSchema.builtin("npc").specs)))
    fmt, schema = trained_with(tmp_path)
    assert fmt == "nemo" and schema.name == "card"  # format: metadata first; schema: the card first
