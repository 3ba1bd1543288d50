"""Shared-prefix examples for contrast sets (nemo and verbal formats), with label-contrast segments.

A contrast set is several replies of one persona to one player line, each written to its
own attribute vector. In `nemo` they share everything up to the label line (the card, the
user line, "Assistant"), about 300 of their ~370 tokens. One example holds that prefix once
and then one *segment* per reply: its label line (not trained) and the reply (trained).
Each segment sees the prefix and itself, never another segment (collate() builds the mask),
and its positions continue from the prefix, so every reply is trained exactly as if it had
been its own sequence, at a fraction of the tokens.

With `contrast=True` every reply also gets a *contrast segment*: the same reply under a
label line where one attribute is moved at least two levels away (the attributes take
turns across the set). The contrast segment has no SFT loss; the pair feeds the
label-contrast term (sft.contrast_term), which asks that a reply be likelier under its own
labels than under the moved ones: the signal that makes a small model read the labels.

Only single-turn nemo records with a reply group into sets; everything else is returned to
the caller to become ordinary examples.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Iterable

from steernpc.prompt import NEMO_FORMATS, NEMO_LABEL, Exchange, segments

from steernpc_train.data import Conversation
from steernpc_train.example import IGNORE, Example


def moved_vector(labels: dict[str, int], attribute: str, low: int, high: int, rng: random.Random) -> dict[str, int]:
    """`labels` with `attribute` moved to a level at least two away (the farthest if none)."""
    here = labels[attribute]
    far = [v for v in range(low, high + 1) if abs(v - here) >= 2]
    return {**labels, attribute: rng.choice(far) if far else (low if here - low >= high - here else high)}


def build_set_examples(builder: Any, convs: Iterable[Conversation], contrast: bool, seed: int = 0) -> tuple[list, list[Conversation]]:
    """(shared-prefix Examples, conversations left for ordinary examples)."""
    groups: dict[tuple[str, str], list[Conversation]] = defaultdict(list)
    rest: list[Conversation] = []
    for conv in convs:
        single = len(conv.turns) == 1 and conv.turns[0].reply is not None
        if builder.fmt in NEMO_FORMATS and single:
            groups[(builder.system_for(conv), conv.turns[0].user)].append(conv)
        else:
            rest.append(conv)

    tok = builder.tokenizer
    names = builder.schema.names
    specs = {s.name: s for s in builder.schema.specs}
    rng = random.Random(seed)
    out = []
    for n_set, ((system, user), members) in enumerate(sorted(groups.items())):
        if len(members) < 2:
            rest.extend(members)
            continue
        parts = []  # per reply: (own label ids, reply ids, contrast label ids or None)
        prefix_ids = None
        for i, conv in enumerate(members):
            labels = builder.labels_for(conv, 0)
            context, reply_piece = [text for text, _ in segments(builder.fmt, system, [Exchange(user, conv.turns[0].reply, labels)], builder.schema)]
            cut = context.rindex(NEMO_LABEL)
            prefix_text, label_text = context[:cut], context[cut:]
            if prefix_ids is None:
                prefix_ids = tok(prefix_text, add_special_tokens=False)["input_ids"]
            own = tok(label_text, add_special_tokens=False)["input_ids"]
            reply = tok(reply_piece, add_special_tokens=False)["input_ids"]
            other = None
            if contrast:
                attribute = names[(n_set + i) % len(names)]
                spec = specs[attribute]
                moved = moved_vector(labels, attribute, spec.min, spec.max, rng)
                moved_context = segments(builder.fmt, system, [Exchange(user, None, moved)], builder.schema)[0][0]
                other = tok(moved_context[moved_context.rindex(NEMO_LABEL):], add_special_tokens=False)["input_ids"]
            parts.append((own, reply, other))
        out.extend(_pack_segments(prefix_ids, parts, builder))
    return out, rest


def _pack_segments(prefix: list[int], parts: list, builder: Any) -> list:
    """One or more Examples: the prefix, then as many segments as fit builder.max_length."""
    examples = []
    current: dict[str, list] | None = None

    def start() -> dict[str, list]:
        n = len(prefix)
        return {"ids": list(prefix), "labels": [IGNORE] * n, "seg": [0] * n, "pos": list(range(n)),
                "pair": [-1] * n, "side": [0] * n, "weights": [1.0] * n, "k": 0, "pairs": 0}

    def add(cur, label_ids, reply_ids, pair: int, side: int) -> None:
        cur["k"] += 1
        base = len(prefix)
        ids = label_ids + reply_ids
        cur["ids"] += ids
        cur["labels"] += [IGNORE] * len(label_ids) + reply_ids
        cur["seg"] += [cur["k"]] * len(ids)
        cur["pos"] += list(range(base, base + len(ids)))
        cur["pair"] += [-1] * len(label_ids) + [pair] * len(reply_ids)
        cur["side"] += [0] * len(label_ids) + [side] * len(reply_ids)
        # --end-weight on the reply's end-of-turn marker, as in ordinary examples
        tail = min(builder.end_tokens(), len(reply_ids)) if builder.end_weight != 1.0 else 0
        cur["weights"] += [1.0] * len(label_ids) + [1.0] * (len(reply_ids) - tail) + [builder.end_weight] * tail

    def finish(cur) -> None:
        if cur is None or cur["k"] == 0:
            return
        contrast = cur["pairs"] > 0
        examples.append(Example(cur["ids"], cur["labels"], 1.0, cur["weights"], segments=cur["seg"], positions=cur["pos"],
                                pair=cur["pair"] if contrast else None, side=cur["side"] if contrast else None))  # fmt: skip

    for own, reply, other in parts:
        need = len(own) + len(reply) + (len(other) + len(reply) if other is not None else 0)
        if current is None or len(current["ids"]) + need > builder.max_length:
            finish(current)
            current = start()
            if len(prefix) + need > builder.max_length:
                builder.dropped += 1
                continue
        pair = current["pairs"] if other is not None else -1
        add(current, own, reply, pair, 1 if other is not None else 0)
        if other is not None:
            add(current, other, reply, pair, -1)
            current["pairs"] += 1
    finish(current)
    return examples
