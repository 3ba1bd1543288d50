"""Session snapshots: versioned msgpack bytes for save games (and the stores' row format).

Layout (a msgpack map):

    {"format": "steernpc.session", "version": 1,
     "character_id": str, "session_id": str, "mood": str, "steer": {str: int},
     "player_name": str, "context": {str: str},
     "history": [{"user": str, "reply": str | nil, "labels": {str: int}}, ...],
     "created_at": float, "updated_at": float (optional)}

Readers accept unknown extra keys (a later minor addition) but refuse a newer `version`.
Sizes are not checked here (the stores read their own rows with import_snapshot): a save
file from a client also passes steernpc.validation.check_session_sizes.
Every problem raises SnapshotError (a ValueError) whose message says what is wrong, so a
server can answer INVALID_ARGUMENT with it unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from steernpc.limits import echo
from steernpc.prompt import Exchange
from steernpc.sessions.session import Session

SNAPSHOT_FORMAT = "steernpc.session"
SNAPSHOT_VERSION = 1

# Leading bytes of a msgpack map: fixmap, map16, map32.
_MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class SnapshotError(ValueError):
    """The bytes are not a valid session snapshot; the message says why."""


def snapshot_dict(session: Session) -> dict[str, Any]:
    """The snapshot as a plain dict (what export_snapshot packs)."""
    return {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "character_id": session.character_id,
        "session_id": session.session_id,
        "mood": session.mood,
        "steer": {str(k): int(v) for k, v in session.steer.items()},
        "player_name": session.player_name,
        "context": {str(k): str(v) for k, v in session.context.items()},
        "history": [
            {"user": ex.user, "reply": ex.reply, "labels": {str(k): int(v) for k, v in ex.labels.items()}}
            for ex in session.history
        ],
        "created_at": float(session.created_at),
        "updated_at": float(session.updated_at),
    }


def export_snapshot(session: Session) -> bytes:
    """The session as snapshot bytes (msgpack, format steernpc.session, version 1)."""
    return msgpack.packb(snapshot_dict(session), use_bin_type=True)


def import_snapshot(data: bytes) -> Session:
    """Parse and validate snapshot bytes; raise SnapshotError saying what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError(f"snapshot data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise SnapshotError("empty snapshot (0 bytes)")
    if data[0] not in _MAP_MARKERS:
        raise SnapshotError(
            f"not a session snapshot: data starts with byte 0x{data[0]:02x}, "
            "a snapshot is a msgpack map"
        )
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise SnapshotError(
            f"corrupt snapshot: {len(exc.extra)} unexpected byte(s) after the end of the snapshot"
        ) from None
    except msgpack.OutOfData:
        raise SnapshotError(f"truncated snapshot: the data ends early ({len(data)} bytes)") from None
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"corrupt snapshot: a string is not valid UTF-8 ({exc.reason})") from None
    except ValueError as exc:
        # msgpack caps every declared length at the input size: a bigger one means the
        # data was cut short (or its length field is corrupt).
        if "incomplete input" in str(exc) or "exceeds max_" in str(exc):
            raise SnapshotError(f"truncated snapshot: the data ends early ({len(data)} bytes)") from None
        raise SnapshotError(f"corrupt snapshot: not valid msgpack ({str(exc) or type(exc).__name__})") from None
    except Exception as exc:  # msgpack's C decoder has a few more (e.g. StackError, TypeError)
        raise SnapshotError(f"corrupt snapshot: not valid msgpack ({type(exc).__name__}: {exc})") from None
    return session_from_dict(obj)


def session_from_dict(obj: Any) -> Session:
    """Validate a decoded snapshot dict and build the Session; raise SnapshotError."""
    if not isinstance(obj, dict):
        raise SnapshotError(f"not a session snapshot: expected a map, got {_kind(obj)}")
    fmt = obj.get("format")
    if fmt != SNAPSHOT_FORMAT:
        got = "no format marker" if "format" not in obj else f"format {echo(fmt)}"
        raise SnapshotError(f"not a session snapshot: {got}, expected format {SNAPSHOT_FORMAT!r}")
    version = obj.get("version")
    if "version" not in obj:
        raise SnapshotError("snapshot has no version")
    if not _is_int(version):
        raise SnapshotError(f"snapshot version must be an integer, got {_kind(version)}")
    if version > SNAPSHOT_VERSION:
        raise SnapshotError(
            f"unsupported snapshot version {version}: this SteerNPC reads version "
            f"{SNAPSHOT_VERSION} or older; upgrade SteerNPC to load it"
        )
    if version < 1:
        raise SnapshotError(f"invalid snapshot version {version} (versions start at 1)")

    required = ("character_id", "session_id", "mood", "steer", "player_name", "context", "history", "created_at")
    missing = [k for k in required if k not in obj]
    if missing:
        raise SnapshotError(f"snapshot is missing field(s): {', '.join(missing)}")

    for key in ("character_id", "session_id"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise SnapshotError(f"{key} must be a non-empty string, got {_kind(obj[key])}")
    for key in ("mood", "player_name"):
        _expect_str(obj[key], key)
    steer = _int_map(obj["steer"], "steer")
    context = _context(obj["context"])
    created_at = _time(obj["created_at"], "created_at")
    updated_at = _time(obj["updated_at"], "updated_at") if "updated_at" in obj else created_at

    history_raw = obj["history"]
    if not isinstance(history_raw, list):
        raise SnapshotError(f"history must be a list, got {_kind(history_raw)}")
    history: list[Exchange] = []
    for i, item in enumerate(history_raw):
        where = f"history[{i}]"
        if not isinstance(item, dict):
            raise SnapshotError(f"{where} must be a map with user, reply, labels; got {_kind(item)}")
        missing = [k for k in ("user", "reply", "labels") if k not in item]
        if missing:
            raise SnapshotError(f"{where} is missing field(s): {', '.join(missing)}")
        _expect_str(item["user"], f"{where}.user")
        if item["reply"] is not None:
            _expect_str(item["reply"], f"{where}.reply")
        labels = _int_map(item["labels"], f"{where}.labels")
        history.append(Exchange(user=item["user"], reply=item["reply"], labels=labels))

    return Session(
        session_id=obj["session_id"],
        character_id=obj["character_id"],
        mood=obj["mood"],
        steer=steer,
        player_name=obj["player_name"],
        context=dict(context),
        history=history,
        created_at=created_at,
        updated_at=updated_at,
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, (str, bytes)) and len(value) <= 40:
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect_str(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise SnapshotError(f"{where} must be a string, got {_kind(value)}")


def _int_map(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise SnapshotError(f"{where} must be a map of attribute name to integer, got {_kind(value)}")
    out: dict[str, int] = {}
    for k, v in value.items():
        _expect_str(k, f"{where} key")
        if not _is_int(v):
            raise SnapshotError(f"{where}[{echo(k)}] must be an integer, got {_kind(v)}")
        out[k] = v
    return out


def _context(context: Any) -> dict:
    """A snapshot's context map, checked: string keys to string values."""
    if not isinstance(context, dict):
        raise SnapshotError(f"context must be a map of string to string, got {_kind(context)}")
    for k, v in context.items():
        _expect_str(k, "context key")
        _expect_str(v, f"context[{echo(k)}]")
    return context


def _time(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SnapshotError(f"{where} must be a non-negative number of unix seconds, got {_kind(value)}")
    return float(value)
