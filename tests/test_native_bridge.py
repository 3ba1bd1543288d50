"""The native client core (engine_bridges/native) against a real `steernpc serve`.

The harness builds libsteernpc with CMake (cached in engine_bridges/native/build), starts a
server on a free loopback port with a tiny random model, and runs the C++ tests through
ctest with the server's address in STEERNPC_TEST_TARGET / STEERNPC_TEST_API_KEY. The two
restart cases ask the harness to stop / restart the server through STEERNPC_TEST_CONTROL_DIR.

Needs cmake, a C++17 compiler, protoc, grpc_cpp_plugin and the grpc++/protobuf headers
(Debian: apt-get install cmake g++ libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc).
STEERNPC_NATIVE_SANITIZE=thread|address builds into build-<sanitizer> and runs the same tests
under that sanitizer.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness import NpcServer

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "engine_bridges" / "native"
SAMPLE_PERSONAS = REPO / "samples" / "personas"

REQUIRED_TOOLS = {
    "cmake": "cmake",
    "protoc": "protobuf-compiler",
    "grpc_cpp_plugin": "protobuf-compiler-grpc",
    "pkg-config": "pkg-config",
}
DEBIAN_HINT = "apt-get install cmake g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc"


# ---------------------------------------------------------------------------------------------
# Building the core


def missing_build_tools() -> list[str]:
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if cxx):
        missing.append("a C++17 compiler (Debian package g++)")
    return missing


def build_native(sanitize: str | None = None, jobs: int = 2) -> Path:
    """Configure and build the core once per build dir (a file lock guards concurrent runs).
    Returns the build dir. Fails the test with a clear message when the toolchain is missing."""
    missing = missing_build_tools()
    if missing:
        pytest.fail(
            "cannot build the native core, missing: " + ", ".join(missing) + f".\nInstall them with: {DEBIAN_HINT}",
            pytrace=False,
        )
    sanitize = sanitize or os.environ.get("STEERNPC_NATIVE_SANITIZE") or ""
    build = Path(os.environ.get("STEERNPC_NATIVE_BUILD_DIR") or NATIVE / ("build" if not sanitize else f"build-{sanitize}"))
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".harness.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = ["cmake", "-S", str(NATIVE), "-B", str(build), f"-DSTEERNPC_SANITIZE={sanitize}"]
        if not (build / "CMakeCache.txt").exists():
            configure.append("-DCMAKE_BUILD_TYPE=" + ("Debug" if sanitize else "RelWithDebInfo"))
        run_checked(configure, "configuring the native core (cmake)")
        run_checked(["cmake", "--build", str(build), "-j", str(jobs)], "building the native core")
    return build


def run_checked(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-6000:]
        hint = f"\n(is the toolchain installed? {DEBIAN_HINT})" if "not found" in out or "Could not find" in out else ""
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out}{hint}", pytrace=False)
    return proc


def sanitizer_env() -> dict[str, str]:
    """TSAN/ASAN/UBSAN options (with the suppressions for the uninstrumented Debian grpc) when
    STEERNPC_NATIVE_SANITIZE is set; {} otherwise."""
    sanitize = os.environ.get("STEERNPC_NATIVE_SANITIZE")
    supp = NATIVE / "sanitizers"
    if sanitize == "thread":
        return {"TSAN_OPTIONS": f"suppressions={supp / 'tsan.supp'} second_deadlock_stack=1 history_size=4"}
    if sanitize == "address":
        return {
            "ASAN_OPTIONS": "detect_leaks=1 strict_string_checks=1 detect_stack_use_after_return=1",
            "LSAN_OPTIONS": f"suppressions={supp / 'lsan.supp'} print_suppressions=0",
            "UBSAN_OPTIONS": "print_stacktrace=1 halt_on_error=1",
        }
    return {}


def pyproject_version() -> str:
    """The `version` of pyproject.toml: the one source of the version (CMake reads it too)."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import re

        return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    return tomllib.loads(text)["project"]["version"]


