"""Add shorter variants of long replies: the first sentence (and the first two) of a reply
is still a natural reply to the same line, only terser. This widens the verbosity range of
the corpus for free; step 2 (annotate) then labels every variant like any other reply.

    python samples/pipeline/augment_lengths.py IN.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import re
import sys

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def main(src: str, dst: str) -> int:
    kept = added = 0
    with open(src) as fin, open(dst, "w") as fout:
        for line in fin:
            record = json.loads(line)
            fout.write(json.dumps(record, ensure_ascii=False) + "\n")
            kept += 1
            turn = record["turns"][-1]
            parts = sentences(turn["reply"])
            variants = {"s1": parts[:1], "s2": parts[:2]}
            if not turn["reply"].rstrip().endswith((".", "!", "?", '"', "'", ")")):
                variants["complete"] = parts[:-1]  # cut by the token limit: drop the broken sentence
            seen = {turn["reply"].strip()}
            for suffix, chosen in variants.items():
                text = " ".join(chosen)
                if chosen and text not in seen:
                    seen.add(text)
                    short = dict(record, id=f"{record['id']}-{suffix}")
                    short["turns"] = record["turns"][:-1] + [dict(turn, reply=text)]
                    fout.write(json.dumps(short, ensure_ascii=False) + "\n")
                    added += 1
    print(f"{kept} records + {added} shorter variants -> {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
