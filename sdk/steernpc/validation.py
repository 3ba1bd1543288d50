"""Checks on what a client sends, before any handler acts on it: one place for every RPC.

    check_request(message)         a steernpc.v1 request's sizes (steernpc.limits), by type
    check_session_sizes(session)   a session's sizes (an imported save file: before anything
                                   else, even the character lookup)
    check_session(session, p)      a session against its character: mood, steer and every
                                   turn's labels
    check_scene_sizes(scene)       an imported scene's sizes
    check_scene(scene, personas)   a scene against its members' characters

Both raise LimitError / InvalidAttribute (ValueErrors) whose message names the field as
the caller sent it; a front end (the gRPC servicer, an HTTP gateway) answers
INVALID_ARGUMENT with it unchanged. Names and ranges of attributes are the persona's
schema's to check (they need the character); sizes are checked here, first, so that no
later message echoes an unbounded value.
"""

from __future__ import annotations

from steernpc.attributes import InvalidAttribute
from steernpc.limits import (
    MAX_CONTINUE_TURNS,
    MAX_HISTORY_TURNS,
    MAX_ID,
    MAX_MEMBERS,
    MAX_SCENE_LINES,
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
from steernpc.scenes import Scene
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
    _ids(m, "session_id", "scene_id", "member_id")
    check_length("mood", m.mood, MAX_NAME)
    check_attribute_map("attributes", m.attributes)


def _say(m: pb.SayRequest) -> None:
    _ids(m, "session_id", "interaction_id")
    check_length("text", m.text, MAX_TEXT)
    check_attribute_map("attributes", m.attributes)


def _import(m: pb.ImportSessionRequest) -> None:
    if len(m.data) > MAX_SNAPSHOT_BYTES:
        raise LimitError("data", f"data is too large: {len(m.data)} bytes (a snapshot is at most {MAX_SNAPSHOT_BYTES} bytes)")


def _member(field: str, m: pb.MemberSpec) -> None:
    check_length(f"{field}.character_id", m.character_id, MAX_ID)
    check_length(f"{field}.member_id", m.member_id, MAX_ID)
    check_length(f"{field}.name", m.name, MAX_NAME)
    check_length(f"{field}.mood", m.mood, MAX_NAME)
    check_attribute_map(f"{field}.attributes", m.attributes)


def _create_scene(m: pb.CreateSceneRequest) -> None:
    _ids(m, "scene_id")
    check_length("player_name", m.player_name, MAX_NAME)
    check_context("context", m.context)
    if len(m.members) > MAX_MEMBERS:
        raise LimitError("members", f"members has {len(m.members)} entries (a scene has at most {MAX_MEMBERS})")
    for i, member in enumerate(m.members):
        _member(f"members[{i}]", member)


def _scene_say(m: pb.SceneSayRequest) -> None:
    _ids(m, "scene_id", "interaction_id")
    check_length("text", m.text, MAX_TEXT)
    if len(m.member_ids) > MAX_MEMBERS:
        raise LimitError("member_ids", f"member_ids has {len(m.member_ids)} entries (a scene has at most {MAX_MEMBERS})")
    for i, member_id in enumerate(m.member_ids):
        check_length(f"member_ids[{i}]", member_id, MAX_ID)
    check_attribute_map("attributes", m.attributes)


def _scene_continue(m: pb.SceneContinueRequest) -> None:
    _ids(m, "scene_id", "interaction_id")
    if not 1 <= m.turns <= MAX_CONTINUE_TURNS:
        raise LimitError("turns", f"turns = {m.turns} is outside 1..{MAX_CONTINUE_TURNS}")


def _import_scene(m: pb.ImportSceneRequest) -> None:
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
    pb.CreateSceneRequest: _create_scene,
    pb.GetSceneRequest: lambda m: _ids(m, "scene_id"),
    pb.DeleteSceneRequest: lambda m: _ids(m, "scene_id"),
    pb.JoinSceneRequest: lambda m: (_ids(m, "scene_id"), _member("member", m.member)),
    pb.LeaveSceneRequest: lambda m: _ids(m, "scene_id", "member_id"),
    pb.SceneSayRequest: _scene_say,
    pb.SceneContinueRequest: _scene_continue,
    pb.ExportSceneRequest: lambda m: _ids(m, "scene_id"),
    pb.ImportSceneRequest: _import_scene,
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


def check_scene_sizes(scene: Scene) -> None:
    """Raise LimitError naming the first field of `scene` over its limit."""
    check_length("scene_id", scene.scene_id, MAX_ID)
    check_length("player_name", scene.player_name, MAX_NAME)
    check_context("context", scene.context)
    if len(scene.members) > MAX_MEMBERS:
        raise LimitError("members", f"members has {len(scene.members)} entries (a scene has at most {MAX_MEMBERS})")
    for i, m in enumerate(scene.members):
        check_length(f"members[{i}].member_id", m.member_id, MAX_ID)
        check_length(f"members[{i}].character_id", m.character_id, MAX_ID)
        check_length(f"members[{i}].name", m.name, MAX_NAME)
        check_length(f"members[{i}].mood", m.mood, MAX_NAME)
        check_attribute_map(f"members[{i}].steer", m.steer)
    if len(scene.transcript) > MAX_SCENE_LINES:
        raise LimitError("transcript", f"transcript has {len(scene.transcript)} lines (at most {MAX_SCENE_LINES})")
    for i, line in enumerate(scene.transcript):
        check_length(f"transcript[{i}].speaker_id", line.speaker_id, MAX_ID)
        check_length(f"transcript[{i}].speaker", line.speaker, MAX_NAME)
        check_length(f"transcript[{i}].text", line.text, MAX_REPLY)
        check_attribute_map(f"transcript[{i}].labels", line.labels)


def check_scene(scene: Scene, personas) -> None:
    """Check that every member of `scene` can go on: its mood and steer resolve under its
    character (`personas(character_id)` -> Persona), and every line it said that it will
    replay in its prompts carries a complete, in-range vector of its schema. Errors name the
    member: `members[brom].steer.humor = 9 is outside 0..4`."""
    for member in scene.members:
        persona: Persona = personas(member.character_id)
        where = f"members[{member.member_id}]."
        try:
            persona.resolve(mood=member.mood or None, steer=member.steer)
        except InvalidAttribute as exc:
            raise InvalidAttribute(where + exc.field, f"{where}{exc}") from None
        schema = persona.schema
        for i, line in enumerate(scene.transcript):
            if line.speaker_id != member.member_id or i + scene.offset < member.joined_at:
                continue
            field = f"transcript[{i}].labels"
            schema.check_vector(line.labels, field)
            missing = [name for name in schema.names if name not in line.labels]
            if missing:
                raise InvalidAttribute(field, f"{field} is missing {', '.join(missing)} (member {member.member_id!r} replays it; "
                                              f"a line's labels name every attribute of schema {schema.name!r})")  # fmt: skip
