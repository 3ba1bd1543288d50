"""Say, Converse and Cancel against one real server: streamed deltas, applied attributes,
cancellation (Cancel RPC, closed stream, deadline), KV reuse, metrics, and concurrency.

Replies come from a random-weight model, so tests check structure (deltas, done, usage,
history, statuses), never wording. Long replies use a fixed seed and are cancelled early.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from server_harness import SAMPLE_PERSONAS, Reply, rpc_error, say, wait_until

from steernpc.client import AsyncNpcClient, say_request
from steernpc.persona import load_persona
from steernpc.sessions import import_snapshot
from steernpc.wire import pb

LONG = 1500  # max_new_tokens for replies that must still be running when cancelled
LONGEST = 1700  # what still fits the engine's 2048-token context after a first-turn prompt


def persona(cid: str):
    return load_persona(SAMPLE_PERSONAS / f"{cid}.yaml")


@pytest.fixture(scope="module")
def server(launch):
    return launch("dialogue", metrics=True)


def history(npc, session_id: str):
    return import_snapshot(npc.export_session(session_id)).history


# -- Say ------------------------------------------------------------------------------------------

def test_say_deltas_concatenate_to_done_text_and_report_usage(npc, stub):
    npc.create_session("brom", session_id="stream")
    for seed in (1, 2, 3):
        reply = say(stub, "stream", f"Can you fix sword number {seed}?", max_new_tokens=40, seed=seed)
        assert len(reply.deltas) > 1 and all(reply.deltas)
        assert reply.text == reply.done.text and reply.done.text
        assert reply.done.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
        usage = reply.done.usage
        assert 0 < usage.completion_tokens <= 40 and usage.prompt_tokens > 0
        assert usage.total_ms >= usage.time_to_first_token_ms > 0
        if reply.done.finish_reason == pb.FINISH_REASON_LENGTH:
            assert usage.completion_tokens == 40
    assert npc.get_session("stream").turns == 3


def test_say_with_client_chosen_interaction_id(npc, stub):
    npc.create_session("brom", session_id="iid")
    reply = say(stub, "iid", "Hello.", interaction_id="my-interaction-7", max_new_tokens=5, seed=1)
    assert reply.interaction_id == "my-interaction-7"
    other = say(stub, "iid", "Hello again.", max_new_tokens=5, seed=1)
    assert other.interaction_id and other.interaction_id != "my-interaction-7"


def test_done_attributes_are_the_resolved_vector(npc, stub):
    brom = persona("brom")
    mood = max(brom.moods, key=lambda m: len(brom.moods[m]))
    in_mood = brom.resolve(mood=mood)
    # one attribute from each layer, each differing from what the layer below gives
    from_mood = next(a for a, v in brom.moods[mood].items() if v != brom.resolve()[a])
    steer_attr, override_attr = [a for a in brom.schema.names if a != from_mood][:2]
    steer = {steer_attr: 4 if in_mood[steer_attr] != 4 else 0}
    override = {override_attr: 4 if in_mood[override_attr] != 4 else 0}
    npc.create_session("brom", session_id="resolved", mood=mood, attributes=steer)
    reply = say(stub, "resolved", "What are you looking at?", attributes=override, max_new_tokens=6, seed=4)
    want = brom.resolve(mood=mood, steer=steer, override=override)
    assert dict(reply.done.attributes) == want
    assert want[from_mood] == brom.moods[mood][from_mood] != brom.resolve()[from_mood]  # every layer applied
    assert want[steer_attr] == steer[steer_attr] and want[override_attr] == override[override_attr]
    # the override was for that reply only; the session steer stays
    plain = say(stub, "resolved", "Fine.", max_new_tokens=6, seed=5)
    assert dict(plain.done.attributes) == brom.resolve(mood=mood, steer=steer) != want
    labels = [e.labels for e in history(npc, "resolved")]
    assert labels == [want, dict(plain.done.attributes)]  # each exchange keeps the vector it was made under


def test_persona_limits_clamp_overrides(npc, stub):
    limited = [p for p in map(load_persona, sorted(SAMPLE_PERSONAS.glob("*.yaml"))) if p.limits]
    assert limited, "the sample personas include characters with limits"
    clamped_somewhere = False
    for p in limited:
        # push every limited attribute past its limit: the schema allows it, the limit clamps it
        steer, override, want = {}, {}, {}
        for name, (low, high) in p.limits.items():
            spec = p.schema[name]
            extreme = spec.max if high < spec.max else spec.min
            (override if len(override) <= len(steer) else steer)[name] = extreme
            want[name] = max(low, min(high, extreme))
            clamped_somewhere |= want[name] != extreme
        sid = f"limits-{p.id}"
        npc.create_session(p.id, session_id=sid, attributes=steer)
        reply = say(stub, sid, "Say it louder!", attributes=override, max_new_tokens=6, seed=6)
        applied = dict(reply.done.attributes)
        assert applied == p.resolve(steer=steer, override=override)
        assert {k: applied[k] for k in want} == want, (p.id, applied, p.limits)
        assert dict(npc.get_session(sid).attributes) == p.resolve(steer=steer)
    assert clamped_somewhere


def test_kv_cache_is_reused_on_the_next_turn(npc, stub):
    npc.create_session("marta", session_id="kv")
    first = say(stub, "kv", "A room for the night, please.", max_new_tokens=8, seed=8)
    second = say(stub, "kv", "And a hot meal?", max_new_tokens=8, seed=9)
    u1, u2 = first.done.usage, second.done.usage
    assert u2.prompt_tokens > u1.prompt_tokens  # the second prompt carries the first exchange
    assert u2.cached_tokens > 0
    assert u2.cached_tokens >= u1.prompt_tokens - 2, (u1, u2)  # the whole first prompt came from the cache
    assert u2.cached_tokens >= 0.6 * u2.prompt_tokens, (u1, u2)


# -- cancellation -----------------------------------------------------------------------------------

def test_cancel_rpc_stops_the_generation(npc, stub):
    npc.create_session("lysander", session_id="cancel-rpc")
    call = stub.Say(say_request("cancel-rpc", "Sing me the longest ballad you know.", interaction_id="ballad",
                                max_new_tokens=LONG, seed=7), timeout=120)  # fmt: skip
    events = [next(call)]
    assert events[0].HasField("delta"), events[0]
    assert npc.cancel("ballad") is True
    events += list(call)
    reply = Reply(events)
    assert reply.done.finish_reason == pb.FINISH_REASON_CANCELLED
    assert reply.done.usage.completion_tokens < LONG // 2
    assert reply.text == reply.done.text
    exc = rpc_error(npc.cancel, "ballad")  # it is no longer running
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    after = say(stub, "cancel-rpc", "A short one, then.", max_new_tokens=4, seed=1)  # the session goes on
    assert after.done.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)


def test_deadline_exceeded_cancels_the_reply_and_the_server_goes_on(server, npc, stub):
    npc.create_session("orsolya", session_id="deadline")
    cancelled = server.metric("steernpc_replies_total", reason="cancelled")
    tokens = server.metric("steernpc_generated_tokens_total")
    request = say_request("deadline", "Tell me every legend of the mountain.", max_new_tokens=LONGEST, seed=11)
    exc = rpc_error(lambda: list(stub.Say(request, timeout=1.5)))
    assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: server.metric("steernpc_replies_total", reason="cancelled") >= cancelled + 1, 60,
               "the server to record the timed-out reply as cancelled")  # fmt: skip
    assert server.metric("steernpc_generated_tokens_total") - tokens < LONGEST  # it stopped early
    reply = say(stub, "deadline", "Still there?", max_new_tokens=4, seed=1)  # the session lock was released
    assert reply.done.text == reply.text
    assert server.alive()


def test_closing_the_stream_stops_the_generation(server, npc, stub):
    npc.create_session("nettle", session_id="hang-up")
    cancelled = server.metric("steernpc_replies_total", reason="cancelled")
    tokens = server.metric("steernpc_generated_tokens_total")
    call = stub.Say(say_request("hang-up", "Brew me a potion and explain each step.", max_new_tokens=LONG, seed=12), timeout=120)
    assert next(call).HasField("delta")
    call.cancel()  # the player walked away
    assert rpc_error(lambda: list(call)).code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: server.metric("steernpc_replies_total", reason="cancelled") >= cancelled + 1, 60,
               "the server to record the abandoned reply as cancelled")  # fmt: skip
    assert server.metric("steernpc_generated_tokens_total") - tokens < LONG // 2
    wait_until(lambda: server.metric("steernpc_running_requests") == 0, 30, "the batch to empty")
    say(stub, "hang-up", "Never mind.", max_new_tokens=4, seed=1)


# -- Converse -----------------------------------------------------------------------------------------

def test_converse_steer_and_cancel_mid_reply_and_bad_say_on_one_stream(server):
    brom = persona("brom")
    mood = next(m for m in sorted(brom.moods) if brom.resolve(mood=m) != brom.resolve())

    async def read_until(call, stop, limit=60.0):
        events = []
        while not stop(events):
            event = await asyncio.wait_for(call.read(), limit)
            assert event is not grpc.aio.EOF, f"stream ended early after {events}"
            events.append(event)
        return events

    async def run():
        async with AsyncNpcClient(server.target) as npc:
            await npc.create_session("brom", session_id="conv")
            call = npc.converse()
            await call.write(pb.ConverseRequest(say=say_request("conv", "Tell me about the mine collapse, every detail.",
                                                                interaction_id="c1", max_new_tokens=LONG, seed=5)))  # fmt: skip
            first = await asyncio.wait_for(call.read(), 60)
            assert first.interaction_id == "c1" and first.HasField("delta"), first
            # mid-reply: the game changes Brom's mood and the player interrupts him
            await call.write(pb.ConverseRequest(steer=pb.SteerRequest(session_id="conv", mood=mood)))
            await call.write(pb.ConverseRequest(cancel=pb.CancelRequest(interaction_id="c1")))
            events = await read_until(call, lambda ev: any(e.HasField("session") for e in ev)
                                      and any(e.HasField("done") for e in ev))  # fmt: skip
            c1 = Reply([first] + [e for e in events if e.interaction_id == "c1"])
            assert c1.done.finish_reason == pb.FINISH_REASON_CANCELLED
            assert c1.done.usage.completion_tokens < LONG // 2
            assert c1.text == c1.done.text
            assert dict(c1.done.attributes) == brom.resolve()  # the steer came after this reply started
            session = next(e.session for e in events if e.HasField("session"))
            assert session.mood == mood and dict(session.attributes) == brom.resolve(mood=mood)

            # a bad say answers with an error event for its interaction; the stream stays open
            await call.write(pb.ConverseRequest(say=say_request("conv", "Hi", {"charisma": 3}, interaction_id="bad1")))
            await call.write(pb.ConverseRequest(say=say_request("conv", "  ", interaction_id="bad2")))
            await call.write(pb.ConverseRequest(say=say_request("nowhere", "Hi", interaction_id="bad3")))
            errors = await read_until(call, lambda ev: len(ev) == 3)
            by_id = {e.interaction_id: e.error for e in errors}
            assert set(by_id) == {"bad1", "bad2", "bad3"} and all(e.HasField("error") for e in errors)
            assert by_id["bad1"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "attributes.charisma" in by_id["bad1"].message
            assert by_id["bad2"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "text" in by_id["bad2"].message
            assert by_id["bad3"].code == grpc.StatusCode.NOT_FOUND.value[0] and "nowhere" in by_id["bad3"].message
            await call.write(pb.ConverseRequest(steer=pb.SteerRequest(session_id="conv", mood="no_such_mood")))
            await call.write(pb.ConverseRequest(cancel=pb.CancelRequest(interaction_id="not-running")))
            errors = await read_until(call, lambda ev: len(ev) == 2)
            assert all(e.HasField("error") for e in errors)
            assert {e.error.code for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.NOT_FOUND.value[0]}

            await call.write(pb.ConverseRequest(say=say_request("conv", "Another ale?", interaction_id="c2", max_new_tokens=6, seed=2)))
            c2 = Reply(await read_until(call, lambda ev: any(e.HasField("done") for e in ev)))
            assert c2.interaction_id == "c2" and c2.text == c2.done.text
            assert dict(c2.done.attributes) == brom.resolve(mood=mood)  # the steer holds for the rest of the session
            await call.done_writing()
            assert await asyncio.wait_for(call.read(), 60) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            assert (await npc.get_session("conv")).mood == mood

    asyncio.run(run())


# -- concurrency ----------------------------------------------------------------------------------------

def test_twenty_concurrent_sessions_keep_their_own_history(server):
    pip = persona("pip")

    async def talk(npc, i: int):
        sid = f"crowd-{i:02d}"
        await npc.create_session("pip", session_id=sid, attributes={"humor": i % 5})
        for turn in range(3):
            done = await npc.reply(sid, f"player {i} says line {turn}", max_new_tokens=6, seed=100 + i)
            assert done is not None and dict(done.attributes) == pip.resolve(steer={"humor": i % 5})
        return sid

    async def run():
        async with AsyncNpcClient(server.target, timeout=120) as npc:
            assert dict((await npc.get_character("pip")).attributes) == pip.resolve()
            sids = await asyncio.gather(*(talk(npc, i) for i in range(20)))
            return {sid: await npc.export_session(sid) for sid in sids}

    snapshots = asyncio.run(run())
    assert len(snapshots) == 20
    for i, (sid, data) in enumerate(sorted(snapshots.items())):
        session = import_snapshot(data)
        assert session.session_id == sid and session.steer == {"humor": i % 5}
        assert [e.user for e in session.history] == [f"player {i} says line {t}" for t in range(3)]
        assert all(e.reply for e in session.history)
        assert all(e.labels == pip.resolve(steer={"humor": i % 5}) for e in session.history)


def test_two_concurrent_says_on_one_session_are_serialized(server, npc):
    npc.create_session("tobias", session_id="one-session")

    async def one(client, text: str):
        events = [e async for e in client.say_events("one-session", text, max_new_tokens=30, seed=3)]
        return text, Reply(events)

    async def run():
        async with AsyncNpcClient(server.target, timeout=120) as client:
            return await asyncio.gather(one(client, "first question, A?"), one(client, "first question, B?"))

    results = dict(asyncio.run(run()))
    past = history(npc, "one-session")
    assert len(past) == 2 and {e.user for e in past} == set(results)
    earlier, later = results[past[0].user], results[past[1].user]
    assert [e.reply for e in past] == [earlier.done.text, later.done.text]
    # the later reply was prompted with the earlier exchange: it really ran after it
    assert later.done.usage.prompt_tokens > earlier.done.usage.prompt_tokens + 5
    assert later.done.usage.cached_tokens >= earlier.done.usage.prompt_tokens - 2


def test_bad_input_does_not_disturb_other_sessions(server, npc, stub):
    brom = persona("brom")
    mood = sorted(brom.moods)[0]
    npc.create_session("brom", session_id="victim", mood=mood, attributes={"humor": 2})
    npc.create_session("marta", session_id="bystander")
    before = npc.get_session("victim")
    started = threading.Event()
    result: dict = {}

    def victim_reply():
        try:
            events = []
            for event in stub.Say(say_request("victim", "Tell me about your brother.", max_new_tokens=200, seed=21), timeout=120):
                events.append(event)
                started.set()
            result["reply"] = Reply(events)
        except BaseException as exc:  # reported below
            result["error"] = exc
        finally:
            started.set()

    worker = threading.Thread(target=victim_reply)
    worker.start()
    assert started.wait(60)
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    # first what is refused without waiting for the victim's session
    quick = [
        (lambda: npc.say_events("victim", "", max_new_tokens=4), invalid),
        (lambda: npc.say_events("victim", "   ", attributes={"humor": 9}), invalid),
        (lambda: npc.import_session(b"\x85\xa6format\xb0steernpc.sess"), invalid),
        (lambda: npc.import_session(b"\xff" * 64), invalid),
        (lambda: npc.create_session("brom", session_id="victim"), grpc.StatusCode.ALREADY_EXISTS),
        (lambda: npc.create_session("ghost", session_id="victim2"), not_found),
        (lambda: npc.cancel("not-the-victims-interaction"), not_found),
        (lambda: npc.get_session(""), invalid),
        (lambda: npc.delete_session("victim2"), not_found),
    ]
    # then what queues behind the victim's running reply and is refused after it
    behind = [
        (lambda: npc.steer("victim", attributes={"humor": 9}), invalid),
        (lambda: npc.steer("victim", mood="furious"), invalid),
        (lambda: npc.say_events("victim", "hi", attributes={"nope": 1}, max_new_tokens=4), invalid),
        (lambda: npc.say_events("victim", "hi", max_new_tokens=999999), invalid),
    ]
    for call, code in quick:
        assert rpc_error(call).code() == code
    side = say(stub, "bystander", "Busy tonight?", max_new_tokens=6, seed=2)  # other sessions carry on
    assert side.done.text == side.text
    for call, code in behind:
        assert rpc_error(call).code() == code
    worker.join(120)
    assert "error" not in result, result.get("error")
    reply = result["reply"]
    assert reply.done.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
    assert reply.text == reply.done.text
    assert dict(reply.done.attributes) == brom.resolve(mood=mood, steer={"humor": 2})
    after = npc.get_session("victim")
    assert (after.mood, dict(after.attributes), after.character_id) == (before.mood, dict(before.attributes), "brom")
    assert [e.user for e in history(npc, "victim")] == ["Tell me about your brother."]


# -- metrics ---------------------------------------------------------------------------------------------

def test_metrics_endpoint_exposes_latency_tokens_queue_and_sessions(server, npc, stub):
    npc.create_session("garrick", session_id="metered")
    text = server.metrics_text()
    for name in ("steernpc_time_to_first_token_seconds", "steernpc_inter_token_seconds", "steernpc_queue_depth",
                 "steernpc_active_sessions", "steernpc_generated_tokens_total", "steernpc_replies_total"):  # fmt: skip
        assert f"\n{name}" in text or text.startswith(name), f"{name} missing from /metrics"
    ttft = server.metric("steernpc_time_to_first_token_seconds_count")
    gaps = server.metric("steernpc_inter_token_seconds_count")
    tokens = server.metric("steernpc_generated_tokens_total")
    reply = say(stub, "metered", "Take me across the river.", max_new_tokens=12, seed=3)
    assert server.metric("steernpc_time_to_first_token_seconds_count") == ttft + 1
    assert server.metric("steernpc_inter_token_seconds_count") == gaps + len(reply.deltas) - 1
    assert server.metric("steernpc_generated_tokens_total") == tokens + reply.done.usage.completion_tokens
    assert server.metric("steernpc_active_sessions") >= 1
    assert server.metric("steernpc_queue_depth") == 0
    assert server.metric("steernpc_time_to_first_token_seconds_bucket", le="+Inf") == ttft + 1


def test_cancel_a_say_waiting_behind_another_on_the_same_session(npc, stub):
    npc.create_session("tobias", session_id="queued")
    running = stub.Say(say_request("queued", "First, the long story.", interaction_id="q-a", max_new_tokens=LONG, seed=13), timeout=120)
    first = next(running)
    assert first.HasField("delta")
    exc = rpc_error(lambda: list(stub.Say(say_request("queued", "Same id again.", interaction_id="q-a", max_new_tokens=4), timeout=60)))
    assert exc.code() == grpc.StatusCode.ALREADY_EXISTS and "q-a" in exc.details()
    waiting = stub.Say(say_request("queued", "Then this, which the player skips.", interaction_id="q-b", max_new_tokens=LONG, seed=14), timeout=120)

    def cancel_waiting():
        try:
            return npc.cancel("q-b")
        except grpc.RpcError as exc:  # its call may not have reached the server yet
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return False

    wait_until(cancel_waiting, 30, "Cancel(q-b) to find the waiting say", interval=0.1)
    assert npc.cancel("q-a") is True  # q-b was cancelled while q-a still ran
    skipped = Reply(list(waiting))
    assert skipped.interaction_id == "q-b"
    assert skipped.done.finish_reason == pb.FINISH_REASON_CANCELLED
    assert skipped.done.usage.completion_tokens == 0 and skipped.done.text == "" and skipped.deltas == []
    story = Reply([first, *running])
    assert story.done.finish_reason == pb.FINISH_REASON_CANCELLED
    users = [e.user for e in history(npc, "queued")]
    assert "Then this, which the player skips." not in users


def test_delete_during_a_reply_stops_it_and_the_session_stays_deleted(npc, stub):
    npc.create_session("garrick", session_id="doomed")
    call = stub.Say(say_request("doomed", "Row me across, slowly.", max_new_tokens=LONG, seed=15), timeout=120)
    first = next(call)
    assert first.HasField("delta")
    npc.delete_session("doomed")
    reply = Reply([first, *call])
    assert reply.done.finish_reason == pb.FINISH_REASON_CANCELLED
    assert reply.done.usage.completion_tokens < LONG // 2
    exc = rpc_error(npc.get_session, "doomed")
    assert exc.code() == grpc.StatusCode.NOT_FOUND  # the finished reply did not bring it back
    npc.create_session("garrick", session_id="doomed")  # the id is free again
    assert npc.get_session("doomed").turns == 0
