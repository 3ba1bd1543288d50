"""Scenes over gRPC against one real server: CreateScene, GetScene, JoinScene/LeaveScene,
SceneSay (addressing, one done per speaking member), SceneContinue (banter, Cancel, a new
line interrupting it), Steer on a member, ExportScene/ImportScene (and old session saves),
and the statuses: NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT naming member and field.

Replies come from a random-weight model: tests check structure, never wording.
"""

from __future__ import annotations

import threading

import grpc
import pytest
from server_harness import SAMPLE_PERSONAS, rpc_error

from steernpc.persona import load_persona
from steernpc.scene_snapshot import import_scene
from steernpc.wire import pb

SHORT = {"max_new_tokens": 6, "seed": 5}
LONG = {"max_new_tokens": 1200, "seed": 3, "ignore_eos": True}  # still running when cancelled
TRIO = ["brom", "marta", "lysander"]


def persona(cid: str):
    return load_persona(SAMPLE_PERSONAS / f"{cid}.yaml")


@pytest.fixture(scope="module")
def server(launch):
    return launch("scenes")


class Lines:
    """The events of one SceneSay / SceneContinue, as lines: (speaker_id, deltas, done)."""

    def __init__(self, events):
        self.events = list(events)
        self.lines: list[tuple[str, str, pb.ReplyDone]] = []
        text: dict[str, str] = {}
        for event in self.events:
            assert event.interaction_id and event.speaker_id and event.speaker
            if event.HasField("delta"):
                text[event.speaker_id] = text.get(event.speaker_id, "") + event.delta.text
            else:
                assert event.HasField("done")
                assert text.pop(event.speaker_id, "") == event.done.text  # deltas concatenate to the done
                self.lines.append((event.speaker_id, event.done.text, event.done))
        assert not text, "a member's deltas ended without its done"
        assert len({e.interaction_id for e in self.events}) <= 1

    @property
    def speakers(self) -> list[str]:
        return [s for s, _, _ in self.lines]


def new_scene(npc, scene_id: str, members=TRIO, **kw) -> pb.Scene:
    return npc.create_scene(scene_id, members=members, player_name="Ayla", seed=11, **kw)


def test_create_and_get_scene(npc):
    scene = new_scene(npc, "create", members=["brom", {"character_id": "marta", "mood": "busy"} if "busy" in persona("marta").moods
                                             else {"character_id": "marta"}, {"character_id": "lysander", "member_id": "bard", "name": "The Bard"}])  # fmt: skip
    assert [m.member_id for m in scene.members] == ["brom", "marta", "bard"]
    assert [m.name for m in scene.members] == ["Brom Ironhand", "Marta Greenhollow", "The Bard"]
    assert dict(scene.members[0].attributes) == persona("brom").resolve()
    got = npc.get_scene("create")
    assert got == scene and got.lines == 0 and got.seed == 11
    assert rpc_error(npc.create_scene, "create").code() == grpc.StatusCode.ALREADY_EXISTS
    assert rpc_error(npc.get_scene, "nowhere").code() == grpc.StatusCode.NOT_FOUND


def test_addressing_by_name_and_by_id(npc):
    new_scene(npc, "address")
    said = Lines(npc.scene_say("address", "Brom, what do you think?", **SHORT))
    assert said.speakers == ["brom"]
    said = Lines(npc.scene_say("address", "And you two?", member_ids=["lysander", "marta"], **SHORT))
    assert said.speakers == ["lysander", "marta"]  # one done per speaking member, in the order addressed
    said = Lines(npc.scene_say("address", "Hm. Go on.", **SHORT))
    assert said.speakers == ["marta"]  # nobody named: the last member who spoke
    scene = npc.get_scene("address", include_transcript=True)
    assert scene.lines == 7 and scene.last_speaker_id == "marta"
    assert [x.speaker_id for x in scene.transcript] == ["player", "brom", "player", "lysander", "marta", "player", "marta"]
    assert scene.transcript[0].speaker == "Ayla" and scene.transcript[1].speaker == "Brom Ironhand"
    assert {m.member_id: m.lines for m in scene.members} == {"brom": 1, "marta": 2, "lysander": 1}


