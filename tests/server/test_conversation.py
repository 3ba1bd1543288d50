"""One conversation layer: a Say resolves the attribute vector once and validates its
sampling settings once, and `steernpc chat` sends the model byte-for-byte the prompts the
server sends for the same conversation.

The server here is the real NpcServicer behind a real grpc.aio server on a loopback port,
run in this process so that the counting wrappers see its calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading

import grpc
import pytest
from server_harness import SAMPLE_PERSONAS

from steernpc import persona as persona_module
from steernpc.client import NpcClient, say_request
from steernpc.generation import SamplingParams, create_backend
from steernpc.server.characters import CharacterRegistry
from steernpc.server.servicer import NpcServicer
from steernpc.sessions import MemoryStore
from steernpc.wire import pb, pb_grpc

# Replies are short and the history budget small, so old turns leave the window (in the
# server's blocks of four) after a few turns.
HISTORY_TOKENS = 40
MAX_NEW_TOKENS = 8
SEED = 3
LINES = ["Hello there!", "Can you fix my sword?", "How much?", "Too dear.", "Fine, do it.", "Is it done?", "Thanks, farewell."]


class RecordingBackend:
    """A real backend that also keeps the text of every prompt submitted to it."""

    def __init__(self, backend):
        self.backend = backend
        self.prompts: list[str] = []

    def submit(self, request):
        self.prompts.append(request.prompt)
        return self.backend.submit(request)

    def close(self) -> None:  # `steernpc chat` closes its backend; the test does that
        pass

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest.fixture
def backend(tiny_model_dir):
    """A fresh torch backend per test, so that chat and server each start from an empty
    KV cache and compute their replies the same way."""
    real = create_backend("torch", model=str(tiny_model_dir))
    yield RecordingBackend(real)
    real.close()


@contextlib.contextmanager
def serving(backend):
    """An NpcServicer on the sample personas and a memory store, served on a free loopback
    port from an event loop thread; yields a connected NpcClient."""
    servicer = NpcServicer(CharacterRegistry(SAMPLE_PERSONAS), MemoryStore(), backend, "chat", HISTORY_TOKENS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        server = grpc.aio.server()
        pb_grpc.add_NpcServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")  # the kernel picks and binds at once
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        with NpcClient(f"127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def counting(monkeypatch, owner, name: str) -> list[int]:
    """Wrap owner.name so that each call adds one to the returned counter."""
    calls = [0]
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_one_say_resolves_the_vector_once_and_validates_its_options_once(backend, monkeypatch):
    with serving(backend) as npc:
        npc.create_session("brom", session_id="count", mood="angry", attributes={"humor": 3})
        resolves = counting(monkeypatch, persona_module, "resolve_attributes")
        validates = counting(monkeypatch, SamplingParams, "validate")
        done = npc.reply("count", "Can you fix my sword?", attributes={"verbosity": 4}, max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
        assert done.text and dict(done.attributes)["verbosity"] == 4
        assert (resolves[0], validates[0]) == (1, 1)

        # a say on a Converse stream goes the same way
        resolves[0] = validates[0] = 0
        say = say_request("count", "How much?", max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
        events = list(npc.converse(iter([pb.ConverseRequest(say=say)])))
        assert events[-1].HasField("done"), events
        assert (resolves[0], validates[0]) == (1, 1)
        assert npc.get_session("count").turns == 2


def chat_prompts(backend, tiny_model_dir, monkeypatch, capsys, script: list[str]) -> list[str]:
    """Run `steernpc chat` on `script` (stdin lines) with `backend`; the prompts it sent."""
    from steernpc import generation
    from steernpc.chat import add_chat_arguments, run_chat

    args = add_chat_arguments(argparse.ArgumentParser()).parse_args(
        ["--persona", str(SAMPLE_PERSONAS / "brom.yaml"), "--model", str(tiny_model_dir), "--adapter", "",
         "--format", "chat", "--mood", "angry", "--attr", "humor=3", "--seed", str(SEED),
         "--max-new-tokens", str(MAX_NEW_TOKENS), "--history-tokens", str(HISTORY_TOKENS)]
    )  # fmt: skip
    lines = iter(script)

    def scripted_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(generation, "create_backend", lambda *a, **k: backend)
    monkeypatch.setattr("builtins.input", scripted_input)
    assert run_chat(args) == 0
    assert capsys.readouterr().out.count("Brom Ironhand: ") == 1 + len(LINES)  # greeting + one reply per line
    return list(backend.prompts)


def test_chat_and_server_send_the_same_prompts(backend, tiny_model_dir, monkeypatch, capsys):
    # /set mid-way in chat, Steer at the same point on the server
    script = LINES[:3] + ["/set verbosity 3"] + LINES[3:]
    chat = chat_prompts(backend, tiny_model_dir, monkeypatch, capsys, script)

    server_backend = RecordingBackend(create_backend("torch", model=str(tiny_model_dir)))
    try:
        with serving(server_backend) as npc:
            npc.create_session("brom", session_id="chat", mood="angry", attributes={"humor": 3})
            for i, line in enumerate(LINES):
                if i == 3:
                    npc.steer("chat", attributes={"verbosity": 3})
                npc.reply("chat", line, max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
            turns = npc.get_session("chat").turns
    finally:
        server_backend.backend.close()

    assert turns == len(LINES)
    assert len(chat) == len(server_backend.prompts) == len(LINES)
    for i, (from_chat, from_server) in enumerate(zip(chat, server_backend.prompts)):
        assert from_chat == from_server, f"turn {i}: chat and server prompts differ"
    # the window did drop old turns, so the two sides' windowing was compared too
    assert LINES[0] not in chat[-1] and LINES[-2] in chat[-1]
    assert "verbosity:3" in chat[-1] and "verbosity:3" not in chat[0]


def test_guidance_sends_a_guide_prompt_under_the_personas_own_vector(backend):
    """guidance != 1 adds the guide prompt: the same conversation, the persona's own vector."""
    from steernpc.prompt import parse_labels

    guided = []
    real_submit = backend.submit

    def keep(request):
        guided.append(request)
        return real_submit(request)

    backend.submit = keep
    with serving(backend) as npc:
        npc.create_session("brom", session_id="g", mood="angry")
        done = npc.reply("g", "Can you fix my sword?", attributes={"humor": 4}, max_new_tokens=MAX_NEW_TOKENS, seed=SEED,
                         guidance=2.5)  # fmt: skip
        assert done.text
        plain = npc.reply("g", "How much?", max_new_tokens=MAX_NEW_TOKENS, seed=SEED)
        assert plain.text
        with pytest.raises(grpc.RpcError) as info:
            npc.reply("g", "Well?", max_new_tokens=MAX_NEW_TOKENS, guidance=9.0)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "guidance = 9.0 is outside 0..8" in info.value.details()
    first, second = guided[0], guided[1]
    brom = CharacterRegistry(SAMPLE_PERSONAS).get("brom")
    assert first.params.guidance == 2.5 and first.guided
    assert parse_labels("chat", first.prompt, brom.schema) == dict(done.attributes)
    assert parse_labels("chat", first.guide_prompt, brom.schema) == brom.resolve()  # no mood, no override
    assert first.guide_prompt.split("Attributes: ")[0] == first.prompt.split("Attributes: ")[0]
    assert not second.guided and second.guide_prompt is None  # the persona's setting: off
