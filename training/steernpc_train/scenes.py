"""Scene transcripts as training data: records with several speakers, rendered through the
runtime's own scene code so that a model trains on exactly what a scene serves.

A scene record is a line of the `npc` corpus format (samples/corpus/scenes/*.jsonl):

    {"id": "port-eel-01",
     "scene": {"player_name": "Ayla",                      # optional
               "context": {"place": "the Salted Eel"},     # optional
               "members": [{"character": "port_dockside_tavern"},
                           {"character": "port_old_sailor", "member_id": "sailor", "name": "Old Wick"}]},
     "lines": [{"speaker": "player", "text": "Evening, both."},
               {"speaker": "port_dockside_tavern", "text": "...", "labels": {"humor": 2, ...}, "emotion": "happy"},
               {"speaker": "sailor", "text": "...", "labels": {...}}]}

`speaker` is "player" or a member id (default: the character id); every member line carries
the full label vector it was written to. Replaying a record builds a runtime
`steernpc.scenes.Scene` line by line; each member's lines then become one conversation
from that member's point of view (`Scene.view`: the others' lines as "Name: text" in the
player's turn, its own lines as replies), under the system text the runtime gives it
(`steernpc.scene_turns.member_system`: its own card, the scene's player and context, the
others' names, never their cards). The SFT renders those like any conversation, with the
runtime's `steernpc.prompt` code: the prompt before each member line is byte for byte the
one `SceneConversation.begin` builds for that member at that point of the scene
(tests/train/test_scene_records.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from steernpc.scene_turns import member_system
from steernpc.scenes import PLAYER_ID, Scene

from steernpc_train.records import Conversation, DataError, Turn


@dataclass
class SceneMemberRecord:
    character: str
    member_id: str
    name: str | None = None  # None: the persona's name
    mood: str = ""


@dataclass
class SceneLineRecord:
    speaker: str  # PLAYER_ID or a member id
    text: str
    labels: dict[str, int] = field(default_factory=dict)
    emotion: str | None = None


@dataclass
class SceneRecord:
    id: str | None
    members: list[SceneMemberRecord]
    lines: list[SceneLineRecord]
    player_name: str = ""
    context: dict[str, str] = field(default_factory=dict)
    source: tuple[str, int] = ("", 0)


def is_scene_record(obj: Any) -> bool:
    return isinstance(obj, dict) and "scene" in obj and "lines" in obj


def parse_scene(obj: Any, file: str, line: int) -> SceneRecord:
    """A scene record (see the module doc); DataError names the file, line and field."""
    scene = obj.get("scene")
    if not isinstance(scene, dict):
        raise DataError(file, line, "'scene' must be an object with 'members'")
    player_name = scene.get("player_name", "") or ""
    context = scene.get("context") or {}
    if not isinstance(player_name, str):
        raise DataError(file, line, "scene.player_name must be a string")
    if not isinstance(context, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
        raise DataError(file, line, "scene.context must be {name: text}")
    raw_members = scene.get("members")
    if not isinstance(raw_members, list) or len(raw_members) < 2:
        raise DataError(file, line, "scene.members must list at least two members (one speaker is a plain record)")
    members: list[SceneMemberRecord] = []
    for i, m in enumerate(raw_members):
        if not isinstance(m, dict) or not isinstance(m.get("character"), str) or not m["character"]:
            raise DataError(file, line, f"scene.members[{i}].character must be a character id")
        for key in ("member_id", "name", "mood"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise DataError(file, line, f"scene.members[{i}].{key} must be a string")
        member_id = m.get("member_id") or m["character"]
        if member_id == PLAYER_ID or any(x.member_id == member_id for x in members):
            raise DataError(file, line, f"scene.members[{i}]: member id {member_id!r} is taken")
        members.append(SceneMemberRecord(m["character"], member_id, m.get("name"), m.get("mood") or ""))
    raw_lines = obj.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise DataError(file, line, "'lines' must be a non-empty list of {speaker, text, labels?}")
    ids = {m.member_id for m in members}
    lines: list[SceneLineRecord] = []
    for i, x in enumerate(raw_lines):
        where = f"lines[{i}]"
        if not isinstance(x, dict) or not isinstance(x.get("text"), str) or not x["text"].strip():
            raise DataError(file, line, f"{where} must be {{speaker, text}} with a non-empty text")
        speaker = x.get("speaker")
        if speaker != PLAYER_ID and speaker not in ids:
            raise DataError(file, line, f"{where}.speaker {speaker!r} is neither 'player' nor a member ({', '.join(sorted(ids))})")
        labels = x.get("labels") or {}
        if speaker == PLAYER_ID and labels:
            raise DataError(file, line, f"{where}: the player's lines carry no labels")
        if speaker != PLAYER_ID and not labels:
            raise DataError(file, line, f"{where}: a member's line needs the labels it was written to")
        if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
            raise DataError(file, line, f"{where}.labels must be {{name: int}}")
        emotion = x.get("emotion")
        if emotion is not None and not isinstance(emotion, str):
            raise DataError(file, line, f"{where}.emotion must be a string")
        lines.append(SceneLineRecord(speaker, x["text"], dict(labels), emotion))
    if all(x.speaker == PLAYER_ID for x in lines):
        raise DataError(file, line, "'lines' has no member line to train on")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise DataError(file, line, "'id' must be a string")
    return SceneRecord(rid, members, lines, player_name, dict(context), (file, line))


def replay(record: SceneRecord, personas: Mapping[str, Any], upto: int | None = None) -> Scene:
    """The runtime Scene after the record's first `upto` lines (all by default)."""
    scene = Scene.new(record.id or "scene", player_name=record.player_name, context=record.context, seed=1)
    for m in record.members:
        persona = _persona(record, personas, m.character)
        scene.join(m.member_id, m.character, m.name or persona.name, m.mood)
    for x in record.lines[:upto]:
        scene.record(x.speaker, x.text, x.labels if x.speaker != PLAYER_ID else None)
    return scene


def member_conversations(record: SceneRecord, personas: Mapping[str, Any]) -> list[Conversation]:
    """One conversation per speaking member: its view of the whole scene (each own line a
    reply to what it heard before it) under its scene system text."""
    scene = replay(record, personas)
    out = []
    for m in record.members:
        member = scene.member(m.member_id)
        history, _ = scene.view(member)
        if not history:
            continue
        emotions = [x.emotion for x in record.lines if x.speaker == m.member_id]
        turns = [Turn(ex.user, ex.reply, dict(ex.labels), emotion=e) for ex, e in zip(history, emotions)]
        system = member_system(scene, member, _persona(record, personas, m.character))
        cid = f"{record.id}:{m.member_id}" if record.id else None
        out.append(Conversation(turns, system=system, character=m.character, id=cid, source=record.source,
                                scene=record.id or "scene"))
    return out


def _persona(record: SceneRecord, personas: Mapping[str, Any], character: str):
    persona = personas.get(character)
    if persona is None:
        file, line = record.source
        if not personas:
            raise DataError(file, line, "scene records need the personas of their members (--personas)")
        raise DataError(file, line, f"character {character!r} is not among the --personas")
    return persona
