"""Fixtures for the gRPC runtime tests: real `steernpc serve` processes and a real redis-server.

Each module starts the servers it needs (module scope: tests that do not interfere share
one) on free loopback ports with STEERNPC_HOME in a temporary folder, serving the tiny
random Llama from tests/conftest.py.
"""

from __future__ import annotations

import pytest
from harness import NpcServer


@pytest.fixture(scope="module")
def launch(tiny_model_dir, tmp_path_factory):
    """launch(name, **options) -> a started NpcServer (health SERVING), stopped at module
    end; launch.many({name: options, ...}) starts several side by side."""
    started: list[NpcServer] = []

    def _launch(name: str = "server", **options) -> NpcServer:
        return _launch_many({name: options})[0]

    def _launch_many(specs: dict[str, dict]) -> list[NpcServer]:
        """Start several servers at once (their model loads overlap), then wait for each."""
        servers = [NpcServer(tiny_model_dir, tmp_path_factory.mktemp(name), name=name, **options) for name, options in specs.items()]
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


@pytest.fixture(scope="module")
def npc(server):
    """A Python client of the module's `server` fixture."""
    from steernpc.client import NpcClient

    with NpcClient(server.target, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def stub(npc):
    return npc.stub
