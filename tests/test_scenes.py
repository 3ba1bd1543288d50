"""The scene model (steernpc.scenes, scene_turns, scene_snapshot): members with their own
state, one shared transcript, who speaks next, banter and its interruption, prompts
without cross-member leakage, KV reuse per member, and snapshots.

Replies come from the tiny random-weight Llama, so tests check structure and prompts,
never wording.
"""

from __future__ import annotations

import threading

import msgpack
import pytest

from steernpc.attributes import InvalidAttribute
from steernpc.generation import create_backend
from steernpc.persona import load_persona
from steernpc.scene_snapshot import SCENE_FORMAT, export_scene, import_scene
from steernpc.scene_turns import Interrupt, SceneConversation, SceneRunner, cache_key
from steernpc.scenes import (
    GO_ON,
    PLAYER_ID,
    SCENE_OPENING,
    EmptyScene,
    MemberExists,
    Scene,
    SceneError,
    UnknownMember,
    named_members,
    next_speaker,
    responders,
)
from steernpc.sessions import Session, SnapshotError, export_snapshot

from harness import SAMPLE_PERSONAS

PERSONAS = {cid: load_persona(SAMPLE_PERSONAS / f"{cid}.yaml") for cid in ("brom", "marta", "lysander", "pip")}
OPTIONS = {"max_new_tokens": 6, "seed": 5}


def table(seed: int = 7, *ids: str) -> Scene:
    scene = Scene.new("tavern", player_name="Ayla", context={"place": "the Rusty Tankard"}, seed=seed)
    for cid in ids or ("brom", "marta", "lysander"):
        scene.join(cid, cid, PERSONAS[cid].name)
    return scene


class Recording:
    """A real backend that keeps every prompt submitted to it."""

    def __init__(self, backend):
        self.backend = backend
        self.requests = []

    def submit(self, request):
        self.requests.append(request)
        return self.backend.submit(request)

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    real = create_backend("torch", model=str(tiny_model_dir))
    yield real
    real.close()


@pytest.fixture
def recording(backend):
    return Recording(backend)


def runner(backend, fmt: str = "chat") -> SceneRunner:
    return SceneRunner(backend, fmt, PERSONAS.__getitem__, history_tokens=512)


def lines(events):
    """[(speaker_id, text, done)] for each done; deltas must concatenate to its text."""
    out, text = [], {}
    for event in events:
        if event.done is None:
            text[event.speaker_id] = text.get(event.speaker_id, "") + event.delta
        else:
            assert text.pop(event.speaker_id, "") == event.done.text
            out.append((event.speaker_id, event.done.text, event.done))
    assert not text, "every delta belongs to a line that ends with a done"
    return out


# -- who speaks -----------------------------------------------------------------------------------

def test_addressed_by_id_wins_over_names_and_keeps_order():
    scene = table()
    assert responders(scene, "Brom, what do you think?", ["lysander", "marta", "lysander"]) == ["lysander", "marta"]
    with pytest.raises(UnknownMember, match="'nobody'.*members: brom, marta, lysander"):
        responders(scene, "Hello", ["nobody"])


def test_addressed_by_name_in_the_order_named():
    scene = table()
    assert responders(scene, "Brom, what do you think?") == ["brom"]
    assert responders(scene, "What does Lysander Quill say, Marta?") == ["lysander"]  # the first named answers
    assert named_members(scene, "What does Lysander Quill say, Marta?") == ["lysander", "marta"]
    assert responders(scene, "Ironhand! Over here.") == ["brom"]
    assert named_members(scene, "an ironhand grip") == []  # name words match as written in the name
    assert named_members(scene, "Bromley is not Brom's cousin") == ["brom"]  # whole words only: "Brom's" names him
    assert named_members(scene, "Bromley came by") == []


def test_a_shared_name_word_names_nobody():
    scene = table(7, "marta", "pip")  # Marta Greenhollow and Pip Greenhollow
    assert named_members(scene, "The Greenhollow family?") == []
    assert named_members(scene, "Pip Greenhollow, come here") == ["pip"]


