"""One member's line in a scene, through the same conversation layer as a single session:

    begin:  the member's view of the transcript (scenes.Scene.view) as a session's history,
            its own persona card and vector -> conversation.Conversation.begin
    submit: the backend's Stream, under the member's own cache key (its KV stays between
            its lines, as a session's does between turns)
    finish: the line joins the shared transcript under the member's name

`SceneRunner` runs whole player lines and banter synchronously (scripts, tests, the demo);
the gRPC servicer runs the same steps on its event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from steernpc.attributes import InvalidAttribute
from steernpc.conversation import Conversation, Turn, system_text
from steernpc.generation.base import Backend, Delta, Finished
from steernpc.generation.stream import Stream
from steernpc.limits import MAX_SNAPSHOT_BYTES
from steernpc.persona import Persona
from steernpc.scenes import MAX_CONTINUE_TURNS, MAX_SCENE_LINES, PLAYER_ID, Member, Scene, SceneError, next_speaker, responders
from steernpc.sessions import Session


def cache_key(scene_id: str, member_id: str) -> str:
    """The backend cache key of one member's view (its KV slot between lines)."""
    return f"scene:{scene_id}:{member_id}"


def member_system(scene: Scene, member: Member, persona: Persona) -> str:
    """The member's system text: its own card, the scene's player and context, and the
    names of the others present (names only: never another member's card or vector)."""
    text = system_text(persona, scene.player_name, scene.context)
    others = [m.name for m in scene.members if m.member_id != member.member_id]
    if others:
        text += (f"\nYou are in a scene with {scene.player} and {', '.join(others)}. Their lines reach you as "
                 f"\"Name: line\"; answer as {persona.name} only.")  # fmt: skip
    return text


def member_session(scene: Scene, member: Member) -> Session:
    """A member's state as the session the conversation layer runs a turn on (not stored:
    the scene is)."""
    history, _ = scene.view(member)
    return Session(session_id=cache_key(scene.scene_id, member.member_id), character_id=member.character_id,
                   mood=member.mood, steer=dict(member.steer), player_name=scene.player_name,
                   context=dict(scene.context), history=history)  # fmt: skip


def member_field(member_id: str, exc: InvalidAttribute) -> InvalidAttribute:
    """`exc` with the member named: `member 'brom': attributes.humor = 9 is outside 0..4`."""
    return InvalidAttribute(f"members[{member_id}].{exc.field}", f"member {member_id!r}: {exc}", exc.attribute, exc.allowed)


@dataclass
class SceneTurn:
    """One member's line on its way."""

    scene_id: str
    member_id: str
    speaker: str
    turn: Turn

    @property
    def attributes(self) -> dict[str, int]:
        return self.turn.attributes

    @property
    def prompt(self) -> str:
        return self.turn.request.prompt


class SceneConversation:
    """Runs members' lines on one backend with one prompt format."""

    def __init__(self, backend: Backend, fmt: str, history_tokens: int = 1024):
        self.conversation = Conversation(backend, fmt, history_tokens, store=None)

    @property
    def backend(self) -> Backend:
        return self.conversation.backend

    def begin(self, scene: Scene, member_id: str, persona: Persona, override: Mapping[str, int] | None = None,
              options: Mapping[str, Any] | None = None, request_id: str | None = None) -> SceneTurn:  # fmt: skip
        """The member's prompt (raises UnknownMember; InvalidAttribute naming the member;
        PromptTooLong)."""
        member = scene.member(member_id)
        _, pending = scene.view(member)
        session = member_session(scene, member)
        try:
            turn = self.conversation.begin(persona, session, pending, override, options, request_id,
                                           system=member_system(scene, member, persona))  # fmt: skip
        except InvalidAttribute as exc:
            raise member_field(member_id, exc) from None
        return SceneTurn(scene.scene_id, member_id, member.name, turn)

    def submit(self, turn: SceneTurn) -> Stream:
        return self.conversation.submit(turn.turn)

    def finish(self, scene: Scene, turn: SceneTurn, final: Finished) -> bool:
        """Add the line to the transcript; False when there is nothing to keep. A cancelled
        line's partial text is kept: the player heard it."""
        if final.reason == "error" or not final.text or not scene.has(turn.member_id):
            return False
        scene.record(turn.member_id, final.text, turn.attributes)
        keep_scene_within_limits(scene)
        return True


