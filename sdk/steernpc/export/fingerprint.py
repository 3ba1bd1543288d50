"""The cache key of an export made on the fly (the onnx backend's STEERNPC_HOME/onnx/):
it changes when the model or adapter files change, so a stale export is never reused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def folder_fingerprint(*paths: str | os.PathLike | None) -> str:
    """A short hash of paths plus the size and mtime of the files in them (cache keys)."""
    h = hashlib.sha256()
    for p in paths:
        if p is None:
            h.update(b"-")
            continue
        p = Path(p).resolve()
        h.update(str(p).encode())
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]