def test_banter_streams_each_line_with_its_speaker(npc):
    new_scene(npc, "banter")
    Lines(npc.scene_say("banter", "Brom, tell Marta about the sword.", **SHORT))
    said = Lines(npc.scene_continue("banter", 4, **SHORT))
    assert len(said.lines) == 4
    assert all(a != b for a, b in zip(["brom", *said.speakers], said.speakers))  # never the one who spoke last
    # Brom answered the player alone (the first member named); his line named nobody and
    # answered no member, so the member the player's line also named goes next
    assert said.speakers[0] == "marta"
    assert npc.get_scene("banter").lines == 2 + 4


def test_cancel_ends_banter_at_the_next_step(npc):
    new_scene(npc, "cancel")
    call = npc.scene_continue("cancel", 5, interaction_id="table-talk", timeout=120, **LONG)
    events = [next(call)]
    assert events[0].HasField("delta")
    assert npc.cancel("table-talk") is True
    said = Lines(events + list(call))
    assert len(said.lines) == 1
    speaker, text, done = said.lines[0]
    assert done.finish_reason == pb.FINISH_REASON_CANCELLED and done.usage.completion_tokens < LONG["max_new_tokens"]
    scene = npc.get_scene("cancel", include_transcript=True)
    assert [(x.speaker_id, x.text) for x in scene.transcript] == [(speaker, text)]  # the partial line was heard
    assert rpc_error(npc.cancel, "table-talk").code() == grpc.StatusCode.NOT_FOUND


def test_a_new_player_line_interrupts_banter(npc):
    new_scene(npc, "interrupt")
    call = npc.scene_continue("interrupt", 5, timeout=120, **LONG)
    events = [next(call)]
    rest = []
    reader = threading.Thread(target=lambda: rest.extend(call))
    reader.start()
    said = Lines(npc.scene_say("interrupt", "Enough! Lysander, a word.", timeout=120, **SHORT))
    reader.join(120)
    banter = Lines(events + rest)
    assert len(banter.lines) == 1 and banter.lines[0][2].finish_reason == pb.FINISH_REASON_CANCELLED
    assert said.speakers == ["lysander"]
    transcript = npc.get_scene("interrupt", include_transcript=True).transcript
    assert [x.speaker_id for x in transcript][-2:] == ["player", "lysander"]


def test_join_and_leave(npc):
    new_scene(npc, "door")
    scene = npc.join_scene("door", {"character_id": "pip"})
    assert [m.member_id for m in scene.members] == [*TRIO, "pip"]
    assert rpc_error(npc.join_scene, "door", "pip").code() == grpc.StatusCode.ALREADY_EXISTS
    scene = npc.leave_scene("door", "marta")
    assert [m.member_id for m in scene.members] == ["brom", "lysander", "pip"]
    exc = rpc_error(npc.scene_say, "door", "Marta?", member_ids=["marta"], **SHORT)
    assert exc.code() == grpc.StatusCode.NOT_FOUND and "marta" in exc.details()
    assert rpc_error(npc.leave_scene, "door", "marta").code() == grpc.StatusCode.NOT_FOUND
    assert Lines(npc.scene_say("door", "Pip, hello!", **SHORT)).speakers == ["pip"]


def test_empty_scene_is_failed_precondition(npc):
    npc.create_scene("empty")
    exc = rpc_error(npc.scene_say, "empty", "Anyone here?", **SHORT)
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "no members" in exc.details()
    npc.join_scene("empty", "brom")
    exc = rpc_error(npc.scene_continue, "empty", 2, **SHORT)
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "banter needs two" in exc.details()
    assert npc.get_scene("empty").lines == 0  # nothing was recorded


