"""Every unary RPC of steernpc.v1.NpcService against one real server, plus health,
reflection, and the statuses a client gets for what it sent wrong."""

from __future__ import annotations

import grpc
import msgpack
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_harness import SAMPLE_PERSONAS, SERVICE, rpc_error, say

from steernpc.persona import load_persona
from steernpc.sessions import import_snapshot
from steernpc.wire import pb, pb_grpc

PERSONAS = {p.id: p for p in (load_persona(f) for f in sorted(SAMPLE_PERSONAS.glob("*.yaml")))}
# Values come from the sample personas themselves, so that tuning a sample never breaks a test.
BROM = PERSONAS["brom"]
MOOD_1, MOOD_2 = sorted(BROM.moods)[:2]
HUMOR = BROM.schema["humor"]


@pytest.fixture(scope="module")
def server(launch):
    return launch("rpcs")


def code_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    exc = rpc_error(fn, *args, **kwargs)
    return exc.code(), exc.details()


# -- health and reflection ------------------------------------------------------------------------

def test_health_reports_serving_for_server_and_service(server):
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        exc = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert exc.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_npc_service(server):
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert SERVICE in names and "grpc.health.v1.Health" in names
        # and it can describe the service's file (what grpcurl needs)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
        answers = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert answers[0].file_descriptor_response.file_descriptor_proto, answers[0]


# -- characters -------------------------------------------------------------------------------------

def test_list_characters_serves_every_sample_persona(npc):
    characters = {c.id: c for c in npc.list_characters()}
    assert set(characters) == set(PERSONAS)
    for cid, persona in PERSONAS.items():
        c = characters[cid]
        assert (c.name, c.role, c.greeting) == (persona.name, persona.role, persona.greeting)
        assert dict(c.attributes) == persona.resolve()
        assert list(c.moods) == sorted(persona.moods)
        assert [s.name for s in c.schema] == persona.schema.names
        assert dict(c.limits) == {k: f"{lo}..{hi}" for k, (lo, hi) in persona.limits.items()}
    limited = [c for c in characters.values() if c.limits]
    assert limited, "the samples include characters with limits"
    for spec in characters["brom"].schema:
        want = PERSONAS["brom"].schema[spec.name]
        assert (spec.min, spec.max, spec.default_value, spec.description) == (want.min, want.max, want.default, want.description)


def test_get_character_and_unknown_character_is_not_found(npc):
    brom = npc.get_character("brom")
    assert brom.id == "brom" and brom.name == PERSONAS["brom"].name and set(brom.moods) == set(PERSONAS["brom"].moods)
    assert dict(brom.attributes) == PERSONAS["brom"].resolve()
    code, message = code_of(npc.get_character, "nobody")
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'nobody'" in message and "brom" in message  # says what exists
    code, message = code_of(npc.get_character, "")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "character_id" in message


# -- sessions -----------------------------------------------------------------------------------------

def test_create_session_with_client_chosen_id_and_duplicate_is_already_exists(npc):
    s = npc.create_session("brom", session_id="save-slot-1", mood=MOOD_1, attributes={"humor": 2}, player_name="Ada")
    assert (s.session_id, s.character_id, s.mood, s.turns) == ("save-slot-1", "brom", MOOD_1, 0)
    assert dict(s.attributes) == BROM.resolve(mood=MOOD_1, steer={"humor": 2})
    code, message = code_of(npc.create_session, "pip", session_id="save-slot-1")
    assert code == grpc.StatusCode.ALREADY_EXISTS and "save-slot-1" in message
    assert npc.get_session("save-slot-1").character_id == "brom"  # the first one is untouched


def test_create_session_without_id_gets_a_fresh_one(npc):
    a, b = npc.create_session("pip"), npc.create_session("pip")
    assert a.session_id and b.session_id and a.session_id != b.session_id
    assert dict(a.attributes) == PERSONAS["pip"].resolve()


def test_create_session_for_unknown_character_is_not_found(npc):
    code, message = code_of(npc.create_session, "nobody", session_id="never")
    assert code == grpc.StatusCode.NOT_FOUND and "nobody" in message
    assert code_of(npc.get_session, "never")[0] == grpc.StatusCode.NOT_FOUND


def test_get_session_and_unknown_session_is_not_found(npc):
    created = npc.create_session("hilde", session_id="get-me", mood=sorted(PERSONAS["hilde"].moods)[0])
    got = npc.get_session("get-me")
    assert got == created
    code, message = code_of(npc.get_session, "no-such-session")
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-session" in message


