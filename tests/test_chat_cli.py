"""`steernpc chat`: streams replies, steers with /set and /mood, explains bad commands
and keeps the conversation going."""

import subprocess
import sys


def run_chat(tiny_model_dir, script: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steernpc.cli", "chat", "--persona", "samples/personas/brom.yaml",
         "--model", str(tiny_model_dir), "--seed", "3", "--max-new-tokens", "12", *extra],
        input=script, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_chat_streams_and_steers(tiny_model_dir):
    script = "Hello there!\n/attrs\n/set humor 4\n/attrs\n/mood angry\n/attrs\nCan you fix my sword?\n/quit\n"
    out = run_chat(tiny_model_dir, script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    replies = [l for l in out.stdout.split("you> ") if l.startswith("Brom Ironhand: ")]
    assert len(replies) == 2 and all(len(r.strip()) > len("Brom Ironhand:") for r in replies)
    attrs = [l for l in lines if "next reply:" in l]
    assert "humor:0," in attrs[0]
    assert "humor:4," in attrs[1]  # /set changed the label line of the next prompt
    assert "friendliness:0," in attrs[2]  # brom's angry mood
    assert "humor = 4" in out.stdout


def test_bad_commands_say_what_is_allowed_and_keep_going(tiny_model_dir):
    script = "/set humor 9\n/set wit 2\n/set humor lots\n/mood furious\n/dance\nStill there?\n/quit\n"
    out = run_chat(tiny_model_dir, script)
    assert out.returncode == 0, out.stderr
    assert "humor = 9 is outside 0..4" in out.stdout
    assert "unknown attribute 'wit'" in out.stdout
    assert "'lots' is not an integer; humor takes 0..4" in out.stdout
    assert "brom has no mood 'furious'; moods: angry, drunk, friendly" in out.stdout
    assert "unknown command /dance" in out.stdout
    assert out.stdout.count("Brom Ironhand: ") >= 2  # greeting + the reply after the errors
