"""Checks on what a client sends, before any handler acts on it: one place for every RPC.

    check_request(message)         a steernpc.v1 request's sizes (steernpc.limits), by type
    check_session_sizes(session)   a session's sizes (an imported save file: before anything
                                   else, even the character lookup)
    check_session(session, p)      a session against its character: mood, steer and every
                                   turn's labels

Both raise LimitError / InvalidAttribute (ValueErrors) whose message names the field as
the caller sent it; a front end (the gRPC servicer, an HTTP gateway) answers
INVALID_ARGUMENT with it unchanged. Names and ranges of attributes are the persona's
schema's to check (they need the character); sizes are checked here, first, so that no
later message echoes an unbounded value.
"""

from __future__ import annotations

from steernpc.attributes import InvalidAttribute
from steernpc.limits import (
    MAX_HISTORY_TURNS,
    MAX_ID,
    MAX_NAME,
    MAX_REPLY,
    MAX_SNAPSHOT_BYTES,
    MAX_TEXT,
    LimitError,
    check_attribute_map,
    check_context,
    check_length,
)
from steernpc.persona import Persona
from steernpc.sessions import Session
from steernpc.wire import pb


def _ids(message, *fields: str) -> None:
    for field in fields:
        check_length(field, getattr(message, field), MAX_ID)


def _create(m: pb.CreateSessionRequest) -> None:
    _ids(m, "character_id", "session_id")
    check_length("mood", m.mood, MAX_NAME)
    check_length("player_name", m.player_name, MAX_NAME)
    check_attribute_map("attributes", m.attributes)
    check_context("context", m.context)


def _steer(m: pb.SteerRequest) -> None:
    _ids(m, "session_id")
    check_length("mood", m.mood, MAX_NAME)
    check_attribute_map("attributes", m.attributes)


def _say(m: pb.SayRequest) -> None:
    _ids(m, "session_id", "interaction_id")
    check_length("text", m.text, MAX_TEXT)
    check_attribute_map("attributes", m.attributes)


def _import(m: pb.ImportSessionRequest) -> None:
    if len(m.data) > MAX_SNAPSHOT_BYTES:
        raise LimitError("data", f"data is too large: {len(m.data)} bytes (a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes)")


def _converse(m: pb.ConverseRequest) -> None:
    kind = m.WhichOneof("request")
    if kind is not None:
        check_request(getattr(m, kind))


_CHECKS = {
    pb.ListCharactersRequest: lambda m: None,
    pb.GetCharacterRequest: lambda m: _ids(m, "character_id"),
    pb.CreateSessionRequest: _create,
    pb.GetSessionRequest: lambda m: _ids(m, "session_id"),
    pb.DeleteSessionRequest: lambda m: _ids(m, "session_id"),
    pb.ExportSessionRequest: lambda m: _ids(m, "session_id"),
    pb.SteerRequest: _steer,
    pb.SayRequest: _say,
    pb.CancelRequest: lambda m: _ids(m, "interaction_id"),
    pb.ImportSessionRequest: _import,
    pb.ConverseRequest: _converse,
}


def check_request(message) -> None:
    """Raise LimitError if any field of a steernpc.v1 request is over its limit."""
    try:
        check = _CHECKS[type(message)]
    except KeyError:
        raise TypeError(f"no checks for {type(message).__name__}") from None
    check(message)


def check_session_sizes(session: Session) -> None:
    """Raise LimitError naming the first field of `session` over its limit."""
    check_length("session_id", session.session_id, MAX_ID)
    check_length("character_id", session.character_id, MAX_ID)
    check_length("mood", session.mood, MAX_NAME)
    check_length("player_name", session.player_name, MAX_NAME)
    check_attribute_map("steer", session.steer)
    check_context("context", session.context)
    if len(session.history) > MAX_HISTORY_TURNS:
        raise LimitError("history", f"history has {len(session.history)} turns (at most {MAX_HISTORY_TURNS})")
    for i, exchange in enumerate(session.history):
        check_length(f"history[{i}].user", exchange.user, MAX_TEXT)
        check_length(f"history[{i}].reply", exchange.reply or "", MAX_REPLY)
        check_attribute_map(f"history[{i}].labels", exchange.labels)


def check_session(session: Session, persona: Persona, where: str = "") -> dict[str, int]:
    """Check that `session` can be continued by `persona`: its mood and steer resolve, and
    every turn's labels are a complete vector of the persona's schema, in range (a reply's
    labels are replayed in later prompts, so a partial or unknown one would break every
    later turn). Return the session's resolved vector. (Sizes: check_session_sizes.)

    No repair: a session that fails is refused whole, naming the first bad field."""
    vector = persona.resolve(mood=session.mood or None, steer=session.steer)
    schema = persona.schema
    for i, exchange in enumerate(session.history):
        field = f"{where}history[{i}].labels"
        schema.check_vector(exchange.labels, field)
        missing = [name for name in schema.names if name not in exchange.labels]
        if missing:
            raise InvalidAttribute(field, f"{field} is missing {', '.join(missing)} (a turn's labels name every attribute of schema {schema.name!r})")
    return vector
