"""The SteerNPC demo: a short scripted scene played through the real gRPC server.

Starts `steernpc serve` with the sample personas (and the sample SteerLM adapter when it
is present), then, with streamed output:
  1. Marta the innkeeper answers one player line under contrasting attribute profiles,
     side by side (humor, friendliness and verbosity, each 0 vs 4);
  2. Brom the blacksmith changes mood mid-conversation (friendly -> angry);
  3. the conversation is saved (ExportSession), deleted, loaded (ImportSession) and goes on;
  4. a tavern scene: the player addresses Brom at Marta's table, Brom and Marta banter for
     3 lines (SceneContinue), and the player cuts into the next round of banter.
Then it prints how to continue, stops the server and exits 0.

    python samples/demo/scene.py [--port 50151] [--model smollm2] [--keep-server]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from steernpc.server.process import ExitedEarly, ServerProcess, StartTimeout, free_port, grpc_health

REPO = Path(__file__).resolve().parents[2]
WIDTH = 38


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def stream_reply(npc, session_id: str, who: str, line: str, attributes=None, seed: int = 7, label: str = "") -> str:
    print(f"  you: {line}")
    print(f"  {who}{label}: ", end="", flush=True)
    for delta in npc.say(session_id, line, attributes=attributes, seed=seed, max_new_tokens=80):
        print(delta, end="", flush=True)
    done = npc.last_done
    applied = ",".join(f"{k}:{v}" for k, v in sorted(done.attributes.items()))
    print(f"\n      [{applied}; {done.usage.completion_tokens} tokens, first token {done.usage.time_to_first_token_ms:.0f} ms]")
    return done.text


def side_by_side(left_title: str, left: str, right_title: str, right: str) -> None:
    a = textwrap.wrap(left, WIDTH) or [""]
    b = textwrap.wrap(right, WIDTH) or [""]
    print(f"  +-{'-' * WIDTH}-+-{'-' * WIDTH}-+")
    print(f"  | {left_title:<{WIDTH}} | {right_title:<{WIDTH}} |")
    print(f"  +-{'-' * WIDTH}-+-{'-' * WIDTH}-+")
    for i in range(max(len(a), len(b))):
        print(f"  | {(a[i] if i < len(a) else ''):<{WIDTH}} | {(b[i] if i < len(b) else ''):<{WIDTH}} |")
    print(f"  +-{'-' * WIDTH}-+-{'-' * WIDTH}-+")
    if left.strip() == right.strip():  # say so rather than let a viewer hunt for a difference
        attribute = left_title.split()[0]
        print(f"  (identical: this model does not follow {attribute} yet; its model card has the numbers)")


def wait_for_server(server: ServerProcess, timeout: float = 600) -> None:
    spinner = itertools.cycle("|/-\\")

    def tick(waited: float) -> None:
        print(f"\r  loading model {next(spinner)} {waited:.0f} s", end="", flush=True)

    started = time.time()
    try:
        server.wait_ready(timeout, interval=0.5, tick=tick)
    except ExitedEarly as exc:
        raise SystemExit(f"the server exited with code {exc.returncode}; see its log above") from None
    except StartTimeout:
        raise SystemExit("the server did not become ready in time") from None
    print(f"\r  server ready after {time.time() - started:.0f} s        ", flush=True)


def play(target: str) -> None:
    from steernpc.client import NpcClient

    with NpcClient(target, timeout=300) as npc:
        names = {c.id: c.name for c in npc.list_characters()}
        print(f"  characters: {', '.join(sorted(names))}")

        banner("1. One line, two attribute profiles: Marta the innkeeper")
        line = "Got any rooms free tonight? And what's the food like?"
        replies = {}
        for attribute in ("humor", "friendliness", "verbosity"):
            for level in (0, 4):
                session = npc.create_session("marta", player_name="Traveller")
                replies[level] = stream_reply(npc, session.session_id, names["marta"], line, {attribute: level},
                                              label=f" ({attribute} {level})")  # fmt: skip
            side_by_side(f"{attribute} 0", replies[0], f"{attribute} 4", replies[4])

        banner("2. A mood change mid-conversation: Brom the blacksmith")
        session = npc.create_session("brom", mood="friendly", player_name="Traveller")
        sid = session.session_id
        stream_reply(npc, sid, names["brom"], "Morning, Brom! Could you sharpen my sword?", seed=3, label=" (friendly)")
        print("  ... the player knocks over Brom's quenching bucket ...")
        steered = npc.steer(sid, mood="angry")
        print(f"  [Steer: mood={steered.mood} -> {dict(sorted(steered.attributes.items()))}]")
        stream_reply(npc, sid, names["brom"], "Oops. Sorry about that. So, about my sword?", seed=3, label=" (angry)")

        banner("3. Save and load the conversation (a save game)")
        snapshot = npc.export_session(sid)
        print(f"  ExportSession: {len(snapshot)} bytes of msgpack to keep in the save file")
        npc.delete_session(sid)
        print("  DeleteSession: the server forgot it (the game was closed)")
        restored = npc.import_session(snapshot)
        print(f"  ImportSession: session back with {restored.turns} turns, mood {restored.mood}")
        stream_reply(npc, sid, names["brom"], "Alright, I'm back. Is the sword ready?", seed=5, label=" (after load)")

        play_tavern(npc)


def print_scene_events(events, interrupt_after: int | None = None, interrupt=None) -> None:
    """Print a scene stream line by line (`speaker: text`); with `interrupt_after`, call
    `interrupt()` once that many deltas of the stream have arrived."""
    speaking, deltas = None, 0
    for event in events:
        if event.HasField("delta"):
            if event.speaker_id != speaking:
                speaking = event.speaker_id
                print(f"  {event.speaker}: ", end="", flush=True)
            print(event.delta.text, end="", flush=True)
            deltas += 1
            if interrupt is not None and deltas == interrupt_after:
                interrupt()
        elif event.HasField("done"):
            if speaking != event.speaker_id:
                print(f"  {event.speaker}: ", end="")
            cut = " [cut off]" if event.done.finish_reason == 3 else ""
            print(f"{cut}\n      [{event.done.usage.completion_tokens} tokens, first token {event.done.usage.time_to_first_token_ms:.0f} ms]")
            speaking = None


def play_tavern(npc) -> None:
    banner("4. A tavern scene: Brom and Marta at one table")
    scene = npc.create_scene(members=["brom", "marta"], player_name="Traveller", context={"place": "the common room of Marta's inn"}, seed=4)
    sid = scene.scene_id
    print(f"  CreateScene: {', '.join(m.name for m in scene.members)} (each with its own persona card and attributes)")
    line = "Brom, what do you make of this blade I found on the road?"
    print(f"  you: {line}")
    print_scene_events(npc.scene_say(sid, line, seed=11, max_new_tokens=60))
    print("  [SceneContinue: 3 lines of banter]")
    print_scene_events(npc.scene_continue(sid, 3, seed=12, max_new_tokens=60))
    print("  [SceneContinue: more banter ... the player cuts in]")
    cut_in = "Marta, sorry to interrupt: is there a room for tonight?"
    said = []
    print_scene_events(npc.scene_continue(sid, 4, seed=13, max_new_tokens=60), interrupt_after=6,
                       interrupt=lambda: said.append(npc.scene_say(sid, cut_in, seed=14, max_new_tokens=60)))  # fmt: skip
    print(f"  you: {cut_in}")
    print_scene_events(said[0])
    scene = npc.get_scene(sid)
    print(f"  GetScene: {scene.lines} lines in the shared transcript; ExportScene: {len(npc.export_scene(sid))} bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description="Play the SteerNPC demo scene")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--target", default=None, help="use a running server instead of starting one")
    args = parser.parse_args()

    from steernpc.runtime_defaults import default_adapter

    if args.target:
        play(args.target)
        return 0
    port = args.port or free_port()
    target = f"127.0.0.1:{port}"
    adapter = default_adapter(args.model)
    banner("SteerNPC demo")
    print(f"  starting `steernpc serve` on {target} with samples/personas"
          f"{' and the sample SteerLM adapter ' + os.path.relpath(adapter, REPO) if adapter else ' (no sample adapter found: base model)'}")  # fmt: skip
    home = tempfile.mkdtemp(prefix="steernpc-demo-")
    cmd = [sys.executable, "-m", "steernpc.cli", "serve", "--port", str(port), "--store", "sqlite",
           "--store-path", str(Path(home) / "sessions.sqlite3"), "--log-level", "WARNING"]  # fmt: skip
    if args.model:
        cmd += ["--model", args.model]
    server = ServerProcess(cmd, grpc_health(target, timeout=1)).spawn()  # its log goes to this terminal
    started = time.time()
    try:
        wait_for_server(server)
        play(target)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    banner(f"Done in {time.time() - started:.0f} s. Carry on:")
    print("  steernpc chat --persona samples/personas/brom.yaml     # talk to Brom; /set humor 4, /mood angry")
    print("  steernpc serve                                         # serve every sample persona on 127.0.0.1:50051")
    print("  steernpc render --persona samples/personas/marta.yaml --say 'Hi' --attr humor=4   # the exact prompt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
