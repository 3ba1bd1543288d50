"""Python client for a SteerNPC server, sync (`NpcClient`) and asyncio (`AsyncNpcClient`).

    with NpcClient("127.0.0.1:50051") as npc:
        session = npc.create_session("brom")
        for delta in npc.say(session.session_id, "Can you fix my sword?", attributes={"humor": 3}):
            print(delta, end="", flush=True)
        print(npc.last_done.attributes)
"""

from __future__ import annotations

from typing import AsyncIterator, Iterator, Mapping

import grpc

from steernpc.wire import pb, pb_grpc


def _metadata(api_key: str | None):
    return (("authorization", f"Bearer {api_key}"),) if api_key else None


def _channel_args(target: str, tls_root: bytes | None, is_async: bool):
    module = grpc.aio if is_async else grpc
    if tls_root is not None:
        return module.secure_channel(target, grpc.ssl_channel_credentials(tls_root))
    return module.insecure_channel(target)


def say_request(session_id: str, text: str, attributes=None, interaction_id: str = "", **options) -> pb.SayRequest:
    return pb.SayRequest(
        session_id=session_id,
        text=text,
        attributes=dict(attributes or {}),
        interaction_id=interaction_id,
        options=pb.GenerationOptions(**{k: v for k, v in options.items() if v is not None}),
    )


def member_spec(member) -> pb.MemberSpec:
    """A MemberSpec from a character id, a dict of MemberSpec fields, or a MemberSpec."""
    if isinstance(member, pb.MemberSpec):
        return member
    if isinstance(member, str):
        return pb.MemberSpec(character_id=member)
    return pb.MemberSpec(**{k: (dict(v) if k == "attributes" else v) for k, v in member.items()})


def scene_say_request(scene_id: str, text: str, member_ids=(), attributes=None, interaction_id: str = "", **options) -> pb.SceneSayRequest:
    return pb.SceneSayRequest(scene_id=scene_id, text=text, member_ids=list(member_ids), attributes=dict(attributes or {}),
                              interaction_id=interaction_id,
                              options=pb.GenerationOptions(**{k: v for k, v in options.items() if v is not None}))  # fmt: skip


def scene_continue_request(scene_id: str, turns: int, interaction_id: str = "", **options) -> pb.SceneContinueRequest:
    return pb.SceneContinueRequest(scene_id=scene_id, turns=turns, interaction_id=interaction_id,
                                   options=pb.GenerationOptions(**{k: v for k, v in options.items() if v is not None}))  # fmt: skip


