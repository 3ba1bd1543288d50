"""Does the model read the label line? A probe that needs no generation and no APM.

For every held-out reply y (samples/corpus/eval: personas and lines never trained on) and
every attribute, it compares log p(y | own labels) with log p(y | the same labels with that
attribute moved 2+ levels away). A model that ignores an attribute scores the reply the same
under both (margin 0, own labels likelier half the time); one that reads it prefers the
reply's own labels.

    python samples/pipeline/label_margin.py [--adapter DIR] [--base smollm2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "samples" / "corpus"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--format", choices=("nemo", "verbal"), default=None, help="default: the adapter's, else nemo")
    parser.add_argument("--max-replies", type=int, default=0, help="0 = all 400")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from steernpc.attributes import AttributeSchema
    from steernpc.persona import load_personas
    from steernpc.prompt import Exchange, segments

    from steernpc_train.contrast_sets import moved_vector
    from steernpc_train.data import read_conversations
    from steernpc_train.gen import load_generator
    from steernpc_train.sft import persona_system

    schema = AttributeSchema.load(REPO / "samples" / "attributes" / "npc.yaml")
    personas, _ = load_personas([CORPUS / "personas" / "heldout"])
    convs = [c for f in sorted((CORPUS / "eval").glob("*.jsonl")) for c in read_conversations(f, "npc")]
    if args.max_replies:
        convs = random.Random(0).sample(convs, args.max_replies)
    from steernpc.model_card import read_train_meta

    fmt = args.format or (read_train_meta(args.adapter).get("format") if args.adapter else None) or "nemo"
    model, tok = load_generator(args.base, args.adapter)
    model.eval()
    rng = random.Random(0)

    def sequence(system: str, user: str, reply: str, labels: dict) -> tuple[list[int], int]:
        context, trained = [t for t, _ in segments(fmt, system, [Exchange(user, reply, labels)], schema)]
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        return ctx + tok(trained, add_special_tokens=False)["input_ids"], len(ctx)

    jobs = []  # (reply index, attribute or None, ids, start of the reply)
    for i, conv in enumerate(convs):
        turn = conv.turns[0]
        system = persona_system(personas[conv.character])
        ids, start = sequence(system, turn.user, turn.reply, turn.labels)
        jobs.append((i, None, ids, start))
        for name in schema.names:
            spec = schema[name]
            moved = moved_vector(turn.labels, name, spec.min, spec.max, rng)
            ids, start = sequence(system, turn.user, turn.reply, moved)
            jobs.append((i, name, ids, start))

    logp: dict[tuple[int, str | None], float] = {}
    reply_tokens = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.no_grad():
        for k in range(0, len(jobs), args.batch_size):
            batch = jobs[k:k + args.batch_size]
            width = max(len(j[2]) for j in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, _, seq, _) in enumerate(batch):
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
            # the vocabulary projection only where a reply token is predicted
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, (i, name, seq, start) in enumerate(batch):
                targets = torch.tensor(seq[start:])
                logits = model.get_output_embeddings()(hidden[r, start - 1:len(seq) - 1]).float().log_softmax(-1)
                logp[(i, name)] = float(logits.gather(-1, targets[:, None]).sum())
                reply_tokens += len(targets) if name is None else 0
            print(f"\r{min(k + args.batch_size, len(jobs))}/{len(jobs)} sequences", end="", file=sys.stderr)
    print(file=sys.stderr)

    perplexity = math.exp(-sum(logp[(i, None)] for i in range(len(convs))) / reply_tokens)
    result = {"base": args.base, "adapter": args.adapter, "format": fmt, "replies": len(convs), "reply_tokens": reply_tokens,
              "perplexity": round(perplexity, 3), "attributes": {}}
    print(f"perplexity of the held-out replies under their own labels: {perplexity:.2f} ({reply_tokens} tokens)")
    print("| attribute | mean log p(y|own) - log p(y|moved) | own labels likelier |\n|---|---:|---:|")
    for name in schema.names:
        margins = [logp[(i, None)] - logp[(i, name)] for i in range(len(convs))]
        mean = sum(margins) / len(margins)
        wins = sum(m > 0 for m in margins) / len(margins)
        result["attributes"][name] = {"mean_margin": round(mean, 3), "own_likelier": round(wins, 3)}
        print(f"| {name} | {mean:+.3f} | {wins:.0%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