def test_unaddressed_line_goes_to_the_last_member_who_spoke():
    scene = table()
    scene.record(PLAYER_ID, "Evening.")
    scene.record("marta", "Welcome, love.")
    scene.record(PLAYER_ID, "A room, please.")
    assert responders(scene, "And supper?") == ["marta"]
    scene.leave("marta")  # gone: the tie-break picks among those present
    assert responders(scene, "And supper?")[0] in ("brom", "lysander")


def test_seeded_tie_break_is_deterministic_and_depends_on_the_seed():
    picks = {seed: responders(table(seed), "Hello, everyone.") for seed in range(1, 25)}
    assert all(responders(table(seed), "Hello, everyone.") == pick for seed, pick in picks.items())
    assert len({pick[0] for pick in picks.values()}) > 1


def test_banter_alternates_between_a_speaker_and_its_counterpart():
    scene = table()
    scene.record(PLAYER_ID, "Brom, tell Marta about the sword.")
    scene.record("brom", "It is a fine blade.")
    assert next_speaker(scene) == "marta"  # nobody he answered: the player named Marta
    scene = table()
    scene.record("marta", "More ale?")
    scene.record("brom", "Aye.")
    assert next_speaker(scene) == "marta"  # Brom answered Marta
    scene.record("marta", "There you go.")
    assert next_speaker(scene) == "brom"
    scene.record("brom", "Lysander, sing us something.")
    assert next_speaker(scene) == "lysander"  # a name in the last line wins
    scene.record("lysander", "Brom, you have no ear.")
    assert next_speaker(scene) == "brom"
    for _ in range(6):
        last = scene.last_speaker()
        scene.record(next_speaker(scene), "Hm.")
        assert scene.last_speaker() != last  # never the member who spoke last


def test_banter_needs_two_members_and_an_empty_scene_answers_nobody():
    scene = Scene.new("empty")
    with pytest.raises(EmptyScene, match="no members"):
        responders(scene, "Hello?")
    with pytest.raises(EmptyScene):
        next_speaker(scene)
    scene.join("brom", "brom", "Brom Ironhand")
    with pytest.raises(EmptyScene, match="banter needs two"):
        next_speaker(scene)


def test_join_and_leave():
    scene = table()
    with pytest.raises(MemberExists):
        scene.join("brom", "brom", "Brom")
    with pytest.raises(SceneError, match="player"):
        scene.join(PLAYER_ID, "pip", "Pip")
    scene.record(PLAYER_ID, "Before Pip came in.")
    scene.record("brom", "Aye.")
    pip = scene.join("pip", "pip", PERSONAS["pip"].name)
    scene.record(PLAYER_ID, "Hello Pip.")
    history, pending = scene.view(pip)
    assert history == [] and pending == "Ayla: Hello Pip."  # it hears from its arrival on
    scene.leave("brom")
    assert [x.speaker for x in scene.transcript] == ["Ayla", "Brom Ironhand", "Ayla"]  # his line stays, by name
    with pytest.raises(UnknownMember):
        scene.leave("brom")


def test_member_view_is_the_transcript_from_its_point_of_view():
    scene = table()
    brom = scene.member("brom")
    assert scene.view(brom) == ([], GO_ON)
    scene.record("marta", "Morning, Brom.", {"humor": 1})
    scene.record("brom", "Morning.", {"humor": 0})
    scene.record(PLAYER_ID, "Hi all.")
    scene.record("lysander", "A song!", {"humor": 4})
    history, pending = scene.view(brom)
    assert [(e.user, e.reply, e.labels) for e in history] == [("Marta Greenhollow: Morning, Brom.", "Morning.", {"humor": 0})]
    assert pending == "Ayla: Hi all.\nLysander Quill: A song!"
    history, _ = scene.view(scene.member("lysander"))
    assert history[0].user.startswith("Marta Greenhollow: Morning, Brom.\nBrom Ironhand: Morning.\nAyla: Hi all.")
    scene2 = table()
    scene2.record("brom", "First words.", {"humor": 0})
    assert scene2.view(scene2.member("brom"))[0][0].user == SCENE_OPENING


# -- prompts ----------------------------------------------------------------------------------------

def card_markers(persona) -> list[str]:
    """Pieces of a persona's card that only its own prompt may contain."""
    marks = [persona.role, *persona.knowledge]
    if persona.backstory:
        marks.append(persona.backstory.strip()[:60])
    if persona.speaking_style:
        marks.append(persona.speaking_style.strip()[:60])
    return [m for m in marks if m]


