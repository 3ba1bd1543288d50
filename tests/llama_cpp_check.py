"""Does the installed llama-cpp-python run on this machine? `make test` asks once, after
building it, so that a build that cannot run here fails with its cause instead of as six
unrelated test failures.

Loads the bundled SmolLM2 GGUF in a child process and generates four tokens; exits 0 if
that works, else prints what went wrong and how to rebuild."""

from __future__ import annotations

import signal
import subprocess
import sys

CHILD = """
from llama_cpp import Llama
from steernpc import models
llm = Llama(model_path=str(models.bundled_gguf()), n_threads=2, n_ctx=256, verbose=False)
print(repr(llm("Once upon a time", max_tokens=4, temperature=0.0)["choices"][0]["text"]))
"""

REBUILD = "rebuild it: rm .venv/.llama-cpp-installed && make test (the Makefile's LLAMA_CMAKE_ARGS are the portable flags)"


def main() -> int:
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        print("llama-cpp-python check: generating 4 tokens took over 300 s; the build is unusable here", file=sys.stderr)
        return 1
    if proc.returncode == 0:
        print(f"==> [setup] llama.cpp runs here: {proc.stdout.strip()}")
        return 0
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        cause = {
            "SIGILL": "an illegal instruction: this llama.cpp build uses CPU instructions this machine refuses "
                      "(a -march=native build: ggml's AMX kernels fault on these VMs; or a build made on another CPU)",
            "SIGSEGV": "a segmentation fault inside llama.cpp",
            "SIGBUS": "a bus error inside llama.cpp",
        }.get(sig, "a fatal signal")  # fmt: skip
        print(f"llama-cpp-python check: the model crashed with {sig}, {cause}; {REBUILD}", file=sys.stderr)
    else:
        print(f"llama-cpp-python check failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}\n{REBUILD}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
