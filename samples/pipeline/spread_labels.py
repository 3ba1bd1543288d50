"""Re-label an annotated corpus by quantiles of the APM's raw predictions, so every level
0..4 of every attribute is equally common (plain clip-and-round crowds labels around the
middle when the APM regresses to the mean, and the SFT then rarely sees 0 or 4).

    python samples/pipeline/spread_labels.py IN.jsonl OUT.jsonl --apm DIR
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--apm", required=True)
    args = parser.parse_args()

    from steernpc_train.apm import load_apm

    records = [json.loads(line) for line in open(args.input)]
    apm = load_apm(args.apm)
    raw = apm.predict([r["turns"][-1]["reply"] for r in records])
    for name in raw[0]:
        spec = apm.schema[name]
        levels = spec.max - spec.min + 1
        order = sorted(range(len(records)), key=lambda i: raw[i][name])
        for rank, i in enumerate(order):
            records[i]["turns"][-1].setdefault("labels", {})[name] = spec.min + rank * levels // len(records)
    with open(args.output, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(records)} records re-labelled by quantile -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
