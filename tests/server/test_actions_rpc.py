"""The structured tail over the wire, against a real `steernpc serve` (tiny random Llama,
`--tails on`): ReplyDone carries the emotion and the actions (declared ones only: the
grammar constrains the tail), the gateway passes the same fields as JSON, a request may
turn the tail off, and a server whose model writes no tail sends neither."""

from __future__ import annotations

import pytest
from gateway_client import Http
from server_harness import copy_personas, say

from steernpc.client import NpcClient
from steernpc.wire import pb

pytest.importorskip("llguidance")

GUARD = """\
id: gate_guard
name: Bram
role: a guard at the north gate
attributes: {humor: 1, friendliness: 1, creativity: 1, verbosity: 1}
emotions: [neutral, angry, afraid]
actions:
  - name: call_guards
    description: shout for the watch
  - name: give_item
    args:
      item: [sword, potion, map]
  - name: pay
    args:
      amount: {min: 1, max: 50}
"""
DECLARED = {"call_guards": set(), "give_item": {"item"}, "pay": {"amount"}}


@pytest.fixture(scope="module")
def personas(tmp_path_factory):
    folder = copy_personas(tmp_path_factory.mktemp("personas") / "p")
    (folder / "gate_guard.yaml").write_text(GUARD)
    return folder


@pytest.fixture(scope="module")
def servers(launch, personas):
    tails, plain = launch.many({
        "tails": dict(personas=personas, extra=["--tails", "on"], studio=True, store="memory"),
        "plain": dict(personas=personas, store="memory"),
    })  # fmt: skip
    return tails, plain


def check_tail(done: pb.ReplyDone) -> None:
    assert done.tail_error == "", done.tail_error
    assert done.emotion in ("neutral", "angry", "afraid")
    assert len(done.actions) <= 1
    for action in done.actions:
        assert set(action.args) == DECLARED[action.name]
        if action.name == "give_item":
            assert action.args["item"] in ("sword", "potion", "map")
        if action.name == "pay":
            assert 1 <= int(action.args["amount"]) <= 50
    assert done.usage.tail_tokens >= 2 and done.usage.tail_ms > 0


def test_reply_done_carries_emotion_and_actions(servers):
    tails, _ = servers
    with NpcClient(tails.target, timeout=60) as npc:
        for seed in range(1, 5):
            session = npc.create_session("gate_guard")
            reply = say(npc.stub, session.session_id, "Halt! Who goes there?", max_new_tokens=6, seed=seed, temperature=1.0)
            check_tail(reply.done)
            assert reply.text == reply.done.text and "<extra_id_3>" not in reply.text and "<tail>" not in reply.text
        off = say(npc.stub, session.session_id, "Again?", max_new_tokens=4, disable_tail=True)
        assert (off.done.emotion, list(off.done.actions), off.done.usage.tail_tokens) == ("", [], 0)


def test_gateway_passes_the_tail(servers):
    tails, _ = servers
    web = Http(tails.studio_url)
    created = web.post("/api/v1/sessions", {"character_id": "gate_guard"})
    assert created.status == 200, created.error
    stream = web.say(created.body["session_id"], {"text": "Open the gate!", "options": {"max_new_tokens": 5, "seed": 7}})
    assert stream.status == 200, stream.error
    events = stream.events()
    kind, done = events[-1]
    assert kind == "done" and {k for k, _ in events[:-1]} <= {"delta"}
    assert done["emotion"] in ("neutral", "angry", "afraid") and done["tail_error"] == ""
    assert isinstance(done["actions"], list) and len(done["actions"]) <= 1
    for action in done["actions"]:
        assert action["name"] in DECLARED and set(action["args"]) == DECLARED[action["name"]]


def test_a_model_without_tails_sends_none(servers):
    _, plain = servers
    with NpcClient(plain.target, timeout=60) as npc:
        session = npc.create_session("gate_guard")
        reply = say(npc.stub, session.session_id, "Halt!", max_new_tokens=4)
        assert (reply.done.emotion, list(reply.done.actions), reply.done.tail_error) == ("", [], "")
