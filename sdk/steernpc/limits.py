"""The documented size limit of every field a client can send, and the checks that enforce
them. Transport-neutral: the gRPC server (steernpc.validation) and the snapshot reader
use them, and so can any other front end.

A limit counts characters (Python str length) for text and entries for maps; snapshots
count bytes. README.md's "Limits" table lists the same numbers (a test keeps them equal).
"""

from __future__ import annotations

from typing import Any, Mapping

MAX_ID = 128  # session_id, character_id, interaction_id
MAX_NAME = 64  # mood, player_name, attribute names
MAX_ATTRIBUTES = 32  # entries in an attribute map (request attributes, steer, labels)
MAX_CONTEXT_ENTRIES = 16  # entries in a session's context map
MAX_CONTEXT_KEY = 64
MAX_CONTEXT_VALUE = 256
MAX_TEXT = 2000  # the player's line (SayRequest.text); also each stored player line
MAX_REPLY = 65536  # each stored reply (4096 tokens at most, 16 characters per token)
MAX_HISTORY_TURNS = 1000  # exchanges a session keeps (the oldest drop first)
MAX_SNAPSHOT_BYTES = 1 << 20  # ImportSession / ImportScene data, and what a stored session or scene may grow to
MAX_MEMBERS = 8  # members of one scene (CreateScene members, JoinScene, SceneSay member_ids)
MAX_SCENE_LINES = 2 * MAX_HISTORY_TURNS  # lines a scene keeps (the oldest drop first)
MAX_CONTINUE_TURNS = 32  # lines one SceneContinue may ask for
# The server's largest incoming message: a full snapshot plus the protobuf framing.
MAX_MESSAGE_BYTES = MAX_SNAPSHOT_BYTES + (64 << 10)
# The HTTP gateway's largest request body: a full snapshot in base64 plus the JSON around it.
MAX_HTTP_BODY = (MAX_SNAPSHOT_BYTES * 4) // 3 + (64 << 10)
MAX_PERSONA_FILE = 256 << 10  # a persona YAML the studio's editor reads or saves

# field -> (limit, unit), for the README table and its test.
LIMITS: dict[str, tuple[int, str]] = {
    "session_id, character_id, interaction_id": (MAX_ID, "characters"),
    "mood, player_name, attribute names": (MAX_NAME, "characters"),
    "attributes (every attribute map)": (MAX_ATTRIBUTES, "entries"),
    "context": (MAX_CONTEXT_ENTRIES, "entries"),
    "context key": (MAX_CONTEXT_KEY, "characters"),
    "context value": (MAX_CONTEXT_VALUE, "characters"),
    "text (the player's line)": (MAX_TEXT, "characters"),
    "reply (stored)": (MAX_REPLY, "characters"),
    "history (stored turns)": (MAX_HISTORY_TURNS, "exchanges"),
    "snapshot (ImportSession data, stored session)": (MAX_SNAPSHOT_BYTES, "bytes"),
    "scene members": (MAX_MEMBERS, "members"),
    "scene transcript (stored lines)": (MAX_SCENE_LINES, "lines"),
    "SceneContinue turns": (MAX_CONTINUE_TURNS, "lines"),
    "any gRPC message": (MAX_MESSAGE_BYTES, "bytes"),
    "any HTTP request body (the gateway)": (MAX_HTTP_BODY, "bytes"),
    "persona file (the studio's editor)": (MAX_PERSONA_FILE, "bytes"),
}

ECHO_CHARS = 40


class LimitError(ValueError):
    """A value over its limit; `field` names the field as the caller sent it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def echo(value: Any, chars: int = ECHO_CHARS) -> str:
    """A client's value for an error message: repr, cut to `chars` characters, so that a
    1 MB id never makes a 1 MB status message."""
    if isinstance(value, (str, bytes)) and len(value) > chars:
        return f"{value[:chars]!r}… ({len(value)} characters)"
    return repr(value)


def check_length(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise LimitError(field, f"{field} is too long: {len(value)} characters (at most {limit} characters)")
    return value


def check_entries(field: str, mapping: Mapping, limit: int) -> Mapping:
    if len(mapping) > limit:
        raise LimitError(field, f"{field} has {len(mapping)} entries (at most {limit})")
    return mapping


def check_attribute_map(field: str, mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """An attribute map's size and name lengths (names and ranges are the schema's job)."""
    check_entries(field, mapping, MAX_ATTRIBUTES)
    for name in mapping:
        if len(name) > MAX_NAME:
            raise LimitError(field, f"{field} names an attribute {echo(name)} longer than {MAX_NAME} characters")
    return mapping


def check_context(field: str, context: Mapping[str, str]) -> Mapping[str, str]:
    check_entries(field, context, MAX_CONTEXT_ENTRIES)
    for key, value in context.items():
        if not key:
            raise LimitError(field, f"{field} has an empty key")
        if len(key) > MAX_CONTEXT_KEY:
            raise LimitError(field, f"{field} key {echo(key)} is too long: {len(key)} characters (at most {MAX_CONTEXT_KEY} characters)")
        check_length(f"{field}[{echo(key)}]", value, MAX_CONTEXT_VALUE)
    return context
