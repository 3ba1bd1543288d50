"""The KV cache as a fixed pool of slots, one conversation per slot: which slot a request
takes, which other slot lends it a prefix, which session is evicted.

A finished request's slot stays parked with its tokens, so the session's next turn only
computes the new tokens (longest common prefix). A new session copies the longest
matching prefix (the character's card) from any other slot instead of recomputing it.
The scheduler keeps running requests in slots 0..B-1 (`move`), so a decode reads one
contiguous view of the pool; the K/V themselves live in the model runner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Container, Sequence

if TYPE_CHECKING:
    from steernpc.generation.runner import ModelRunner


@dataclass
class Slot:
    tokens: list[int] = field(default_factory=list)  # token ids whose K/V are in the slot
    owner: str | None = None  # cache key (session) parked here
    last_used: float = 0.0


class KvSlots:
    def __init__(self, count: int, runner: "ModelRunner"):
        self.runner = runner  # holds the K/V; copies and swaps them between slots
        self.slots = [Slot() for _ in range(count)]

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> Slot:
        return self.slots[index]

    def parked(self) -> int:
        """Slots that hold a session."""
        return sum(1 for s in self.slots if s.owner is not None)

    def claim(self, key: str | None, ids: list[int], first: int, exclude: Container[int] = ()) -> tuple[int, int]:
        """A slot for a request with cache key `key` and prompt `ids`, among slots
        first.. (those below are running) other than `exclude` (being prefilled); returns
        (slot, prompt tokens already in it)."""
        index = self.choose(key, first, exclude)
        slot = self.slots[index]
        slot.owner, slot.last_used = key, time.monotonic()
        keep = common_prefix(slot.tokens, ids)
        donor, donor_len = self.best_donor(ids, exclude=index)
        if donor_len > keep:
            self.runner.copy_kv(index, donor, donor_len)
            keep = donor_len
        keep = min(keep, len(ids) - 1)  # always compute the last prompt token (its logits)
        slot.tokens = ids[:keep]
        return index, keep

    def choose(self, key: str | None, first: int, exclude: Container[int] = ()) -> int:
        candidates = [i for i in range(first, len(self.slots)) if i not in exclude]
        if key is not None:
            for i in candidates:
                if self.slots[i].owner == key:
                    return i
        free = [i for i in candidates if self.slots[i].owner is None]
        if free:
            # Prefer an empty slot; else the free slot whose tokens are least useful.
            return min(free, key=lambda i: len(self.slots[i].tokens))
        return min(candidates, key=lambda i: self.slots[i].last_used)  # evict the LRU session

    def best_donor(self, ids: Sequence[int], exclude: int) -> tuple[int, int]:
        """The slot sharing the longest prefix with `ids` (other than `exclude`), and its length."""
        best, best_len = -1, 0
        for i, slot in enumerate(self.slots):
            if i != exclude and slot.tokens:
                n = common_prefix(slot.tokens, ids)
                if n > best_len:
                    best, best_len = i, n
        return best, best_len

    def release(self, index: int, key: str | None) -> None:
        """A request in `index` finished: park its session there."""
        slot = self.slots[index]
        slot.owner, slot.last_used = key, time.monotonic()
        if key is None:
            slot.tokens = []  # nothing will come back for it; let others reuse the slot

    def forget(self, key: str, busy: Container[int]) -> None:
        """Drop session `key` from every slot that no request is using."""
        for i, slot in enumerate(self.slots):
            if slot.owner == key and i not in busy:
                slot.owner, slot.tokens = None, []

    def move(self, src: int, dst: int) -> None:
        """Swap the contents (K/V and bookkeeping) of two slots."""
        if src == dst:
            return
        length = max(len(self.slots[src].tokens), len(self.slots[dst].tokens))
        if length:
            self.runner.swap_kv(src, dst, length)
        self.slots[src], self.slots[dst] = self.slots[dst], self.slots[src]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
