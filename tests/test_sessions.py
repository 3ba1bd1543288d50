"""Sessions: history window, msgpack snapshots, and the memory / SQLite / Redis stores.

SQLite and Redis are real: a `redis-server` is started on a free local port for this
module (the test run fails, it does not skip, when redis-server is missing).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import pytest

from steernpc.prompt import Exchange
from steernpc.sessions import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    MemoryStore,
    RedisStore,
    Session,
    SessionStore,
    SnapshotError,
    SqliteStore,
    StoreError,
    default_sqlite_path,
    export_snapshot,
    import_snapshot,
    new_session_id,
    open_store,
)
from steernpc.sessions.stores import redact_url


def words(text: str) -> int:
    return len(text.split())


def make_session(session_id: str = "s1", turns: int = 3) -> Session:
    s = Session.new(
        "guard",
        session_id,
        mood="hostile",
        steer={"humor": 3, "verbosity": 1},
        player_name="Ada",
        context={"location": "north gate", "quest": "lost ring"},
    )
    for i in range(turns):
        s.record(f"player line {i}", f"npc reply {i} ünïcode ✓", {"humor": i, "friendliness": 4 - i})
    return s


# -- Session ---------------------------------------------------------------------------------

def test_new_session_defaults_and_turns():
    s = Session.new("bard")
    assert len(s.session_id) == 32 and s.session_id != new_session_id()
    assert s.character_id == "bard" and s.mood == "" and s.steer == {} and s.history == []
    assert s.turns == 0 and s.updated_at == s.created_at
    before = s.updated_at
    time.sleep(0.01)
    ex = s.record("hello", "well met", {"humor": 2})
    assert s.turns == 1 and s.history[-1] is ex and ex.labels == {"humor": 2}
    assert s.updated_at > before
    with pytest.raises(TypeError):
        s.append(("hello", "hi"))


def test_apply_steer_and_trim():
    s = make_session(turns=5)
    s.apply_steer(attributes={"humor": 0, "friendliness": 1})
    assert s.mood == "hostile" and s.steer == {"humor": 0, "verbosity": 1, "friendliness": 1}
    s.apply_steer(mood="drunk")
    assert s.mood == "drunk"
    s.apply_steer(clear=True, attributes={"verbosity": 4})
    assert s.mood == "" and s.steer == {"verbosity": 4}
    assert s.trim(2) == 3 and [e.user for e in s.history] == ["player line 3", "player line 4"]
    assert s.trim(10) == 0
    with pytest.raises(ValueError):
        s.trim(-1)


def _history(*sizes: tuple[int, int]) -> Session:
    """A session whose i-th exchange has user/reply of the given word counts."""
    s = Session.new("guard", "w")
    for i, (u, r) in enumerate(sizes):
        s.append(Exchange(user=" ".join([f"u{i}"] * u), reply=" ".join([f"r{i}"] * r) if r else None, labels={"humor": i}))
    return s


def test_window_keeps_newest_turns_that_fit():
    s = _history((2, 3), (1, 1), (4, 4), (2, 2))  # costs 5, 2, 8, 4
    assert s.window(words, 100) == s.history
    assert s.window(words, 14) == s.history[1:]  # 4 + 8 + 2 = 14 fits exactly
    assert s.window(words, 13) == s.history[2:]  # 4 + 8 = 12; adding 2 would be 14
    assert s.window(words, 12) == s.history[2:]
    assert s.window(words, 11) == s.history[3:]
    assert s.window(words, 4) == s.history[3:]


def test_window_is_a_contiguous_tail():
    # An older cheap turn never jumps over a newer turn that did not fit.
    s = _history((1, 0), (50, 50), (2, 2))
    assert s.window(words, 10) == s.history[2:]


def test_window_always_keeps_the_newest_exchange():
    s = _history((1, 1), (30, 30))
    assert s.window(words, 10) == [s.history[-1]]
    assert s.window(words, 0) == [s.history[-1]]
    assert Session.new("guard").window(words, 100) == []


def test_window_counts_user_and_reply_and_pending_turn():
    s = _history((3, 3), (2, 0))  # the newest is pending (no reply yet): costs 2
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return words(text)

    assert s.window(count, 8) == s.history
    assert s.window(count, 7) == s.history[1:]
    assert all(isinstance(c, str) for c in calls)
    with pytest.raises(TypeError):
        s.window(words, 3.5)


def test_copy_is_deep():
    s = make_session()
    c = s.copy()
    assert c == s
    c.history[0].labels["humor"] = 99
    c.steer["humor"] = 0
    c.context["x"] = "y"
    c.record("more", "more", {})
    assert s.history[0].labels["humor"] == 0
    assert s.steer["humor"] == 3 and "x" not in s.context and s.turns == 3


# -- snapshots -------------------------------------------------------------------------------

def test_snapshot_round_trip():
    s = make_session(turns=4)
    s.append(Exchange(user="and now?", reply=None, labels={}))
    data = export_snapshot(s)
    assert isinstance(data, bytes)
    back = import_snapshot(data)
    assert back == s
    assert back.history[-1].reply is None and back.turns == 5
    assert import_snapshot(bytearray(data)) == s
    assert import_snapshot(memoryview(data)) == s


def test_snapshot_layout_is_the_documented_one():
    s = make_session(turns=1)
    obj = msgpack.unpackb(export_snapshot(s), raw=False)
    assert obj["format"] == SNAPSHOT_FORMAT == "steernpc.session"
    assert obj["version"] == SNAPSHOT_VERSION == 1
    for key in ("character_id", "session_id", "mood", "steer", "player_name", "context", "history", "created_at"):
        assert key in obj
    assert obj["history"] == [{"user": "player line 0", "reply": "npc reply 0 ünïcode ✓", "labels": {"humor": 0, "friendliness": 4}}]
    assert obj["steer"] == {"humor": 3, "verbosity": 1}


def test_snapshot_empty_session_and_hand_written_minimal_snapshot():
    s = Session.new("guard", "empty")
    assert import_snapshot(export_snapshot(s)) == s
    minimal = {
        "format": "steernpc.session", "version": 1, "character_id": "guard", "session_id": "abc",
        "mood": "", "steer": {}, "player_name": "", "context": {}, "history": [], "created_at": 1700000000,
        "added_in_a_later_minor": True,
    }  # fmt: skip
    back = import_snapshot(msgpack.packb(minimal))
    assert back.session_id == "abc" and back.created_at == back.updated_at == 1700000000.0


def _packed(**changes) -> bytes:
    obj = msgpack.unpackb(export_snapshot(make_session(turns=2)), raw=False)
    for key, value in changes.items():
        if value is _DROP:
            del obj[key]
        else:
            obj[key] = value
    return msgpack.packb(obj, use_bin_type=True)


_DROP = object()


def _history_item(**changes):
    item = {"user": "hi", "reply": "ho", "labels": {"humor": 1}}
    for key, value in changes.items():
        if value is _DROP:
            del item[key]
        else:
            item[key] = value
    return [item]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty snapshot"),
        ("not bytes", "must be bytes"),
        (b"hello world", "not a session snapshot: data starts with byte 0x68"),
        (b'{"format": "steernpc.session"}', "a snapshot is a msgpack map"),
        (b"\x1f\x8b\x08\x00", "data starts with byte 0x1f"),
        (msgpack.packb([1, 2, 3]), "a snapshot is a msgpack map"),
        (b"\x81\xc1", "corrupt snapshot: not valid msgpack"),
        (export_snapshot(make_session())[:-7], "truncated snapshot"),
        (export_snapshot(make_session())[:1], "truncated snapshot"),
        (export_snapshot(make_session()) + b"\x00\x01", "2 unexpected byte(s) after the end"),
        (msgpack.packb({"format": "x", "a": b"\xff\xfe"}, use_bin_type=False), "not valid UTF-8"),
        (msgpack.packb({1: 2}), "corrupt snapshot"),
        (_packed(format="steernpc.persona"), "format 'steernpc.persona', expected format 'steernpc.session'"),
        (_packed(format=_DROP), "no format marker"),
        (_packed(version=2), "unsupported snapshot version 2"),
        (_packed(version=0), "invalid snapshot version 0"),
        (_packed(version="1"), "version must be an integer, got str '1'"),
        (_packed(version=True), "version must be an integer, got bool"),
        (_packed(version=_DROP), "snapshot has no version"),
        (_packed(history=_DROP, created_at=_DROP), "missing field(s): history, created_at"),
        (_packed(character_id=_DROP), "missing field(s): character_id"),
        (_packed(session_id=""), "session_id must be a non-empty string"),
        (_packed(character_id=7), "character_id must be a non-empty string, got int"),
        (_packed(mood=None), "mood must be a string, got nil"),
        (_packed(player_name=b"Ada"), "player_name must be a string, got bytes"),
        (_packed(steer=[1]), "steer must be a map of attribute name to integer, got list"),
        (_packed(steer={"humor": "3"}), "steer['humor'] must be an integer, got str '3'"),
        (_packed(steer={"humor": 1.5}), "steer['humor'] must be an integer, got float"),
        (_packed(context={"a": 1}), "context['a'] must be a string, got int"),
        (_packed(context="x"), "context must be a map of string to string"),
        (_packed(created_at="yesterday"), "created_at must be a non-negative number"),
        (_packed(created_at=-5), "created_at must be a non-negative number"),
        (_packed(created_at=float("nan")), "created_at must be a non-negative number"),
        (_packed(updated_at=None), "updated_at must be a non-negative number"),
        (_packed(history={"user": "x"}), "history must be a list, got dict"),
        (_packed(history=["hi"]), "history[0] must be a map with user, reply, labels"),
        (_packed(history=_history_item(labels=_DROP)), "history[0] is missing field(s): labels"),
        (_packed(history=_history_item(user=None)), "history[0].user must be a string, got nil"),
        (_packed(history=_history_item(reply=3)), "history[0].reply must be a string, got int"),
        (_packed(history=_history_item(labels={"humor": None})), "history[0].labels['humor'] must be an integer"),
        (_packed(history=_history_item(labels=[])), "history[0].labels must be a map"),
    ],
)
def test_snapshot_errors_say_what_is_wrong(data, message):
    with pytest.raises(SnapshotError) as info:
        import_snapshot(data)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_snapshot_fuzz_only_ever_raises_snapshot_error():
    rng = random.Random(1234)
    good = export_snapshot(make_session(turns=6))
    ok = failed = 0

    def check(data: bytes) -> None:
        nonlocal ok, failed
        try:
            s = import_snapshot(data)
        except SnapshotError as exc:
            assert str(exc)
            failed += 1
        else:
            assert isinstance(s, Session)
            ok += 1

    for n in range(len(good)):  # every truncation
        with pytest.raises(SnapshotError, match="truncated snapshot" if n else "empty snapshot"):
            import_snapshot(good[:n])
    for _ in range(3000):
        data = bytearray(good)
        op = rng.random()
        if op < 0.5:  # flip 1-4 bytes
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.7:  # flip bits
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op < 0.85:  # cut and splice
            a, b = sorted(rng.randrange(len(data)) for _ in range(2))
            data = data[:a] + data[b:] if rng.random() < 0.5 else data[:a] + bytes(rng.randrange(256) for _ in range(b - a)) + data[a:]
        else:  # garbage that starts like a map
            data = bytearray([rng.choice([0x8A, 0xDE, 0xDF])]) + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        check(bytes(data))
    for _ in range(500):  # pure noise
        check(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
    assert failed > 2000 and ok > 0  # some flips land inside strings and stay valid




@pytest.fixture
def redis_url(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(tmp_path / "sessions.sqlite3")
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    s.close()


# -- every store -----------------------------------------------------------------------------

def test_update_never_resurrects_a_deleted_session(store: SessionStore):
    session = make_session("u-session", turns=1)
    assert store.update(session) is False and store.get("u-session") is None  # never stored
    store.put(session)
    session.record("and then?", "then nothing", {"humor": 3})
    assert store.update(session) is True and store.get("u-session").turns == 2
    store.delete("u-session")  # e.g. DeleteSession on another server while a reply ran here
    session.record("still there?", "no", {"humor": 0})
    assert store.update(session) is False
    assert store.get("u-session") is None and "u-session" not in store.list_ids()


def test_store_get_put_delete_list(store: SessionStore):
    assert store.get("nope") is None and store.list_ids() == [] and store.count() == 0
    assert store.delete("nope") is False
    a, b = make_session("b-session"), make_session("a-session", turns=0)
    store.put(a)
    store.put(b)
    assert store.get("b-session") == a and store.get("a-session") == b
    assert store.list_ids() == ["a-session", "b-session"] and store.count() == 2
    assert "a-session" in store and "zzz" not in store

    a.record("again", "yes", {"humor": 1})
    a.apply_steer(mood="calm")
    assert store.get("b-session").turns == 3  # nothing changes until put
    store.put(a)
    got = store.get("b-session")
    assert got == a and got.turns == 4 and got.mood == "calm"

    got.history.clear()  # a returned session is a copy
    assert store.get("b-session").turns == 4

    assert store.delete("b-session") is True and store.delete("b-session") is False
    assert store.get("b-session") is None and store.list_ids() == ["a-session"] and store.count() == 1


def test_store_odd_ids_and_bad_arguments(store: SessionStore):
    for sid in ("with space", "ünï/cøde:*?[x]", "a" * 300):
        store.put(make_session(sid, turns=1))
        assert store.get(sid).session_id == sid
    assert sorted(store.list_ids()) == store.list_ids() and store.count() == 3
    with pytest.raises(TypeError):
        store.put("not a session")
    with pytest.raises(ValueError):
        store.put(Session(session_id="", character_id="guard"))
    with pytest.raises(TypeError):
        store.get(3)


def test_store_close(store: SessionStore):
    store.put(make_session())
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get("s1")
    with pytest.raises(StoreError, match="closed"):
        store.put(make_session())


def test_store_threads_writing_different_sessions(store: SessionStore):
    threads, per_thread, rounds = 8, 10, 3
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                for i in range(per_thread):
                    sid = f"t{t}-s{i}"
                    s = store.get(sid) or Session.new("guard", sid, player_name=f"player {t}")
                    s.record(f"turn {r} from {t}", f"reply {r}", {"humor": r})
                    store.put(s)
                store.list_ids()
            store.delete(f"t{t}-s0")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(60)
    assert not errors, errors
    assert store.count() == threads * (per_thread - 1)
    for t in range(threads):
        for i in range(1, per_thread):
            s = store.get(f"t{t}-s{i}")
            assert s.turns == rounds and s.player_name == f"player {t}"
            assert [e.user for e in s.history] == [f"turn {r} from {t}" for r in range(rounds)]


# -- SQLite ----------------------------------------------------------------------------------

def test_sqlite_file_is_wal_with_one_row_per_session(tmp_path):
    path = tmp_path / "deep" / "dir" / "sessions.sqlite3"
    one = make_session("one")
    with SqliteStore(path) as store:
        store.put(one)
        store.put(make_session("two", turns=1))
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = raw.execute("SELECT session_id, character_id, updated_at, data FROM sessions ORDER BY session_id").fetchall()
        raw.close()
    assert [(r[0], r[1]) for r in rows] == [("one", "guard"), ("two", "guard")]
    assert import_snapshot(rows[0][3]) == one
    assert rows[0][2] == one.updated_at


def test_sqlite_two_stores_on_one_file(tmp_path):
    path = tmp_path / "shared.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    s = make_session("shared")
    a.put(s)
    assert b.get("shared") == s
    s.record("from b", "ok", {})
    b.put(s)
    assert a.get("shared").turns == 4
    assert b.delete("shared") and a.get("shared") is None
    a.close()
    b.close()


def test_sqlite_prune_and_corrupt_row(tmp_path):
    path = tmp_path / "s.sqlite3"
    with SqliteStore(path) as store:
        old = make_session("old")
        old.updated_at = time.time() - 3600
        store.put(old)
        store.put(make_session("new"))
        assert store.prune(600) == 1 and store.list_ids() == ["new"]
        raw = sqlite3.connect(path)
        raw.execute("UPDATE sessions SET data = ? WHERE session_id = 'new'", (b"\x85garbage",))
        raw.commit()
        raw.close()
        with pytest.raises(StoreError, match=r"session 'new' in .*s\.sqlite3 is corrupt: truncated snapshot"):
            store.get("new")


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not-a-db.sqlite3"):
        SqliteStore(bad)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from steernpc.sessions import SqliteStore, Session
    store = SqliteStore(sys.argv[1])
    s = Session.new("guard", "survivor", mood="wary", steer={"humor": 1}, player_name="Ada", context={"k": "v"})
    for i in range(5):
        s.record(f"line {i}", f"reply {i}", {"humor": i})
        store.put(s)
    print("committed", flush=True)
    time.sleep(120)  # killed here, without close()
    """
)

