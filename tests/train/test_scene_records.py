"""Scene records (samples/corpus/scenes): several speakers in the corpus format, rendered by the
SFT through the runtime's scene code. For every member line, the text the SFT trains on is
byte for byte the prompt `SceneConversation.begin` builds for that member at that point of the
scene (with the line's labels as its vector), followed by the line itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from steernpc.generation import create_backend
from steernpc.persona import load_personas
from steernpc.prompt import segments
from steernpc.scene_turns import SceneConversation
from steernpc.scenes import PLAYER_ID
from steernpc_train.data import DataError, read_conversations
from steernpc_train.scenes import member_conversations, parse_scene, replay
from steernpc_train.sft import ExampleBuilder

CORPUS = Path(__file__).resolve().parents[2] / "samples" / "corpus"
SCENE_FILES = sorted((CORPUS / "scenes").glob("*.jsonl"))


@pytest.fixture(scope="module")
def personas():
    found, problems = load_personas([CORPUS / "personas" / "train"])
    assert not problems, problems
    return found


@pytest.fixture(scope="module")
def records():
    out = [c.scene_record for f in SCENE_FILES for c in read_conversations(f, "auto")]
    assert all(r is not None for r in out), "every line of samples/corpus/scenes is a scene record"
    return out


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    real = create_backend("torch", model=str(tiny_model_dir))
    yield real
    real.close()


def test_scene_records_load_with_several_speakers(records, personas):
    assert len(records) >= 30
    assert len({r.id for r in records}) == len(records), "record ids are unique"
    for r in records:
        speakers = {x.speaker for x in r.lines if x.speaker != PLAYER_ID}
        assert len(speakers) >= 2, f"{r.id}: a scene record has several speaking members"
        assert r.lines[0].speaker == PLAYER_ID, f"{r.id}: the player opens the scene"
        for m in r.members:
            assert m.character in personas, f"{r.id}: {m.character} is a training persona"
        for x in r.lines:
            if x.speaker != PLAYER_ID:
                schema = personas[r.members[[m.member_id for m in r.members].index(x.speaker)].character].schema
                assert schema.check_vector(x.labels, "labels") == x.labels and set(x.labels) == set(schema.names), (r.id, x.text)


@pytest.mark.parametrize("fmt", ["chat", "nemo"])
def test_sft_renders_what_the_runtime_serves(records, personas, backend, fmt):
    schema = next(iter(personas.values())).schema
    builder = ExampleBuilder(fmt, schema, backend.tokenizer, max_length=8192, history=64, personas=personas)
    runtime = SceneConversation(backend, fmt, history_tokens=8192)
    checked = 0
    for record in records:
        convs = {c.id.split(":", 1)[1]: c for c in member_conversations(record, personas)}
        own = {member_id: 0 for member_id in convs}
        for i, line in enumerate(record.lines):
            if line.speaker == PLAYER_ID:
                continue
            # The runtime, at this point of the scene, with the line's labels as the member's vector.
            scene = replay(record, personas, upto=i)
            member = scene.member(line.speaker)
            member.steer = dict(line.labels)
            persona = personas[member.character_id]
            turn = runtime.begin(scene, line.speaker, persona)
            assert turn.attributes == line.labels
            # The SFT: this member's conversation, up to this line.
            conv = convs[line.speaker]
            k = own[line.speaker]
            own[line.speaker] += 1
            exchanges = builder._exchanges(conv)[: k + 1]
            pieces = segments(fmt, builder.system_for(conv), exchanges, schema, backend.tokenizer)
            last = max(j for j, (_, trains) in enumerate(pieces) if trains)
            prompt = "".join(text for text, _ in pieces[:last])
            assert prompt == turn.prompt, f"{record.id} line {i} ({line.speaker}): the SFT's prompt differs from the runtime's"
            assert pieces[last][0].startswith(line.text)
            checked += 1
    assert checked >= 30
    # And the builder turns every member line into training text (chat: one example per line).
    examples = builder.build_many(c for f in SCENE_FILES for c in read_conversations(f, "npc"))
    lines = sum(1 for r in records for x in r.lines if x.speaker != PLAYER_ID)
    assert all(e.n_trained for e in examples)
    assert len(examples) == (lines if fmt == "chat" else sum(len({x.speaker for x in r.lines} - {PLAYER_ID}) for r in records))


def test_bad_scene_records_name_file_line_and_field():
    def bad(obj, match):
        with pytest.raises(DataError, match=match):
            parse_scene(obj, "scenes.jsonl", 3)

    two = {"members": [{"character": "port_fishmonger"}, {"character": "port_old_sailor"}]}
    bad({"scene": {"members": [{"character": "port_fishmonger"}]}, "lines": []}, r"scenes.jsonl:3: scene.members must list at least two")
    bad({"scene": two, "lines": [{"speaker": "nobody", "text": "Hi"}]}, r"lines\[0\].speaker 'nobody' is neither")
    bad({"scene": two, "lines": [{"speaker": "port_fishmonger", "text": "Mackerel."}]}, r"lines\[0\]: a member's line needs the labels")
    bad({"scene": two, "lines": [{"speaker": "player", "text": "Hi"}]}, r"no member line to train on")
    members = {"members": [{"character": "port_fishmonger"}, {"character": "port_fishmonger"}]}
    bad({"scene": members, "lines": [{"speaker": "player", "text": "Hi"}]}, r"member id 'port_fishmonger' is taken")


def test_scene_records_need_the_personas(records):
    with pytest.raises(DataError, match="need the personas of their members"):
        member_conversations(records[0], {})