class NpcClient:
    def __init__(self, target: str = "127.0.0.1:50051", api_key: str | None = None, tls_root: bytes | None = None, timeout: float | None = 30.0):
        self.channel = _channel_args(target, tls_root, is_async=False)
        self.stub = pb_grpc.NpcServiceStub(self.channel)
        self.metadata = _metadata(api_key)
        self.timeout = timeout
        self.last_done: pb.ReplyDone | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def _call(self, method, request, timeout=None):
        return method(request, metadata=self.metadata, timeout=timeout or self.timeout)

    def list_characters(self) -> list[pb.Character]:
        return list(self._call(self.stub.ListCharacters, pb.ListCharactersRequest()).characters)

    def get_character(self, character_id: str) -> pb.Character:
        return self._call(self.stub.GetCharacter, pb.GetCharacterRequest(character_id=character_id))

    def create_session(self, character_id: str, session_id: str = "", mood: str = "", attributes: Mapping[str, int] | None = None,
                       player_name: str = "", context: Mapping[str, str] | None = None) -> pb.Session:  # fmt: skip
        request = pb.CreateSessionRequest(character_id=character_id, session_id=session_id, mood=mood,
                                          attributes=dict(attributes or {}), player_name=player_name, context=dict(context or {}))  # fmt: skip
        return self._call(self.stub.CreateSession, request)

    def get_session(self, session_id: str) -> pb.Session:
        return self._call(self.stub.GetSession, pb.GetSessionRequest(session_id=session_id))

    def delete_session(self, session_id: str) -> None:
        self._call(self.stub.DeleteSession, pb.DeleteSessionRequest(session_id=session_id))

    def steer(self, session_id: str, mood: str = "", attributes: Mapping[str, int] | None = None, clear: bool = False) -> pb.Session:
        request = pb.SteerRequest(session_id=session_id, mood=mood, attributes=dict(attributes or {}), clear=clear)
        return self._call(self.stub.Steer, request)

    def say_events(self, session_id: str, text: str, attributes=None, timeout: float | None = None, **options) -> Iterator[pb.SayEvent]:
        """Every SayEvent of one reply (deltas, then done)."""
        request = say_request(session_id, text, attributes, **options)
        return self.stub.Say(request, metadata=self.metadata, timeout=timeout)

    def say(self, session_id: str, text: str, attributes=None, **options) -> Iterator[str]:
        """Text deltas of one reply; afterwards `last_done` holds the final event."""
        for event in self.say_events(session_id, text, attributes, **options):
            if event.HasField("delta"):
                yield event.delta.text
            elif event.HasField("done"):
                self.last_done = event.done

    def reply(self, session_id: str, text: str, attributes=None, **options) -> pb.ReplyDone:
        """Say and wait for the whole reply."""
        for _ in self.say(session_id, text, attributes, **options):
            pass
        return self.last_done

    def cancel(self, interaction_id: str) -> bool:
        return self._call(self.stub.Cancel, pb.CancelRequest(interaction_id=interaction_id)).cancelled

    def export_session(self, session_id: str) -> bytes:
        return self._call(self.stub.ExportSession, pb.ExportSessionRequest(session_id=session_id)).data

    def import_session(self, data: bytes) -> pb.Session:
        return self._call(self.stub.ImportSession, pb.ImportSessionRequest(data=data))

    def converse(self, requests: Iterator[pb.ConverseRequest]) -> Iterator[pb.SayEvent]:
        return self.stub.Converse(requests, metadata=self.metadata)

    # -- scenes ----------------------------------------------------------------------------------
    def create_scene(self, scene_id: str = "", members=(), player_name: str = "", context: Mapping[str, str] | None = None,
                     seed: int = 0) -> pb.Scene:  # fmt: skip
        """A scene; `members` are character ids, dicts of MemberSpec fields or MemberSpecs."""
        request = pb.CreateSceneRequest(scene_id=scene_id, player_name=player_name, context=dict(context or {}), seed=seed,
                                        members=[member_spec(m) for m in members])  # fmt: skip
        return self._call(self.stub.CreateScene, request)

    def get_scene(self, scene_id: str, include_transcript: bool = False) -> pb.Scene:
        return self._call(self.stub.GetScene, pb.GetSceneRequest(scene_id=scene_id, include_transcript=include_transcript))

    def delete_scene(self, scene_id: str) -> None:
        self._call(self.stub.DeleteScene, pb.DeleteSceneRequest(scene_id=scene_id))

    def join_scene(self, scene_id: str, member) -> pb.Scene:
        return self._call(self.stub.JoinScene, pb.JoinSceneRequest(scene_id=scene_id, member=member_spec(member)))

    def leave_scene(self, scene_id: str, member_id: str) -> pb.Scene:
        return self._call(self.stub.LeaveScene, pb.LeaveSceneRequest(scene_id=scene_id, member_id=member_id))

    def steer_member(self, scene_id: str, member_id: str, mood: str = "", attributes: Mapping[str, int] | None = None,
                     clear: bool = False) -> pb.Session:  # fmt: skip
        request = pb.SteerRequest(scene_id=scene_id, member_id=member_id, mood=mood, attributes=dict(attributes or {}), clear=clear)
        return self._call(self.stub.Steer, request)

    def scene_say(self, scene_id: str, text: str, member_ids=(), attributes=None, interaction_id: str = "",
                  timeout: float | None = None, **options) -> Iterator[pb.SceneEvent]:  # fmt: skip
        """Every SceneEvent of the player's line: each responder's deltas, then its done."""
        request = scene_say_request(scene_id, text, member_ids, attributes, interaction_id, **options)
        return self.stub.SceneSay(request, metadata=self.metadata, timeout=timeout)

    def scene_continue(self, scene_id: str, turns: int, interaction_id: str = "", timeout: float | None = None,
                       **options) -> Iterator[pb.SceneEvent]:  # fmt: skip
        """Every SceneEvent of up to `turns` banter lines."""
        request = scene_continue_request(scene_id, turns, interaction_id, **options)
        return self.stub.SceneContinue(request, metadata=self.metadata, timeout=timeout)

    def export_scene(self, scene_id: str) -> bytes:
        return self._call(self.stub.ExportScene, pb.ExportSceneRequest(scene_id=scene_id)).data

    def import_scene(self, data: bytes) -> pb.Scene:
        return self._call(self.stub.ImportScene, pb.ImportSceneRequest(data=data))


