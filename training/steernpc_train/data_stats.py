"""`steernpc data stats FILE...`: what a labelled dialogue corpus holds.

Counts per attribute level, per persona, per category, emotion and action; conversations
and their share of records; the word length of replies per verbosity level; and two checks
of hand-written variety: duplicate replies and the distinct-bigram ratio.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from steernpc_train.data import Conversation

WORD = re.compile(r"[A-Za-z0-9']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class CorpusStats:
    records: int = 0
    conversations: int = 0  # records with 3 or more turns
    replies: int = 0
    levels: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    personas: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    emotions: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    words_by_verbosity: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    reply_counts: Counter = field(default_factory=Counter)
    bigrams: Counter = field(default_factory=Counter)

    def add(self, conv: Conversation) -> None:
        self.records += 1
        if len(conv.turns) >= 3:
            self.conversations += 1
        self.categories[conv.category or "(none)"] += 1
        for turn in conv.turns:
            if turn.reply is None:
                continue
            self.replies += 1
            self.personas[conv.character or "(none)"] += 1
            for name, value in (turn.labels or {}).items():
                self.levels[name][value] += 1
            self.emotions[turn.emotion or "(none)"] += 1
            if turn.action:
                self.actions[turn.action["name"]] += 1
            tokens = words(turn.reply)
            if turn.labels and "verbosity" in turn.labels:
                self.words_by_verbosity[turn.labels["verbosity"]].append(len(tokens))
            self.reply_counts[" ".join(tokens)] += 1
            self.bigrams.update(zip(tokens, tokens[1:]))

    @property
    def duplicates(self) -> int:
        """Replies that repeat another reply word for word (case and punctuation aside)."""
        return sum(n - 1 for n in self.reply_counts.values() if n > 1)

    @property
    def distinct_bigram_ratio(self) -> float:
        total = sum(self.bigrams.values())
        return len(self.bigrams) / total if total else 0.0


def collect(conversations: Iterable[Conversation]) -> CorpusStats:
    stats = CorpusStats()
    for conv in conversations:
        stats.add(conv)
    return stats


def _counter_line(counter: Counter, limit: int = 0) -> str:
    items = counter.most_common(limit or None)
    text = ", ".join(f"{k} {v}" for k, v in items)
    if limit and len(counter) > limit:
        text += f", ... ({len(counter)} in all)"
    return text


def render(stats: CorpusStats) -> str:
    share = 100 * stats.conversations / stats.records if stats.records else 0.0
    out = [
        f"records {stats.records}; replies {stats.replies}; conversations of 3+ turns {stats.conversations} ({share:.1f}% of records)",
        f"personas {len(stats.personas)}; duplicate replies {stats.duplicates}; distinct-bigram ratio {stats.distinct_bigram_ratio:.3f}",
        "",
        "attribute levels (replies per level):",
    ]
    levels = sorted({v for c in stats.levels.values() for v in c})
    out.append("  " + "attribute".ljust(14) + "".join(f"{v:>7}" for v in levels))
    for name, counts in stats.levels.items():
        out.append("  " + name.ljust(14) + "".join(f"{counts.get(v, 0):>7}" for v in levels))
    if stats.words_by_verbosity:
        out += ["", "words per reply by verbosity level (mean, min-max):"]
        for level in sorted(stats.words_by_verbosity):
            n = stats.words_by_verbosity[level]
            out.append(f"  {level}: {sum(n) / len(n):5.1f}  ({min(n)}-{max(n)}, {len(n)} replies)")
    out += ["", f"per category (records): {_counter_line(stats.categories)}",
            f"per persona (replies): {_counter_line(stats.personas, 12)}",
            f"emotions: {_counter_line(stats.emotions)}",
            f"actions: {_counter_line(stats.actions) or 'none'}"]  # fmt: skip
    return "\n".join(out)
