"""The steernpc.v1.NpcService implementation (grpc.aio).

Every request passes steernpc.validation.check_request first (sizes, in `_unary`, `Say`
and per frame in `Converse`); handlers then check against the character and answer with a
status that says what to fix, echoing client values cut short (limits.echo). Nothing a
client sends can crash the server or touch another session. Generation runs on the
backend's engine thread; handlers only await its Stream.

Each RPC's body is a transport-neutral method (`create_session(request)`, `say_events(request)`
...) that takes the protobuf request and returns the protobuf answer or raises RequestError
(a gRPC status code and its message). The gRPC methods wrap them; the HTTP/SSE gateway
(server/gateway.py) calls the same methods on the same servicer, so both front ends share
sessions, locks, running interactions and every message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import weakref
from typing import AsyncIterator

import grpc

from steernpc.attributes import InvalidAttribute
from steernpc.conversation import Conversation, system_text
from steernpc.generation.base import Backend, Delta, Finished, PromptTooLong, QueueFull
from steernpc.limits import MAX_ID, LimitError, echo
from steernpc.persona import Persona
from steernpc.scene_snapshot import export_scene, import_scene
from steernpc.scene_turns import Interrupt, SceneConversation, cache_key
from steernpc.scenes import (
    PLAYER_ID,
    EmptyScene,
    MemberExists,
    Scene,
    SceneError,
    SceneFull,
    UnknownMember,
    next_speaker,
    responders,
)
from steernpc.server.characters import CharacterRegistry
from steernpc.server.metrics import Metrics
from steernpc.sessions import Session, SessionStore, SnapshotError, StoreError, export_snapshot, import_snapshot
from steernpc.validation import check_request, check_scene, check_scene_sizes, check_session, check_session_sizes
from steernpc.wire import pb, pb_grpc

log = logging.getLogger("steernpc.server")

FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
}


class RequestError(Exception):
    """A request problem with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code, self.message = code, message
        super().__init__(message)


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


