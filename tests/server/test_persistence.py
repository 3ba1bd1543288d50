"""Sessions outlive a server process: SQLite across a SIGKILL and a restart, and Redis
shared by two server replicas."""

from __future__ import annotations

import grpc
from server_harness import rpc_error, say

from steernpc.client import NpcClient, say_request
from steernpc.sessions import SqliteStore, import_snapshot


def test_sigkill_mid_conversation_then_restart_on_the_same_sqlite_file(launch, tmp_path):
    db = tmp_path / "saves" / "sessions.sqlite3"
    server = launch("sqlite-a", store="sqlite", store_path=db)
    with NpcClient(server.target, timeout=60) as npc:
        npc.create_session("marta", session_id="inn", mood=sorted(npc.get_character("marta").moods)[0], player_name="Ada")
        turns = [say(npc.stub, "inn", f"Question {i}: do you have a room?", max_new_tokens=8, seed=i) for i in range(2)]
        npc.steer("inn", attributes={"humor": 4})
        # the server dies mid-reply: no shutdown code runs
        call = npc.stub.Say(say_request("inn", "Question 2: what about the mountain?", max_new_tokens=1500, seed=9), timeout=120)
        assert next(call).HasField("delta")
        server.kill()
        assert rpc_error(lambda: list(call)).code() == grpc.StatusCode.UNAVAILABLE
        assert server.proc.returncode == -9

    with SqliteStore(db) as store:  # the file is intact and holds what was committed
        # The turn the kill cut is lost whole, the player's line with it (README, "Limits
        # and hostile input"): a turn is stored once, when its reply ends.
        assert store.get("inn").turns == 2

    restarted = launch("sqlite-b", store="sqlite", store_path=db)
    with NpcClient(restarted.target, timeout=60) as npc:
        session = npc.get_session("inn")
        assert session.turns == 2 and session.character_id == "marta"
        assert dict(session.attributes)["humor"] == 4  # the steer survived too
        third = say(npc.stub, "inn", "Question 3: and breakfast?", max_new_tokens=8, seed=3)
        assert npc.get_session("inn").turns == 3
        saved = import_snapshot(npc.export_session("inn"))
    assert saved.player_name == "Ada"
    assert [e.user for e in saved.history] == [
        "Question 0: do you have a room?", "Question 1: do you have a room?", "Question 3: and breakfast?"
    ]
    assert [e.reply for e in saved.history] == [turns[0].done.text, turns[1].done.text, third.done.text]
    assert saved.history[2].labels == dict(third.done.attributes) and third.done.attributes["humor"] == 4


def test_two_servers_on_one_redis_share_sessions(launch, redis_url):
    options = dict(store="redis", extra=["--redis-url", redis_url])
    a, b = launch.many({"redis-a": options, "redis-b": options})
    with NpcClient(a.target, timeout=60) as on_a, NpcClient(b.target, timeout=60) as on_b:
        created = on_a.create_session("hilde", session_id="shared", attributes={"humor": 3})
        first = say(on_a.stub, "shared", "Halt! Who goes there? (said to A)", max_new_tokens=8, seed=1)
        assert on_b.get_session("shared") == on_a.get_session("shared")  # B sees what A wrote
        assert rpc_error(on_b.create_session, "hilde", session_id="shared").code() == grpc.StatusCode.ALREADY_EXISTS

        second = say(on_b.stub, "shared", "A friend. (said to B)", max_new_tokens=8, seed=2)
        assert dict(second.done.attributes) == dict(created.attributes)
        # B's prompt carried A's turn: it is longer than a first turn would be
        assert second.done.usage.prompt_tokens > first.done.usage.prompt_tokens
        for npc in (on_a, on_b):
            saved = import_snapshot(npc.export_session("shared"))
            assert [e.user for e in saved.history] == ["Halt! Who goes there? (said to A)", "A friend. (said to B)"]
            assert [e.reply for e in saved.history] == [first.done.text, second.done.text]

        on_b.steer("shared", mood=sorted(on_b.get_character("hilde").moods)[0])
        third = say(on_a.stub, "shared", "Back to A.", max_new_tokens=8, seed=3)
        assert third.done.attributes == on_b.get_session("shared").attributes
        on_a.delete_session("shared")
        assert rpc_error(on_b.get_session, "shared").code() == grpc.StatusCode.NOT_FOUND
        assert rpc_error(lambda: list(on_b.say_events("shared", "Anyone?", max_new_tokens=4))).code() == grpc.StatusCode.NOT_FOUND

        # A reply still running on A when B deletes the session must not store it again
        # when it ends (A saves with a write-if-exists, not an insert).
        on_a.create_session("hilde", session_id="racing")
        events = on_a.say_events("racing", "Tell me everything you know.", max_new_tokens=300, seed=4)
        assert next(events).HasField("delta")  # A is replying now
        on_b.delete_session("racing")
        rest = list(events)
        assert rest[-1].HasField("done") and rest[-1].done.text
        for npc in (on_a, on_b):
            assert rpc_error(npc.get_session, "racing").code() == grpc.StatusCode.NOT_FOUND
