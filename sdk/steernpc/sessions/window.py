"""The token-budgeted history window: which past exchanges a prompt replays."""

from __future__ import annotations

from typing import Callable, Sequence

from steernpc.prompt import Exchange


def fit_history(history: Sequence[Exchange], count_tokens: Callable[[str], int], budget: int, step: int = 1) -> list[Exchange]:
    """The newest exchanges whose text fits `budget` tokens; the oldest drop first.
    (The persona card is not history: it never drops.) The newest exchange is always kept.

    `step` > 1 drops old turns in blocks of `step`, so the window's first turn (and with it
    the whole cached prompt prefix) changes only every `step` turns instead of every turn.
    """
    kept = 0
    used = 0
    for ex in reversed(history):
        cost = count_tokens(ex.user) + (count_tokens(ex.reply) if ex.reply else 0)
        if kept and used + cost > budget:
            break
        kept += 1
        used += cost
    dropped = len(history) - kept
    if dropped and step > 1:
        dropped = min(len(history) - 1, -(-dropped // step) * step)
    return list(history[dropped:])