def keep_scene_within_limits(scene: Scene) -> int:
    """Drop the oldest lines until the scene holds at most MAX_SCENE_LINES and its snapshot
    fits MAX_SNAPSHOT_BYTES (so every scene exports into a snapshot that imports again)."""
    from steernpc.scene_snapshot import export_scene

    dropped = scene.trim(MAX_SCENE_LINES)
    while len(export_scene(scene)) > MAX_SNAPSHOT_BYTES and len(scene.transcript) > 1:
        dropped += scene.trim(max(1, len(scene.transcript) * 9 // 10))
    return dropped


# -- running whole lines synchronously -------------------------------------------------------------

@dataclass
class SceneEvent:
    """A delta or the done of one member's line."""

    speaker_id: str
    speaker: str
    delta: str = ""
    done: Finished | None = None
    attributes: dict[str, int] = field(default_factory=dict)


class Interrupt:
    """Stops a player line's replies or a banter at the next step: the running line ends
    cancelled (its text so far stays in the transcript) and no further line starts."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._stream: Stream | None = None
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._flag.set()
            stream = self._stream
        if stream is not None:
            stream.cancel()

    def attach(self, stream: Stream | None) -> None:
        with self._lock:
            self._stream = stream
        if stream is not None and self.cancelled:
            stream.cancel()


class SceneRunner:
    """A scene's player lines and banter, run synchronously. A new player line interrupts
    the scene's running banter (other threads) at its next step, then waits for it."""

    def __init__(self, backend: Backend, fmt: str, personas: Callable[[str], Persona], history_tokens: int = 1024):
        self.lines = SceneConversation(backend, fmt, history_tokens)
        self.personas = personas
        self._locks: dict[str, threading.Lock] = {}
        self._running: dict[str, Interrupt] = {}
        self._guard = threading.Lock()

    def _lock(self, scene_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(scene_id, threading.Lock())

    def say(self, scene: Scene, text: str, member_ids: Sequence[str] = (), override: Mapping[str, int] | None = None,
            options: Mapping[str, Any] | None = None, interrupt: Interrupt | None = None) -> Iterator[SceneEvent]:  # fmt: skip
        """The player's line, then each responder's line (scenes.responders)."""
        if not text or not text.strip():
            raise ValueError("text is empty: the player must say something")
        running = self._running.get(scene.scene_id)
        if running is not None:
            running.cancel()
        with self._lock(scene.scene_id):
            speakers = responders(scene, text, member_ids)
            scene.record(PLAYER_ID, text)
            yield from self._run(scene, speakers, override, options, interrupt or Interrupt(), first_undo=True)

    def banter(self, scene: Scene, turns: int, options: Mapping[str, Any] | None = None,
               interrupt: Interrupt | None = None) -> Iterator[SceneEvent]:  # fmt: skip
        """Up to `turns` lines of members answering each other (scenes.next_speaker)."""
        if not 1 <= turns <= MAX_CONTINUE_TURNS:
            raise SceneError(f"turns = {turns} is outside 1..{MAX_CONTINUE_TURNS}")
        next_speaker(scene)  # EmptyScene before anything runs
        interrupt = interrupt or Interrupt()
        with self._lock(scene.scene_id):
            self._running[scene.scene_id] = interrupt
            try:
                for _ in range(turns):
                    if interrupt.cancelled:
                        return
                    yield from self._run(scene, [next_speaker(scene)], None, options, interrupt)
            finally:
                if self._running.get(scene.scene_id) is interrupt:
                    del self._running[scene.scene_id]

    def _run(self, scene: Scene, speakers: Sequence[str], override, options, interrupt: Interrupt,
             first_undo: bool = False) -> Iterator[SceneEvent]:  # fmt: skip
        for i, member_id in enumerate(speakers):
            if interrupt.cancelled:
                return
            member = scene.member(member_id)
            try:
                turn = self.lines.begin(scene, member_id, self.personas(member.character_id), override, options)
                stream = self.lines.submit(turn)
            except Exception:
                if first_undo and i == 0:  # nothing answered: the player's line is not kept
                    scene.transcript.pop()
                raise
            interrupt.attach(stream)
            final = None
            try:
                for event in stream:
                    if isinstance(event, Delta):
                        yield SceneEvent(member_id, turn.speaker, delta=event.text)
                    else:
                        final = event
            finally:
                interrupt.attach(None)
                if final is None:
                    stream.cancel()
                    final = stream.result(30)
                self.lines.finish(scene, turn, final)
            yield SceneEvent(member_id, turn.speaker, done=final, attributes=turn.attributes)
