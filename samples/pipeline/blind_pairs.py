"""The blind pairwise check of a steerability report: does a reader who does not know which
reply was asked for pick the funnier, friendlier, more imaginative, longer one?

    python samples/pipeline/blind_pairs.py make REPORT_DIR PAIRS_DIR   # pairs.jsonl for the reader, key.json kept apart
    python samples/pipeline/blind_pairs.py score PAIRS_DIR ANSWERS     # agreement per attribute

`make` takes, for every (persona, player line, sample) of each attribute's sweep, the reply
generated at the lowest and at the highest target, and shows them as A and B in a random
order. The reader answers one JSON line per pair: {"id": ..., "pick": "A" | "B"}.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

QUESTION = {
    "humor": "Which reply is funnier?",
    "friendliness": "Which reply is friendlier to the player?",
    "creativity": "Which reply is more imaginative and colourful?",
    "verbosity": "Which reply is longer and more detailed?",
}


def make(report_dir: Path, out: Path, seed: int = 0) -> int:
    rows = [json.loads(line) for line in (report_dir / "generations.jsonl").read_text().splitlines() if line.strip()]
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        groups[(r["attribute"], r["persona"], r["line"], r["sample"])][r["target"]] = r
    rng = random.Random(seed)
    pairs, key = [], {}
    for (attribute, persona, line, sample), by_target in sorted(groups.items()):
        low, high = by_target.get(min(by_target)), by_target.get(max(by_target))
        if low is None or high is None or low is high:
            continue
        pid = f"{attribute}-{persona}-{line}-{sample}"
        flip = rng.random() < 0.5
        a, b = (high, low) if flip else (low, high)
        pairs.append({"id": pid, "question": QUESTION.get(attribute, f"Which reply shows more {attribute}?"),
                      "player": low["user"], "A": a["reply"], "B": b["reply"]})
        key[pid] = {"attribute": attribute, "high": "A" if flip else "B", "identical": low["reply"] == high["reply"]}
    rng.shuffle(pairs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    (out / "key.json").write_text(json.dumps(key, indent=1))
    return len(pairs)


def score(pairs_dir: Path, answers: Path) -> dict[str, dict]:
    key = json.loads((pairs_dir / "key.json").read_text())
    picks = {a["id"]: a["pick"] for a in (json.loads(line) for line in answers.read_text().splitlines() if line.strip())}
    out: dict[str, dict] = defaultdict(lambda: {"pairs": 0, "agree": 0, "identical": 0})
    for pid, k in key.items():
        s = out[k["attribute"]]
        s["pairs"] += 1
        s["identical"] += k["identical"]
        s["agree"] += picks.get(pid) == k["high"]
    for s in out.values():
        s["agreement"] = round(s["agree"] / s["pairs"], 3) if s["pairs"] else 0.0
    return dict(out)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "make":
        print(f"{make(Path(argv[1]), Path(argv[2]))} pairs written to {argv[2]}/pairs.jsonl (key in key.json)")
        return 0
    if len(argv) == 3 and argv[0] == "score":
        print("| attribute | pairs | reader picked the high side | identical pairs |\n|---|---:|---:|---:|")
        for name, s in score(Path(argv[1]), Path(argv[2])).items():
            print(f"| {name} | {s['pairs']} | {s['agreement']:.0%} | {s['identical']} |")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
