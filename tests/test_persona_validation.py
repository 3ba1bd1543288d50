"""Persona loading and `steernpc validate`: every broken file is reported as FILE:LINE with
the line a designer has to fix, and the sample personas all load."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steernpc.persona import PersonaError, load_persona, load_personas, persona_files

REPO = Path(__file__).resolve().parents[1]
BROKEN = Path("tests/data/broken_personas")  # relative to REPO, as a designer would type it
DUPLICATES = Path("tests/data/duplicate_ids")
SAMPLES = Path("samples/personas")

# file, the line to fix, a substring of the message (it names the field or the problem)
CASES = [
    # YAML syntax
    ("yaml_bad_indentation.yaml", 14, "mapping values are not allowed here (check the indentation"),
    ("yaml_dedent.yaml", 13, "(check the indentation)"),
    ("yaml_tab_indent.yaml", 13, "indent with spaces, not tabs"),
    ("yaml_unclosed_quote.yaml", 10, "the quoted string opened here is not closed"),
    ("yaml_unclosed_bracket.yaml", 7, "the '[' opened here is not closed"),
    ("yaml_unclosed_brace.yaml", 17, "the '{' opened here is not closed"),
    ("yaml_missing_colon.yaml", 3, "this key has no ':'"),
    ("yaml_duplicate_key.yaml", 14, "attributes.humor appears twice"),
    ("yaml_merge_key.yaml", 18, "merge keys (<<) are not supported"),
    ("yaml_recursive_alias.yaml", 7, "an alias refers to its own anchor"),
    ("empty.yaml", 1, "the file is empty"),
    ("not_a_mapping.yaml", 2, "a persona file must be a mapping"),
    # required fields (reported at the start of the mapping that lacks them, or at the empty key)
    ("missing_id.yaml", 2, "id is required"),
    ("missing_name.yaml", 2, "name is required"),
    ("missing_role.yaml", 2, "role is required"),
    ("missing_attributes.yaml", 2, "attributes is required"),
    ("empty_name.yaml", 3, "name is required"),
    # unknown names
    ("unknown_field.yaml", 11, "unknown field 'catchphrase'"),
    ("unknown_attribute.yaml", 12, "attributes.humour: unknown attribute 'humour'; schema 'npc' has humor, friendliness, creativity, verbosity"),
    ("unknown_mood_attribute.yaml", 17, "moods.tired.sleepiness: unknown attribute"),
    ("unknown_limit_attribute.yaml", 20, "limits.rudeness: unknown attribute"),
    ("generation_unknown_field.yaml", 22, "generation: unknown field 'beam_width'"),
    ("schema_missing.yaml", 11, "schema 'schemas/no_such_schema.yaml' is neither a built-in"),
    # out of range
    ("out_of_range_attribute.yaml", 12, "attributes.humor = 7 is outside 0..4"),
    ("negative_attribute.yaml", 14, "attributes.creativity = -1 is outside 0..4"),
    ("out_of_range_mood.yaml", 18, "moods.cheerful.humor = 5 is outside 0..4"),
    ("out_of_range_limit.yaml", 20, "limits.friendliness.max = 9 is outside 0..4"),
    ("generation_out_of_range.yaml", 23, "generation.top_p = 1.5 must be a number in (0, 1]"),
    ("limits_min_greater_than_max.yaml", 20, "limits.friendliness: min 3 > max 1"),
    # bad types and shapes
    ("attribute_string_value.yaml", 13, "attributes.friendliness = 'high' is not an integer; allowed 0..4"),
    ("attribute_float_value.yaml", 15, "attributes.verbosity = 2.5 is not an integer; allowed 0..4"),
    ("attributes_not_mapping.yaml", 11, "attributes must be a mapping"),
    ("attributes_block_list.yaml", 11, "attributes must be a mapping"),
    ("knowledge_not_list.yaml", 7, "knowledge must be a list of strings"),
    ("knowledge_item_not_string.yaml", 9, "knowledge[1] must be a string"),
    ("name_not_string.yaml", 3, "name must be a string, got list"),
    ("generation_temperature_string.yaml", 22, "generation.temperature = 'hot' must be a number"),
    ("generation_not_mapping.yaml", 21, "generation must be a mapping"),
    ("limits_not_mapping.yaml", 20, "limits.friendliness must be a mapping with min and/or max"),
    ("limits_unknown_bound.yaml", 20, "limits.friendliness must be a mapping with min and/or max"),
    ("moods_not_mapping.yaml", 16, "moods must be a mapping"),
    ("mood_not_mapping.yaml", 17, "moods.tired must be a non-empty mapping"),
    ("mood_block_list.yaml", 17, "moods.tired must be a non-empty mapping"),
    ("mood_bad_name.yaml", 18, "mood name 'Very Cheerful' must match"),
    # actions and emotions (steernpc.actions)
    ("actions_not_list.yaml", 20, "actions must be a list"),
    ("actions_bad_name.yaml", 21, "actions[0].name = 'Call Guards' must match"),
    ("actions_duplicate.yaml", 22, "action 'open_shop' is declared twice"),
    ("actions_unknown_field.yaml", 22, "actions[0]: unknown field 'cooldown'"),
    ("actions_undeclared_type.yaml", 23, "actions.give_item.args.item: unknown argument type"),
    ("actions_int_min_greater.yaml", 23, "actions.pay.args.amount: min 50 > max 5"),
    ("actions_string_cap.yaml", 23, "actions.give_quest.args.quest.max_length = 0 must be an integer 1..200"),
    ("emotions_bad_name.yaml", 20, "emotions[1] = 'Very Angry' must match"),
    ("emotions_duplicate.yaml", 20, "emotions[2]: 'neutral' appears twice"),
    # ids
    ("bad_id_uppercase.yaml", 2, "id = 'Mira' must match [a-z0-9_-]+"),
    ("bad_id_space.yaml", 2, "id = 'mira thornbush' must match [a-z0-9_-]+"),
]

LINE_RE = re.compile(r"^(?P<file>[^:\n]+\.ya?ml):(?P<line>[1-9][0-9]*): (?P<message>\S.*)$")


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    """Paths in the table (and in messages) are relative to the repository root."""
    monkeypatch.chdir(REPO)


def validate(*paths: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steernpc.cli", "validate", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the broken corpus -----------------------------------------------------------------

def test_table_covers_every_broken_file():
    on_disk = sorted(p.name for p in (REPO / BROKEN).glob("*.yaml"))
    assert on_disk == sorted(name for name, _, _ in CASES)
    assert len(on_disk) >= 24


@pytest.mark.parametrize("name,line,fragment", CASES, ids=[c[0] for c in CASES])
def test_broken_file_reports_exact_line(name, line, fragment):
    path = BROKEN / name
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    problems = info.value.problems
    # each file is broken in exactly one way, so exactly one line comes out
    assert [(p.file, p.line) for p in problems] == [(str(path), line)], [str(p) for p in problems]
    text = str(problems[0])
    assert text.startswith(f"{path}:{line}: ")
    assert fragment in problems[0].message
    assert str(info.value) == text
    # the line exists in the file (empty file: line 1)
    assert line <= max(1, len((REPO / path).read_text(encoding="utf-8").splitlines()))


@pytest.mark.parametrize("name,line,fragment", CASES, ids=[c[0] for c in CASES])
def test_load_personas_collects_the_same_problem(name, line, fragment):
    personas, problems = load_personas([BROKEN / name])
    assert personas == {}
    assert [str(p) for p in problems] == [f"{BROKEN / name}:{line}: {problems[0].message}"]
    assert fragment in problems[0].message


def test_field_messages_follow_the_documented_form():
    """`FILE:LINE: attributes.humor = 7 is outside 0..4`"""
    with pytest.raises(PersonaError) as info:
        load_persona(BROKEN / "out_of_range_attribute.yaml")
    assert str(info.value) == f"{BROKEN / 'out_of_range_attribute.yaml'}:12: attributes.humor = 7 is outside 0..4"


def test_several_problems_in_one_file_are_all_reported_in_line_order(tmp_path):
    bad = tmp_path / "many.yaml"
    bad.write_text(
        "id: Many\n"                      # 1 bad id
        "name: Many Problems\n"           # 2
        "role: a test\n"                  # 3
        "attributes:\n"                   # 4
        "  humor: 9\n"                    # 5 out of range
        "  charm: 2\n"                    # 6 unknown
        "moods:\n"                        # 7
        "  sad: {friendliness: -3}\n"     # 8 out of range
        "limits:\n"                       # 9
        "  humor: {min: 2, max: 1}\n"     # 10 min > max
        "extra: 1\n"                      # 11 unknown field
    )  # fmt: skip
    with pytest.raises(PersonaError) as info:
        load_persona(bad)
    assert [(p.line, p.message.split(" ")[0]) for p in info.value.problems] == [
        (1, "id"),
        (5, "attributes.humor"),
        (6, "attributes.charm:"),
        (8, "moods.sad.friendliness"),
        (10, "limits.humor:"),
        (11, "unknown"),
    ]


# -- the real CLI ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "name,line",
    [
        ("unknown_attribute.yaml", 12),
        ("yaml_unclosed_quote.yaml", 10),
        ("limits_min_greater_than_max.yaml", 20),
        ("empty.yaml", 1),
    ],
)
def test_cli_validate_one_broken_file(name, line):
    result = validate(BROKEN / name)
    assert result.returncode == 1, result
    out = result.stdout.splitlines()
    assert len(out) == 1, out
    m = LINE_RE.match(out[0])
    assert m, out[0]
    assert (m["file"], int(m["line"])) == (str(BROKEN / name), line)
    assert "1 problem(s)" in result.stderr


def test_cli_validate_broken_folder():
    result = validate(BROKEN)
    assert result.returncode == 1, result
    out = result.stdout.splitlines()
    assert len(out) == len(CASES)
    expected = {str(BROKEN / name): line for name, line, _ in CASES}
    seen = {}
    for text in out:
        m = LINE_RE.match(text)
        assert m, f"not FILE:LINE: message: {text!r}"
        seen[m["file"]] = int(m["line"])
    assert seen == expected
    assert f"{len(CASES)} problem(s); 0 valid persona(s)" in result.stderr


def test_cli_validate_samples_ok():
    result = validate(SAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert re.search(r"ok: \d+ persona\(s\) valid", result.stderr)


def test_cli_validate_mixed_good_and_bad():
    result = validate(SAMPLES / "brom.yaml", BROKEN / "out_of_range_mood.yaml")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{BROKEN / 'out_of_range_mood.yaml'}:18: moods.cheerful.humor = 5 is outside 0..4"
    ]
    assert "1 problem(s); 1 valid persona(s)" in result.stderr


def test_cli_validate_missing_path():
    result = validate("tests/data/no_such_persona.yaml")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["tests/data/no_such_persona.yaml:1: no such file or folder"]


# -- duplicate ids ---------------------------------------------------------------------

def test_duplicate_ids_across_a_folder():
    personas, problems = load_personas([DUPLICATES])
    assert list(personas) == ["twin"]
    assert personas["twin"].name == "Tam the Elder Twin"  # the first file keeps the id
    assert [str(p) for p in problems] == [
        f"{DUPLICATES / 'b_second.yaml'}:5: id 'twin' is already used by {DUPLICATES / 'a_first.yaml'}"
    ]
    # each file is valid on its own
    for file in persona_files([DUPLICATES]):
        assert load_persona(file).id == "twin"


def test_cli_duplicate_ids():
    result = validate(DUPLICATES)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{DUPLICATES / 'b_second.yaml'}:5: id 'twin' is already used by {DUPLICATES / 'a_first.yaml'}"
    ]


# -- the sample personas ---------------------------------------------------------------

def sample_files() -> list[Path]:
    return sorted((REPO / SAMPLES).glob("*.yaml"))


def test_samples_all_load_with_unique_ids():
    personas, problems = load_personas([SAMPLES])
    assert problems == []
    assert len(personas) >= 8
    assert len(personas) == len(sample_files())


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.stem)
def test_sample_persona(path):
    persona = load_persona(path)
    assert persona.id == path.stem  # file name = <id>.yaml
    assert persona.schema.name == "npc"
    assert set(persona.attributes) == set(persona.schema.names)  # a full profile
    assert len(persona.moods) >= 2
    assert persona.name and persona.role and persona.backstory and persona.speaking_style and persona.greeting
    assert 3 <= len(persona.knowledge) <= 5
    assert persona.card().startswith(f"You are {persona.name}, {persona.role}.")
    for mood in persona.moods:
        vector = persona.resolve(mood=mood)
        assert set(vector) == set(persona.schema.names)
        for name, (low, high) in persona.limits.items():
            assert low <= vector[name] <= high


def test_sample_profiles_are_pairwise_different():
    personas, _ = load_personas([SAMPLES])
    for a, b in itertools.combinations(personas.values(), 2):
        assert a.attributes != b.attributes, f"{a.id} and {b.id} have the same profile"


def test_samples_use_limits_and_generation_settings():
    personas, _ = load_personas([SAMPLES])
    limited = [p for p in personas.values() if p.limits]
    assert len(limited) >= 2
    assert any(p.generation != type(p.generation)() for p in personas.values())


def test_sample_child_is_never_hostile_or_long_winded():
    pip = load_persona(SAMPLES / "pip.yaml")
    assert pip.limits == {"verbosity": (0, 2), "friendliness": (2, 4)}
    assert pip.resolve(override={"friendliness": 0})["friendliness"] == 2
    assert pip.resolve(mood="excited", steer={"verbosity": 4})["verbosity"] == 2
    for mood in pip.moods:  # the moods are written within the limits, so no layer is clamped away
        assert pip.resolve(mood=mood) == {**pip.attributes, **pip.moods[mood]}


def test_sample_characters_differ_as_described():
    personas, _ = load_personas([SAMPLES])
    brom, bard, scholar = personas["brom"], personas["lysander"], personas["orsolya"]
    assert brom.attributes["humor"] <= 1 and brom.attributes["friendliness"] == 1 and brom.attributes["verbosity"] <= 1
    assert bard.attributes["humor"] == 4 and bard.attributes["creativity"] == 4
    assert scholar.attributes["verbosity"] == 4
    assert personas["nettle"].attributes["creativity"] == 4
    guard = personas["hilde"]
    assert guard.resolve(mood="provoked")["friendliness"] < guard.resolve()["friendliness"]


def test_samples_share_one_world():
    personas, _ = load_personas([SAMPLES])
    everything = " ".join(" ".join((p.backstory, *p.knowledge)) for p in personas.values())
    assert everything.count("Emberfall") >= 5
    # the characters know each other
    for persona in personas.values():
        others = [o for o in personas.values() if o.id != persona.id]
        mentions = " ".join((persona.backstory, *persona.knowledge))
        assert any(part in mentions for o in others for part in o.name.split() if part not in TITLES), persona.id


TITLES = {"Old", "Mother", "Sergeant", "Archivist"}
