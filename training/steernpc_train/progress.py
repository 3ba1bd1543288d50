"""Training's console output: log lines, and one progress bar for every long training step, on a terminal and in a log file alike.

tqdm's default (`disable=None`) hides the bar when stderr is not a terminal, so a run in
the background (`nohup ... > log`) showed nothing for hours. Here the bar always shows;
into a file it writes a line at most every 30 s instead of redrawing in place."""

from __future__ import annotations

import sys

from tqdm import tqdm


def log(message: str) -> None:
    """One line of training's console output (stderr, flushed so that it lands in a log at once)."""
    print(f"[steernpc-train] {message}", file=sys.stderr, flush=True)


def progress_bar(total: int | None, desc: str, unit: str, initial: int = 0, enabled: bool = True) -> tqdm:
    terminal = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                mininterval=0.1 if terminal else 30.0, ncols=None if terminal else 100, ascii=not terminal)
