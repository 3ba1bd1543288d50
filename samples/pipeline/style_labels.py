"""Label the sample corpus from how each reply was sampled, for an NPC-style APM.

chitchat's human ratings are per conversation, so an APM trained on them cannot tell one
reply's humor, friendliness or creativity from another's (held-out Spearman ~0.05). Our
corpus knows more: each reply was sampled under a style instruction ("Be funny: ...",
"Be cold, curt and unfriendly ..."). This writes those as labels — 4 for the "more"
instruction, 0 for the "less" one, missing (-100) when there was none — plus verbosity
from the reply's word count, so step 1 can learn what those styles look like in replies.

    python samples/pipeline/style_labels.py CORPUS.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys

from steernpc_train.data import verbosity_bucket

CUES = {
    "humor": ("Be funny", "Be completely serious"),
    "friendliness": ("Be very warm", "Be cold, curt"),
    "creativity": ("Use vivid", "Speak plainly"),
}


def main(src: str, dst: str) -> int:
    with open(src) as fin, open(dst, "w") as fout:
        for line in fin:
            record = json.loads(line)
            style = record.get("style", "")
            turn = record["turns"][-1]
            labels = {"verbosity": verbosity_bucket(turn["reply"])}
            for name, (more, less) in CUES.items():
                if more in style:
                    labels[name] = 4
                elif less in style:
                    labels[name] = 0
            turn["labels"] = labels
            fout.write(json.dumps(record, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
