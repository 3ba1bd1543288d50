"""Fuzz every RPC of one real server: valid-but-hostile messages (sizes around and far past
every limit, any Unicode, NaN and infinities, int32 extremes, maps with thousands of keys)
and raw bytes that are not protobuf, Converse included. Every call must end with a status
within the deadline, never UNKNOWN or INTERNAL, with a short message; afterwards the server
still answers a normal Say and the session under attack can still be continued.

Bounded (hostile.FUZZ: derandomized, a fixed number of examples per test).
"""

from __future__ import annotations

import grpc
import pytest
from hostile import (
    FUZZ,
    METHODS,
    assert_continues,
    assert_status,
    attributes,
    context,
    ids,
    options,
    raw_call,
    text,
    typed_call,
)
from hypothesis import given
from hypothesis import strategies as st

from steernpc.wire import pb

TARGET = "fuzz-target"  # the session hostile calls aim at; it must stay usable
MOODS = ("friendly", "angry", "drunk")  # brom's
mood = st.one_of(st.sampled_from(("",) + MOODS), text)


@pytest.fixture(scope="module")
def server(launch):
    return launch("fuzz")


@pytest.fixture(scope="module")
def target(stub):
    stub.CreateSession(pb.CreateSessionRequest(character_id="brom", session_id=TARGET), timeout=30)
    assert_continues(stub, TARGET)
    yield TARGET
    assert_continues(stub, TARGET)


def check(stub, method: str, code, details: str) -> None:
    assert_status(method, code, details)
    assert_continues(stub, TARGET)


# -- valid protobuf, hostile values -----------------------------------------------------------------

say_message = st.builds(pb.SayRequest, session_id=ids(TARGET), text=text, attributes=attributes, options=options,
                        interaction_id=st.one_of(st.just(""), text))  # fmt: skip
steer_message = st.builds(pb.SteerRequest, session_id=ids(TARGET), mood=mood, attributes=attributes, clear=st.booleans())
cancel_message = st.builds(pb.CancelRequest, interaction_id=text)
converse_frame = st.one_of(
    st.builds(pb.ConverseRequest, say=say_message),
    st.builds(pb.ConverseRequest, steer=steer_message),
    st.builds(pb.ConverseRequest, cancel=cancel_message),
    st.just(pb.ConverseRequest()),
)

MESSAGES = {
    "ListCharacters": st.just(pb.ListCharactersRequest()),
    "GetCharacter": st.builds(pb.GetCharacterRequest, character_id=ids("brom")),
    "CreateSession": st.builds(pb.CreateSessionRequest, character_id=ids("brom"), session_id=st.one_of(st.just(""), text),
                               mood=mood, attributes=attributes, player_name=text, context=context),  # fmt: skip
    "GetSession": st.builds(pb.GetSessionRequest, session_id=ids(TARGET)),
    "DeleteSession": st.builds(pb.DeleteSessionRequest, session_id=text),  # never the target
    "Steer": steer_message,
    "Say": say_message,
    "Converse": st.lists(converse_frame, min_size=1, max_size=3),
    "Cancel": cancel_message,
    "ExportSession": st.builds(pb.ExportSessionRequest, session_id=ids(TARGET)),
    "ImportSession": st.builds(pb.ImportSessionRequest, data=st.one_of(st.binary(max_size=256), st.builds(lambda n: b"\x80" * n, st.sampled_from([2, 1 << 20])))),
}


@pytest.mark.parametrize("method", sorted(MESSAGES))
def test_hostile_messages_get_a_status_and_leave_the_server_serving(stub, target, method):
    @FUZZ
    @given(message=MESSAGES[method])
    def run(message):
        code, details, answers = typed_call(stub, method, message)
        check(stub, method, code, details)
        if method == "CreateSession" and code == grpc.StatusCode.OK:
            created = answers[0].session_id  # a session it accepted can be continued
            assert_continues(stub, created)
            stub.DeleteSession(pb.DeleteSessionRequest(session_id=created), timeout=30)
        if method == "ImportSession" and code == grpc.StatusCode.OK:
            assert_continues(stub, answers[0].session_id)

    run()


# -- bytes that are not (or not quite) protobuf ---------------------------------------------------------

# Valid requests whose bit flips are fuzzed; their ids are not the target's (a flip could
# turn a long reply on, and Converse/Say on an unknown session stays cheap).
VALID = {
    "ListCharacters": pb.ListCharactersRequest(),
    "GetCharacter": pb.GetCharacterRequest(character_id="brom"),
    "CreateSession": pb.CreateSessionRequest(character_id="brom", session_id="fuzz-raw", mood="angry",
                                             attributes={"humor": 3}, player_name="Ada", context={"quest": "ring"}),  # fmt: skip
    "GetSession": pb.GetSessionRequest(session_id="fuzz-raw"),
    "DeleteSession": pb.DeleteSessionRequest(session_id="fuzz-raw"),
    "Steer": pb.SteerRequest(session_id="fuzz-raw", mood="drunk", attributes={"humor": 2}),
    "Say": pb.SayRequest(session_id="nobody", text="Hello", options=pb.GenerationOptions(max_new_tokens=1)),
    "Converse": pb.ConverseRequest(say=pb.SayRequest(session_id="nobody", text="Hi", options=pb.GenerationOptions(max_new_tokens=1))),
    "Cancel": pb.CancelRequest(interaction_id="some-interaction"),
    "ExportSession": pb.ExportSessionRequest(session_id="fuzz-raw"),
    "ImportSession": pb.ImportSessionRequest(data=b"\x81\xa6format\xb0steernpc.session"),
}
assert set(VALID) == set(METHODS) == set(MESSAGES)


def flipped(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        if out:
            out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


def raw_bytes(method: str):
    valid = VALID[method].SerializeToString()
    return st.one_of(
        st.binary(min_size=1, max_size=64),
        st.sampled_from([b"\xfe", b"\x99", bytes.fromhex("0a02c080"), b"\x0a\x05\x12\x03\xff\xfe\xfd", b"\x0a\xff\xff\xff\xff\x0f"]),
        st.builds(flipped, st.just(valid), st.lists(st.integers(0, 8 * max(1, len(valid))), min_size=1, max_size=3)),
        st.builds(lambda n: valid[:n], st.integers(0, max(0, len(valid) - 1))),
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_malformed_bytes_get_a_status_and_leave_the_server_serving(server, stub, target, method):
    request_streaming = METHODS[method][1]
    with server.channel() as channel:

        @FUZZ
        @given(data=raw_bytes(method))
        def run(data):
            payload = [data] if request_streaming else data
            code, details, _ = raw_call(channel, method, payload)
            check(stub, method, code, details)

        run()
