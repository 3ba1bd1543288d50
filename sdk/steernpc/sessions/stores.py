"""Session stores: in-memory, SQLite (the embedded default) and Redis (shared by replicas).

Every store keeps whole sessions and hands out copies: a Session returned by get() is the
caller's to edit, and nothing changes in the store until put(). Concurrent put()s of the
same session are last-write-wins. All stores are safe to use from several threads.

    store = open_store("sqlite")                      # STEERNPC_HOME/sessions.sqlite3
    store = open_store("redis", redis_url="redis://cache:6379/0")
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from steernpc.sessions.session import Session
from steernpc.sessions.snapshot import SnapshotError, export_snapshot, import_snapshot

STORE_KINDS = ("memory", "sqlite", "redis")
SQLITE_FILENAME = "sessions.sqlite3"
REDIS_PREFIX = "steernpc:session:"


class StoreError(RuntimeError):
    """A store cannot do what was asked (unreachable, closed, corrupt row); the message says
    which store (file path or Redis URL) and why."""


class SessionStore(ABC):
    """Where sessions live between turns."""

    kind: str = ""

    @abstractmethod
    def get(self, session_id: str) -> Session | None:
        """The session (a copy), or None if there is none with this id."""

    @abstractmethod
    def put(self, session: Session) -> None:
        """Insert or replace the session (stored as a copy)."""

    @abstractmethod
    def update(self, session: Session) -> bool:
        """Replace the session only if it is still stored; False (and nothing written) if it
        was deleted meanwhile, e.g. by another server on the same store while it replied."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed."""

    @abstractmethod
    def list_ids(self) -> list[str]:
        """All session ids, sorted."""

    @abstractmethod
    def count(self) -> int:
        """Number of sessions."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; later calls raise StoreError. Idempotent."""

    def describe(self) -> str:
        """Where the sessions live, for logs and errors."""
        return self.kind

    def __contains__(self, session_id: str) -> bool:
        return self.get(session_id) is not None

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def _check_session(session: Any) -> None:
    if not isinstance(session, Session):
        raise TypeError(f"put() takes a Session, got {type(session).__name__}")
    if not isinstance(session.session_id, str) or not session.session_id:
        raise ValueError("session.session_id must be a non-empty string")
    if not isinstance(session.character_id, str) or not session.character_id:
        raise ValueError("session.character_id must be a non-empty string")


def _check_id(session_id: Any) -> None:
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a string, got {type(session_id).__name__}")


# -- memory ----------------------------------------------------------------------------------

class MemoryStore(SessionStore):
    """A dict behind a lock. Sessions last as long as the process."""

    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] | None = {}

    def _data(self) -> dict[str, Session]:
        if self._sessions is None:
            raise StoreError("memory session store is closed")
        return self._sessions

    def get(self, session_id: str) -> Session | None:
        _check_id(session_id)
        with self._lock:
            found = self._data().get(session_id)
            return found.copy() if found is not None else None

    def put(self, session: Session) -> None:
        _check_session(session)
        stored = session.copy()
        with self._lock:
            self._data()[stored.session_id] = stored

    def update(self, session: Session) -> bool:
        _check_session(session)
        stored = session.copy()
        with self._lock:
            if stored.session_id not in self._data():
                return False
            self._data()[stored.session_id] = stored
            return True

    def delete(self, session_id: str) -> bool:
        _check_id(session_id)
        with self._lock:
            return self._data().pop(session_id, None) is not None

    def list_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._data())

    def count(self) -> int:
        with self._lock:
            return len(self._data())

    def close(self) -> None:
        with self._lock:
            self._sessions = None


