"""AttributeSchema (built-ins, codec, validation, loading) and the resolution order of an
attribute vector: defaults -> profile -> mood -> steer -> override -> limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from steernpc.attributes import AttributeSchema, InvalidAttribute, parse_pairs, resolve_attributes
from steernpc.persona import Persona, PersonaError, load_persona
from steernpc.yamlsource import SourceError

NEMO_ORDER = ["quality", "toxicity", "humor", "creativity", "helpfulness", "correctness", "coherence", "complexity", "verbosity"]
NPC_ORDER = ["humor", "friendliness", "creativity", "verbosity"]


@pytest.fixture(scope="module")
def npc() -> AttributeSchema:
    return AttributeSchema.builtin("npc")


@pytest.fixture(scope="module")
def nemo() -> AttributeSchema:
    return AttributeSchema.builtin("nemo")


# -- built-in schemas --------------------------------------------------------------------

def test_nemo_order_is_exactly_the_steerlm_label_order(nemo):
    assert nemo.name == "nemo"
    assert nemo.names == NEMO_ORDER
    assert all((s.min, s.max) == (0, 4) for s in nemo.specs)


def test_npc_schema(npc):
    assert npc.name == "npc"
    assert npc.names == NPC_ORDER
    assert npc.defaults() == {"humor": 1, "friendliness": 2, "creativity": 2, "verbosity": 2}
    assert len(npc) == 4 and "humor" in npc and "humour" not in npc
    # the sample model has no toxicity labels, so the npc schema has no toxicity (nemo keeps it)
    assert "toxicity" not in npc
    assert npc["verbosity"].range_text == "0..4"


def test_load_accepts_builtin_names(npc):
    assert AttributeSchema.load("npc").names == npc.names
    assert AttributeSchema.load("nemo").names == NEMO_ORDER


def test_unknown_builtin_and_missing_file():
    with pytest.raises(ValueError, match="unknown built-in schema 'steerlm'"):
        AttributeSchema.builtin("steerlm")
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        AttributeSchema.load("no/such/schema.yaml")


# -- label codec ---------------------------------------------------------------------------

def test_encode_uses_schema_order(nemo):
    vector = dict(reversed(list(nemo.defaults().items())))  # insertion order must not matter
    assert nemo.encode(vector) == (
        "quality:4,toxicity:0,humor:0,creativity:0,helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2"
    )


def test_encode_decode_round_trip(nemo, npc):
    for schema in (nemo, npc):
        for value in range(5):
            vector = {name: (value + i) % 5 for i, name in enumerate(schema.names)}
            assert schema.decode(schema.encode(vector)) == vector


def test_encode_needs_every_attribute(npc):
    with pytest.raises(InvalidAttribute, match="missing creativity, verbosity"):
        npc.encode({"humor": 1, "friendliness": 2})


def test_decode_accepts_subsets_any_order_and_equals_signs(npc):
    assert npc.decode("verbosity:1, humor=4") == {"verbosity": 1, "humor": 4}
    assert npc.decode("") == {}


def test_decode_unknown_name_names_the_field(npc):
    with pytest.raises(InvalidAttribute) as info:
        npc.decode("humor:1,charm:3")
    exc = info.value
    assert exc.field == "labels.charm"
    assert exc.attribute == "charm"
    assert str(exc).startswith("labels.charm: unknown attribute 'charm'; schema 'npc' has humor, friendliness")


def test_decode_out_of_range_names_field_and_range(npc):
    with pytest.raises(InvalidAttribute) as info:
        npc.decode("humor:7", field="--attr")
    exc = info.value
    assert str(exc) == "--attr.humor = 7 is outside 0..4"
    assert (exc.field, exc.attribute, exc.allowed) == ("--attr.humor", "humor", "0..4")
    with pytest.raises(InvalidAttribute, match=r"labels\.verbosity = -1 is outside 0\.\.4"):
        npc.decode("verbosity:-1")


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("humor:lots", "labels.humor = 'lots' is not an integer"),
        ("humor", "'humor' is not name:value"),
        ("humor:", "is not name:value"),
    ],
)
def test_decode_malformed(npc, text, fragment):
    with pytest.raises(InvalidAttribute) as info:
        npc.decode(text)
    assert fragment in str(info.value)


def test_parse_pairs_leaves_names_unchecked():
    assert parse_pairs("anything:3, other = 0") == {"anything": 3, "other": 0}


def test_check_values(npc):
    assert npc.check("humor", 3) == 3
    assert npc.check("humor", 3.0) == 3 and isinstance(npc.check("humor", 3.0), int)
    with pytest.raises(InvalidAttribute, match=r"humor = True is not an integer; allowed 0\.\.4"):
        npc.check("humor", True)
    with pytest.raises(InvalidAttribute, match=r"x\.humor = 2\.5 is not an integer"):
        npc.check("humor", 2.5, "x.humor")
    assert npc.check_vector({"humor": 4, "verbosity": 0}) == {"humor": 4, "verbosity": 0}
    assert npc.clamp("humor", 9) == 4 and npc.clamp("humor", -2) == 0


# -- custom schemas ------------------------------------------------------------------------

CUSTOM = """\
# a schema for a horror game
name: horror
attributes:
  - {name: dread, min: 0, max: 9, default: 3, description: "how scary"}
  - name: sanity
    min: 1
    max: 5
    default: 5
