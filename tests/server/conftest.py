"""Fixtures for the gRPC runtime tests: real `steernpc serve` processes and a real redis-server.

Each module starts the servers it needs (module scope: tests that do not interfere share
one) on free loopback ports with STEERNPC_HOME in a temporary folder, serving the tiny
random Llama from tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from server_harness import ServerProcess, free_port


@pytest.fixture(scope="module")
def launch(tiny_model_dir, tmp_path_factory):
    """launch(name, **options) -> a started ServerProcess (health SERVING), stopped at module
    end; launch.many({name: options, ...}) starts several side by side."""
    started: list[ServerProcess] = []

    def _launch(name: str = "server", **options) -> ServerProcess:
        return _launch_many({name: options})[0]

    def _launch_many(specs: dict[str, dict]) -> list[ServerProcess]:
        """Start several servers at once (their model loads overlap), then wait for each."""
        servers = [ServerProcess(tiny_model_dir, tmp_path_factory.mktemp(name), name=name, **options) for name, options in specs.items()]
        started.extend(servers)
        for server in servers:
            server.spawn()
        for server in servers:
            server.start(spawned=True)
        return servers

    _launch.many = _launch_many
    yield _launch
    for server in started:
        server.stop()


def _redis_server_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        pytest.fail(
            "redis-server is not installed: sessions shared between server replicas are tested "
            "against a real redis (apt-get install redis-server)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private redis-server (no persistence) on a free port, for this module."""
    import redis

    binary = _redis_server_binary()
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = open(workdir / "redis.log", "w+")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"redis-server on port {port} did not answer PING:\n{log.read()[-2000:]}", pytrace=False)
            time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
