"""Shared fixtures: a tiny random-weight Llama (fast unit tests) and the prepared SmolLM2
(integration tests; CI prepares it with `steernpc model prepare`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from harness import ServerProcess, StartFailed, free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer and chat template."""
    from steernpc import models

    return models.random_model(tmp_path_factory.mktemp("tiny-llama"), layers=2, hidden=64, seed=0)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, prepared once under STEERNPC_HOME."""
    from steernpc import models

    return models.prepare(quiet=True)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from steernpc import models

    return models.load_tokenizer(smollm2_dir)


@pytest.fixture
def port() -> int:
    return free_port()


def _redis_server_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        pytest.fail(
            "redis-server is not installed: the Redis session store and shared sessions are tested "
            "against a real redis-server (apt-get install redis-server)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private redis-server (no persistence) on a free loopback port, for one test module."""
    import redis

    binary = _redis_server_binary()
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    server = ServerProcess([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir", str(workdir)], client.ping, name="redis-server", log=workdir / "redis.log")  # fmt: skip
    try:
        server.start(timeout=30, interval=0.05)
    except StartFailed:  # start() stopped it
        client.close()
        pytest.fail(f"redis-server on port {port} did not answer PING:\n{server.log_text()[-2000:]}", pytrace=False)
    try:
        yield url
    finally:
        client.close()
        server.stop(timeout=10)