_READER = textwrap.dedent(
    """
    import sys
    from steernpc.sessions import SqliteStore
    store = SqliteStore(sys.argv[1])
    s = store.get("survivor")
    print(s.turns, s.mood, s.steer["humor"], s.player_name, s.context["k"], s.history[-1].labels["humor"], store.count())
    """
)


def test_sqlite_survives_a_killed_process(tmp_path):
    path = tmp_path / "home" / "sessions.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        line = writer.stdout.readline()
        assert line.strip() == "committed", line
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    out = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "wary", "1", "Ada", "v", "4", "1"]


# -- Redis -----------------------------------------------------------------------------------

def test_two_redis_stores_share_sessions(redis_url):
    a, b = RedisStore(redis_url), RedisStore(redis_url)  # as two server replicas
    s = make_session("shared")
    a.put(s)
    assert b.get("shared") == s and b.list_ids() == ["shared"]
    on_b = b.get("shared")
    on_b.record("replica b turn", "ok", {"humor": 2})
    on_b.apply_steer(mood="friendly")
    b.put(on_b)
    seen = a.get("shared")
    assert seen.turns == 4 and seen.mood == "friendly" and seen.history[-1].user == "replica b turn"
    assert a.delete("shared") is True
    assert b.get("shared") is None and b.count() == 0
    a.close()
    b.close()


