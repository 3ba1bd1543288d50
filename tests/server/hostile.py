"""What the hostile-input suites share: Hypothesis strategies for valid-but-hostile field
values and messages, raw calls with identity serializers, and the checks every call must
pass (a status within the deadline, never UNKNOWN or INTERNAL, the server still answers).
"""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from server_harness import SERVICE

from steernpc.limits import MAX_CONTEXT_VALUE, MAX_ID, MAX_NAME, MAX_TEXT
from steernpc.wire import pb

DEADLINE = 30.0  # every call must end with a status within this (2 busy cores, tiny model)
NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED)

# Bounded and deterministic: the same examples on every run, no per-example time limit
# (a shared CI machine is slow at times), few enough that a suite takes a minute or two.
FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

METHODS = {  # method -> (request class, request streaming, response streaming)
    "ListCharacters": (pb.ListCharactersRequest, False, False),
    "GetCharacter": (pb.GetCharacterRequest, False, False),
    "CreateSession": (pb.CreateSessionRequest, False, False),
    "GetSession": (pb.GetSessionRequest, False, False),
    "DeleteSession": (pb.DeleteSessionRequest, False, False),
    "Steer": (pb.SteerRequest, False, False),
    "Say": (pb.SayRequest, False, True),
    "Converse": (pb.ConverseRequest, True, True),
    "Cancel": (pb.CancelRequest, False, False),
    "ExportSession": (pb.ExportSessionRequest, False, False),
    "ImportSession": (pb.ImportSessionRequest, False, False),
}

# -- field values ------------------------------------------------------------------------------

# Any code point UTF-8 can carry (protobuf strings are UTF-8): controls, NUL, RTL marks,
# combining marks, emoji, private use.
char = st.characters(exclude_categories=("Cs",))
# Sizes around every limit and far beyond it, built by repetition (drawing a 1 MB string
# character by character would be slow).
SIZES = (0, 1, MAX_NAME, MAX_NAME + 1, MAX_ID, MAX_ID + 1, MAX_CONTEXT_VALUE + 1, MAX_TEXT, MAX_TEXT + 1, 100_000, 1_000_000)
long_text = st.builds(lambda c, n: c * n, char, st.sampled_from(SIZES))
text = st.one_of(st.text(char, max_size=40), long_text)
# Within one gRPC message even 4 bytes a character, several in one message (a bigger
# message is refused by gRPC itself, RESOURCE_EXHAUSTED, before any handler runs).
text_in_a_message = st.one_of(
    st.text(char, max_size=40), st.builds(lambda c, n: c * n, char, st.sampled_from([s for s in SIZES if s <= 100_000]))
)
int32 = st.one_of(st.sampled_from([-(2**31), -1, 0, 1, 4, 5, 99, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
uint64 = st.integers(0, 2**64 - 1)
float32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
ATTRIBUTE_NAMES = ("humor", "friendliness", "creativity", "verbosity")
attribute_name = st.one_of(st.sampled_from(ATTRIBUTE_NAMES), text)


def many_keys(value):
    """Maps with thousands of keys."""
    return st.builds(lambda n, v: {f"k{i}": v for i in range(n)}, st.sampled_from([33, 2000, 5000]), value)


attributes = st.one_of(st.dictionaries(attribute_name, int32, max_size=5), many_keys(int32))
context = st.one_of(st.dictionaries(text, text, max_size=4), many_keys(text))

# Generation options that are cheap when valid: at most 2 new tokens.
options = st.builds(
    pb.GenerationOptions,
    max_new_tokens=st.sampled_from([-(2**31), -1, 1, 2, 4097, 2**31 - 1]),
    temperature=float32,
    top_p=float32,
    top_k=int32,
    seed=uint64,
)


def ids(*known: str):
    """An id: one that exists (so the call gets past the lookup) or a hostile one."""
    return st.one_of(st.sampled_from(known), text) if known else text


# -- calls ------------------------------------------------------------------------------------------

def identity(data: bytes) -> bytes:
    return data


def raw_call(channel, method: str, payload):
    """Call `method` with raw bytes (for Converse: a list of frames) through a generic call;
    return (code, details, response frames)."""
    _, request_streaming, response_streaming = METHODS[method]
    path = f"/{SERVICE}/{method}"
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, True): channel.stream_stream}[(request_streaming, response_streaming)]  # fmt: skip
    call = kind(path, request_serializer=identity, response_deserializer=identity)
    try:
        if request_streaming:
            answers = list(call(iter(payload), timeout=DEADLINE))
        elif response_streaming:
            answers = list(call(payload, timeout=DEADLINE))
        else:
            answers = [call(payload, timeout=DEADLINE)]
        return grpc.StatusCode.OK, "", answers
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def typed_call(stub, method: str, message):
    """Call `method` with a protobuf message; return (code, details, responses)."""
    fn = getattr(stub, method)
    try:
        if method == "Converse":
            answers = list(fn(iter(message), timeout=DEADLINE))
        elif method == "Say":
            answers = list(fn(message, timeout=DEADLINE))
        else:
            answers = [fn(message, timeout=DEADLINE)]
        return grpc.StatusCode.OK, "", answers
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def assert_status(where: str, code: grpc.StatusCode, details: str) -> None:
    assert code not in NEVER, f"{where}: {code.name} {details[:500]!r}"
    assert len(details) < 2000, f"{where}: a {len(details)}-character status message echoes the request"


def assert_continues(stub, session_id: str) -> pb.ReplyDone:
    """A normal Say on `session_id` ends with a done event."""
    events = list(stub.Say(pb.SayRequest(session_id=session_id, text="Hello there.",
                                         options=pb.GenerationOptions(max_new_tokens=1, seed=1)), timeout=DEADLINE))  # fmt: skip
    assert events and events[-1].HasField("done"), events
    return events[-1].done
