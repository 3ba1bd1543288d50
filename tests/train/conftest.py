"""Fixtures for the training toolkit's tests: fixture data and a tiny random encoder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "train"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def train_data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with all-MiniLM-L6-v2's tokenizer."""
    from steernpc_train.apm import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), hidden=32, layers=2, seed=0)


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m steernpc_train ARGS` (== `steernpc ARGS`) in a fresh process."""
    # one thread: on a shared 2-core machine, torch's thread pool mostly spins under contention
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "steernpc_train", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture
def one_thread():
    """Run in-process torch work on one thread (much faster on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cli():
    """`cli("train", "sft", ...)` runs the command in a subprocess and returns it."""
    return run_cli
