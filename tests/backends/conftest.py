"""Fixtures for the backend tests: an ONNX export of the tiny model, a real llama.cpp
OpenAI-compatible server (llama-cpp-python) on the bundled SmolLM2 GGUF, and the
TensorRT-LLM API stand-in (tests/backends/fake_trtllm) put on the import path."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend_helpers import have, onnx_export_available
from harness import ExitedEarly, ServerProcess, StartTimeout, free_port, http_probe


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
    url = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--interrupt_requests", "False", "--verbose", "False"]  # fmt: skip
    server = ServerProcess(cmd, http_probe(f"{url}/v1/models", lambda body: json.loads(body).get("data")),
                           name="llama_cpp.server", log=log, env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
    try:
        server.start(timeout=120, interval=0.3)
    except ExitedEarly as exc:
        raise RuntimeError(f"llama_cpp.server exited with {exc.returncode} (a negative code is a signal: "
                           f"-4 SIGILL, -11 SIGSEGV; tests/llama_cpp_check.py says more); see {log}") from None
    except StartTimeout:
        raise RuntimeError(f"llama_cpp.server did not come up in 120 s; see {log}") from None
    try:
        yield LlamaServer(url, log)
    finally:
        server.stop(timeout=10)
