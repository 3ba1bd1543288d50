"""The one place tests start processes from: free ports and ServerProcess (spawn, wait until
ready, stop) from steernpc.server.process, and NpcServer, a real `steernpc serve` for a test.

Nothing here mocks the server: every test talks to a real process over loopback.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from pathlib import Path

from steernpc.server.process import (  # noqa: F401  (re-exported for the tests)
    ExitedEarly,
    NotReady,
    ServerProcess,
    StartFailed,
    StartTimeout,
    describe_exit,
    free_port,
    grpc_health,
    http_probe,
    port_closed,
    start_retrying,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PERSONAS = REPO / "samples" / "personas"
START_TIMEOUT = 120.0


class NpcServer:
    """One `python -m steernpc.cli serve` for a test, serving `model` with the sample personas
    (or `personas`). STEERNPC_HOME and the logs live in `workdir`: stderr in
    `<name>-<n>.stderr.log`, stdout in `<name>-<n>.stdout.log` for the n-th start.

    The ports are picked at the first start and kept across stop()/start() and restart(), so
    that a client can reconnect; a start that loses its port to another process is retried
    on fresh ones."""

    def __init__(self, model: Path, workdir: Path, *, store: str = "sqlite", store_path: Path | None = None,
                 personas: Path | None = None, metrics: bool = False, extra: list[str] | tuple[str, ...] = (),
                 tls_root: bytes | None = None, api_key: str | None = None, name: str = "server",
                 start_timeout: float = START_TIMEOUT, studio: bool = False):  # fmt: skip
        self.model = Path(model)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "home"
        self.store = store
        self.store_path = store_path
        self.personas = Path(personas) if personas else SAMPLE_PERSONAS
        self.metrics = metrics
        self.extra = list(extra)
        self.tls_root = tls_root
        self.api_key = api_key
        self.name = name
        self.start_timeout = start_timeout
        self.studio = studio  # also serve the HTTP/SSE gateway and the studio page (--studio-port)
        self.process: ServerProcess | None = None
        self.port = 0
        self.metrics_port = 0
        self.studio_port = 0
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def studio_url(self) -> str:
        assert self.studio, "started without studio=True"
        return f"http://127.0.0.1:{self.studio_port}"

    @property
    def proc(self):
        """The running (or last) subprocess.Popen."""
        return self.process.proc if self.process is not None else None

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
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.studio:
            cmd += ["--studio-port", str(self.studio_port)]
        return cmd + self.extra

    def spawn(self) -> "NpcServer":
        """Start the process on fresh free ports (does not wait; see start())."""
        self.port = free_port()
        self.metrics_port = free_port() if self.metrics else 0
        self.studio_port = free_port() if self.studio else 0
        self._spawn()
        return self

    def _spawn(self) -> ServerProcess:
        self.starts += 1
        env = dict(os.environ, STEERNPC_HOME=str(self.home), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", STEERNPC_ADAPTER="none")  # fmt: skip
        credentials = None
        if self.tls_root is not None:
            import grpc

            credentials = grpc.ssl_channel_credentials(self.tls_root)
        self.process = ServerProcess(self.command(), grpc_health(self.target, credentials), name=self.name,
                                     log=self.stderr_path, stdout=self.workdir / f"{self.name}-{self.starts}.stdout.log",
                                     env=env, cwd=self.workdir, new_session=True)  # fmt: skip
        return self.process.spawn()

    def start(self, timeout: float | None = None, spawned: bool = False) -> "NpcServer":
        """Start (unless `spawned`) and wait for health SERVING; ExitedEarly or StartTimeout,
        with the server's stderr, if it does not get there (the process is stopped then)."""
        if not spawned and not self.port:
            self.spawn()
        elif not spawned:  # a start after stop(): the same ports
            self._spawn()
        start_retrying(lambda: self.spawn().process, timeout or self.start_timeout, spawned=self.process)
        return self

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it hangs); returns once the ports are closed."""
        if self.process is not None:
            self.process.stop()
            port_closed(self.port)
            if self.studio:
                port_closed(self.studio_port)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, a power cut)."""
        if self.process is not None:
            self.process.kill()
            port_closed(self.port)

    def restart(self) -> None:
        """A crash and a start on the same port."""
        self.kill()
        self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def channel(self):
        import grpc

        if self.tls_root is not None:
            return grpc.secure_channel(self.target, grpc.ssl_channel_credentials(self.tls_root))
        return grpc.insecure_channel(self.target)

    # -- observation ---------------------------------------------------------------------------
    def stderr(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.stderr()[-chars:] or "(no log)"

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
