"""The process helper itself (steernpc.server.process, through tests/harness.py), on tiny
`python -c` children: no model, no server."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from harness import ExitedEarly, ServerProcess, StartTimeout, free_port, grpc_health, http_probe, start_retrying


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_free_port_never_repeats_and_is_bindable():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_an_early_exit_is_reported_at_once_with_its_code_and_log(tmp_path):
    log = tmp_path / "child.log"
    server = ServerProcess(python("import sys; print('cannot start', file=sys.stderr); sys.exit(3)"),
                           lambda: False, name="child", log=log)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ExitedEarly) as info:
        server.start(timeout=60)
    assert time.monotonic() - started < 30  # not the timeout
    assert info.value.returncode == 3 and info.value.log == log
    message = str(info.value)
    assert "child exited with code 3 before it was ready" in message
    assert str(log) in message and "cannot start" in message


def test_a_signal_exit_names_the_signal(tmp_path):
    server = ServerProcess(python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), lambda: False,
                           log=tmp_path / "child.log")  # fmt: skip
    with pytest.raises(ExitedEarly) as info:
        server.start(timeout=60)
    assert info.value.returncode == -11 and "code -11 (signal SIGSEGV)" in str(info.value)


def test_a_start_that_never_gets_ready_times_out_with_the_last_answer_and_is_stopped(tmp_path):
    def probe():
        raise ConnectionRefusedError("nobody home")

    server = ServerProcess(python("import time; time.sleep(600)"), probe, name="sleeper", log=tmp_path / "s.log")
    with pytest.raises(StartTimeout) as info:
        server.start(timeout=0.5, interval=0.05)
    message = str(info.value)
    assert message.startswith("sleeper not ready after ")
    assert "last answer: ConnectionRefusedError: nobody home" in message and str(tmp_path / "s.log") in message
    assert not server.alive()


def test_ready_when_the_probe_answers_then_stop_ends_the_process(tmp_path):
    flag = tmp_path / "ready"
    server = ServerProcess(python(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(600)"),
                           flag.exists, log=tmp_path / "s.log")  # fmt: skip
    server.start(timeout=60, interval=0.05)
    assert server.alive()
    server.stop()
    assert not server.alive() and server.returncode == -15


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    flag = tmp_path / "ready"
    code = (f"import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"pathlib.Path({str(flag)!r}).touch(); time.sleep(600)")  # fmt: skip
    server = ServerProcess(python(code), flag.exists, log=tmp_path / "s.log", new_session=True)
    server.start(timeout=60, interval=0.05)
    server.stop(timeout=0.5)
    assert server.returncode == -9


def test_kill_is_sigkill(tmp_path):
    server = ServerProcess(python("import time; time.sleep(600)"), lambda: True).start(timeout=60)
    server.kill()
    assert server.returncode == -9


def test_stdout_and_stderr_go_to_their_own_files(tmp_path):
    err, out = tmp_path / "err.log", tmp_path / "out.log"
    server = ServerProcess(python("import sys; print('to out'); print('to err', file=sys.stderr)"), lambda: False,
                           log=err, stdout=out)  # fmt: skip
    with pytest.raises(ExitedEarly):
        server.start(timeout=60)
    assert err.read_text() == "to err\n" and out.read_text() == "to out\n"
    assert server.log_text() == "to err\n"


def test_a_port_clash_is_retried_on_a_fresh_spawn_and_other_failures_are_not(tmp_path):
    spawned = []

    def spawn(fail: str):
        def make() -> ServerProcess:
            n = len(spawned)
            ok = n == 2  # the third one gets its port
            code = "import time; time.sleep(600)" if ok else f"import sys; print({fail!r}, file=sys.stderr); sys.exit(1)"
            spawned.append(ServerProcess(python(code), lambda: ok, log=tmp_path / f"{fail[:4]}-{n}.log"))
            return spawned[-1].spawn()

        return make

    server = start_retrying(spawn("cannot listen on 127.0.0.1:1"), timeout=60)
    assert len(spawned) == 3 and server is spawned[2] and server.alive()
    server.stop()

    spawned.clear()
    with pytest.raises(ExitedEarly):
        start_retrying(spawn("some other error"), timeout=60)
    assert len(spawned) == 1


def test_grpc_health_probe_says_what_it_saw(tmp_path):
    port = free_port()
    server = ServerProcess(python("import time; time.sleep(600)"), grpc_health(f"127.0.0.1:{port}", timeout=0.5),
                           log=tmp_path / "s.log")  # fmt: skip
    with pytest.raises(StartTimeout, match=r"last answer: UNAVAILABLE"):
        server.start(timeout=0.5, interval=0.05)


def test_http_probe_is_ready_when_the_url_answers(tmp_path):
    port = free_port()
    server = ServerProcess(python(f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"),
                           http_probe(f"http://127.0.0.1:{port}/", lambda body: b"ready.txt" in body), log=tmp_path / "s.log",
                           cwd=tmp_path)  # fmt: skip
    (tmp_path / "ready.txt").write_text("")
    try:
        server.start(timeout=60, interval=0.05)
    finally:
        server.stop()
