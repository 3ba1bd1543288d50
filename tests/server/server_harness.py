"""Helpers for the gRPC runtime tests: personas to edit, polling, replies and errors.
The servers themselves are tests/harness.py's NpcServer.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
from harness import SAMPLE_PERSONAS

from steernpc.wire import pb

SERVICE = "steernpc.v1.NpcService"


def copy_personas(dest: Path) -> Path:
    """A private copy of samples/personas that a test may edit."""
    shutil.copytree(SAMPLE_PERSONAS, dest)
    return dest


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns a truthy value; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Reply:
    """Every event of one Say: deltas in order and the final done."""

    def __init__(self, events: list[pb.SayEvent]):
        self.events = events
        self.deltas = [e.delta.text for e in events if e.HasField("delta")]
        dones = [e.done for e in events if e.HasField("done")]
        assert len(dones) == 1, f"expected exactly one done event, got {len(dones)}: {events!r}"
        assert events[-1].HasField("done"), "done must be the last event"
        self.done = dones[0]
        ids = {e.interaction_id for e in events}
        assert len(ids) == 1 and "" not in ids, f"every event carries the same interaction id, got {ids}"
        self.interaction_id = ids.pop()

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def say(stub, session_id: str, text: str, attributes=None, metadata=None, timeout: float = 120.0, **options) -> Reply:
    from steernpc.client import say_request

    return Reply(list(stub.Say(say_request(session_id, text, attributes, **options), metadata=metadata, timeout=timeout)))


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    """Call and return the RpcError it raises (AssertionError if it succeeds)."""
    try:
        result = fn(*args, **kwargs)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)  # a server stream raises on iteration
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected an RpcError, got {result!r}")
