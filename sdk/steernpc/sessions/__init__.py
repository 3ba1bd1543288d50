"""Sessions: Session and its token-budgeted history window, msgpack snapshots for save
games, and the stores (memory, sqlite, redis) the server keeps sessions in."""

from steernpc.sessions.session import Session, new_session_id
from steernpc.sessions.snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    SnapshotError,
    export_snapshot,
    import_snapshot,
)
from steernpc.sessions.stores import (
    STORE_KINDS,
    MemoryStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    StoreError,
    default_sqlite_path,
    open_store,
)
from steernpc.sessions.window import fit_history

__all__ = [
    "Session",
    "new_session_id",
    "fit_history",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "SnapshotError",
    "export_snapshot",
    "import_snapshot",
    "STORE_KINDS",
    "SessionStore",
    "MemoryStore",
    "SqliteStore",
    "RedisStore",
    "StoreError",
    "default_sqlite_path",
    "open_store",
]
