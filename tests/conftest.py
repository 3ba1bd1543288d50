"""Shared fixtures: a tiny random-weight Llama (fast unit tests) and the prepared SmolLM2
(integration tests; CI prepares it with `steernpc model prepare`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()