"""


def test_custom_schema_loads(tmp_path):
    path = tmp_path / "horror.yaml"
    path.write_text(CUSTOM)
    schema = AttributeSchema.load(path)
    assert schema.name == "horror"
    assert schema.names == ["dread", "sanity"]
    assert schema.defaults() == {"dread": 3, "sanity": 5}
    assert schema["dread"].description == "how scary"
    assert schema.decode(schema.encode({"dread": 9, "sanity": 1})) == {"dread": 9, "sanity": 1}
    with pytest.raises(InvalidAttribute, match=r"labels\.sanity = 0 is outside 1\.\.5"):
        schema.decode("sanity:0")
    # relative to a folder (how a persona refers to it)
    assert AttributeSchema.load("horror.yaml", relative_to=tmp_path).names == ["dread", "sanity"]


def test_persona_on_a_custom_schema(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "horror.yaml").write_text(CUSTOM)
    persona_file = tmp_path / "ghost.yaml"
    persona_file.write_text(
        "id: ghost\nname: The Grey Lady\nrole: a ghost\nschema: schemas/horror.yaml\n"
        "attributes: {dread: 8}\nmoods:\n  calm: {dread: 1}\n  wailing: {dread: 9, sanity: 2}\n"
    )
    ghost = load_persona(persona_file)
    assert ghost.schema.name == "horror"
    assert ghost.resolve() == {"dread": 8, "sanity": 5}
    assert ghost.resolve(mood="wailing") == {"dread": 9, "sanity": 2}
    # npc attributes are unknown on this schema, at the right line
    persona_file.write_text(
        "id: ghost\nname: The Grey Lady\nrole: a ghost\nschema: schemas/horror.yaml\nattributes:\n  dread: 8\n  humor: 1\n"
    )
    with pytest.raises(PersonaError) as info:
        load_persona(persona_file)
    assert str(info.value) == (
        f"{persona_file}:7: attributes.humor: unknown attribute 'humor'; schema 'horror' has dread, sanity"
    )


def test_persona_on_a_broken_schema_points_at_both_files(tmp_path):
    (tmp_path / "bad_schema.yaml").write_text("name: bad\nattributes:\n  - {name: a, min: 3, max: 1, default: 2}\n")
    persona_file = tmp_path / "p.yaml"
    persona_file.write_text("id: p\nname: P\nrole: r\nschema: bad_schema.yaml\nattributes: {a: 1}\n")
    with pytest.raises(PersonaError) as info:
        load_persona(persona_file)
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(persona_file), 4)
    assert f"{tmp_path / 'bad_schema.yaml'}:3: attributes.a: min 3 > max 1" in problem.message


BROKEN_SCHEMAS = [
    # (text, line, substring of the message)
    ("name: s\nattributes:\n  - {name: a, min: 0, max: 4, default: 9}\n", 3, "attributes.a.default = 9 is outside 0..4"),
    ("name: s\nattributes:\n  - name: a\n    min: 4\n    max: 1\n    default: 2\n", 4, "attributes.a: min 4 > max 1"),
    ("name: s\nattributes:\n  - name: a\n    min: 0\n    max: four\n    default: 2\n", 5, "attributes.a.max must be an integer"),
    (
        "name: s\nattributes:\n  - {name: a, min: 0, max: 4, default: 1}\n  - {name: a, min: 0, max: 4, default: 1}\n",
        4,
        "attribute 'a' is defined twice",
    ),
    ("name: s\nattributes:\n  - {name: a, min: 0, max: 4, default: 1, colour: red}\n", 3, "unknown field 'colour'"),
    (
        "name: s\nattributes:\n  - {name: not an identifier, min: 0, max: 4, default: 1}\n",
        3,
        "attributes[0].name must be an identifier",
    ),
    ("name: s\nattributes:\n  - just a string\n", 3, "attributes[0] must be a mapping"),
    ("name: s\nattributes: []\n", 2, "attributes must be a non-empty list"),
    ("# no name\nattributes:\n  - {name: a, min: 0, max: 4, default: 1}\n", 2, "name is required"),
    ("name: s\nversion: 2\nattributes:\n  - {name: a, min: 0, max: 4, default: 1}\n", 2, "unknown field 'version'"),
    ("name: s\nattributes:\n  - {name: a, min: 0, max: 4, default: 1\n", 3, "the '{' opened here is not closed"),
    ("name: s\nattributes:\n\t- {name: a, min: 0, max: 4, default: 1}\n", 3, "indent with spaces, not tabs"),
    ("- name: s\n", 1, "a schema file must be a mapping"),
    (
        "name: s\nattributes:\n  - name: a\n    min: 0\n    max: 2\n    default: 1\n    levels: [low, high]\n",
        7,
        "attributes.a.levels has 2 words; its range has 3 levels",
    ),
    (
        "name: s\nattributes:\n  - name: a\n    min: 0\n    max: 1\n    default: 1\n    levels: [low, low]\n",
        7,
        "attributes.a.levels names a word twice",
    ),
    (
        "name: s\nattributes:\n  - name: a\n    min: 0\n    max: 1\n    default: 1\n    levels: [Low, 2]\n",
        7,
        "attributes.a.levels must be a list of lowercase words",
    ),
]


@pytest.mark.parametrize("text,line,fragment", BROKEN_SCHEMAS)
def test_broken_schema_reports_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as info:
        AttributeSchema.load(path)
    problems = info.value.problems
    assert [(p.file, p.line) for p in problems] == [(str(path), line)], [str(p) for p in problems]
    assert fragment in problems[0].message
    assert str(problems[0]).startswith(f"{path}:{line}: ")


# -- level words (the verbal format's label line) -----------------------------------------------

def test_npc_levels_follow_the_rubric(npc):
    assert npc.has_levels and not AttributeSchema.builtin("nemo").has_levels
    assert npc["friendliness"].levels == ("hostile", "cold", "neutral", "friendly", "warm")
    vector = {"humor": 4, "friendliness": 0, "creativity": 1, "verbosity": 3}
    assert npc.encode(vector, words=True) == "humor:hilarious,friendliness:hostile,creativity:plain,verbosity:long"
    assert npc.encode(vector) == "humor:4,friendliness:0,creativity:1,verbosity:3"


def test_level_words_decode_back_and_mix_with_digits(npc):
    vector = {"humor": 2, "friendliness": 3, "creativity": 0, "verbosity": 4}
    assert npc.decode(npc.encode(vector, words=True)) == vector
    assert npc.decode("humor:wry,verbosity:1") == {"humor": 2, "verbosity": 1}
    with pytest.raises(InvalidAttribute, match=r"labels.humor = 'grim' is not an integer"):
        npc.decode("humor:grim")


def test_levels_survive_the_schema_round_trip(npc):
    again = AttributeSchema.from_dict(npc.to_dict(), "<test>")
    assert [s.levels for s in again.specs] == [s.levels for s in npc.specs]


def test_words_need_levels_on_every_attribute():
    with pytest.raises(ValueError, match="schema 'nemo' names no levels for quality, toxicity"):
        AttributeSchema.builtin("nemo").encode(AttributeSchema.builtin("nemo").defaults(), words=True)


# -- resolution order ------------------------------------------------------------------------

def test_resolve_defaults_only(npc):
    assert resolve_attributes(npc) == npc.defaults()


def test_resolve_layers_later_wins(npc):
    profile = {"humor": 0, "friendliness": 1, "creativity": 1, "verbosity": 0}
    mood = {"friendliness": 3, "verbosity": 1}
    steer = {"verbosity": 2, "humor": 2}
    override = {"humor": 4}
    assert resolve_attributes(npc, profile) == profile
    assert resolve_attributes(npc, profile, mood) == {**profile, "friendliness": 3, "verbosity": 1}
    assert resolve_attributes(npc, profile, mood, steer) == {**profile, "friendliness": 3, "verbosity": 2, "humor": 2}
    assert resolve_attributes(npc, profile, mood, steer, override) == {
        **profile, "friendliness": 3, "verbosity": 2, "humor": 4,
    }  # fmt: skip


def test_partial_profile_falls_back_to_defaults(npc):
    assert resolve_attributes(npc, {"humor": 4}) == {**npc.defaults(), "humor": 4}


def test_limits_clamp_last_even_over_an_explicit_override(npc):
    limits = {"friendliness": (2, 2), "verbosity": (2, 3)}
    vector = resolve_attributes(npc, {"friendliness": 0, "verbosity": 0}, {"friendliness": 4}, {"verbosity": 4}, {"friendliness": 4}, limits)
    assert vector["friendliness"] == 2
    assert vector["verbosity"] == 3
    assert resolve_attributes(npc, {"verbosity": 0}, limits=limits)["verbosity"] == 2  # min raises too
    assert resolve_attributes(npc, {"friendliness": 4}, limits=limits)["friendliness"] == 2


def test_resolve_does_not_mutate_its_inputs(npc):
    profile, override = {"humor": 1}, {"humor": 4}
    resolve_attributes(npc, profile, override=override, limits={"humor": (0, 2)})
    assert profile == {"humor": 1} and override == {"humor": 4}


@pytest.mark.parametrize("layer", ["mood", "steer", "override"])
def test_resolve_rejects_bad_values_in_each_layer(npc, layer):
    with pytest.raises(InvalidAttribute) as info:
        resolve_attributes(npc, **{layer: {"humor": 5}})
    assert str(info.value) == f"{layer}.humor = 5 is outside 0..4"
    assert info.value.field == f"{layer}.humor" and info.value.allowed == "0..4"
    with pytest.raises(InvalidAttribute, match=rf"^{layer}\.charm: unknown attribute 'charm'"):
        resolve_attributes(npc, **{layer: {"charm": 1}})


# -- Persona.resolve ---------------------------------------------------------------------------

@pytest.fixture
def brom(npc) -> Persona:
    return Persona(
        id="brom",
        name="Brom",
        role="a blacksmith",
        schema=npc,
        attributes={"humor": 0, "friendliness": 1, "creativity": 1, "verbosity": 1},
        moods={"angry": {"friendliness": 0, "verbosity": 3}, "drunk": {"humor": 3, "verbosity": 3}},
        limits={"verbosity": (0, 2)},
    )


def test_persona_resolve_order(brom):
    assert brom.resolve() == {"humor": 0, "friendliness": 1, "creativity": 1, "verbosity": 1}
    assert brom.resolve(mood="drunk") == {"humor": 3, "friendliness": 1, "creativity": 1, "verbosity": 2}  # limited
    # steer beats mood, override beats steer
    assert brom.resolve(mood="drunk", steer={"humor": 1})["humor"] == 1
    assert brom.resolve(mood="drunk", steer={"humor": 1}, override={"humor": 4})["humor"] == 4
    # limits last: the angry mood asks for 3, an override for 4, the limit says 2
    assert brom.resolve(mood="angry")["verbosity"] == 2
    assert brom.resolve(mood="angry", override={"verbosity": 4})["verbosity"] == 2
    assert brom.resolve(mood=None) == brom.resolve(mood="")


def test_persona_unknown_mood(brom):
    with pytest.raises(InvalidAttribute) as info:
        brom.resolve(mood="happy")
    assert info.value.field == "mood"
    assert str(info.value) == "mood 'happy' is not defined for brom; moods: angry, drunk"


def test_persona_out_of_range_override_names_the_range(brom):
    with pytest.raises(InvalidAttribute) as info:
        brom.resolve(override={"verbosity": 12})
    assert str(info.value) == "override.verbosity = 12 is outside 0..4"
    assert info.value.allowed == "0..4"
    with pytest.raises(InvalidAttribute, match=r"steer\.humor = -1 is outside 0\.\.4"):
        brom.resolve(steer={"humor": -1})


def test_loaded_limits_are_integers(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("id: p\nname: P\nrole: r\nattributes: {verbosity: 3}\nlimits:\n  verbosity: {max: 1.0}\n")
    persona = load_persona(path)
    assert persona.limits == {"verbosity": (0, 1)}
    assert all(type(v) is int for v in persona.resolve().values())


def test_sample_persona_resolves(npc):
    brom = load_persona(Path(__file__).resolve().parents[1] / "samples" / "personas" / "brom.yaml")
    assert brom.schema.names == npc.names
    assert brom.resolve(mood="angry", override={"humor": 4}) == {**brom.attributes, **brom.moods["angry"], "humor": 4}
