"""The generated protobuf / gRPC modules for proto/steernpc/v1, built on first import.

proto/ is the single source of the wire contract. Instead of committing generated code
(which ties it to one protobuf version), we run grpc_tools' protoc the first time the
modules are needed, into sdk/steernpc/v1/, and again whenever the .proto is newer.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

_SDK = Path(__file__).resolve().parents[1]
PROTO_ROOT = _SDK.parent / "proto"
PROTO_FILE = PROTO_ROOT / "steernpc" / "v1" / "npc.proto"
_OUT = _SDK / "steernpc" / "v1"


def _stale() -> bool:
    target = _OUT / "npc_pb2_grpc.py"
    if not target.exists():
        return True
    return PROTO_FILE.exists() and PROTO_FILE.stat().st_mtime > target.stat().st_mtime


def generate(force: bool = False) -> None:
    if not (force or _stale()):
        return
    if not PROTO_FILE.exists():
        raise FileNotFoundError(f"{PROTO_FILE} is missing; SteerNPC must run from its source checkout")
    from grpc_tools import protoc

    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(dir=_SDK) as tmp:
        code = protoc.main(
            ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(PROTO_FILE)]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILE} (exit {code})")
        built = Path(tmp) / "steernpc" / "v1"
        (built / "__init__.py").write_text('"""Generated from proto/steernpc/v1 by steernpc.wire; do not edit."""\n')
        _OUT.mkdir(exist_ok=True)
        for name in ("npc_pb2.py", "npc_pb2_grpc.py", "__init__.py"):
            os.replace(built / name, _OUT / name)  # atomic: a concurrent importer sees old or new


generate()
from steernpc.v1 import npc_pb2 as pb  # noqa: E402
from steernpc.v1 import npc_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["pb", "pb_grpc", "generate", "PROTO_ROOT"]