@pytest.mark.parametrize("fmt", ["chat", "nemo"])
def test_prompts_show_no_cross_member_leakage(recording, fmt):
    scene = table()
    steers = {"brom": {"humor": 0, "verbosity": 4}, "marta": {"humor": 4, "verbosity": 0}, "lysander": {"humor": 2, "verbosity": 2}}
    for mid, steer in steers.items():
        scene.member(mid).apply_steer(attributes=steer)
    scene.member("marta").apply_steer(mood=sorted(PERSONAS["marta"].moods)[0])
    run = runner(recording, fmt)
    said = lines(run.say(scene, "What news?", ["brom", "marta", "lysander"], options=OPTIONS))
    said += lines(run.banter(scene, 3, options=OPTIONS))
    assert [s for s, _, _ in said][:3] == ["brom", "marta", "lysander"]
    assert len(said) == 6 and len(recording.requests) == 6
    for request, (speaker, _, done) in zip(recording.requests, said):
        me = PERSONAS[speaker]
        member = scene.member(speaker)
        assert me.card() in request.prompt
        for mark in card_markers(me):
            assert mark in request.prompt
        for other in PERSONAS.values():
            if other.id != speaker:
                for mark in card_markers(other):
                    assert mark not in request.prompt, (speaker, other.id, mark)
        # the only label lines are this member's own vectors
        vector = me.resolve(mood=member.mood or None, steer=member.steer)
        own = {me.schema.encode(vector)} | {me.schema.encode(x.labels) for x in scene.transcript if x.speaker_id == speaker}
        others = {PERSONAS[x.speaker_id].schema.encode(x.labels) for x in scene.transcript
                  if x.speaker_id not in (speaker, PLAYER_ID)} - own  # fmt: skip
        assert others, "the other members' vectors differ from this one's"
        for label_line in others:
            assert label_line not in request.prompt, (speaker, label_line)
        assert me.schema.encode(vector) in request.prompt
        assert request.cache_key == cache_key("tavern", speaker)
        # names of the others are shared, their cards are not
        assert all(scene.member(o).name in request.prompt for o in steers if o != speaker)


def test_bad_member_vector_names_the_member_and_field(backend):
    scene = table()
    lines_ = SceneConversation(backend, "chat")
    with pytest.raises(InvalidAttribute, match=r"member 'marta': .*humor = 9 is outside 0\.\.4") as info:
        lines_.begin(scene, "marta", PERSONAS["marta"], override={"humor": 9})
    assert info.value.field.startswith("members[marta].")


# -- running lines ----------------------------------------------------------------------------------

def test_say_streams_each_responder_with_one_done_and_records_the_transcript(backend):
    scene = table()
    said = lines(runner(backend).say(scene, "A word, you two?", ["marta", "brom"], options=OPTIONS))
    assert [s for s, _, _ in said] == ["marta", "brom"]
    assert all(text and done.reason in ("stop", "length") for _, text, done in said)
    assert [(x.speaker_id, x.speaker) for x in scene.transcript] == [
        (PLAYER_ID, "Ayla"), ("marta", "Marta Greenhollow"), ("brom", "Brom Ironhand")]
    assert scene.transcript[1].labels == PERSONAS["marta"].resolve()
    # Brom heard Marta's answer before his own
    assert scene.view(scene.member("brom"))[0][0].user.endswith(f"Marta Greenhollow: {said[0][1]}")


def test_each_member_reuses_its_kv_between_lines(backend):
    scene = table()
    run = runner(backend)
    first = lines(run.say(scene, "Brom, a sword?", options=OPTIONS))[0][2]
    lines(run.say(scene, "Marta, a room?", options=OPTIONS))
    second = lines(run.say(scene, "Brom, how much?", options=OPTIONS))[0][2]
    assert second.prompt_tokens > first.prompt_tokens
    assert second.cached_tokens >= first.prompt_tokens - 2, (first, second)


def test_banter_runs_n_lines_between_members(backend):
    scene = table()
    run = runner(backend)
    lines(run.say(scene, "Brom, what do you think of the stew?", options=OPTIONS))
    said = lines(run.banter(scene, 4, options=OPTIONS))
    speakers = [s for s, _, _ in said]
    assert len(speakers) == 4 and all(a != b for a, b in zip(speakers, speakers[1:]))
    assert len(scene.transcript) == 6
    with pytest.raises(SceneError, match="turns = 0"):
        list(run.banter(scene, 0))