def shared_library(build: Path) -> Path:
    for name in ("libsteernpc.so", "libsteernpc.dylib", "steernpc.dll"):
        if (build / name).exists():
            return build / name
    raise FileNotFoundError(f"no libsteernpc in {build}")


# ---------------------------------------------------------------------------------------------
# The server


def bridge_server(model_dir: Path, workdir: Path) -> NpcServer:
    """`steernpc serve` as the bridge tests use it: on the CPU, behind a random API key, with
    SQLite sessions in `workdir`; stop / start / restart keep its port."""
    workdir = Path(workdir)
    return NpcServer(model_dir, workdir, store_path=workdir / "sessions.sqlite3", api_key=secrets.token_hex(8),
                     extra=["--device", "cpu", "--host", "127.0.0.1"], start_timeout=240.0)  # fmt: skip


def bridge_env(server: NpcServer, character: str = "brom") -> dict[str, str]:
    """The environment the native and C# tests read the server's address and key from."""
    return dict(os.environ, STEERNPC_TEST_TARGET=server.target, STEERNPC_TEST_API_KEY=server.api_key or "",
                STEERNPC_TEST_CHARACTER=character, STEERNPC_TEST_MOOD=first_mood(character))  # fmt: skip


def first_mood(character: str) -> str:
    """One of the sample character's moods, read from its persona file (the tests steer with it)."""
    import yaml

    data = yaml.safe_load((SAMPLE_PERSONAS / f"{character}.yaml").read_text())
    moods = list((data or {}).get("moods") or {})
    if not moods:
        pytest.fail(f"samples/personas/{character}.yaml has no moods; the bridge tests steer {character} with one", pytrace=False)
    return moods[0]


class ControlWatcher:
    """Answers the native tests' "<n>.request" files (stop | start | restart) with "<n>.done"."""

    def __init__(self, server: NpcServer, folder: Path):
        self.server = server
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.actions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for request in sorted(self.folder.glob("*.request")):
                action = request.read_text().strip()
                try:
                    {"stop": self.server.stop, "start": self.server.start, "restart": self.server.restart}[action]()
                    self.actions.append(action)
                except Exception as exc:  # reported by the test
                    self.errors.append(f"{action}: {exc}")
                request.rename(request.with_suffix(".handled"))
                request.with_suffix(".done").write_text("ok\n")
            self._stop.wait(0.05)


# The stand-in server of the "one RPC per call" tests: answers far longer than any buffer a
# caller would guess. The native case `long_results_one_rpc_each` and the C# `OneRpcPerResult`
# check these payloads.
LONG_SESSION_ID = "long-" + "x" * 2995  # 3000 bytes
LONG_SNAPSHOT = bytes(i % 251 for i in range(1 << 20))
# What one pass of those tests calls, once each.
ONE_OF_EACH = {"ListCharacters": 1, "CreateSession": 1, "GetSession": 1, "ExportSession": 1, "ImportSession": 1}


def counting_servicer():
    """An NpcService that answers with the long payloads above and counts every RPC by method
    name (`.calls`); the methods it does not define answer UNIMPLEMENTED."""
    import grpc
    from steernpc.v1 import npc_pb2 as pb
    from steernpc.v1 import npc_pb2_grpc

    class CountingServicer(npc_pb2_grpc.NpcServiceServicer):
        def __init__(self):
            self.calls: collections.Counter[str] = collections.Counter()

        def ListCharacters(self, request, context):
            self.calls["ListCharacters"] += 1
            return pb.ListCharactersResponse(characters=[pb.Character(id="long", name="Long", greeting="Grüße, Reisender! " * 8000)])

        def CreateSession(self, request, context):
            self.calls["CreateSession"] += 1
            return pb.Session(session_id=LONG_SESSION_ID, character_id=request.character_id)

        def GetSession(self, request, context):
            self.calls["GetSession"] += 1
            if request.session_id != LONG_SESSION_ID:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown session")
            return pb.Session(session_id=LONG_SESSION_ID, character_id="long", mood="m" * 120000)

        def ExportSession(self, request, context):
            self.calls["ExportSession"] += 1
            if request.session_id != LONG_SESSION_ID:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown session")
            return pb.SessionSnapshot(data=LONG_SNAPSHOT)

        def ImportSession(self, request, context):
            self.calls["ImportSession"] += 1
            if request.data != LONG_SNAPSHOT:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not the exported snapshot ({len(request.data)} bytes)")
            return pb.Session(session_id=LONG_SESSION_ID, character_id="long")

    return CountingServicer()