class AsyncNpcClient:
    """The same calls for asyncio code (`async with AsyncNpcClient(...) as npc:`)."""

    def __init__(self, target: str = "127.0.0.1:50051", api_key: str | None = None, tls_root: bytes | None = None, timeout: float | None = 30.0):
        self.channel = _channel_args(target, tls_root, is_async=True)
        self.stub = pb_grpc.NpcServiceStub(self.channel)
        self.metadata = _metadata(api_key)
        self.timeout = timeout
        self.last_done: pb.ReplyDone | None = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        import asyncio

        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    async def list_characters(self) -> list[pb.Character]:
        response = await self.stub.ListCharacters(pb.ListCharactersRequest(), metadata=self.metadata, timeout=self.timeout)
        return list(response.characters)

    async def get_character(self, character_id: str) -> pb.Character:
        return await self.stub.GetCharacter(pb.GetCharacterRequest(character_id=character_id), metadata=self.metadata, timeout=self.timeout)

    async def create_session(self, character_id: str, session_id: str = "", mood: str = "", attributes=None,
                             player_name: str = "", context=None) -> pb.Session:  # fmt: skip
        request = pb.CreateSessionRequest(character_id=character_id, session_id=session_id, mood=mood,
                                          attributes=dict(attributes or {}), player_name=player_name, context=dict(context or {}))  # fmt: skip
        return await self.stub.CreateSession(request, metadata=self.metadata, timeout=self.timeout)

    async def get_session(self, session_id: str) -> pb.Session:
        return await self.stub.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=self.metadata, timeout=self.timeout)

    async def delete_session(self, session_id: str) -> None:
        await self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id), metadata=self.metadata, timeout=self.timeout)

    async def steer(self, session_id: str, mood: str = "", attributes=None, clear: bool = False) -> pb.Session:
        request = pb.SteerRequest(session_id=session_id, mood=mood, attributes=dict(attributes or {}), clear=clear)
        return await self.stub.Steer(request, metadata=self.metadata, timeout=self.timeout)

    async def say_events(self, session_id: str, text: str, attributes=None, timeout: float | None = None, **options) -> AsyncIterator[pb.SayEvent]:
        call = self.stub.Say(say_request(session_id, text, attributes, **options), metadata=self.metadata, timeout=timeout)
        async for event in call:
            yield event

    async def say(self, session_id: str, text: str, attributes=None, **options) -> AsyncIterator[str]:
        async for event in self.say_events(session_id, text, attributes, **options):
            if event.HasField("delta"):
                yield event.delta.text
            elif event.HasField("done"):
                self.last_done = event.done

    async def reply(self, session_id: str, text: str, attributes=None, **options) -> pb.ReplyDone:
        done = None
        async for event in self.say_events(session_id, text, attributes, **options):
            if event.HasField("done"):
                done = event.done
        self.last_done = done
        return done

    async def cancel(self, interaction_id: str) -> bool:
        response = await self.stub.Cancel(pb.CancelRequest(interaction_id=interaction_id), metadata=self.metadata, timeout=self.timeout)
        return response.cancelled

    async def export_session(self, session_id: str) -> bytes:
        response = await self.stub.ExportSession(pb.ExportSessionRequest(session_id=session_id), metadata=self.metadata, timeout=self.timeout)
        return response.data

    async def import_session(self, data: bytes) -> pb.Session:
        return await self.stub.ImportSession(pb.ImportSessionRequest(data=data), metadata=self.metadata, timeout=self.timeout)

    def converse(self):
        """A bidirectional call: `await call.write(ConverseRequest(...))`, `async for event in call`."""
        return self.stub.Converse(metadata=self.metadata)