def test_cancel_ends_banter_at_the_next_step(backend):
    scene = table()
    run = runner(backend)
    stop = Interrupt()
    seen = []
    for event in run.banter(scene, 5, options={"max_new_tokens": 400, "seed": 3, "ignore_eos": True}, interrupt=stop):
        seen.append(event)
        if event.delta and not stop.cancelled:
            stop.cancel()  # mid-line: this line ends cancelled, no other starts
    said = lines(seen)
    assert len(said) == 1 and said[0][2].reason == "cancelled"
    assert said[0][2].completion_tokens < 400
    assert len(scene.transcript) == (1 if said[0][1] else 0)  # the partial line stays: it was heard


def test_a_new_player_line_interrupts_banter(backend):
    scene = table()
    run = runner(backend)
    started = threading.Event()
    banter_events = []

    def banter():
        for event in run.banter(scene, 5, options={"max_new_tokens": 400, "seed": 3, "ignore_eos": True}):
            banter_events.append(event)
            started.set()

    thread = threading.Thread(target=banter)
    thread.start()
    assert started.wait(120)
    said = lines(run.say(scene, "Quiet, all of you! Brom?", options=OPTIONS))
    thread.join(120)
    assert not thread.is_alive()
    banter_lines = lines(banter_events)
    assert len(banter_lines) == 1 and banter_lines[0][2].reason == "cancelled"
    assert [s for s, _, _ in said] == ["brom"]
    assert scene.transcript[-2].speaker_id == PLAYER_ID and scene.transcript[-1].speaker_id == "brom"


def test_a_line_that_cannot_start_leaves_no_player_line(backend):
    scene = table()
    with pytest.raises(InvalidAttribute):
        list(runner(backend).say(scene, "Brom?", override={"humor": 9}))
    assert scene.transcript == []


# -- snapshots ----------------------------------------------------------------------------------------

def test_scene_snapshot_round_trips(backend):
    scene = table()
    scene.member("brom").apply_steer(mood=sorted(PERSONAS["brom"].moods)[0], attributes={"humor": 3})
    lines(runner(backend).say(scene, "Marta, Brom?", ["marta", "brom"], options=OPTIONS))
    scene.leave("marta")
    scene.join("pip", "pip", PERSONAS["pip"].name)
    data = export_scene(scene)
    assert msgpack.unpackb(data)["format"] == SCENE_FORMAT
    back = import_scene(data)
    assert back == scene
    assert export_scene(back) == data


def test_old_session_snapshot_imports_as_a_one_member_scene():
    session = Session.new("brom", "old-save", mood="angry", steer={"humor": 1}, player_name="Ayla")
    session.record("Fix my sword?", "Aye.", PERSONAS["brom"].resolve())
    session.record("How much?", None, PERSONAS["brom"].resolve())
    scene = import_scene(export_snapshot(session))
    assert scene.scene_id == "old-save" and scene.player_name == "Ayla"
    (member,) = scene.members
    assert (member.member_id, member.character_id, member.mood, member.steer) == ("brom", "brom", "angry", {"humor": 1})
    assert [(x.speaker_id, x.text) for x in scene.transcript] == [(PLAYER_ID, "Fix my sword?"), ("brom", "Aye."), (PLAYER_ID, "How much?")]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "unsupported scene snapshot version 99"),
    (lambda d: d.pop("members"), "missing field"),
    (lambda d: d["members"].append(dict(d["members"][0])), r"members\[3\]\.member_id 'brom'"),
    (lambda d: d["transcript"].append({"speaker_id": "brom", "speaker": "B", "text": 3, "labels": {}}), r"transcript\[0\]\.text must be a string"),
    (lambda d: d.update(format="other"), "not a scene snapshot"),
])  # fmt: skip
def test_bad_scene_snapshots_are_refused_naming_the_field(mutate, message):
    d = msgpack.unpackb(export_scene(table()))
    mutate(d)
    with pytest.raises(SnapshotError, match=message):
        import_scene(msgpack.packb(d))
    with pytest.raises(SnapshotError):
        import_scene(b"\x01garbage")
