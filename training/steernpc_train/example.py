"""One training example: token ids, labels and per-token extras. Built by sft.py
(ExampleBuilder) and contrast_sets.py (shared-prefix examples), consumed by sft.collate()."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100  # the label of a token that is not trained (HF convention)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # HF convention: labels[i] == input_ids[i] where token i is trained, else -100
    weight: float = 1.0
    token_weights: list[float] | None = None  # per token (aligned with labels); None = all 1
    # Shared-prefix examples (contrast_sets.py), all per token and None elsewhere:
    segments: list[int] | None = None  # 0 = the shared prefix (seen by every segment), k = segment k (sees the prefix and itself)
    positions: list[int] | None = None  # each segment's positions continue from the end of the prefix
    pair: list[int] | None = None  # the label-contrast pair a reply token belongs to, -1 = none
    side: list[int] | None = None  # +1 the reply under its own labels, -1 under contrast labels (no SFT loss), 0 = neither

    @property
    def n_trained(self) -> int:
        if self.side is not None:
            return sum(1 for v, s in zip(self.labels, self.side) if v != IGNORE and s >= 0)
        return sum(1 for v in self.labels if v != IGNORE)