# -- sqlite ----------------------------------------------------------------------------------

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id   TEXT PRIMARY KEY,
    character_id TEXT NOT NULL,
    updated_at   REAL NOT NULL,
    data         BLOB NOT NULL        -- snapshot.export_snapshot() bytes
);
CREATE INDEX IF NOT EXISTS sessions_updated_at ON sessions (updated_at);
"""


def default_sqlite_path() -> Path:
    """STEERNPC_HOME/sessions.sqlite3 (STEERNPC_HOME defaults to ~/.cache/steernpc)."""
    from steernpc.models import home

    return home() / SQLITE_FILENAME


class SqliteStore(SessionStore):
    """One SQLite file in WAL mode; a row per session (id, character_id, updated_at,
    snapshot blob). Each put() is committed (synchronous=FULL) before it returns, so
    sessions survive the process being killed. One connection serialized by a lock serves
    all threads; several processes may share the file (WAL + a 30 s busy timeout)."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_sqlite_path()
        self._lock = threading.Lock()
        memory = str(self.path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open session database {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and not memory:
                raise StoreError(
                    f"session database {self.path}: SQLite refused WAL mode (journal_mode is "
                    f"{mode!r}); put it on a local filesystem"
                )
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"session database {self.path} has schema version {version}; this SteerNPC "
                    f"reads version {_SCHEMA_VERSION}: upgrade SteerNPC or use another file"
                )
            conn.executescript(_SCHEMA)
            if version < _SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open session database {self.path}: {exc}") from None
        self._conn: sqlite3.Connection | None = conn

    def describe(self) -> str:
        return str(self.path)

    def _run(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """Execute under the lock; the caller holds self._lock."""
        if self._conn is None:
            raise StoreError(f"session database {self.path} is closed")
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"session database {self.path}: {exc}") from None

    def get(self, session_id: str) -> Session | None:
        _check_id(session_id)
        with self._lock:
            row = self._run("SELECT data FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        try:
            return import_snapshot(row[0])
        except SnapshotError as exc:
            raise StoreError(f"session {session_id!r} in {self.path} is corrupt: {exc}") from None

    def put(self, session: Session) -> None:
        _check_session(session)
        blob = export_snapshot(session)
        with self._lock:
            self._run(
                "INSERT INTO sessions (session_id, character_id, updated_at, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET character_id = excluded.character_id, "
                "updated_at = excluded.updated_at, data = excluded.data",
                (session.session_id, session.character_id, float(session.updated_at), blob),
            )

    def update(self, session: Session) -> bool:
        _check_session(session)
        blob = export_snapshot(session)
        with self._lock:
            return self._run(
                "UPDATE sessions SET character_id = ?, updated_at = ?, data = ? WHERE session_id = ?",
                (session.character_id, float(session.updated_at), blob, session.session_id),
            ).rowcount > 0

    def delete(self, session_id: str) -> bool:
        _check_id(session_id)
        with self._lock:
            return self._run("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount > 0

    def list_ids(self) -> list[str]:
        with self._lock:
            rows = self._run("SELECT session_id FROM sessions ORDER BY session_id").fetchall()
        return [r[0] for r in rows]

    def count(self) -> int:
        with self._lock:
            return self._run("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def prune(self, max_idle_s: float) -> int:
        """Delete sessions not updated for `max_idle_s` seconds; return how many."""
        cutoff = time.time() - max_idle_s
        with self._lock:
            return self._run("DELETE FROM sessions WHERE updated_at < ?", (cutoff,)).rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# -- redis -----------------------------------------------------------------------------------

def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore(SessionStore):
    """Sessions as Redis strings (snapshot bytes) under `prefix + session_id`, so every
    server replica pointed at the same Redis sees the same sessions. With `ttl` (seconds),
    a session expires `ttl` after its last put(). list_ids() and count() SCAN the prefix
    (O(number of keys)); they are for admin and tests, not the hot path."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = REDIS_PREFIX,
        *,
        ttl: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - redis is a core dependency
            raise StoreError("the redis store needs the `redis` package: pip install redis") from None
        if not url:
            raise ValueError("RedisStore needs a URL, e.g. redis://localhost:6379/0")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self._redis = redis
        try:
            self._client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout
            )
        except ValueError as exc:
            raise StoreError(f"invalid Redis URL {redact_url(url)}: {exc}") from None
        try:
            self._client.ping()
        except redis.exceptions.RedisError as exc:
            self._client.close()
            raise StoreError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
        self._closed = False

    def describe(self) -> str:
        return f"{redact_url(self.url)} prefix {self.prefix!r}"

    def _key(self, session_id: str) -> bytes:
        return (self.prefix + session_id).encode("utf-8")

    def _call(self, fn, *args, **kwargs):
        if self._closed:
            raise StoreError(f"Redis session store {redact_url(self.url)} is closed")
        try:
            return fn(*args, **kwargs)
        except self._redis.exceptions.RedisError as exc:
            raise StoreError(f"Redis at {redact_url(self.url)}: {exc}") from None

    def get(self, session_id: str) -> Session | None:
        _check_id(session_id)
        blob = self._call(self._client.get, self._key(session_id))
        if blob is None:
            return None
        try:
            return import_snapshot(blob)
        except SnapshotError as exc:
            raise StoreError(
                f"session {session_id!r} in Redis at {redact_url(self.url)} is corrupt: {exc}"
            ) from None

    def _set(self, session: Session, **flags) -> bool:
        _check_session(session)
        px = max(1, int(self.ttl * 1000)) if self.ttl else None
        return bool(self._call(self._client.set, self._key(session.session_id), export_snapshot(session), px=px, **flags))

    def put(self, session: Session) -> None:
        self._set(session)

    def update(self, session: Session) -> bool:
        return self._set(session, xx=True)  # SET ... XX writes only over an existing key, atomically

    def delete(self, session_id: str) -> bool:
        _check_id(session_id)
        return bool(self._call(self._client.delete, self._key(session_id)))

    def list_ids(self) -> list[str]:
        pattern = _glob_escape(self.prefix) + "*"
        keys = self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000)))
        n = len(self.prefix.encode("utf-8"))
        return sorted({k[n:].decode("utf-8", "replace") for k in keys})

    def count(self) -> int:
        return len(self.list_ids())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


# -- factory ---------------------------------------------------------------------------------

def open_store(
    kind: str,
    path: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    *,
    prefix: str = REDIS_PREFIX,
    ttl: float | None = None,
) -> SessionStore:
    """Open a session store by kind:

    - "memory": in-process, lost on exit;
    - "sqlite": `path`, default STEERNPC_HOME/sessions.sqlite3;
    - "redis": `redis_url` (required), keys `prefix + session_id`, optional `ttl` seconds.

    Raises ValueError for a bad kind or missing setting, StoreError when the store cannot
    be opened (the message names the file or the URL).
    """
    kind = (kind or "").strip().lower()
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown session store {kind!r}; kinds: {', '.join(STORE_KINDS)}")
    if ttl is not None and kind != "redis":
        raise ValueError(f"ttl applies to the redis session store only, not {kind!r}")
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(path)
    if not redis_url:
        raise ValueError("the redis session store needs a URL (redis_url), e.g. redis://localhost:6379/0")
    return RedisStore(redis_url, prefix=prefix, ttl=ttl)