def test_redis_prefixes_are_separate_namespaces(redis_url):
    import redis

    game1 = RedisStore(redis_url, prefix="game1:*[s]:")
    game2 = RedisStore(redis_url, prefix="game1:x[s]:")  # would match game1's glob unescaped
    game1.put(make_session("one"))
    game2.put(make_session("two"))
    assert game1.list_ids() == ["one"] and game2.list_ids() == ["two"]
    raw = redis.Redis.from_url(redis_url)
    assert raw.exists(b"game1:*[s]:one") and raw.get(b"steernpc:session:one") is None
    raw.set(b"game1:*[s]:broken", b"\x00nope")
    with pytest.raises(StoreError, match=r"session 'broken' in Redis at redis://127\.0\.0\.1:\d+/0 is corrupt"):
        game1.get("broken")
    raw.close()
    game1.close()
    game2.close()


def test_redis_ttl_expires_idle_sessions(redis_url):
    import redis

    # States, not sleeps: Redis reports the time left, and an expiry is forced by
    # shortening it, so the test means the same on a slow or a loaded machine.
    store = RedisStore(redis_url, ttl=60.0)
    store.put(make_session("brief"))
    raw = redis.Redis.from_url(redis_url)
    key = b"steernpc:session:brief"
    assert 59_000 < raw.pttl(key) <= 60_000
    raw.pexpire(key, 5_000)  # as if 55 s had passed
    assert store.get("brief") is not None and raw.pttl(key) <= 5_000  # a read does not restart the clock
    store.put(store.get("brief"))  # a put restarts it
    assert raw.pttl(key) > 5_000
    raw.pexpire(key, 1)  # the idle time runs out
    deadline = time.monotonic() + 30
    while raw.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.get("brief") is None and store.count() == 0
    durable = RedisStore(redis_url)
    durable.put(make_session("forever"))
    assert raw.pttl(b"steernpc:session:forever") == -1
    raw.close()
    store.close()
    durable.close()
    with pytest.raises(ValueError, match="ttl"):
        RedisStore(redis_url, ttl=0)


