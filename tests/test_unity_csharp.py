"""The Unity bridge's engine-agnostic C# (engine_bridges/unity/.../Runtime/Core) under Mono.

Compiles Runtime/Core/*.cs plus engine_bridges/unity/tests/SteerNpcMonoTests.cs with `mcs`
(no UnityEngine reference: this also proves the core stays engine-agnostic) and runs it with
`mono` against the real libsteernpc (built by the native harness) and a real `steernpc serve`.
Needs mono-mcs and mono-runtime (Debian) besides the native toolchain.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITY = REPO / "engine_bridges" / "unity"
PACKAGE = UNITY / "com.steernpc.unity"
CORE = PACKAGE / "Runtime" / "Core"


def _native_harness():
    """tests/test_native_bridge.py's helpers (build, server), whatever pytest's import mode."""
    name = "test_native_bridge"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


native = _native_harness()


def mono_tools() -> tuple[str, str]:
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg, path in (("mcs", "mono-mcs", mcs), ("mono", "mono-runtime", mono)) if path is None]
    if missing:
        pytest.fail(f"cannot run the C# tests, missing: {', '.join(missing)}. Install: apt-get install mono-mcs mono-runtime", pytrace=False)
    return mcs, mono


def compile_cs(out: Path, sources: list[Path], extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    mcs, _ = mono_tools()
    cmd = [mcs, "-langversion:7", "-warnaserror+", "-debug", f"-out:{out}", *extra, *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"mcs failed:\n{proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def native_build() -> Path:
    return native.build_native()


@pytest.fixture(scope="module")
def npc_server(tiny_model_dir, tmp_path_factory):
    server = native.bridge_server(tiny_model_dir, tmp_path_factory.mktemp("csharp-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def test_exe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("csharp") / "SteerNpcMonoTests.exe"
    compile_cs(out, sorted(CORE.glob("*.cs")) + [UNITY / "tests" / "SteerNpcMonoTests.cs"])
    return out


def test_core_has_no_unity_dependency():
    """Runtime/Core compiles alone into a library and never names UnityEngine."""
    for path in CORE.glob("*.cs"):
        assert "UnityEngine" not in re.sub(r"//.*", "", path.read_text()), f"{path} uses UnityEngine"
    assert '"noEngineReferences": true' in (CORE / "SteerNpc.Core.asmdef").read_text()


def test_core_compiles_as_library(tmp_path):
    compile_cs(tmp_path / "SteerNpc.Core.dll", sorted(CORE.glob("*.cs")), ("-target:library",))


def test_unity_layer_compiles_against_stubs(tmp_path):
    """Runtime/Unity and the sample compile (against compile-only UnityEngine stand-ins with
    Unity's signatures: catches mistakes in the thin Unity layer without a Unity install)."""
    sources = sorted(CORE.glob("*.cs")) + sorted((PACKAGE / "Runtime" / "Unity").glob("*.cs"))
    sources += sorted((PACKAGE / "Samples~").rglob("*.cs")) + [UNITY / "tests" / "UnityEngineStubs.cs"]
    compile_cs(tmp_path / "SteerNpc.Unity.dll", sources, ("-target:library",))


def test_package_layout():
    """UPM manifest, asmdefs, and a .meta next to every asset (an immutable package -- from git or
    a registry -- ignores assets without one)."""
    import json

    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["name"] == "com.steernpc.unity" and manifest["samples"][0]["path"] == "Samples~/DialogueUI"
    assert manifest["version"] == native.pyproject_version(), "the UPM manifest's version is pyproject.toml's"
    runtime = json.loads((PACKAGE / "Runtime" / "SteerNpc.Runtime.asmdef").read_text())
    assert runtime["references"] == ["SteerNpc.Core"]
    missing = []
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE)
        if path.suffix == ".meta" or any(part.endswith("~") or part.startswith(".") for part in rel.parts):
            continue
        if not path.with_name(path.name + ".meta").exists():
            missing.append(str(rel))
    assert not missing, f"assets without .meta (run engine_bridges/unity/tools/make_meta.py): {missing}"


def test_status_codes_mirror_the_header():
    """C#'s StatusCodes are the header's npc_status, name for name and value for value."""
    header = (native.NATIVE / "include" / "steernpc" / "steernpc.h").read_text()
    enum = re.search(r"typedef enum npc_status \{(.*?)\} npc_status;", header, re.S).group(1)
    c_codes = {name.replace("_", ""): int(value) for name, value in re.findall(r"NPC_(\w+) = (\d+)", enum)}
    client = (CORE / "SteerNpcClient.cs").read_text()
    block = re.search(r"public static class StatusCodes\s*\{(.*?)\}", client, re.S).group(1)
    cs_codes = {name.upper(): int(value) for name, value in re.findall(r"(\w+) = (\d+)", block)}
    assert len(c_codes) == 17 and cs_codes == c_codes


def mono_env(native_build: Path, base: dict[str, str]) -> dict[str, str]:
    env = dict(base, LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(native_build), os.environ.get("LD_LIBRARY_PATH")])))
    env["STEERNPC_TEST_VERSION"] = native.pyproject_version()
    env.update(native.sanitizer_env())
    return env


def test_csharp_bridge_against_server(native_build, npc_server, test_exe):
    """create, say with streamed deltas, steer, per-reply overrides, cancel, errors (NOT_FOUND,
    INVALID_ARGUMENT, UNAUTHENTICATED, UNAVAILABLE), export/import, PollEvents, Dispose; and a
    3-member scene through SceneConversation: addressing, banter, cancel mid-banter, a new line
    interrupting banter, join/leave, export/import."""
    _, mono = mono_tools()
    env = mono_env(native_build, native.bridge_env(npc_server))
    if os.environ.get("STEERNPC_NATIVE_SANITIZE"):
        pytest.skip("mono cannot load a sanitizer-instrumented libsteernpc")
    proc = subprocess.run([mono, "--debug", str(test_exe)], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f"C# tests failed:\n{out[-8000:]}\n--- server log ---\n{npc_server.log_tail()}"
    summary = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary and int(summary.group(1)) >= 15 and summary.group(2) == "0", out
    for name in ("TestSceneAddressing", "TestSceneBanter", "TestSceneCancelMidBanter", "TestSceneJoinLeave", "TestSceneExportImport"):
        assert f"PASS {name} " in proc.stdout, f"{name} did not run:\n{out[-4000:]}"


def test_csharp_results_one_rpc_each(native_build, test_exe):
    """ListCharacters, CreateSession, GetSessionJson, ExportSession and ImportSession each make
    exactly one RPC, however long the answer (a ~150 KB character list, a 3000-byte session id,
    a 1 MiB snapshot): the C# layer no longer calls again with a bigger buffer."""
    _, mono = mono_tools()
    if os.environ.get("STEERNPC_NATIVE_SANITIZE"):
        pytest.skip("mono cannot load a sanitizer-instrumented libsteernpc")
    with native.counting_server() as (servicer, target):
        env = mono_env(native_build, dict(os.environ, STEERNPC_TEST_TARGET=target, STEERNPC_TEST_API_KEY=""))
        proc = subprocess.run([mono, "--debug", str(test_exe), "OneRpcPerResult"], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, out[-8000:]
    assert re.search(r"^1 passed, 0 failed$", proc.stdout, re.M), out
    assert dict(servicer.calls) == native.ONE_OF_EACH
