"""Fixtures for the backend tests: an ONNX export of the tiny model, a real llama.cpp
OpenAI-compatible server (llama-cpp-python) on the bundled SmolLM2 GGUF, and the
TensorRT-LLM API stand-in (tests/backends/fake_trtllm) put on the import path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend_helpers import have, onnx_export_available
from ports import free_port


def missing(reason: str):
    """Skip when an optional runtime is absent; under `make test` (STEERNPC_REQUIRE_ALL=1,
    which installs every runtime) a missing one is a failure, never a silent skip."""
    if os.environ.get("STEERNPC_REQUIRE_ALL") == "1":
        pytest.fail(f"required for the full suite: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def onnx_tiny_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random Llama exported to ONNX in fp32 (so greedy output equals torch's)."""
    if not onnx_export_available():
        missing("ONNX export needs: pip install onnx onnxruntime onnxruntime-genai onnx-ir")
    from steernpc.export import export_onnx

    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "tiny-fp32", precision="fp32")


@dataclass
class LlamaServer:
    url: str
    log: Path  # the server's stdout and stderr (unbuffered)


@pytest.fixture(scope="session")
def llama_server(llama_server_process) -> str:
    return llama_server_process.url


@pytest.fixture(scope="session")
def llama_server_process():
    """`python -m llama_cpp.server` on loopback serving SmolLM2-135M-Instruct Q4_1.

    --interrupt_requests False: by default that server ends a running stream when a new
    request arrives; a real deployment (and the batch test) queues them instead."""
    if not have("llama_cpp"):
        missing("needs llama-cpp-python[server] (pip install 'llama-cpp-python[server]')")
    from steernpc import models

    try:
        gguf = models.bundled_gguf()
    except models.ModelNotFound as exc:
        missing(str(exc))
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log", "w")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--interrupt_requests", "False", "--verbose", "False"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} (a negative code is a signal: "
                                   f"-4 SIGILL, -11 SIGSEGV; tests/llama_cpp_check.py says more); see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as resp:
                    if json.loads(resp.read()).get("data"):
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server did not come up in 120 s; see {log.name}")
            time.sleep(0.3)
        yield LlamaServer(url, Path(log.name))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
