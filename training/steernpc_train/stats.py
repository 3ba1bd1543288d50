"""Small statistics without scipy: ranks with ties, Spearman's rho, MAE."""

from __future__ import annotations

import math
from typing import Sequence


def rank(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; NaN if either side is constant or there are fewer than 2 points."""
    n = len(x)
    if n != len(y):
        raise ValueError("x and y differ in length")
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return math.nan
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with ties (Pearson on average ranks), as scipy.stats.spearmanr."""
    return pearson(rank(x), rank(y))


def mae(pred: Sequence[float], target: Sequence[float]) -> float:
    if not pred:
        return math.nan
    return sum(abs(a - b) for a, b in zip(pred, target)) / len(pred)


def finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
