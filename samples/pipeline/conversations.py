"""Chain an annotated corpus of single exchanges into longer conversations per character.

In the `nemo` format every reply of a conversation trains, each under its own label line,
so one persona card (~230 tokens, the bulk of a one-exchange example) is read once for
many labelled replies: about twice the labelled replies per CPU-second of SFT. The
exchanges of one conversation carry independent labels, so the model can only tell their
styles apart by the label line right before each reply, which is what SteerLM has to learn.

    python samples/pipeline/conversations.py IN.jsonl OUT.jsonl [--exchanges 8] [--seed 0]

Truncated copies of one reply (ids `npc-7`, `npc-7-s1`, ...) and repeated player lines
never share a conversation.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict


def base_id(record_id: str) -> str:
    return record_id.split("-s")[0]


def chain(records: list[dict], exchanges: int, rng: random.Random) -> list[dict]:
    by_character: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_character[record["character"]].append(record)
    out = []
    for character, pool in sorted(by_character.items()):
        rng.shuffle(pool)
        while pool:
            conversation, ids, lines, rest = [], set(), set(), []
            for record in pool:
                turn = record["turns"][-1]
                if len(conversation) < exchanges and base_id(record["id"]) not in ids and turn["user"] not in lines:
                    conversation.append(record)
                    ids.add(base_id(record["id"]))
                    lines.add(turn["user"])
                else:
                    rest.append(record)
            pool = rest
            out.append({
                "id": f"conv-{character}-{len(out)}",
                "character": character,
                "system": conversation[0]["system"],
                "turns": [r["turns"][-1] for r in conversation],
            })
    rng.shuffle(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--exchanges", type=int, default=8, help="exchanges per conversation (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = [json.loads(line) for line in open(args.input) if line.strip()]
    conversations = chain(records, args.exchanges, random.Random(args.seed))
    with open(args.output, "w") as f:
        for conversation in conversations:
            f.write(json.dumps(conversation, ensure_ascii=False) + "\n")
    turns = sum(len(c["turns"]) for c in conversations)
    print(f"{len(records)} exchanges -> {len(conversations)} conversations ({turns} exchanges)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
