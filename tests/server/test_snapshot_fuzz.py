"""ImportSession's property: any bytes either import into a session that a Say continues,
or are refused with INVALID_ARGUMENT (NOT_FOUND when they name a character this server
does not have), and a refused import stores nothing.

The bytes: random ones, real snapshots bit-flipped and cut short, and msgpack maps shaped
like snapshots whose every field may be hostile (labels out of range, partial or unknown,
unknown moods, wrong types, huge values, newer versions).
"""

from __future__ import annotations

import grpc
import msgpack
import pytest
from hostile import DEADLINE, FUZZ, assert_continues, assert_status, int32
from hostile import text_in_a_message as text
from hypothesis import event, given, settings
from hypothesis import strategies as st

from steernpc.wire import pb

ALLOWED = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
SCHEMA = ("humor", "friendliness", "creativity", "verbosity")


@pytest.fixture(scope="module")
def server(launch):
    return launch("snapshots")


@pytest.fixture(scope="module")
def real_snapshot(stub) -> bytes:
    stub.CreateSession(pb.CreateSessionRequest(character_id="brom", session_id="snap-real", mood="angry",
                                               attributes={"humor": 3}, player_name="Ada", context={"quest": "ring"}),
                       timeout=DEADLINE)  # fmt: skip
    assert_continues(stub, "snap-real")
    assert_continues(stub, "snap-real")
    return stub.ExportSession(pb.ExportSessionRequest(session_id="snap-real"), timeout=DEADLINE).data


def flipped(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


msgpack_int = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
value = st.one_of(text, int32, msgpack_int, st.floats(), st.none(), st.booleans(), st.binary(max_size=8))
full_labels = st.fixed_dictionaries({name: st.integers(0, 4) for name in SCHEMA})
labels = st.one_of(
    full_labels,
    full_labels.map(lambda d: dict(list(d.items())[:2])),  # partial
    st.just({}),
    st.dictionaries(st.one_of(st.sampled_from(SCHEMA), text), st.one_of(msgpack_int, value), max_size=6),
    st.builds(lambda d, v: {**d, "humor": v}, full_labels, st.sampled_from([2**63, 2**64 - 1, -1, 5, 99])),
)
hostile_turn = st.one_of(
    st.fixed_dictionaries({"user": st.one_of(st.text(max_size=30), text), "reply": st.one_of(st.text(max_size=30), st.none(), text),
                           "labels": labels}),  # fmt: skip
    st.dictionaries(st.sampled_from(["user", "reply", "labels", "extra"]), value, max_size=4),
    value,
)
valid_turn = st.fixed_dictionaries({"user": st.text(max_size=30), "reply": st.one_of(st.text(max_size=30), st.none()), "labels": full_labels})
VALID_FIELDS = {
    "format": st.just("steernpc.session"),
    "version": st.just(1),
    "character_id": st.sampled_from(["brom", "hilde"]),
    "session_id": st.builds(lambda n: f"snap-{n}", st.integers(0, 10**6)),
    "mood": st.sampled_from(["", "angry", "drunk"]),
    "steer": st.dictionaries(st.sampled_from(SCHEMA), st.integers(0, 4), max_size=2),
    "player_name": st.text(max_size=20),
    "context": st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
    "history": st.lists(valid_turn, max_size=4),
    "created_at": st.just(1.7e9),
    "updated_at": st.just(1.7e9),
}
HOSTILE_FIELDS = {
    "format": st.one_of(text, value),
    "version": st.one_of(st.sampled_from([0, 2, 2**63]), value),
    "character_id": st.one_of(text, value),
    "session_id": st.one_of(text, value),
    "mood": st.one_of(text, value),
    "steer": st.one_of(st.dictionaries(st.one_of(st.sampled_from(SCHEMA), text), st.one_of(msgpack_int, value), max_size=3), value),
    "player_name": st.one_of(text, value),
    "context": st.one_of(st.dictionaries(text, st.one_of(text, value), max_size=3), value),
    "history": st.one_of(st.lists(hostile_turn, min_size=1, max_size=4), value),
    "created_at": st.one_of(st.floats(), value),
    "updated_at": st.one_of(st.floats(), value),
    "extra": value,
}


@st.composite
def shaped(draw) -> bytes:
    """A valid snapshot with up to two fields made hostile (or dropped), so that every
    check is reached, not only the first."""
    snapshot = {name: draw(strategy) for name, strategy in VALID_FIELDS.items()}
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE_FIELDS)), max_size=2, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            snapshot.pop(name, None)
        else:
            snapshot[name] = draw(HOSTILE_FIELDS[name])
    return msgpack.packb(snapshot, use_bin_type=True)


def snapshot_bytes(real: bytes):
    return st.one_of(
        st.binary(max_size=128),
        st.builds(flipped, st.just(real), st.lists(st.integers(0, 8 * len(real)), min_size=1, max_size=4)),
        st.builds(lambda n: real[:n], st.integers(0, len(real) - 1)),
        shaped(),
        shaped(),  # twice: half the examples
    )


# More examples than the per-RPC fuzz: this is the one test that reads whole save files.
SNAPSHOT_FUZZ = settings(FUZZ, max_examples=80)


def named_session(data: bytes) -> str | None:
    """The session id that `data` names, if it decodes that far."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    session_id = obj.get("session_id") if isinstance(obj, dict) else None
    return session_id if isinstance(session_id, str) else None


def test_any_bytes_import_into_a_session_that_continues_or_are_refused(stub, real_snapshot):
    imported = {"snap-real"}

    @SNAPSHOT_FUZZ
    @given(data=snapshot_bytes(real_snapshot))
    def run(data):
        try:
            session = stub.ImportSession(pb.ImportSessionRequest(data=data), timeout=DEADLINE)
        except grpc.RpcError as exc:
            assert_status("ImportSession", exc.code(), exc.details() or "")
            assert exc.code() in ALLOWED, (exc.code(), exc.details())
            event(f"refused: {exc.code().name}")  # --hypothesis-show-statistics
            session_id = named_session(data)
            if session_id and session_id not in imported:  # a refused import stores nothing
                try:
                    stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=DEADLINE)
                    raise AssertionError(f"refused snapshot stored session {session_id[:40]!r}")
                except grpc.RpcError as missing:
                    assert missing.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), missing
            return
        imported.add(session.session_id)
        event("imported")
        assert_continues(stub, session.session_id)
        again = stub.GetSession(pb.GetSessionRequest(session_id=session.session_id), timeout=DEADLINE)
        assert again.turns == session.turns + 1

    run()
