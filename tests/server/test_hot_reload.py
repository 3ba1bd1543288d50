"""The persona folder is hot-reloaded: new files appear, edits apply, a broken edit keeps
the last good version served and logs FILE:LINE: for what to fix, deleted files go away."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from server_harness import copy_personas, say, wait_until

from steernpc.persona import PersonaError, load_persona

RELOAD_TIMEOUT = 20.0


def write_atomically(path: Path, text: str) -> None:
    """Write beside and rename, so the watcher never reads a half-written file."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def personas(tmp_path_factory):
    return copy_personas(tmp_path_factory.mktemp("hot") / "personas")


@pytest.fixture(scope="module")
def server(launch, personas):
    return launch("hot-reload", personas=personas)


def ids(npc) -> set[str]:
    return {c.id for c in npc.list_characters()}


def test_new_persona_file_is_served_within_seconds_and_a_deleted_one_goes(npc, personas):
    assert "wren" not in ids(npc)
    text = (personas / "brom.yaml").read_text()
    text = re.sub(r"(?m)^id: brom$", "id: wren", text)
    text = re.sub(r"(?m)^name: .*$", "name: Wren Ashdown", text)
    write_atomically(personas / "wren.yaml", text)
    wait_until(lambda: "wren" in ids(npc), RELOAD_TIMEOUT, "the new persona wren to be listed", interval=0.25)
    wren = npc.get_character("wren")
    assert wren.name == "Wren Ashdown"
    assert dict(wren.attributes) == load_persona(personas / "wren.yaml").resolve()
    sid = npc.create_session("wren").session_id
    reply = say(npc.stub, sid, "Who are you?", max_new_tokens=5, seed=1)
    assert reply.text == reply.done.text

    (personas / "wren.yaml").unlink()
    wait_until(lambda: "wren" not in ids(npc), RELOAD_TIMEOUT, "the deleted persona wren to go", interval=0.25)
    assert "brom" in ids(npc)


def test_broken_edit_keeps_the_last_good_version_and_logs_file_line(server, npc, personas):
    path = personas / "pip.yaml"
    good = path.read_text()
    original = npc.get_character("pip")
    sid = npc.create_session("pip").session_id

    lines = good.splitlines(keepends=True)
    humor_line = next(i for i, line in enumerate(lines) if re.match(r"^  humor: \d+$", line.rstrip("\n")))
    name_line = next(i for i, line in enumerate(lines) if line.startswith("name: "))
    broken_value = lines.copy()
    broken_value[name_line] = "name: Pip the Broken\n"
    broken_value[humor_line] = "  humor: 99\n"
    mood_line = next(i for i, line in enumerate(lines) if re.match(r"^  \w+: \{.*\}$", line.rstrip("\n")))
    broken_yaml = lines.copy()
    broken_yaml[name_line] = "name: Pip the Unclosed\n"
    broken_yaml[mood_line] = lines[mood_line].rstrip().rstrip("}") + "\n"  # a '{' never closed

    for variant, expected_line in ((broken_value, humor_line + 1), (broken_yaml, mood_line + 1)):
        text = "".join(variant)
        write_atomically(path, text)
        with pytest.raises(PersonaError) as info:  # what the loader says about this file
            load_persona(path)
        problems = [str(p) for p in info.value.problems]
        assert any(p.startswith(f"{path}:{expected_line}: ") for p in problems), problems
        wait_until(lambda: all(p in server.stderr() for p in problems), RELOAD_TIMEOUT,
                   f"the server to log {problems}", interval=0.25)  # fmt: skip
        log_lines = [line for line in server.stderr().splitlines() if f"{path}:" in line]
        assert any(f"{path}:{expected_line}: " in line for line in log_lines), log_lines
        assert "keeping the last good version" in server.stderr()
        served = npc.get_character("pip")  # the last good version is still served
        assert served == original
        reply = say(npc.stub, sid, "Are you still there?", max_new_tokens=5, seed=2)
        assert dict(reply.done.attributes) == load_persona_text(good, personas).resolve()

    # a good edit after the broken ones is picked up again
    fixed = lines.copy()
    fixed[name_line] = "name: Pip Greenhollow the Brave\n"
    write_atomically(path, "".join(fixed))
    wait_until(lambda: npc.get_character("pip").name == "Pip Greenhollow the Brave", RELOAD_TIMEOUT,
               "the fixed persona to be served", interval=0.25)  # fmt: skip
    assert npc.get_session(sid).turns == 2


def load_persona_text(text: str, folder: Path):
    probe = folder.parent / "probe" / "persona.yaml"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text(text)
    return load_persona(probe)
