"""Helpers for the gRPC runtime tests: start a real `steernpc serve` subprocess, wait for
grpc health SERVING, read its log and its Prometheus endpoint, collect replies.

Nothing here mocks the server: every test talks to a real process over loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from steernpc.wire import pb
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE_PERSONAS = REPO / "samples" / "personas"
SERVICE = "steernpc.v1.NpcService"
START_TIMEOUT = 120.0
# A start that failed because another process grabbed the port between our free_port()
# and the server's bind is retried on fresh ports; anything else fails the test.
_PORT_CLASH = ("cannot listen on", "Address already in use")


def copy_personas(dest: Path) -> Path:
    """A private copy of samples/personas that a test may edit."""
    shutil.copytree(SAMPLE_PERSONAS, dest)
    return dest


class ServerProcess:
    """One `python -m steernpc.cli serve` subprocess; stdout/stderr go to files in `workdir`."""

    def __init__(self, model: Path, workdir: Path, *, store: str = "sqlite", store_path: Path | None = None,
                 personas: Path | None = None, metrics: bool = False, extra: list[str] | None = None,
                 tls_root: bytes | None = None, name: str = "server"):  # fmt: skip
        self.model = Path(model)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "home"
        self.store = store
        self.store_path = store_path
        self.personas = Path(personas) if personas else SAMPLE_PERSONAS
        self.metrics = metrics
        self.extra = list(extra or [])
        self.tls_root = tls_root
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.metrics_port = 0
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.stderr.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "steernpc.cli", "serve", "--model", str(self.model), "--adapter", "none",
               "--port", str(self.port), "--store", self.store, "--personas", str(self.personas)]  # fmt: skip
        if self.store_path is not None:
            cmd += ["--store-path", str(self.store_path)]
        if self.metrics:
            cmd += ["--metrics-port", str(self.metrics_port)]
        return cmd + self.extra

    def spawn(self) -> "ServerProcess":
        """Start the process on fresh free ports (does not wait; see start())."""
        self.port = free_port()
        self.metrics_port = free_port() if self.metrics else 0
        self.starts += 1
        env = dict(os.environ, STEERNPC_HOME=str(self.home), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", STEERNPC_ADAPTER="none")  # fmt: skip
        with open(self.stderr_path, "wb") as err, open(self.workdir / f"{self.name}-{self.starts}.stdout.log", "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err, env=env, cwd=self.workdir)
        return self

    def start(self, timeout: float = START_TIMEOUT, spawned: bool = False) -> "ServerProcess":
        """Start (unless `spawned`) and wait for health SERVING; AssertionError with the
        server's stderr if it does not get there."""
        for attempt in range(3):
            if not spawned or attempt:
                self.spawn()
            try:
                self.wait_serving(timeout)
                return self
            except AssertionError:
                if attempt < 2 and self.proc.poll() is not None and any(s in self.stderr() for s in _PORT_CLASH):
                    continue
                self.stop()
                raise
        raise AssertionError("unreachable")

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with code {self.proc.returncode} before SERVING:\n{self.stderr()[-6000:]}"
                    )
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                except grpc.RpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.name} on {self.target} not SERVING after {timeout:.0f} s (last health answer: {last}):\n"
                        f"{self.stderr()[-6000:]}"
                    )
                time.sleep(0.2)

    def channel(self) -> grpc.Channel:
        if self.tls_root is not None:
            return grpc.secure_channel(self.target, grpc.ssl_channel_credentials(self.tls_root))
        return grpc.insecure_channel(self.target)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, a power cut)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- observation ---------------------------------------------------------------------------
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics_text(self) -> str:
        assert self.metrics, "started without metrics=True"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics_text(), name, **labels)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0.0 when the series does not exist yet)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.eE+-]+|NaN|\+Inf)$", re.M)
    for m in pattern.finditer(text):
        have = ",".join(sorted((m.group(1) or "").split(","))) if m.group(1) else ""
        if have == want:
            return float(m.group(2))
    return 0.0


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
