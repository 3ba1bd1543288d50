"""Scene snapshots: versioned msgpack bytes for save games, beside the session snapshots.

Layout (a msgpack map):

    {"format": "steernpc.scene", "version": 1,
     "scene_id": str, "player_name": str, "context": {str: str}, "seed": int,
     "members": [{"member_id": str, "character_id": str, "name": str, "mood": str,
                  "steer": {str: int}, "joined_at": int}, ...],
     "transcript": [{"speaker_id": str, "speaker": str, "text": str, "labels": {str: int}}, ...],
     "offset": int, "created_at": float, "updated_at": float (optional)}

`import_scene` also takes a single-session snapshot (format "steernpc.session", any
version that steernpc.sessions reads): it becomes a scene with that character as its one
member (member id = character id) and the session's exchanges as the transcript, so old
save games load into a scene. Readers accept unknown extra keys and refuse a newer
version; every problem raises SnapshotError naming the field.
"""

from __future__ import annotations

from typing import Any

import msgpack

from steernpc.limits import echo
from steernpc.scenes import PLAYER_ID, Line, Member, Scene
from steernpc.sessions.snapshot import (
    SNAPSHOT_FORMAT,
    SnapshotError,
    _context,
    _expect_str,
    _int_map,
    _is_int,
    _kind,
    _time,
    import_snapshot,
    session_from_dict,
)

SCENE_FORMAT = "steernpc.scene"
SCENE_VERSION = 1


def scene_dict(scene: Scene) -> dict[str, Any]:
    return {
        "format": SCENE_FORMAT,
        "version": SCENE_VERSION,
        "scene_id": scene.scene_id,
        "player_name": scene.player_name,
        "context": {str(k): str(v) for k, v in scene.context.items()},
        "seed": int(scene.seed),
        "members": [
            {"member_id": m.member_id, "character_id": m.character_id, "name": m.name, "mood": m.mood,
             "steer": {str(k): int(v) for k, v in m.steer.items()}, "joined_at": int(m.joined_at)}  # fmt: skip
            for m in scene.members
        ],
        "transcript": [
            {"speaker_id": x.speaker_id, "speaker": x.speaker, "text": x.text, "labels": {str(k): int(v) for k, v in x.labels.items()}}
            for x in scene.transcript
        ],
        "offset": int(scene.offset),
        "created_at": float(scene.created_at),
        "updated_at": float(scene.updated_at),
    }


def export_scene(scene: Scene) -> bytes:
    """The scene as snapshot bytes (msgpack, format steernpc.scene, version 1)."""
    return msgpack.packb(scene_dict(scene), use_bin_type=True)


def import_scene(data: bytes) -> Scene:
    """Parse and validate scene (or single-session) snapshot bytes; raise SnapshotError."""
    if isinstance(data, (bytes, bytearray, memoryview)) and data:
        try:
            obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
        except Exception:
            obj = None  # import_snapshot says what is wrong with the bytes
        if isinstance(obj, dict) and obj.get("format") == SCENE_FORMAT:
            return scene_from_dict(obj)
        if isinstance(obj, dict) and obj.get("format") == SNAPSHOT_FORMAT:
            return scene_from_session(session_from_dict(obj))
        if isinstance(obj, dict):
            got = "no format marker" if "format" not in obj else f"format {echo(obj.get('format'))}"
            raise SnapshotError(f"not a scene snapshot: {got}, expected format {SCENE_FORMAT!r} (or {SNAPSHOT_FORMAT!r})")
    import_snapshot(data)  # raises what is wrong with bytes that are no map at all
    raise SnapshotError("not a scene snapshot")  # pragma: no cover (import_snapshot raised)


def scene_from_session(session) -> Scene:
    """An old single-session save as a scene: its character the one member."""
    scene = Scene(scene_id=session.session_id, player_name=session.player_name, context=dict(session.context),
                  seed=0, created_at=session.created_at, updated_at=session.updated_at)  # fmt: skip
    member = Member(session.character_id, session.character_id, name="", mood=session.mood, steer=dict(session.steer))
    scene.members.append(member)
    for ex in session.history:
        scene.transcript.append(Line(PLAYER_ID, scene.player, ex.user))
        if ex.reply:
            scene.transcript.append(Line(member.member_id, "", ex.reply, dict(ex.labels)))
    return scene  # the server fills in the member's name (its persona's) and a seed


