"""Run a server as a child process: pick a free loopback port, spawn it, wait until it is
ready, stop it. The tests, the demo and the benchmarks all start their servers with this.

    port = free_port()
    server = ServerProcess([... "--port", str(port)], grpc_health(f"127.0.0.1:{port}"),
                           log=workdir / "server.log").start(timeout=120)
    ...
    server.stop()

Readiness is a probe: a callable that returns a true value once the server is ready. A
false value, or any exception it raises, means "not yet"; the last one is quoted when the
wait times out. `grpc_health` (health SERVING) and `http_probe` (a URL answers) cover the
servers here. A process that exits before it is ready raises `ExitedEarly` at once, with
its exit code and log; one that is still not ready at the deadline raises `StartTimeout`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

Probe = Callable[[], object]

# ---------------------------------------------------------------------------------------------
# Ports
#
# `bind(("127.0.0.1", 0))` hands out a port from the kernel's ephemeral range, the range every
# outgoing connection also takes its local port from, so a port found free that way can be
# taken by someone else before the server binds it. These ports come from just below the
# ephemeral range, where the kernel never assigns one on its own, and none is handed out
# twice by one process; a server that still loses its port is restarted on a fresh one
# (`start_retrying`).

_given: set[int] = set()
_rng = random.Random(os.getpid())


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port that is free now, outside the ephemeral range, never returned before."""
    low = _ephemeral_low()
    if low > 11024:  # a usual range (32768-60999): take ports from the 10,000 below it
        for _ in range(200):
            port = _rng.randrange(low - 10000, low)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    while True:  # no room below the ephemeral range: fall back to the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port


def port_closed(port: int, timeout: float = 10.0) -> bool:
    """Wait until nothing accepts connections on loopback `port`; False if something still does."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Probes


class NotReady(Exception):
    """What a probe raises to say what it saw (quoted if the wait times out)."""


def grpc_health(target: str, credentials=None, timeout: float = 2.0) -> Probe:
    """Ready when the standard gRPC health service at `target` answers SERVING for ""."""

    def probe() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        channel = grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
        with channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status
            except grpc.RpcError as exc:
                raise NotReady(f"{exc.code().name}: {exc.details()}") from None
        if status != health_pb2.HealthCheckResponse.SERVING:
            raise NotReady(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        return True

    return probe


def http_probe(url: str, accept: Callable[[bytes], object] = lambda body: True, timeout: float = 2.0) -> Probe:
    """Ready when GET `url` answers 2xx with a body that `accept` takes."""

    def probe() -> object:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return accept(resp.read())

    return probe


# ---------------------------------------------------------------------------------------------
# The process


def describe_exit(code: int) -> str:
    """'code 3', or 'code -11 (signal SIGSEGV)' for a process that a signal ended."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code} (signal {signal.Signals(-code).name})"
    return f"code {code}"


class StartFailed(RuntimeError):
    """The server did not become ready. `log` is the file its output went to (None: inherited)."""

    def __init__(self, message: str, name: str, log: Path | None):
        super().__init__(message)
        self.name = name
        self.log = log


class ExitedEarly(StartFailed):
    def __init__(self, message: str, name: str, log: Path | None, returncode: int):
        super().__init__(message, name, log)
        self.returncode = returncode


class StartTimeout(StartFailed):
    pass


class ServerProcess:
    """One child process with a readiness probe.

    stderr goes to `log` and stdout to `stdout` (to `log` too when not given); both are
    inherited from this process when `log` is None. `new_session` puts the child in its own
    process group, and stop()/kill() signal the whole group."""

    def __init__(self, command: list[str], probe: Probe, *, name: str = "server", log: Path | None = None,
                 stdout: Path | None = None, env: dict[str, str] | None = None, cwd: Path | str | None = None,
                 new_session: bool = False):  # fmt: skip
        self.command = [str(part) for part in command]
        self.probe = probe
        self.name = name
        self.log = Path(log) if log is not None else None
        self.stdout = Path(stdout) if stdout is not None else None
        self.env = env
        self.cwd = cwd
        self.new_session = new_session
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def spawn(self) -> "ServerProcess":
        """Start the process (does not wait; see wait_ready() and start())."""
        with contextlib.ExitStack() as files:
            err = out = None
            if self.log is not None:
                err = files.enter_context(open(self.log, "wb"))
                out = files.enter_context(open(self.stdout, "wb")) if self.stdout is not None else err
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=err, env=self.env, cwd=self.cwd,
                                         start_new_session=self.new_session)  # fmt: skip
        return self

    def wait_ready(self, timeout: float, interval: float = 0.2, tick: Callable[[float], None] | None = None) -> None:
        """Poll the probe until it answers; ExitedEarly as soon as the process ends, StartTimeout
        after `timeout` s. `tick(seconds waited)` runs after each unanswered poll (a spinner)."""
        started = time.monotonic()
        last = "no answer yet"
        while True:
            if self.proc.poll() is not None:
                raise ExitedEarly(f"{self.name} exited with {describe_exit(self.proc.returncode)} before it was ready"
                                  f"{self._log_note()}", self.name, self.log, self.proc.returncode)  # fmt: skip
            try:
                answer = self.probe()
                if answer:
                    return
                last = repr(answer)
            except Exception as exc:  # not ready yet: say what was seen if it never gets there
                last = str(exc) if isinstance(exc, NotReady) else f"{type(exc).__name__}: {exc}"
            waited = time.monotonic() - started
            if waited > timeout:
                raise StartTimeout(f"{self.name} not ready after {timeout:.0f} s (last answer: {last}){self._log_note()}",
                                   self.name, self.log)  # fmt: skip
            if tick is not None:
                tick(waited)
            time.sleep(interval)

    def start(self, timeout: float, interval: float = 0.2, tick: Callable[[float], None] | None = None) -> "ServerProcess":
        """spawn() and wait_ready(); a process that did not get ready is stopped before the error."""
        self.spawn()
        self.wait_started(timeout, interval, tick)
        return self

    def wait_started(self, timeout: float, interval: float = 0.2, tick: Callable[[float], None] | None = None) -> None:
        """wait_ready() for a spawned process; stops it before raising."""
        try:
            self.wait_ready(timeout, interval, tick)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not ended after `timeout` s."""
        if not self.alive():
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout)

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL: no shutdown code runs (a crash, a power cut)."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.new_session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    # -- observation ---------------------------------------------------------------------------
    def log_text(self) -> str:
        """What the process wrote to `log` so far ("" when inherited or not written yet)."""
        if self.log is None:
            return ""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_note(self, chars: int = 6000) -> str:
        if self.log is None:
            return ""
        return f"; log {self.log}:\n{self.log_text()[-chars:]}"


def start_retrying(spawn: Callable[[], ServerProcess], timeout: float, attempts: int = 3,
                   clash: tuple[str, ...] = ("cannot listen on", "Address already in use"),
                   spawned: ServerProcess | None = None) -> ServerProcess:  # fmt: skip
    """Start a server whose port another process may grab between free_port() and its bind.

    `spawn()` picks fresh ports and returns a spawned ServerProcess (`spawned`: the first one,
    already spawned). One that exits with a port clash in its log is spawned again, up to
    `attempts` times; any other failure stops it and raises."""
    server = spawned or spawn()
    for attempt in range(1, attempts + 1):
        try:
            server.wait_started(timeout)
            return server
        except ExitedEarly:
            if attempt == attempts or not any(s in server.log_text() for s in clash):
                raise
        server = spawn()
    raise AssertionError("unreachable")
