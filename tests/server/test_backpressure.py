"""The bounded queue: a server with --max-batch 1 --max-queue 1 answers RESOURCE_EXHAUSTED
when full, and every request it accepted still completes."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from server_harness import Reply, say

from steernpc.client import AsyncNpcClient, NpcClient
from steernpc.wire import pb


@pytest.fixture(scope="module")
def server(launch):
    return launch("backpressure", metrics=True, extra=["--max-batch", "1", "--max-queue", "1"])


def test_full_queue_is_resource_exhausted_and_accepted_requests_complete(server):
    n = 8

    async def one(npc, sid: str, max_new_tokens: int, started: asyncio.Event | None = None, ignore_eos: bool = False):
        events = []
        try:
            call = npc.say_events(sid, f"Talk to me, {sid}.", interaction_id=f"i-{sid}", max_new_tokens=max_new_tokens, seed=31,
                                  ignore_eos=ignore_eos, timeout=300)  # fmt: skip
            async for event in call:
                events.append(event)
                if started is not None:
                    started.set()
        except grpc.aio.AioRpcError as exc:
            assert not events, f"{sid}: failed after it had started streaming: {exc}"
            return exc.code(), exc.details()
        return "ok", Reply(events)

    async def run():
        async with AsyncNpcClient(server.target, timeout=60) as npc:
            sids = [(await npc.create_session("tobias")).session_id for _ in range(n + 1)]
            # One reply fills the batch (max 1). It cannot end by itself before the slot's
            # 2048-token context is full (ignore_eos), so it is still running when n more
            # arrive at once for a queue of 1; the test ends it with Cancel afterwards.
            started = asyncio.Event()
            first = asyncio.create_task(one(npc, sids[0], 4096, started, ignore_eos=True))
            await asyncio.wait_for(started.wait(), 120)
            rest = [asyncio.create_task(one(npc, sid, 200)) for sid in sids[1:]]
            # every request but the one queued behind the first is answered while the first runs
            done, pending = await asyncio.wait(rest, timeout=240, return_when=asyncio.FIRST_COMPLETED)
            while len(pending) > 1:
                more, pending = await asyncio.wait(pending, timeout=240, return_when=asyncio.FIRST_COMPLETED)
                assert more, "a request was neither queued nor rejected"
            assert not first.done(), "the long reply ended before the queue was tested"
            assert await npc.cancel(f"i-{sids[0]}")
            return sids, [await first] + [await task for task in rest]

    sids, results = asyncio.run(run())
    assert results[0][0] == "ok" and results[0][1].done.finish_reason == pb.FINISH_REASON_CANCELLED
    rejected = [detail for kind, detail in results if kind == grpc.StatusCode.RESOURCE_EXHAUSTED]
    completed = [reply for kind, reply in results if kind == "ok"]
    assert rejected, "a full queue must answer RESOURCE_EXHAUSTED"
    assert all("queue" in detail for detail in rejected), rejected
    assert len(rejected) + len(completed) == n + 1, [kind for kind, _ in results]  # no other outcome
    assert len(completed) == 2  # the running one and the queued one
    for reply in completed[1:]:
        assert reply.done.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
        assert reply.text == reply.done.text and reply.done.usage.completion_tokens > 0

    with NpcClient(server.target, timeout=60) as npc:
        # a rejected request changed nothing and left no interaction behind: the same
        # player can simply try again, with the same interaction id
        for sid, (kind, _) in zip(sids, results):
            assert npc.get_session(sid).turns == (1 if kind == "ok" else 0)
        retry = next(sid for sid, (kind, _) in zip(sids, results) if kind != "ok")
        reply = say(npc.stub, retry, "Talk to me again.", interaction_id=f"i-{retry}", max_new_tokens=8, seed=1)
        assert reply.interaction_id == f"i-{retry}"
        assert reply.text == reply.done.text and npc.get_session(retry).turns == 1
    assert server.metric("steernpc_queue_depth") == 0