def test_redis_unreachable_names_the_url(port):
    # nothing listens on `port` (a free loopback port)
    with pytest.raises(StoreError, match=rf"cannot reach Redis at redis://127\.0\.0\.1:{port}/0"):
        open_store("redis", redis_url=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreError, match=r"redis://admin:\*\*\*@127\.0\.0\.1") as info:
        RedisStore(f"redis://admin:hunter2@127.0.0.1:{port}/0", timeout=1)
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreError, match="invalid Redis URL"):
        RedisStore("http://example.invalid/")


def test_redact_url():
    assert redact_url("redis://u:pw@host:6379/1") == "redis://u:***@host:6379/1"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


# -- open_store ------------------------------------------------------------------------------

def test_open_store_kinds(tmp_path, monkeypatch, redis_url):
    assert isinstance(open_store("memory"), MemoryStore)
    store = open_store("sqlite", path=tmp_path / "x.sqlite3")
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "x.sqlite3"
    store.close()
    monkeypatch.setenv("STEERNPC_HOME", str(tmp_path / "home"))
    assert default_sqlite_path() == tmp_path / "home" / "sessions.sqlite3"
    store = open_store("SQLite")
    assert store.path == tmp_path / "home" / "sessions.sqlite3" and store.path.exists()
    store.close()
    store = open_store("redis", redis_url=redis_url, prefix="p:", ttl=30)
    assert isinstance(store, RedisStore) and store.prefix == "p:" and store.ttl == 30
    assert "redis://127.0.0.1" in repr(store)
    store.close()


def test_open_store_errors():
    with pytest.raises(ValueError, match="unknown session store 'mongo'; kinds: memory, sqlite, redis"):
        open_store("mongo")
    with pytest.raises(ValueError, match="needs a URL"):
        open_store("redis")
    with pytest.raises(ValueError, match="ttl applies to the redis session store only"):
        open_store("memory", ttl=5)


def test_window_drops_old_turns_in_blocks_so_the_prefix_stays_cached():
    from steernpc.prompt import Exchange
    from steernpc.sessions import Session

    session = Session.new("brom", "blocks")
    words = lambda text: len(text.split())  # noqa: E731
    starts = []
    for turn in range(12):
        session.append(Exchange(f"line {turn}", "one two three", {}))
        window = session.window(words, budget=25, step=4)
        assert sum(words(e.user) + words(e.reply) for e in window) <= 25
        assert window[-1].user == f"line {turn}"
        starts.append(window[0].user)
    # budget 25 fits 5 turns of 5 words: the first kept turn moves 4 at a time, not 1
    assert starts == ["line 0"] * 5 + ["line 4"] * 4 + ["line 8"] * 3
