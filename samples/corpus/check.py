"""Check the NPC corpus against its design and its rubric.

    python samples/corpus/check.py            # every group that has files
    python samples/corpus/check.py port fort  # some groups

Prints one `FILE:LINE: problem` per problem and exits 1 if there are any. The test suite
(tests/train/test_corpus.py) runs the same checks.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ATTRS = ("humor", "friendliness", "creativity", "verbosity")
EMOTIONS = ("neutral", "happy", "angry", "sad", "afraid", "surprised", "disgusted")
# action -> {argument: type}
ACTIONS = {
    "give_item": {"item": str}, "take_item": {"item": str}, "pay": {"amount": int},
    "open_shop": {}, "give_quest": {"quest": str}, "refuse": {}, "attack": {},
    "call_guards": {}, "follow": {}, "flee": {},
}
# verbosity level -> word range of the spoken reply (RUBRIC.md), with one word of slack
WORDS = {0: (1, 5), 1: (6, 12), 2: (13, 24), 3: (25, 40), 4: (41, 60)}
SLACK = 1


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.strip():
            rows.append((n, json.loads(raw)))
    return rows


def check_turn(where: str, turn: dict, want: dict | None, problems: list[str]) -> None:
    for key in ("user", "reply", "labels", "emotion"):
        if key not in turn:
            problems.append(f"{where}: missing {key!r}")
            return
    labels = turn["labels"]
    if set(labels) != set(ATTRS) or any(not isinstance(v, int) or not 0 <= v <= 4 for v in labels.values()):
        problems.append(f"{where}: labels must be {{humor, friendliness, creativity, verbosity}} with values 0..4, got {labels}")
        return
    if want is not None and labels != want:
        problems.append(f"{where}: labels {labels} differ from the task's vector {want}")
    lo, hi = WORDS[labels["verbosity"]]
    n = word_count(turn["reply"])
    if not lo - SLACK <= n <= hi + SLACK:
        problems.append(f"{where}: verbosity {labels['verbosity']} wants {lo}-{hi} words, the reply has {n}")
    if "*" in turn["reply"]:
        problems.append(f"{where}: the reply narrates between asterisks; put the action in 'action'")
    if turn["emotion"] not in EMOTIONS:
        problems.append(f"{where}: emotion {turn['emotion']!r} is not one of {', '.join(EMOTIONS)}")
    action = turn.get("action")
    if action is not None:
        if not isinstance(action, dict) or action.get("name") not in ACTIONS:
            problems.append(f"{where}: action must be {{name, args}} with name one of {', '.join(ACTIONS)}")
            return
        args, spec = action.get("args", {}), ACTIONS[action["name"]]
        if set(args) != set(spec) or any(not isinstance(args[k], t) for k, t in spec.items()):
            problems.append(f"{where}: {action['name']} takes {spec or 'no arguments'}, got {args}")


def check_persona(path: Path, problems: list[str]) -> None:
    data = yaml.safe_load(path.read_text())
    for key in ("id", "name", "role", "backstory", "speaking_style", "knowledge", "greeting", "attributes", "moods"):
        if key not in (data or {}):
            problems.append(f"{path}:1: missing {key!r}")
    if data and data.get("id") != path.stem:
        problems.append(f"{path}:1: id {data.get('id')!r} must equal the file name {path.stem!r}")


def check_group(group: str, problems: list[str]) -> Counter:
    task = json.loads((HERE / "tasks" / f"{group}.json").read_text())
    counts: Counter = Counter()
    for split, personas in (("train", task["personas"]), ("heldout", [task["heldout_persona"]])):
        for p in personas:
            path = HERE / "personas" / split / f"{p['id']}.yaml"
            if path.exists():
                check_persona(path, problems)
                counts["personas_" + split] += 1
    for split, personas in (("dialogue", task["personas"]), ("eval", [task["heldout_persona"]])):
        path = HERE / split / f"{group}.jsonl"
        if not path.exists():
            continue
        by_id = {p["id"]: p for p in personas}
        for n, rec in read_jsonl(path):
            where = f"{path}:{n}"
            p = by_id.get(rec.get("character"))
            if p is None:
                problems.append(f"{where}: character {rec.get('character')!r} is not a {split} persona of group {group}")
                continue
            m = re.fullmatch(r".+-(s|c)(\d+)(?:-r(\d))?", rec.get("id", ""))
            if not m:
                problems.append(f"{where}: id {rec.get('id')!r} must be <persona>-sNN-rK or <persona>-cNN")
                continue
            kind, idx = m.group(1), int(m.group(2))
            turns = rec.get("turns") or []
            if kind == "s":
                cs = p["contrast_sets"][idx]
                k = int(m.group(3))
                if len(turns) != 1 or turns[0].get("user") != cs["line"]:
                    problems.append(f"{where}: a contrast-set record has one turn whose user line is the task's line {cs['line']!r}")
                    continue
                check_turn(where, turns[0], cs["vectors"][k], problems)
                counts["replies_" + split] += 1
            else:
                conv = p["conversations"][idx]
                if len(turns) != conv["turns"]:
                    problems.append(f"{where}: the task asks for {conv['turns']} turns, the record has {len(turns)}")
                for t, turn in enumerate(turns):
                    want = conv["vector_before"] if t < conv["change_at_turn"] else conv["vector_after"]
                    check_turn(f"{where} turn {t}", turn, want, problems)
                counts["replies_" + split] += len(turns)
                counts["conversations"] += 1
            counts["records_" + split] += 1
    return counts


def main(argv: list[str]) -> int:
    groups = argv or sorted(p.stem for p in (HERE / "tasks").glob("*.json"))
    problems: list[str] = []
    total: Counter = Counter()
    for g in groups:
        c = check_group(g, problems)
        print(f"{g}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        total += c
    replies = [json.loads(r)["turns"] for f in (HERE / "dialogue").glob("*.jsonl") for r in f.read_text().splitlines() if r.strip()] \
        if (HERE / "dialogue").exists() else []
    seen = Counter(t["reply"].strip().lower() for ts in replies for t in ts if "reply" in t)
    problems += [f"duplicate reply ({n}x): {r!r}" for r, n in seen.items() if n > 1]
    for p in problems:
        print(p)
    print(f"total: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())) + f"; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