class _Waiting:
    """An accepted say waiting for its session's running reply: Cancel marks it, and it
    then ends with a cancelled done instead of generating."""

    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class NpcServicer(pb_grpc.NpcServiceServicer):
    def __init__(
        self,
        characters: CharacterRegistry,
        store: SessionStore,
        backend: Backend | None,
        fmt: str = "chat",
        history_tokens: int = 1024,
        metrics: Metrics | None = None,
    ):
        self.characters = characters
        self.store = store
        self.backend = backend  # None while the model loads
        self.fmt = fmt
        self.tails = False  # the model writes the structured tail (its model card says so; serve sets it)
        self.history_tokens = history_tokens
        self.metrics = metrics or Metrics()
        # One lock per session, kept only while someone holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._interactions: dict[str, object] = {}  # interaction id -> Stream (or _Waiting)
        self._replying: dict[str, object] = {}  # session id -> Stream of its running reply
        # Scenes live in this process (README "Scenes": save them with ExportScene).
        self._scenes: dict[str, Scene] = {}
        self._scene_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._scene_running: dict[str, Interrupt] = {}  # scene id -> its running SceneSay / SceneContinue

    # -- helpers -------------------------------------------------------------------------------
    def _persona(self, character_id: str) -> Persona:
        if not character_id:
            raise _invalid("character_id is empty; ListCharacters gives the ids")
        persona = self.characters.get(character_id)
        if persona is None:
            known = ", ".join(p.id for p in self.characters.all())
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"character {echo(character_id)} not found; characters: {known}")
        return persona

    async def _session(self, session_id: str) -> Session:
        if not session_id:
            raise _invalid("session_id is empty")
        session = await asyncio.to_thread(self.store.get, session_id)
        if session is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"session {echo(session_id)} not found (deleted, expired or never created)")
        return session

    def _session_message(self, session: Session, persona: Persona | None = None) -> pb.Session:
        persona = persona or self.characters.get(session.character_id)
        attributes = persona.resolve(mood=session.mood or None, steer=session.steer) if persona else {}
        return pb.Session(
            session_id=session.session_id,
            character_id=session.character_id,
            mood=session.mood,
            attributes=attributes,
            turns=session.turns,
        )

    @staticmethod
    def _check_attributes(persona: Persona, attributes) -> dict[str, int]:
        """A request's `attributes` map checked against the character's schema, so that an
        error names the wire field (`attributes.humor = 9 is outside 0..4`)."""
        try:
            return persona.schema.check_vector(dict(attributes), "attributes")
        except InvalidAttribute as exc:
            raise _invalid(str(exc)) from None

    @staticmethod
    def _check_steering(persona: Persona, mood: str | None, steer: dict, override: dict | None = None) -> dict[str, int]:
        try:
            return persona.resolve(mood=mood or None, steer=steer, override=override)
        except InvalidAttribute as exc:
            raise _invalid(str(exc)) from None

    def _check_fits(self, persona: Persona, session: Session) -> None:
        """The character card with the session's player_name and context must leave the
        model room for history and the player's line (half of what it holds), or no turn
        of the session could ever run. Checked once the model has loaded."""
        limit = getattr(self.backend, "max_prompt_tokens", None)
        if not limit:
            return
        tokens = self.backend.count_tokens(system_text(persona, session.player_name, session.context))
        if tokens > limit // 2:
            raise _invalid(
                f"player_name and context are too long for this model: the character card with them is "
                f"{tokens} tokens (at most {limit // 2})"
            )

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    def _ready_backend(self) -> Backend:
        if self.backend is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry in a few seconds")
        return self.backend

    # -- characters ------------------------------------------------------------------------------
    def _character_message(self, persona: Persona) -> pb.Character:
        return pb.Character(
            id=persona.id,
            name=persona.name,
            role=persona.role,
            attributes=persona.resolve(),
            moods=sorted(persona.moods),
            greeting=persona.greeting,
            schema=[
                pb.AttributeSpec(name=s.name, min=s.min, max=s.max, default_value=s.default, description=s.description)
                for s in persona.schema.specs
            ],
            limits={name: f"{low}..{high}" for name, (low, high) in persona.limits.items()},
        )

    async def list_characters(self, request: pb.ListCharactersRequest) -> pb.ListCharactersResponse:
        return pb.ListCharactersResponse(characters=[self._character_message(p) for p in self.characters.all()])

    async def get_character(self, request: pb.GetCharacterRequest) -> pb.Character:
        return self._character_message(self._persona(request.character_id))

    async def ListCharacters(self, request, context):
        return await _unary(context, request, lambda: self.list_characters(request))

    async def GetCharacter(self, request, context):
        return await _unary(context, request, lambda: self.get_character(request))

    # -- sessions -----------------------------------------------------------------------------------
    async def create_session(self, request: pb.CreateSessionRequest) -> pb.Session:
        persona = self._persona(request.character_id)
        steer = self._check_attributes(persona, request.attributes)
        self._check_steering(persona, request.mood, steer)
        session_id = request.session_id or uuid.uuid4().hex
        if await asyncio.to_thread(self.store.get, session_id) is not None:
            raise RequestError(grpc.StatusCode.ALREADY_EXISTS, f"session {echo(session_id)} already exists")
        session = Session.new(
            persona.id, session_id, mood=request.mood, steer=steer,
            player_name=request.player_name, context=dict(request.context),
        )  # fmt: skip
        self._check_fits(persona, session)
        await asyncio.to_thread(self.store.put, session)
        return self._session_message(session, persona)

    async def get_session(self, request: pb.GetSessionRequest) -> pb.Session:
        return self._session_message(await self._session(request.session_id))

    async def delete_session(self, request: pb.DeleteSessionRequest) -> pb.DeleteSessionResponse:
        if not request.session_id:
            raise _invalid("session_id is empty")
        # A running reply would store the session again when it ends: stop it, and
        # delete once it has (under the session lock).
        running = self._replying.get(request.session_id)
        if running is not None:
            running.cancel()
        async with self._lock(request.session_id):
            if not await asyncio.to_thread(self.store.delete, request.session_id):
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"session {echo(request.session_id)} not found")
        self._locks.pop(request.session_id, None)
        if self.backend is not None:
            self.backend.drop_cache(request.session_id)
        return pb.DeleteSessionResponse()

    async def CreateSession(self, request, context):
        return await _unary(context, request, lambda: self.create_session(request))

    async def GetSession(self, request, context):
        return await _unary(context, request, lambda: self.get_session(request))

    async def DeleteSession(self, request, context):
        return await _unary(context, request, lambda: self.delete_session(request))

    async def steer(self, request: pb.SteerRequest) -> pb.Session:
        if request.scene_id or request.member_id:
            return await self._steer_member(request)
        async with self._lock(request.session_id):
            session = await self._session(request.session_id)
            persona = self._persona(session.character_id)
            mood = request.mood or ("" if request.clear else session.mood)
            steer = {} if request.clear else dict(session.steer)
            steer.update(self._check_attributes(persona, request.attributes))
            self._check_steering(persona, mood, steer)
            session.apply_steer(mood=request.mood or None, attributes=dict(request.attributes), clear=request.clear)
            if not await asyncio.to_thread(self.store.update, session):
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"session {echo(request.session_id)} not found (deleted meanwhile)")
            return self._session_message(session, persona)

    async def Steer(self, request, context):
        return await _unary(context, request, lambda: self.steer(request))

    async def export_session(self, request: pb.ExportSessionRequest) -> pb.SessionSnapshot:
        return pb.SessionSnapshot(data=export_snapshot(await self._session(request.session_id)))

    async def import_session(self, request: pb.ImportSessionRequest) -> pb.Session:
        try:
            session = import_snapshot(request.data)
        except SnapshotError as exc:
            raise _invalid(f"snapshot: {exc}") from None
        # A save file is untrusted: it must be within the limits and a session its
        # character can continue.
        try:
            check_session_sizes(session)
            persona = self._persona(session.character_id)
            check_session(session, persona)
        except (LimitError, InvalidAttribute) as exc:
            raise _invalid(f"snapshot: {exc}") from None
        self._check_fits(persona, session)
        async with self._lock(session.session_id):
            await asyncio.to_thread(self.store.put, session)
        return self._session_message(session, persona)

    async def ExportSession(self, request, context):
        return await _unary(context, request, lambda: self.export_session(request))

    async def ImportSession(self, request, context):
        return await _unary(context, request, lambda: self.import_session(request))

    # -- dialogue -----------------------------------------------------------------------------------
    async def say_events(self, request: pb.SayRequest) -> AsyncIterator[pb.SayEvent]:
        """Deltas then one done for a SayRequest; raises RequestError before the first event.
        Closing the iterator early (a cancel, a client gone) stops the reply and keeps the
        text streamed so far in the session."""
        backend = self._ready_backend()
        interaction_id = request.interaction_id or uuid.uuid4().hex
        if interaction_id in self._interactions:
            raise RequestError(grpc.StatusCode.ALREADY_EXISTS, f"interaction {echo(interaction_id)} is already running")
        if not request.text.strip():
            raise _invalid("text is empty: the player must say something")
        # Registered at once, so that Cancel finds a say still waiting for the session.
        waiting = self._interactions[interaction_id] = _Waiting()
        try:
            async for event in self._say_locked(backend, request, interaction_id, waiting):
                yield event
        finally:
            self._interactions.pop(interaction_id, None)

    async def _say_locked(self, backend: Backend, request, interaction_id: str, waiting: _Waiting) -> AsyncIterator[pb.SayEvent]:
        async with self._lock(request.session_id):
            session = await self._session(request.session_id)
            persona = self._persona(session.character_id)
            override = self._check_attributes(persona, request.attributes)
            conversation = Conversation(backend, self.fmt, self.history_tokens, self.store, tails=self.tails)
            try:
                turn = conversation.begin(persona, session, request.text, override, _say_options(request.options), interaction_id,
                                          tail=not request.options.disable_tail)  # fmt: skip
                if waiting.cancelled:  # cancelled before its turn came: nothing to generate
                    turn.request.params.validate()  # what submit would have refused is still refused
                    final = Finished("", "cancelled")
                    self.metrics.reply_finished(session.session_id, final.reason, 0)
                    yield self._done_event(interaction_id, final, turn.attributes)
                    return
                stream = conversation.submit(turn)
            except QueueFull as exc:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
            except PromptTooLong as exc:
                raise _invalid(
                    f"text is too long for this model: the prompt would be {exc.tokens} tokens with the character "
                    f"card and the session's context (at most {exc.limit}); say less"
                ) from None
            except (InvalidAttribute, ValueError) as exc:
                raise _invalid(str(exc)) from None
            self._interactions[interaction_id] = stream
            self._replying[session.session_id] = stream
            final: Finished | None = None
            started = last = time.perf_counter()
            try:
                async for event in stream:
                    if isinstance(event, Delta):
                        now = time.perf_counter()
                        (self.metrics.ttft if last == started else self.metrics.inter_token).observe(now - last)
                        last = now
                        yield pb.SayEvent(interaction_id=interaction_id, delta=pb.ReplyDelta(text=event.text))
                    else:
                        final = event
            finally:
                self._interactions.pop(interaction_id, None)
                self._replying.pop(session.session_id, None)
                if final is None:  # the caller went away (cancel, disconnect, deadline)
                    stream.cancel()
                    final = await asyncio.to_thread(stream.result, 30)
                self.metrics.reply_finished(session.session_id, final.reason, final.completion_tokens)
                self.metrics.backend_stats(backend.stats())
                await asyncio.to_thread(conversation.finish, turn, final)
            if final.reason == "error":
                raise RequestError(grpc.StatusCode.INTERNAL, f"generation failed: {final.error}")
            yield self._done_event(interaction_id, final, turn.attributes)

    @staticmethod
    def _done_event(interaction_id: str, final: Finished, attributes: dict[str, int]) -> pb.SayEvent:
        return pb.SayEvent(
            interaction_id=interaction_id,
            done=pb.ReplyDone(
                text=final.text,
                finish_reason=FINISH.get(final.reason, pb.FINISH_REASON_UNSPECIFIED),
                attributes=attributes,
                usage=pb.Usage(
                    prompt_tokens=final.prompt_tokens,
                    completion_tokens=final.completion_tokens,
                    time_to_first_token_ms=final.ttft_ms,
                    total_ms=final.total_ms,
                    cached_tokens=final.cached_tokens,
                    tail_tokens=final.tail_tokens,
                    tail_ms=final.tail_ms,
                ),
                emotion=final.tail.emotion if final.tail else "",
                actions=[pb.Action(name=a.name, args=a.args) for a in final.tail.actions] if final.tail else [],
                tail_error=final.tail_error or "",
            ),
        )

    async def Say(self, request, context):
        try:
            checked(request)
            async for event in self.say_events(request):
                yield event
        except RequestError as exc:
            await context.abort(exc.code, exc.message)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}")

    async def cancel(self, request: pb.CancelRequest) -> pb.CancelResponse:
        stream = self._interactions.get(request.interaction_id)
        if stream is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"interaction {echo(request.interaction_id)} is not running")
        stream.cancel()
        return pb.CancelResponse(cancelled=True)

    async def Cancel(self, request, context):
        return await _unary(context, request, lambda: self.cancel(request))

    async def Converse(self, request_iterator, context):
        """say / steer / cancel on one stream; each say runs as its own task so a cancel
        can arrive while it streams. Problems with one request come back as `error` events
        and the stream goes on. A frame that is not a ConverseRequest at all ends the
        stream with INVALID_ARGUMENT (server/guard.py): whatever stops the reader ends the
        stream, so it never waits on a reader that is gone."""
        out: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        def error_event(iid: str, code: grpc.StatusCode, message: str) -> pb.SayEvent:
            return pb.SayEvent(interaction_id=iid, error=pb.ReplyError(code=code.value[0], message=message))

        async def run_say(say):
            iid = say.interaction_id
            try:
                async for event in self.say_events(say):
                    await out.put(event)
            except RequestError as exc:
                await out.put(error_event(iid, exc.code, exc.message))
            except StoreError as exc:
                await out.put(error_event(iid, grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}"))

        async def run_steer(steer):
            try:
                await out.put(pb.SayEvent(session=await self.steer(steer)))
            except RequestError as exc:
                await out.put(error_event("", exc.code, exc.message))
            except StoreError as exc:
                await out.put(error_event("", grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}"))

        def spawn(coro) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def frame_id(message) -> str:
            kind = message.WhichOneof("request")
            iid = getattr(message, kind).interaction_id if kind in ("say", "cancel") else ""
            return iid if len(iid) <= MAX_ID else ""  # an over-long id is not echoed back

        async def read():
            # A say or a steer waits for the session's running reply (the session lock), so
            # both run as tasks and the reader stays free for a cancel. The lock is FIFO and
            # each task asks for it in its first step, so they apply in the order sent.
            async for message in request_iterator:
                try:
                    checked(message)
                except RequestError as exc:
                    await out.put(error_event(frame_id(message), exc.code, exc.message))
                    continue
                kind = message.WhichOneof("request")
                if kind == "say":
                    say = message.say
                    if not say.interaction_id:
                        say.interaction_id = uuid.uuid4().hex
                    spawn(run_say(say))
                elif kind == "steer":
                    spawn(run_steer(message.steer))
                elif kind == "cancel":
                    stream = self._interactions.get(message.cancel.interaction_id)
                    if stream is not None:
                        stream.cancel()
                    else:
                        await out.put(error_event(message.cancel.interaction_id, grpc.StatusCode.NOT_FOUND, "interaction is not running"))
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

        async def reader():
            try:
                await read()
                await out.put(None)
            except Exception as exc:  # a malformed frame, a broken stream: the stream ends with it
                await out.put(exc)

        read_task = asyncio.create_task(reader())
        try:
            while True:
                event = await out.get()
                if event is None:
                    break
                if isinstance(event, Exception):
                    raise event
                yield event
        finally:
            read_task.cancel()
            for task in list(tasks):
                task.cancel()


    # -- scenes -----------------------------------------------------------------------------------
    def _scene(self, scene_id: str) -> Scene:
        if not scene_id:
            raise _invalid("scene_id is empty")
        scene = self._scenes.get(scene_id)
        if scene is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"scene {echo(scene_id)} not found (deleted or never created)")
        return scene

    def _scene_lock(self, scene_id: str) -> asyncio.Lock:
        lock = self._scene_locks.get(scene_id)
        if lock is None:
            lock = self._scene_locks[scene_id] = asyncio.Lock()
        return lock

    def _member_message(self, scene: Scene, member) -> pb.SceneMember:
        persona = self.characters.get(member.character_id)
        attributes = persona.resolve(mood=member.mood or None, steer=member.steer) if persona else {}
        said = sum(1 for line in scene.heard(member) if line.speaker_id == member.member_id)
        return pb.SceneMember(member_id=member.member_id, character_id=member.character_id, name=member.name,
                              mood=member.mood, attributes=attributes, lines=said)  # fmt: skip

    def _scene_message(self, scene: Scene, transcript: bool = False) -> pb.Scene:
        message = pb.Scene(scene_id=scene.scene_id, player_name=scene.player_name, lines=len(scene.transcript),
                           last_speaker_id=scene.last_speaker() or "", seed=scene.seed,
                           members=[self._member_message(scene, m) for m in scene.members])  # fmt: skip
        if transcript:
            message.transcript.extend(pb.SceneLine(speaker_id=x.speaker_id, speaker=x.speaker, text=x.text) for x in scene.transcript)
        return message

    def _join(self, scene: Scene, spec, field: str) -> None:
        """Add the member `spec` (a MemberSpec) to `scene`, checked against its character."""
        persona = self._persona(spec.character_id)
        member_id = spec.member_id or persona.id
        where = f"{field} {member_id!r}" if len(member_id) <= 40 else field
        try:
            steer = persona.schema.check_vector(dict(spec.attributes), "attributes")
            persona.resolve(mood=spec.mood or None, steer=steer)
        except InvalidAttribute as exc:
            raise _invalid(f"{where}: {exc}") from None
        self._check_fits(persona, Session.new(persona.id, player_name=scene.player_name, context=scene.context))
        try:
            scene.join(member_id, persona.id, spec.name or persona.name, spec.mood, steer)
        except SceneError as exc:
            raise _scene_status(exc) from None

    async def CreateScene(self, request, context):
        async def run():
            scene_id = request.scene_id or uuid.uuid4().hex
            if scene_id in self._scenes:
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS, f"scene {echo(scene_id)} already exists")
            scene = Scene.new(scene_id, player_name=request.player_name, context=dict(request.context), seed=request.seed)
            for i, spec in enumerate(request.members):
                self._join(scene, spec, f"members[{i}]")
            self._scenes[scene_id] = scene
            return self._scene_message(scene)

        return await _unary(context, request, run)

    async def GetScene(self, request, context):
        return await _unary(context, request, lambda: self._scene_message(self._scene(request.scene_id), request.include_transcript))

    async def DeleteScene(self, request, context):
        async def run():
            self._scene(request.scene_id)
            running = self._scene_running.get(request.scene_id)
            if running is not None:
                running.cancel()
            async with self._scene_lock(request.scene_id):
                scene = self._scenes.pop(request.scene_id, None)
            if scene is not None and self.backend is not None:
                for member in scene.members:
                    self.backend.drop_cache(cache_key(scene.scene_id, member.member_id))
            return pb.DeleteSceneResponse()

        return await _unary(context, request, run)

    async def JoinScene(self, request, context):
        async def run():
            self._scene(request.scene_id)
            async with self._scene_lock(request.scene_id):
                scene = self._scene(request.scene_id)
                self._join(scene, request.member, "member")
                return self._scene_message(scene)

        return await _unary(context, request, run)

    async def LeaveScene(self, request, context):
        async def run():
            self._scene(request.scene_id)
            async with self._scene_lock(request.scene_id):
                scene = self._scene(request.scene_id)
                try:
                    scene.leave(request.member_id)
                except SceneError as exc:
                    raise _scene_status(exc) from None
            if self.backend is not None:
                self.backend.drop_cache(cache_key(scene.scene_id, request.member_id))
            return self._scene_message(scene)

        return await _unary(context, request, run)

    async def _steer_member(self, request) -> pb.Session:
        if request.session_id:
            raise _invalid("session_id and scene_id are both set: steer a session or a scene member, not both")
        if not request.member_id:
            raise _invalid("member_id is empty: name the scene member to steer")
        self._scene(request.scene_id)
        async with self._scene_lock(request.scene_id):
            scene = self._scene(request.scene_id)
            try:
                member = scene.member(request.member_id)
            except SceneError as exc:
                raise _scene_status(exc) from None
            persona = self._persona(member.character_id)
            mood = request.mood or ("" if request.clear else member.mood)
            steer = {} if request.clear else dict(member.steer)
            try:
                steer.update(persona.schema.check_vector(dict(request.attributes), "attributes"))
                vector = persona.resolve(mood=mood or None, steer=steer)
            except InvalidAttribute as exc:
                raise _invalid(f"member {member.member_id!r}: {exc}") from None
            member.apply_steer(mood=request.mood or None, attributes=dict(request.attributes), clear=request.clear)
            scene.touch()
            said = sum(1 for line in scene.heard(member) if line.speaker_id == member.member_id)
            return pb.Session(session_id=scene.scene_id, character_id=member.character_id, mood=member.mood,
                              attributes=vector, turns=said)  # fmt: skip

    async def ExportScene(self, request, context):
        async def run():
            async with self._scene_lock(request.scene_id):
                return pb.SceneSnapshot(data=export_scene(self._scene(request.scene_id)))

        return await _unary(context, request, run)

    async def ImportScene(self, request, context):
        async def run():
            try:
                scene = import_scene(request.data)
            except SnapshotError as exc:
                raise _invalid(f"snapshot: {exc}") from None
            try:
                check_scene_sizes(scene)
                for member in scene.members:  # an old session save: names from the characters
                    persona = self._persona(member.character_id)
                    if not member.name:
                        member.name = persona.name
                        for line in scene.transcript:
                            if line.speaker_id == member.member_id and not line.speaker:
                                line.speaker = persona.name
                check_scene(scene, self._persona)
            except (LimitError, InvalidAttribute) as exc:
                raise _invalid(f"snapshot: {exc}") from None
            if not scene.seed:
                scene.seed = int.from_bytes(hashlib.sha256(scene.scene_id.encode()).digest()[:8], "big") >> 1 or 1
            running = self._scene_running.get(scene.scene_id)
            if running is not None:
                running.cancel()
            async with self._scene_lock(scene.scene_id):
                old = self._scenes.get(scene.scene_id)
                self._scenes[scene.scene_id] = scene
            if old is not None and self.backend is not None:
                for member in old.members:
                    self.backend.drop_cache(cache_key(old.scene_id, member.member_id))
            return self._scene_message(scene)

        return await _unary(context, request, run)

    async def SceneSay(self, request, context):
        async def events():
            if not request.text.strip():
                raise _invalid("text is empty: the player must say something")
            self._scene(request.scene_id)
            # A new player line ends the scene's running banter at its next step.
            running = self._scene_running.get(request.scene_id)
            if running is not None:
                running.cancel()
            async with self._scene_lock(request.scene_id):
                scene = self._scene(request.scene_id)
                try:
                    speakers = responders(scene, request.text, list(request.member_ids))
                except SceneError as exc:
                    raise _scene_status(exc) from None
                scene.record(PLAYER_ID, request.text)
                async for event in self._scene_lines(scene, iter(speakers), dict(request.attributes), request, undo=True):
                    yield event

        async for event in self._scene_stream(request, context, events):
            yield event

    async def SceneContinue(self, request, context):
        async def events():
            self._scene(request.scene_id)
            async with self._scene_lock(request.scene_id):
                scene = self._scene(request.scene_id)
                try:
                    next_speaker(scene)
                except SceneError as exc:
                    raise _scene_status(exc) from None

                def speakers():
                    for _ in range(request.turns):
                        yield next_speaker(scene)

                async for event in self._scene_lines(scene, speakers(), None, request):
                    yield event

        async for event in self._scene_stream(request, context, events):
            yield event

    async def _scene_stream(self, request, context, events):
        """Check the request, register its interaction (Cancel finds it), run `events`."""
        iid = ""
        try:
            checked(request)
            self._ready_backend()
            iid = request.interaction_id = request.interaction_id or uuid.uuid4().hex
            if iid in self._interactions:
                iid = ""
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS, f"interaction {echo(request.interaction_id)} is already running")
            self._interactions[iid] = Interrupt()
            async for event in events():
                yield event
        except RequestError as exc:
            await context.abort(exc.code, exc.message)
        finally:
            if iid:
                self._interactions.pop(iid, None)

    async def _scene_lines(self, scene: Scene, speakers, override, request, undo: bool = False) -> AsyncIterator[pb.SceneEvent]:
        """Each speaker's line in turn (under the scene lock): deltas, then its done. The
        interaction's cancel, or a new SceneSay, ends it at the next step."""
        backend = self._ready_backend()
        iid = request.interaction_id
        run: Interrupt = self._interactions[iid]
        self._scene_running[scene.scene_id] = run
        lines = SceneConversation(backend, self.fmt, self.history_tokens)
        options = _say_options(request.options)
        try:
            for i, member_id in enumerate(speakers):
                if run.cancelled or self._scenes.get(scene.scene_id) is not scene:
                    return
                member = scene.member(member_id)
                try:
                    persona = self._persona(member.character_id)
                    turn = lines.begin(scene, member_id, persona, override, options, f"{iid}:{i}")
                    stream = lines.submit(turn)
                except (RequestError, QueueFull, PromptTooLong, InvalidAttribute, ValueError) as exc:
                    if undo and i == 0:  # nobody answered: the player's line is not kept
                        scene.transcript.pop()
                    if isinstance(exc, RequestError):
                        raise
                    if isinstance(exc, QueueFull):
                        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
                    if isinstance(exc, PromptTooLong):
                        raise _invalid(f"the scene is too long for this model: member {member_id!r}'s prompt would be "
                                       f"{exc.tokens} tokens (at most {exc.limit})") from None  # fmt: skip
                    raise _invalid(str(exc)) from None
                run.attach(stream)
                final: Finished | None = None
                try:
                    async for event in stream:
                        if isinstance(event, Delta):
                            yield pb.SceneEvent(interaction_id=iid, speaker_id=member_id, speaker=turn.speaker,
                                                delta=pb.ReplyDelta(text=event.text))  # fmt: skip
                        else:
                            final = event
                finally:
                    run.attach(None)
                    if final is None:  # the caller went away
                        stream.cancel()
                        final = await asyncio.to_thread(stream.result, 30)
                        run.cancel()
                    self.metrics.reply_finished(turn.turn.request.cache_key, final.reason, final.completion_tokens)
                    self.metrics.backend_stats(backend.stats())
                    lines.finish(scene, turn, final)
                if final.reason == "error":
                    raise RequestError(grpc.StatusCode.INTERNAL, f"generation failed: {final.error}")
                done = self._done_event(iid, final, turn.attributes).done
                yield pb.SceneEvent(interaction_id=iid, speaker_id=member_id, speaker=turn.speaker, done=done)
        finally:
            if self._scene_running.get(scene.scene_id) is run:
                del self._scene_running[scene.scene_id]


def _scene_status(exc: SceneError) -> RequestError:
    """The status of a scene model error."""
    if isinstance(exc, UnknownMember):
        return RequestError(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, (EmptyScene, SceneFull)):
        return RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, MemberExists):
        return RequestError(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    return _invalid(str(exc))


def _say_options(o: pb.GenerationOptions) -> dict:
    """A SayRequest's options as conversation options (zero = the persona's setting)."""
    options = {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "top_p": o.top_p, "top_k": o.top_k}
    if o.seed:
        options["seed"] = o.seed
    if o.ignore_eos:
        options["ignore_eos"] = True
    if o.guidance:
        options["guidance"] = o.guidance
    return options


def checked(request) -> None:
    """The request's sizes (steernpc.validation), as INVALID_ARGUMENT (RequestError)."""
    try:
        check_request(request)
    except LimitError as exc:
        raise _invalid(str(exc)) from None


async def _unary(context, request, fn):
    """Check the request, run a handler body; turn RequestError into the matching status."""
    try:
        checked(request)
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
        return result
    except RequestError as exc:
        await context.abort(exc.code, exc.message)
    except StoreError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}")