def test_delete_session(npc):
    npc.create_session("marta", session_id="to-delete")
    npc.delete_session("to-delete")
    assert code_of(npc.get_session, "to-delete")[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(npc.delete_session, "to-delete")[0] == grpc.StatusCode.NOT_FOUND
    npc.create_session("marta", session_id="to-delete")  # the id is free again


def test_steer_mood_attributes_and_clear(npc):
    persona = PERSONAS["brom"]
    npc.create_session("brom", session_id="steered")
    s = npc.steer("steered", mood=MOOD_1)
    assert s.mood == MOOD_1 and dict(s.attributes) == persona.resolve(mood=MOOD_1)
    s = npc.steer("steered", attributes={"verbosity": 0, "friendliness": 4})
    assert s.mood == MOOD_1  # attributes alone keep the mood
    assert dict(s.attributes) == persona.resolve(mood=MOOD_1, steer={"verbosity": 0, "friendliness": 4})
    s = npc.steer("steered", attributes={"humor": 4})  # merged into the earlier steer
    assert dict(s.attributes) == persona.resolve(mood=MOOD_1, steer={"verbosity": 0, "friendliness": 4, "humor": 4})
    assert npc.get_session("steered") == s  # persisted
    s = npc.steer("steered", clear=True)
    assert s.mood == "" and dict(s.attributes) == persona.resolve()
    s = npc.steer("steered", mood=MOOD_2, attributes={"humor": 3}, clear=True)
    assert s.mood == MOOD_2 and dict(s.attributes) == persona.resolve(mood=MOOD_2, steer={"humor": 3})
    code, _ = code_of(npc.steer, "no-such-session", mood=MOOD_1)
    assert code == grpc.StatusCode.NOT_FOUND


# -- INVALID_ARGUMENT ----------------------------------------------------------------------------------

def test_unknown_attribute_is_invalid_argument_naming_it(npc):
    npc.create_session("pip", session_id="attr-check")
    for call in (
        lambda: npc.create_session("pip", attributes={"charisma": 2}),
        lambda: npc.steer("attr-check", attributes={"charisma": 2}),
        lambda: npc.say_events("attr-check", "hello", attributes={"charisma": 2}, max_new_tokens=4),
    ):
        code, message = code_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "attributes.charisma" in message and "unknown attribute" in message
        assert all(name in message for name in PERSONAS["pip"].schema.names)  # names what exists
    assert npc.get_session("attr-check").turns == 0


def test_unknown_mood_is_invalid_argument_listing_the_moods(npc):
    npc.create_session("pip", session_id="mood-check")
    for call in (lambda: npc.create_session("pip", mood="furious"), lambda: npc.steer("mood-check", mood="furious")):
        code, message = code_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "furious" in message and all(mood in message for mood in PERSONAS["pip"].moods)
    assert npc.get_session("mood-check").mood == ""


@pytest.mark.parametrize("value", [HUMOR.max + 1, HUMOR.min - 1, 99])
def test_value_outside_range_names_the_field_and_the_range(npc, value):
    sid = f"range-{value}"
    npc.create_session("brom", session_id=sid)
    for call in (
        lambda: npc.create_session("brom", attributes={"humor": value}),
        lambda: npc.steer(sid, attributes={"humor": value}),
        lambda: npc.say_events(sid, "hello", attributes={"humor": value}, max_new_tokens=4),
    ):
        code, message = code_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"attributes.humor = {value}" in message and HUMOR.range_text in message, message
        assert HUMOR.range_text == f"{HUMOR.min}..{HUMOR.max}"
    assert dict(npc.get_session(sid).attributes) == BROM.resolve()


def test_empty_text_is_invalid_argument(npc):
    npc.create_session("brom", session_id="silent")
    for text in ("", "   \n\t"):
        code, message = code_of(npc.say_events, "silent", text, max_new_tokens=4)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "text" in message
    assert npc.get_session("silent").turns == 0


def test_bad_generation_options_are_invalid_argument(npc):
    npc.create_session("brom", session_id="options")
    code, message = code_of(npc.say_events, "options", "hello", max_new_tokens=100000)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_new_tokens" in message
    code, message = code_of(npc.say_events, "options", "hello", max_new_tokens=4, top_p=1.5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_p" in message


def test_say_to_unknown_session_is_not_found(npc):
    code, message = code_of(npc.say_events, "no-such-session", "hello", max_new_tokens=4)
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-session" in message


# -- snapshots -------------------------------------------------------------------------------------------

def test_export_delete_import_continue(npc, stub):
    mood = sorted(PERSONAS["hilde"].moods)[-1]
    npc.create_session("hilde", session_id="saved-game", mood=mood, attributes={"humor": 4},
                       player_name="Ada", context={"quest": "lost ring"})  # fmt: skip
    first = say(stub, "saved-game", "Any news from the gate?", max_new_tokens=6, seed=1)
    data = npc.export_session("saved-game")
    snap = import_snapshot(data)  # a msgpack save game that steernpc can read back
    assert msgpack.unpackb(data)["format"] == "steernpc.session"
    assert (snap.session_id, snap.character_id, snap.mood, snap.steer) == ("saved-game", "hilde", mood, {"humor": 4})
    assert (snap.player_name, snap.context) == ("Ada", {"quest": "lost ring"})
    assert [(e.user, e.reply, e.labels) for e in snap.history] == [
        ("Any news from the gate?", first.done.text, dict(first.done.attributes))
    ]

    npc.delete_session("saved-game")
    assert code_of(npc.get_session, "saved-game")[0] == grpc.StatusCode.NOT_FOUND
    restored = npc.import_session(data)
    assert (restored.session_id, restored.mood, restored.turns) == ("saved-game", mood, 1)
    assert dict(restored.attributes) == PERSONAS["hilde"].resolve(mood=mood, steer={"humor": 4})

    second = say(stub, "saved-game", "And the mountain?", max_new_tokens=6, seed=2)
    assert dict(second.done.attributes) == dict(restored.attributes)
    history = import_snapshot(npc.export_session("saved-game")).history
    assert [e.user for e in history] == ["Any news from the gate?", "And the mountain?"]
    assert [e.reply for e in history] == [first.done.text, second.done.text]


def test_export_unknown_session_is_not_found(npc):
    assert code_of(npc.export_session, "no-such-session")[0] == grpc.StatusCode.NOT_FOUND


def test_corrupt_and_truncated_snapshots_are_invalid_argument(npc, stub):
    npc.create_session("brom", session_id="snap-src")
    say(stub, "snap-src", "Fix my sword.", max_new_tokens=6, seed=3)
    data = npc.export_session("snap-src")
    npc.delete_session("snap-src")
    cases = {
        "truncated": (data[: len(data) // 2], "truncated"),
        "not msgpack": (b"GIF89a not a snapshot", "not a session snapshot"),
        "empty": (b"", "empty snapshot"),
        "trailing bytes": (data + b"\x00\x01", "corrupt"),
        "wrong format": (msgpack.packb({"format": "other", "version": 1}), "format"),
        "unknown character": (data.replace(b"brom", b"brxm"), "brxm"),
    }
    for name, (blob, expected) in cases.items():
        code, message = code_of(npc.import_session, blob)
        want = grpc.StatusCode.NOT_FOUND if name == "unknown character" else grpc.StatusCode.INVALID_ARGUMENT
        assert code == want, (name, code, message)
        assert expected in message, (name, message)
    assert code_of(npc.get_session, "snap-src")[0] == grpc.StatusCode.NOT_FOUND  # nothing half-imported
    npc.import_session(data)  # the intact snapshot still imports
    assert npc.get_session("snap-src").turns == 1


def test_snapshot_with_out_of_range_steer_is_invalid_argument(npc):
    npc.create_session("brom", session_id="snap-steer", attributes={"humor": 2})
    raw = msgpack.unpackb(npc.export_session("snap-steer"))
    raw["steer"] = {"humor": 9}
    raw["session_id"] = "snap-steer-edited"
    code, message = code_of(npc.import_session, msgpack.packb(raw))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "steer.humor = 9" in message and HUMOR.range_text in message
    assert code_of(npc.get_session, "snap-steer-edited")[0] == grpc.StatusCode.NOT_FOUND


def test_raw_stub_unknown_interaction_cancel_is_not_found(server):
    with server.channel() as channel:
        stub = pb_grpc.NpcServiceStub(channel)
        exc = rpc_error(stub.Cancel, pb.CancelRequest(interaction_id="never-started"), timeout=10)
        assert exc.code() == grpc.StatusCode.NOT_FOUND and "never-started" in exc.details()