@contextlib.contextmanager
def counting_server():
    """(servicer, "127.0.0.1:port"): a counting_servicer() served in this process."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from steernpc.v1 import npc_pb2_grpc

    servicer = counting_servicer()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    npc_pb2_grpc.add_NpcServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def native_build() -> Path:
    return build_native()


@pytest.fixture(scope="module")
def npc_server(tiny_model_dir, tmp_path_factory):
    server = bridge_server(tiny_model_dir, tmp_path_factory.mktemp("native-server"))
    server.start()
    yield server
    server.stop()


def run_ctest(build: Path, server: NpcServer, args: list[str], control: Path | None = None, timeout: int = 900):
    env = dict(bridge_env(server), **sanitizer_env())
    if control is not None:
        env["STEERNPC_TEST_CONTROL_DIR"] = str(control)
    cmd = ["ctest", "--output-on-failure", "--no-tests=error", *args]
    proc = subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    print(out)
    return proc, out


# ---------------------------------------------------------------------------------------------
# Tests


def test_header_compiles_as_c_and_links(native_build, tmp_path):
    """The ABI header is plain C99 and the shared library exports only npc_* symbols."""
    cc = shutil.which(os.environ.get("CC", "")) or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "abi.c"
    src.write_text(
        "#include <steernpc/steernpc.h>\n#include <stdio.h>\n#include <string.h>\n"
        "int main(void) {\n"
        "  npc_client_options o; npc_event e; memset(&o, 0, sizeof o);\n"
        "  if (npc_client_create(&o) != NULL || npc_last_error_code() != 3) return 1;\n"
        "  o.target = \"127.0.0.1:1\";\n"
        "  npc_client* c = npc_client_create(&o);\n"
        "  if (!c || npc_poll(c, &e) != 0 || e.type != NPC_EVENT_NONE) return 2;\n"
        "  npc_result* r = npc_session_create(c, \"\");\n"
        "  if (npc_result_status(r) != NPC_INVALID_ARGUMENT || npc_result_size(r) == 0) return 3;\n"
        "  npc_result_free(r);\n"
        "  npc_client_destroy(c);\n"
        "  printf(\"%s %u\\n\", npc_version(), (unsigned)sizeof(npc_event));\n"
        "  return 0;\n}\n"
    )
    exe = tmp_path / "abi"
    sanitize = os.environ.get("STEERNPC_NATIVE_SANITIZE")
    flags = [f"-fsanitize={'thread' if sanitize == 'thread' else 'address,undefined'}"] if sanitize else []
    run_checked([cc, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{NATIVE / 'include'}", str(src),
                 f"-L{native_build}", "-lsteernpc", f"-Wl,-rpath,{native_build}", "-o", str(exe)], "compiling abi.c")  # fmt: skip
    proc = run_checked([str(exe)], "running abi.c", env=dict(os.environ, **sanitizer_env()))
    assert proc.stdout.split() == [pyproject_version(), "72"]  # the library's version is pyproject's
    if sys.platform.startswith("linux") and shutil.which("nm"):
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(shared_library(native_build))],
                                 capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
        exported = [line.split()[-1] for line in symbols if " T " in line]
        assert exported and all(name.startswith("npc_") for name in exported), exported


def test_native_core(native_build, npc_server):
    """list, sessions, streamed say, steer, overrides, cancel, NOT_FOUND, UNAUTHENTICATED,
    INVALID_ARGUMENT, export/import, 32 parallel sessions on 4 threads; a 3-member scene:
    addressing, banter, cancel mid-banter, a new line interrupting banter, join/leave,
    export/import (scene_* cases)."""
    proc, out = run_ctest(native_build, npc_server, ["-LE", "restart", "-j", "2"])
    assert proc.returncode == 0, f"ctest failed:\n{out[-8000:]}\n--- server log ---\n{npc_server.log_tail()}"
    assert "***Skipped" not in out and "Not Run" not in out, out
    assert "100% tests passed" in out
    for case in ("scene_addressing", "scene_banter", "scene_cancel_mid_banter", "scene_join_leave", "scene_export_import"):
        assert f" {case} " in out and "Passed" in out.split(f" {case} ", 1)[1].split("\n", 1)[0], f"{case} did not pass:\n{out[-4000:]}"


def test_native_results_one_rpc_each(native_build):
    """Calls that return text or bytes hand back the whole answer of one RPC, however long: a
    character list of ~150 KB, a 3000-byte session id, a 1 MiB snapshot. The server counts
    exactly one RPC per call (the old "buffer too small, call again" protocol made two)."""
    with counting_server() as (servicer, target):
        env = dict(os.environ, STEERNPC_TEST_TARGET=target, STEERNPC_TEST_API_KEY="", **sanitizer_env())
        proc = subprocess.run([str(native_build / "steernpc_tests"), "long_results_one_rpc_each"], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok long_results_one_rpc_each" in proc.stdout
    assert dict(servicer.calls) == ONE_OF_EACH


def test_native_server_down_and_reconnect(native_build, npc_server, tmp_path):
    """The server goes away: calls fail fast with UNAVAILABLE; a reply in flight ends with an
    error event; the same client reconnects by itself once the server is back."""
    with ControlWatcher(npc_server, tmp_path / "control") as watcher:
        proc, out = run_ctest(native_build, npc_server, ["-L", "restart"], control=tmp_path / "control")
    if not npc_server.alive():  # leave the module's server running whatever happened
        npc_server.start()
    assert not watcher.errors, watcher.errors
    assert proc.returncode == 0, f"ctest failed:\n{out[-8000:]}\n--- server log ---\n{npc_server.log_tail()}"
    assert "***Skipped" not in out
    assert watcher.actions == ["stop", "start", "restart"], watcher.actions


def test_unreal_plugin_layout():
    """The Unreal plugin cannot be compiled here (no engine): check what can be checked without it."""
    import json
    import re

    plugin = REPO / "engine_bridges" / "unreal" / "SteerNPC"
    descriptor = json.loads((plugin / "SteerNPC.uplugin").read_text())
    assert [m["Name"] for m in descriptor["Modules"]] == ["SteerNPC"]
    assert descriptor["VersionName"] == pyproject_version(), "the plugin descriptor's version is pyproject.toml's"
    for module, path in (("SteerNPC", "Source/SteerNPC/SteerNPC.Build.cs"),
                         ("SteerNPCLibrary", "Source/ThirdParty/SteerNPCLibrary/SteerNPCLibrary.Build.cs")):  # fmt: skip
        text = (plugin / path).read_text()
        assert f"public class {module} : ModuleRules" in text and f"public {module}(ReadOnlyTargetRules Target)" in text
    for header in (plugin / "Source" / "SteerNPC" / "Public").glob("*.h"):
        text = header.read_text()
        if re.search(r"^(UCLASS|USTRUCT|UENUM)\(", text, re.M):
            includes = re.findall(r'^#include "(.+)"', text, re.M)
            assert includes[-1] == f"{header.stem}.generated.h", f"{header.name}: .generated.h must be the last include"
    # Every npc_* the plugin calls exists in the C ABI.
    abi = (NATIVE / "include" / "steernpc" / "steernpc.h").read_text()
    used = set(re.findall(r"\b(npc_[a-z_]+)\(", "".join(p.read_text() for p in (plugin / "Source").rglob("*.cpp"))))
    assert used and all(f" {name}(" in abi for name in used), used