def test_bad_vectors_name_the_member_and_field(npc):
    new_scene(npc, "vectors")
    exc = rpc_error(npc.join_scene, "vectors", {"character_id": "pip", "attributes": {"humor": 9}})
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pip'" in exc.details() and "attributes.humor = 9 is outside 0..4" in exc.details()
    exc = rpc_error(npc.steer_member, "vectors", "marta", attributes={"wit": 2})
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "member 'marta'" in exc.details() and "attributes.wit" in exc.details()
    exc = rpc_error(npc.scene_say, "vectors", "Brom?", attributes={"humor": 9}, **SHORT)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "member 'brom'" in exc.details() and "humor = 9" in exc.details()
    assert npc.get_scene("vectors").lines == 0  # the refused line is not kept
    exc = rpc_error(npc.scene_continue, "vectors", 0)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "turns = 0" in exc.details()
    assert rpc_error(npc.steer_member, "vectors", "nobody", mood="angry").code() == grpc.StatusCode.NOT_FOUND


def test_steer_works_on_one_member(npc):
    new_scene(npc, "steer")
    brom = persona("brom")
    mood = sorted(brom.moods)[0]
    answer = npc.steer_member("steer", "brom", mood=mood, attributes={"verbosity": 4})
    assert answer.session_id == "steer" and answer.character_id == "brom"
    want = brom.resolve(mood=mood, steer={"verbosity": 4})
    assert dict(answer.attributes) == want
    said = Lines(npc.scene_say("steer", "You two?", member_ids=["brom", "marta"], **SHORT))
    assert said.speakers == ["brom", "marta"]
    assert dict(said.lines[0][2].attributes) == want
    assert dict(said.lines[1][2].attributes) == persona("marta").resolve()  # the others are not steered


def test_each_member_reuses_its_kv_over_the_wire(npc):
    new_scene(npc, "kv")
    first = Lines(npc.scene_say("kv", "Brom, a sword?", **SHORT)).lines[0][2]
    Lines(npc.scene_say("kv", "Marta, a room?", **SHORT))
    second = Lines(npc.scene_say("kv", "Brom, how much?", **SHORT)).lines[0][2]
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert second.usage.cached_tokens >= first.usage.prompt_tokens - 2


def test_export_and_import_round_trip(npc):
    new_scene(npc, "save")
    npc.steer_member("save", "lysander", attributes={"humor": 4})
    Lines(npc.scene_say("save", "Evening!", member_ids=["brom", "marta"], **SHORT))
    npc.leave_scene("save", "marta")
    data = npc.export_scene("save")
    before = npc.get_scene("save", include_transcript=True)
    npc.delete_scene("save")
    assert rpc_error(npc.get_scene, "save").code() == grpc.StatusCode.NOT_FOUND
    after = npc.import_scene(data)
    assert after == npc.get_scene("save") and npc.get_scene("save", include_transcript=True) == before
    assert npc.export_scene("save") == data
    assert Lines(npc.scene_say("save", "Lysander?", **SHORT)).speakers == ["lysander"]  # it goes on


def test_old_session_snapshot_imports_as_a_scene(npc):
    npc.create_session("brom", session_id="old-save", player_name="Ayla", mood="angry")
    npc.reply("old-save", "Fix my sword?", **SHORT)
    scene = npc.import_scene(npc.export_session("old-save"))
    assert scene.scene_id == "old-save" and [m.member_id for m in scene.members] == ["brom"]
    assert scene.members[0].name == "Brom Ironhand" and scene.members[0].mood == "angry"
    transcript = npc.get_scene("old-save", include_transcript=True).transcript
    assert [(x.speaker_id, x.speaker) for x in transcript] == [("player", "Ayla"), ("brom", "Brom Ironhand")]
    assert import_scene(npc.export_scene("old-save")).seed == scene.seed != 0
    assert Lines(npc.scene_say("old-save", "Well?", **SHORT)).speakers == ["brom"]


def test_bad_scene_snapshots_are_invalid_argument(npc):
    exc = rpc_error(npc.import_scene, b"\x81\xa6format\xadsteernpc.scene")
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "snapshot:" in exc.details()
    new_scene(npc, "tamper")
    import msgpack

    d = msgpack.unpackb(npc.export_scene("tamper"))
    d["members"][0]["steer"] = {"humor": 99}
    exc = rpc_error(npc.import_scene, msgpack.packb(d))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "members[brom]" in exc.details() and "humor" in exc.details()
    d["members"][0].update(character_id="nobody", steer={})
    assert rpc_error(npc.import_scene, msgpack.packb(d)).code() == grpc.StatusCode.NOT_FOUND
