"""The HTTP/SSE gateway (`--studio-port`) against a real `steernpc serve` on loopback: the
same handlers as gRPC (one set of sessions, the same messages), statuses mapped to HTTP,
Server-Sent Events, cancel and disconnect, body limits, API keys, Host and Origin checks,
and the persona editor's save and hot reload."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from gateway_client import Http
from google.protobuf import json_format
from harness import SAMPLE_PERSONAS, NpcServer, free_port

from steernpc.client import NpcClient
from steernpc.limits import MAX_HTTP_BODY, MAX_TEXT
from steernpc.server.gateway import STATUS_HTTP
from steernpc.wire import pb


@pytest.fixture(scope="module")
def personas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("personas") / "personas"
    shutil.copytree(SAMPLE_PERSONAS, folder)
    return folder


@pytest.fixture(scope="module")
def server(launch, personas):
    return launch("gateway", studio=True, store="memory", personas=personas)


@pytest.fixture(scope="module")
def web(server):
    return Http(server.studio_url)


@pytest.fixture(scope="module")
def npc(server):
    with NpcClient(server.target, timeout=60) as client:
        yield client


def as_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def reply(web: Http, session_id: str, text: str = "Hello", **body) -> tuple[list[str], dict]:
    """Say over HTTP; the deltas' texts and the done event's data."""
    stream = web.say(session_id, {"text": text, **body})
    assert stream.status == 200, stream.error
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = stream.events()
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}, kinds
    return [data["text"] for kind, data in events if kind == "delta"], events[-1][1]


# -- the model loads while the port is open -----------------------------------------------------


def test_the_port_opens_before_the_model_and_reports_its_progress(tmp_path):
    # The embedded SmolLM2 in a fresh STEERNPC_HOME: the server converts it from its GGUF
    # first (~20 s), a real long load, so the test sees the loading state whatever the
    # machine's speed (a tiny model can load before the first poll).
    server = NpcServer(Path("smollm2"), tmp_path, studio=True, store="memory", name="loading", start_timeout=600)
    server.spawn()
    try:
        web = Http(f"http://127.0.0.1:{server.studio_port}", timeout=5)
        seen, deadline = [], time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                status = web.get("/api/v1/status")
            except OSError:  # not listening yet
                time.sleep(0.05)
                continue
            seen.append(status.body)
            if status.body["ready"]:
                break
            if len(seen) == 1:  # while loading: the characters are there, dialogue is 503 with gRPC's message
                assert web.get("/healthz").status == 503
                created = web.post("/api/v1/sessions", {"character_id": "brom", "session_id": "early"})
                assert created.status == 200
                early = web.say("early", {"text": "Hello"})
                assert (early.status, early.error["code"]) == (503, "UNAVAILABLE")
                assert early.error["message"] == "the model is still loading; retry in a few seconds"
                early.close()
            time.sleep(0.1)
        loading = [s for s in seen if not s["ready"]]
        assert loading, "the studio port answered only after the model had loaded"
        assert loading[0]["phase"] and loading[0]["elapsed_s"] >= 0 and loading[0]["format"] is None
        assert seen[-1]["ready"] and seen[-1]["format"] == "chat" and seen[-1]["elapsed_s"] >= loading[-1]["elapsed_s"]
        assert web.get("/healthz").body == {"status": "SERVING"}
    finally:
        server.stop()


# -- one conversation layer ---------------------------------------------------------------------


def test_characters_are_the_grpc_messages(web, npc):
    listed = web.get("/api/v1/characters")
    assert listed.status == 200
    assert listed.body == as_json(pb.ListCharactersResponse(characters=npc.list_characters()))
    one = web.get("/api/v1/characters/pip").body
    studio = one.pop("studio")
    assert one == as_json(npc.get_character("pip"))
    assert studio["limits"] == {"verbosity": {"min": 0, "max": 2}, "friendliness": {"min": 2, "max": 4}}
    assert studio["moods"]["scared"] == {"verbosity": 0, "humor": 0, "creativity": 1}
    assert studio["card"].startswith("You are Pip Greenhollow")


def test_say_streams_deltas_then_done_and_sessions_are_shared_with_grpc(web, npc):
    created = web.post("/api/v1/sessions", {"character_id": "brom", "session_id": "shared", "mood": "angry", "attributes": {"humor": 3}})
    assert created.status == 200 and created.body["turns"] == 0
    assert created.body == as_json(npc.get_session("shared"))
    deltas, done = reply(web, "shared", "Can you fix my sword?", options={"max_new_tokens": 8, "ignore_eos": True, "seed": 5})
    assert len(deltas) > 1 and "".join(deltas) == done["text"]
    assert done["finish_reason"] == "FINISH_REASON_LENGTH" and done["usage"]["completion_tokens"] == 8
    assert done["attributes"] == {"humor": 3, "friendliness": 0, "creativity": 1, "verbosity": 1}  # angry, then the steer
    assert done["usage"]["total_ms"] >= done["usage"]["time_to_first_token_ms"] > 0
    assert npc.get_session("shared").turns == 1  # the turn went through the one conversation layer
    npc.reply("shared", "And my shield?", max_new_tokens=4)  # gRPC continues the HTTP session ...
    assert web.get("/api/v1/sessions/shared").body["turns"] == 2  # ... and HTTP sees it
    steered = web.post("/api/v1/sessions/shared/steer", {"clear": True, "mood": "drunk"})
    assert steered.body == as_json(npc.get_session("shared")) and steered.body["mood"] == "drunk"
    assert web.call("DELETE", "/api/v1/sessions/shared").status == 200
    with pytest.raises(grpc.RpcError) as gone:
        npc.get_session("shared")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_same_seed_gives_the_same_reply_as_grpc(web, npc):
    web.post("/api/v1/sessions", {"character_id": "marta", "session_id": "seed-http"})
    npc.create_session("marta", session_id="seed-grpc")
    _, done = reply(web, "seed-http", "A room, please.", options={"max_new_tokens": 6, "seed": 11})
    assert npc.reply("seed-grpc", "A room, please.", max_new_tokens=6, seed=11).text == done["text"]


def test_export_and_import_round_trip_and_interoperate(web, npc):
    web.post("/api/v1/sessions", {"character_id": "hilde", "session_id": "saved", "mood": ""})
    reply(web, "saved", "Halt?", options={"max_new_tokens": 3})
    exported = web.get("/api/v1/sessions/saved/export")
    data = base64.b64decode(exported.body["data"])
    assert data == npc.export_session("saved")
    web.call("DELETE", "/api/v1/sessions/saved")
    imported = web.post("/api/v1/sessions/import", {"data": exported.body["data"]})
    assert imported.status == 200 and imported.body["session_id"] == "saved" and imported.body["turns"] == 1
    assert npc.get_session("saved").turns == 1


# -- statuses: the gRPC code's HTTP status, the gRPC message ---------------------------------------


def _grpc_error(fn) -> tuple[grpc.StatusCode, str]:
    try:
        result = fn()
        if hasattr(result, "__iter__") and not isinstance(result, (str, bytes)):
            list(result)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("gRPC accepted it")


CASES = {
    "unknown character": (lambda w: w.post("/api/v1/sessions", {"character_id": "nobody"}),
                          lambda n: n.create_session("nobody")),
    "attribute out of range": (lambda w: w.post("/api/v1/sessions", {"character_id": "brom", "attributes": {"humor": 9}}),
                               lambda n: n.create_session("brom", attributes={"humor": 9})),
    "unknown mood": (lambda w: w.post("/api/v1/sessions", {"character_id": "brom", "mood": "sleepy"}),
                     lambda n: n.create_session("brom", mood="sleepy")),
    "session exists": (lambda w: w.post("/api/v1/sessions", {"character_id": "brom", "session_id": "taken"}),
                       lambda n: n.create_session("brom", session_id="taken")),
    "session not found": (lambda w: w.get("/api/v1/sessions/missing"), lambda n: n.get_session("missing")),
    "steer out of range": (lambda w: w.post("/api/v1/sessions/taken/steer", {"attributes": {"verbosity": -1}}),
                           lambda n: n.steer("taken", attributes={"verbosity": -1})),
    "text too long": (lambda w: w.say("taken", {"text": "x" * (MAX_TEXT + 1)}), lambda n: n.say("taken", "x" * (MAX_TEXT + 1))),
    "empty text": (lambda w: w.say("taken", {"text": "  "}), lambda n: n.say("taken", "  ")),
    "unknown attribute": (lambda w: w.say("taken", {"text": "hi", "attributes": {"menace": 1}}),
                          lambda n: n.say("taken", "hi", attributes={"menace": 1})),
    "cancel nothing": (lambda w: w.post("/api/v1/interactions/nothing/cancel"), lambda n: n.cancel("nothing")),
    "bad snapshot": (lambda w: w.post("/api/v1/sessions/import", {"data": base64.b64encode(b"\x81\xa1a\x01").decode()}),
                     lambda n: n.import_session(b"\x81\xa1a\x01")),
    "delete missing": (lambda w: w.call("DELETE", "/api/v1/sessions/missing"), lambda n: n.delete_session("missing")),
}


@pytest.fixture(scope="module")
def taken(npc):
    npc.create_session("brom", session_id="taken")


@pytest.mark.parametrize("case", sorted(CASES))
def test_statuses_map_to_http_with_the_grpc_message(case, web, npc, taken):
    http_call, grpc_call = CASES[case]
    code, details = _grpc_error(lambda: grpc_call(npc))
    answer = http_call(web)
    error = answer.error
    if hasattr(answer, "close"):
        answer.close()
    assert (answer.status, error["code"], error["message"]) == (STATUS_HTTP[code], code.name, details)
    assert error["status"] == answer.status


def test_requests_that_are_not_right_json_say_so(web):
    bad = web.call("POST", "/api/v1/sessions", raw=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status == 400 and bad.error["message"].startswith("request body is not valid JSON")
    unknown = web.post("/api/v1/sessions", {"character_id": "brom", "colour": "red"})
    assert unknown.status == 400 and "colour" in unknown.error["message"]
    wrong_type = web.post("/api/v1/sessions", {"character_id": "brom", "attributes": {"humor": "lots"}})
    assert wrong_type.status == 400 and wrong_type.error["code"] == "INVALID_ARGUMENT"
    text = web.call("POST", "/api/v1/sessions", raw=b'{"character_id": "brom"}', headers={"Content-Type": "text/plain"})
    assert (text.status, text.error["message"]) == (415, "send the request body as JSON (Content-Type: application/json)")
    assert web.get("/api/v1/nothing").status == 404
    assert web.call("PATCH", "/api/v1/characters").status == 405


def test_request_bodies_are_size_limited(web, server):
    declared = web.call("POST", "/api/v1/sessions/import", raw=b"{}", headers={"Content-Type": "application/json",
                                                                              "Content-Length": str(MAX_HTTP_BODY + 1)})
    assert declared.status == 413 and declared.error["code"] == "RESOURCE_EXHAUSTED"
    # No Content-Length: a chunked body is counted as it arrives and refused past the limit.
    conn = web.connection()
    conn.putrequest("POST", "/api/v1/sessions/import")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b'{"data": "' + b"A" * (256 << 10)
    status = None
    try:
        for _ in range(MAX_HTTP_BODY // len(chunk) + 2):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:  # the server may answer and close before the rest is sent
        pass
    resp = conn.getresponse()
    status, body = resp.status, json.loads(resp.read())
    conn.close()
    assert status == 413 and body["error"]["message"].startswith("request body is too large: over")
    assert web.get("/healthz").status == 200  # and it goes on serving


# -- cancel and disconnect -------------------------------------------------------------------------


def test_cancel_stops_the_reply_and_keeps_what_was_streamed(web):
    web.post("/api/v1/sessions", {"character_id": "lysander", "session_id": "cut"})
    stream = web.say("cut", {"text": "Sing!", "interaction_id": "song", "options": {"max_new_tokens": 400, "ignore_eos": True}})
    assert stream.headers["x-interaction-id"] == "song"
    events = iter(stream)
    first = next(events)
    assert first[0] == "delta" and first[1]["interaction_id"] == "song"
    assert web.post("/api/v1/interactions/song/cancel").body == {"cancelled": True}
    rest = list(events)
    stream.close()
    kind, done = rest[-1]
    assert kind == "done" and done["finish_reason"] == "FINISH_REASON_CANCELLED"
    assert done["usage"]["completion_tokens"] < 400
    assert web.get("/api/v1/sessions/cut").body["turns"] == 1


def test_a_client_that_hangs_up_stops_its_reply(web):
    web.post("/api/v1/sessions", {"character_id": "tobias", "session_id": "gone"})
    stream = web.say("gone", {"text": "Tell me everything.", "options": {"max_new_tokens": 2000, "ignore_eos": True}})
    next(iter(stream))
    stream.conn.sock.shutdown(socket.SHUT_RDWR)  # hang up mid-reply
    stream.resp.close()
    stream.close()
    deadline = time.monotonic() + 60
    while web.get("/api/v1/sessions/gone").body["turns"] == 0:  # stored once the reply has stopped
        assert time.monotonic() < deadline, "the reply went on after its client left"
        time.sleep(0.1)
    _, done = reply(web, "gone", "Still there?", options={"max_new_tokens": 3})  # the session's lock is free again
    assert done["finish_reason"] in ("FINISH_REASON_LENGTH", "FINISH_REASON_STOP")


# -- the studio's own routes -----------------------------------------------------------------------


def test_resolve_shows_each_layer_and_what_limits_clamp(web, npc):
    r = web.post("/api/v1/characters/pip/resolve", {"mood": "excited", "steer": {"verbosity": 4, "friendliness": 0}})
    assert r.status == 200
    layers = {layer["name"]: layer["vector"] for layer in r.body["layers"]}
    assert r.body["order"] == ["defaults", "attributes", "mood", "steer", "override", "limits"]
    assert layers["attributes"] == {"humor": 1, "friendliness": 2, "creativity": 3, "verbosity": 1}
    assert layers["mood"] == {"humor": 3, "friendliness": 2, "creativity": 4, "verbosity": 2}
    assert layers["steer"]["verbosity"] == 4 and layers["steer"]["friendliness"] == 0
    assert r.body["clamped"] == {"verbosity": {"from": 4, "to": 2, "limit": "0..2"}, "friendliness": {"from": 0, "to": 2, "limit": "2..4"}}
    # the very vector a session steered the same way is served under
    npc.create_session("pip", session_id="pip-resolve", mood="excited", attributes={"verbosity": 4, "friendliness": 0})
    assert r.body["vector"] == dict(npc.get_session("pip-resolve").attributes)
    bad = web.post("/api/v1/characters/pip/resolve", {"steer": {"humor": 5}})
    assert (bad.status, bad.error["message"]) == (400, "steer.humor = 5 is outside 0..4")


def test_the_page_and_its_assets_are_served_from_the_package(web):
    page = web.get("/")
    assert page.status == 200 and "SteerNPC Studio" in page.body["_text"]
    for asset in ("/static/studio.js", "/static/studio.css", "/static/icon.svg"):
        assert web.get(asset).status == 200
    text = page.body["_text"] + web.get("/static/studio.js").body["_text"] + web.get("/static/studio.css").body["_text"]
    assert "http://" not in text and "https://" not in text  # nothing from the network


def test_steerability_says_when_there_is_no_report(web):
    assert web.get("/api/v1/steerability").body["available"] is False
    assert web.get("/api/v1/steerability/plots/humor.png").status == 404


# -- the persona editor through HTTP -----------------------------------------------------------------


def test_a_broken_save_is_refused_and_a_good_one_hot_reloads(web, npc, personas):
    original = (personas / "garrick.yaml").read_text()
    broken = original.replace("attributes:\n  humor: ", "attributes:\n  humor: 7 #", 1)
    assert broken != original
    line = broken.splitlines().index(next(l for l in broken.splitlines() if l.startswith("  humor: 7"))) + 1
    refused = web.call("PUT", "/api/v1/personas/file", {"path": "garrick.yaml", "text": broken})
    assert refused.status == 400 and refused.error["code"] == "INVALID_ARGUMENT"
    problem = refused.error["problems"][0]
    assert problem["text"] == f"{personas / 'garrick.yaml'}:{line}: attributes.humor = 7 is outside 0..4"
    assert (personas / "garrick.yaml").read_text() == original  # nothing written ...
    assert npc.get_character("garrick").attributes["humor"] != 7  # ... the last good version serves
    # validate says the same without saving; `steernpc validate` on the saved file would too
    checked = web.post("/api/v1/personas/validate", {"path": "garrick.yaml", "text": broken})
    assert checked.body["problems"] == refused.error["problems"]
    probe = personas.parent / "probe"
    probe.mkdir()
    (probe / "garrick.yaml").write_text(broken)
    cli = subprocess.run([sys.executable, "-m", "steernpc.cli", "validate", str(probe)], capture_output=True, text=True)
    assert cli.stdout.strip().replace(str(probe), str(personas)) == problem["text"]
    # a good edit: saved, reloaded at once
    renamed = original.replace("name: Old Garrick", "name: Old Garrick the Second")
    assert renamed != original
    saved = web.call("PUT", "/api/v1/personas/file", {"path": "garrick.yaml", "text": renamed})
    assert saved.status == 200 and saved.body == {"ok": True, "path": "garrick.yaml", "character_id": "garrick", "reloaded": True}
    assert npc.get_character("garrick").name == "Old Garrick the Second"
    assert (personas / "garrick.yaml").read_text() == renamed
    # an id that another file serves is refused like `steernpc validate` refuses it
    clash = web.call("PUT", "/api/v1/personas/file", {"path": "brom-copy.yaml", "text": (personas / "brom.yaml").read_text()})
    assert clash.status == 400 and "id 'brom' is already used by" in clash.error["message"]
    assert not (personas / "brom-copy.yaml").exists()


@pytest.mark.parametrize("path", ["../escape.yaml", "/tmp/escape.yaml", "sub/../../escape.yaml", "..", "./brom.yaml",
                                  "brom.txt", ".hidden.yaml", "a\\..\\escape.yaml", "~/escape.yaml", "missing-folder/x.yaml"])
def test_writes_cannot_leave_the_personas_folder(path, web, personas):
    text = (personas / "marta.yaml").read_text().replace("id: marta", "id: escapee")
    answer = web.call("PUT", "/api/v1/personas/file", {"path": path, "text": text})
    assert answer.status == 400 and answer.error["code"] == "INVALID_ARGUMENT", answer.body
    assert not (personas.parent / "escape.yaml").exists() and not (personas / "brom.txt").exists()
    assert web.get(f"/api/v1/personas/file?path={path}").status == 400


def test_symlinks_are_refused_for_reading_and_writing(web, personas, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret: 1\n")
    (personas / "link.yaml").symlink_to(outside)
    (tmp_path / "dir").mkdir()
    (personas / "linked-dir").symlink_to(tmp_path / "dir", target_is_directory=True)
    try:
        text = (personas / "marta.yaml").read_text().replace("id: marta", "id: linked")
        for path in ("link.yaml", "linked-dir/new.yaml"):
            written = web.call("PUT", "/api/v1/personas/file", {"path": path, "text": text})
            assert written.status == 400 and "symlink" in written.error["message"], written.body
            read = web.get(f"/api/v1/personas/file?path={path}")
            assert read.status == 400 and "symlink" in read.error["message"]
        assert outside.read_text() == "secret: 1\n" and not (tmp_path / "dir" / "new.yaml").exists()
        assert "link.yaml" not in [f["path"] for f in web.get("/api/v1/personas").body["files"]]
    finally:
        (personas / "link.yaml").unlink()
        (personas / "linked-dir").unlink()


# -- Host, Origin, keys, binding ---------------------------------------------------------------------


def test_other_hosts_and_origins_are_refused_on_localhost(web):
    rebound = web.get("/api/v1/characters", headers={"Host": "attacker.example:80"})
    assert rebound.status == 403 and rebound.error["code"] == "PERMISSION_DENIED"
    crossed = web.post("/api/v1/sessions", {"character_id": "brom"}, headers={"Origin": "http://attacker.example"})
    assert crossed.status == 403 and "cross-origin" in crossed.error["message"]
    own = web.post("/api/v1/sessions", {"character_id": "brom"}, headers={"Origin": f"http://127.0.0.1:{web.port}"})
    assert own.status == 200


def test_keys_are_required_when_given_and_edits_need_allow_edit_off_localhost(tiny_model_dir, tmp_path_factory, personas):
    specs = {
        "keyed-open": dict(studio=True, store="memory", api_key="k1", personas=personas, extra=["--studio-host", "0.0.0.0"]),
        "keyed-edit": dict(studio=True, store="memory", api_key="k2", personas=personas, extra=["--studio-host", "0.0.0.0", "--allow-edit"]),
    }
    servers = [NpcServer(tiny_model_dir, tmp_path_factory.mktemp(name), name=name, **o) for name, o in specs.items()]
    try:
        for s in servers:
            s.spawn()
        for s in servers:
            s.start(spawned=True)
        no_edit, edit = servers
        anonymous = Http(no_edit.studio_url)
        missing = anonymous.get("/api/v1/characters")
        assert (missing.status, missing.error["code"], missing.error["message"]) == (401, "UNAUTHENTICATED", "missing `authorization: Bearer KEY` header")
        wrong = Http(no_edit.studio_url, key="nope").get("/api/v1/characters")
        assert (wrong.status, wrong.error["message"]) == (401, "API key is not valid")
        assert anonymous.get("/healthz").status == 200 and anonymous.get("/").status == 200  # like gRPC health, and the page itself
        keyed = Http(no_edit.studio_url, key="k1")
        assert keyed.get("/api/v1/characters").status == 200
        assert keyed.get("/api/v1/characters", headers={"Host": "studio.lan:1"}).status == 200  # not loopback: any Host, keys guard it
        text = (personas / "marta.yaml").read_text()
        off = keyed.call("PUT", "/api/v1/personas/file", {"path": "marta.yaml", "text": text})
        assert off.status == 403 and off.error["code"] == "PERMISSION_DENIED" and "--allow-edit" in off.error["message"]
        assert keyed.get("/api/v1/status").body["edit"] is False
        on = Http(edit.studio_url, key="k2").call("PUT", "/api/v1/personas/file", {"path": "marta.yaml", "text": text})
        assert on.status == 200
        assert Http(edit.studio_url, key="k1").get("/api/v1/characters").status == 401  # each server its own keys
    finally:
        for s in servers:
            s.stop()


def test_a_studio_off_localhost_without_keys_does_not_start(tmp_path, tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "steernpc.cli", "serve", "--model", str(tiny_model_dir), "--adapter", "none",
                           "--store", "memory", "--port", str(free_port()), "--studio-port", str(free_port()),
                           "--studio-host", "0.0.0.0"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STEERNPC_HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode != 0
    assert "would be open to the network: give --api-key KEY" in proc.stderr