def scene_from_dict(obj: dict) -> Scene:
    version = obj.get("version")
    if "version" not in obj:
        raise SnapshotError("scene snapshot has no version")
    if not _is_int(version):
        raise SnapshotError(f"scene snapshot version must be an integer, got {_kind(version)}")
    if version > SCENE_VERSION:
        raise SnapshotError(f"unsupported scene snapshot version {version}: this SteerNPC reads version "
                            f"{SCENE_VERSION} or older; upgrade SteerNPC to load it")  # fmt: skip
    if version < 1:
        raise SnapshotError(f"invalid scene snapshot version {version} (versions start at 1)")
    required = ("scene_id", "player_name", "context", "seed", "members", "transcript", "created_at")
    missing = [k for k in required if k not in obj]
    if missing:
        raise SnapshotError(f"scene snapshot is missing field(s): {', '.join(missing)}")
    if not isinstance(obj["scene_id"], str) or not obj["scene_id"]:
        raise SnapshotError(f"scene_id must be a non-empty string, got {_kind(obj['scene_id'])}")
    _expect_str(obj["player_name"], "player_name")
    context = _context(obj["context"])
    seed = obj["seed"]
    if not _is_int(seed) or seed < 0:
        raise SnapshotError(f"seed must be a non-negative integer, got {_kind(seed)}")
    offset = obj.get("offset", 0)
    if not _is_int(offset) or offset < 0:
        raise SnapshotError(f"offset must be a non-negative integer, got {_kind(offset)}")
    created_at = _time(obj["created_at"], "created_at")
    updated_at = _time(obj["updated_at"], "updated_at") if "updated_at" in obj else created_at

    members_raw = obj["members"]
    if not isinstance(members_raw, list):
        raise SnapshotError(f"members must be a list, got {_kind(members_raw)}")
    members: list[Member] = []
    for i, item in enumerate(members_raw):
        where = f"members[{i}]"
        if not isinstance(item, dict):
            raise SnapshotError(f"{where} must be a map, got {_kind(item)}")
        missing = [k for k in ("member_id", "character_id", "name", "mood", "steer", "joined_at") if k not in item]
        if missing:
            raise SnapshotError(f"{where} is missing field(s): {', '.join(missing)}")
        for key in ("member_id", "character_id"):
            if not isinstance(item[key], str) or not item[key]:
                raise SnapshotError(f"{where}.{key} must be a non-empty string, got {_kind(item[key])}")
        _expect_str(item["name"], f"{where}.name")
        _expect_str(item["mood"], f"{where}.mood")
        if not _is_int(item["joined_at"]) or item["joined_at"] < 0:
            raise SnapshotError(f"{where}.joined_at must be a non-negative integer, got {_kind(item['joined_at'])}")
        if item["member_id"] == PLAYER_ID or any(m.member_id == item["member_id"] for m in members):
            raise SnapshotError(f"{where}.member_id {echo(item['member_id'])} is the player's or another member's")
        members.append(Member(item["member_id"], item["character_id"], item["name"], item["mood"],
                              _int_map(item["steer"], f"{where}.steer"), item["joined_at"]))  # fmt: skip

    transcript_raw = obj["transcript"]
    if not isinstance(transcript_raw, list):
        raise SnapshotError(f"transcript must be a list, got {_kind(transcript_raw)}")
    transcript: list[Line] = []
    for i, item in enumerate(transcript_raw):
        where = f"transcript[{i}]"
        if not isinstance(item, dict):
            raise SnapshotError(f"{where} must be a map with speaker_id, speaker, text, labels; got {_kind(item)}")
        missing = [k for k in ("speaker_id", "speaker", "text", "labels") if k not in item]
        if missing:
            raise SnapshotError(f"{where} is missing field(s): {', '.join(missing)}")
        for key in ("speaker_id", "speaker", "text"):
            _expect_str(item[key], f"{where}.{key}")
        transcript.append(Line(item["speaker_id"], item["speaker"], item["text"], _int_map(item["labels"], f"{where}.labels")))
    return Scene(scene_id=obj["scene_id"], player_name=obj["player_name"], context=dict(context), seed=seed,
                 members=members, transcript=transcript, offset=offset, created_at=created_at,
                 updated_at=updated_at)  # fmt: skip
