"""Step 2: label a dialogue corpus with the APM.

Every reply gets the APM's prediction for each attribute, clipped to the attribute's range
and then rounded with Python's round() as NeMo does (`round(min(4, max(0, r)))`; note
round(2.5) == 2, half to even). Attributes the APM never saw labels for get the schema
default. With `calibrate`, a first pass fits the APM's quantile calibration on this corpus
(`apm.calibrate`: every level equally common) and every label is the calibrated level; an
APM that already has a calibration.json uses it without being asked. The output is NeMo
SteerLM JSONL (or npc JSONL), one line per input record, in input order.

Resumable: OUT.progress.json records how many records are safely written (after flush and
fsync). A re-run truncates OUT to that many lines and continues with the next record, so an
interrupted run ends with the same file as an uninterrupted one, without duplicates.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from steernpc_train.data import (
    Conversation, DataError, ReadStats, dumps, open_text, read_conversations, sniff_format, to_nemo, to_npc,
)  # fmt: skip

OUT_FORMATS = ("nemo", "npc")


def _log(message: str) -> None:
    print(f"[steernpc-train] {message}", file=sys.stderr, flush=True)


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.json")


def _truncate_lines(path: Path, keep: int) -> None:
    """Cut `path` after its first `keep` complete lines."""
    if not path.exists():
        if keep:
            raise DataError(path, 1, f"progress says {keep} records were written but the file is missing")
        path.touch()
        return
    offset = 0
    with open(path, "rb") as fh:
        for _ in range(keep):
            line = fh.readline()
            if not line.endswith(b"\n"):
                raise DataError(path, _ + 1, f"progress says {keep} records were written but the file has fewer")
            offset += len(line)
    with open(path, "r+b") as fh:
        fh.truncate(offset)


def _count_lines(path: str) -> int | None:
    if str(path) == "chitchat" or path.endswith("dataset.json"):
        return None
    try:
        with open_text(path) as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def annotate(
    src: str | os.PathLike,
    out: str | os.PathLike,
    apm_dir: str | os.PathLike,
    data_format: str = "auto",
    out_format: str = "nemo",
    batch_size: int = 64,
    keep_labels: bool = False,
    skip_bad: bool = False,
    restart: bool = False,
    limit: int = 0,
    apm: Any = None,
    progress: bool | None = None,
    calibrate: bool = False,
) -> dict:
    """Annotate every reply in `src` with the APM; write `out`. Returns a summary dict."""
    from .progress import progress_bar

    from steernpc_train.apm import calibrate as fit_calibration
    from steernpc_train.apm import load_apm

    if out_format not in OUT_FORMATS:
        raise ValueError(f"--to must be one of {', '.join(OUT_FORMATS)}")
    out = Path(out)
    prog_path = _progress_path(out)
    identity = {"input": str(Path(src).resolve()) if str(src) != "chitchat" else "chitchat", "apm": str(Path(apm_dir).resolve()) if apm_dir else None}
    done = 0
    if restart:
        out.unlink(missing_ok=True)
        prog_path.unlink(missing_ok=True)
    if prog_path.exists():
        state = json.loads(prog_path.read_text())
        if state.get("input") != identity["input"] or state.get("apm") != identity["apm"]:
            raise ValueError(f"{out} is an annotation of {state.get('input')} with {state.get('apm')}; "
                             "pass --restart to start over")
        if state.get("complete"):
            _log(f"{out} is already complete ({state['records']} records)")
            return state
        done = int(state.get("records", 0))
        _truncate_lines(out, done)
        if done:
            _log(f"resuming {out} after {done} records")
    elif out.exists() and out.stat().st_size:
        raise FileExistsError(f"{out} exists and has no progress file; pass --restart to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)

    def save_state(records: int, complete: bool = False, **extra) -> None:
        tmp = prog_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**identity, "records": records, "complete": complete, **extra}))
        os.replace(tmp, prog_path)

    save_state(done)
    apm = apm or load_apm(apm_dir)
    schema = apm.schema
    untrained = [n for n in schema.names if n not in apm.trained]
    if untrained:
        _log(f"the APM has no training signal for {', '.join(untrained)}: they get the schema default")
    writer = to_nemo if out_format == "nemo" else to_npc
    stats = ReadStats()
    fmt = sniff_format(src) if data_format == "auto" else data_format
    known: Iterator[dict] | None = None  # the calibration pass's predictions, reused in order
    if calibrate:
        items = [(conv.system, conv.exchanges(ti)) for index, conv in enumerate(read_conversations(src, fmt, schema, skip_bad, ReadStats()))
                 if not limit or index < limit for ti, turn in enumerate(conv.turns) if turn.reply is not None]
        _log(f"calibrating the APM on {len(items)} replies")
        predictions = apm.predict_exchanges(items, batch_size=batch_size)
        cuts = fit_calibration(apm, predictions, apm_dir)
        known = iter(predictions)
        _log("cut points: " + "; ".join(f"{n} {', '.join(f'{c:.3f}' for c in v)}" for n, v in cuts.items()))
    records: Iterator[Conversation] = read_conversations(src, fmt, schema, skip_bad, stats)
    total = _count_lines(str(src)) if fmt in ("nemo", "npc", "helpsteer", "regression") else None
    if limit:
        total = min(total or limit, limit)
    bar = progress_bar(total, "annotate", "rec", initial=done, enabled=progress is not False)
    written = done
    replies = 0
    pending: list[Conversation] = []

    def flush_batch(fh) -> None:
        nonlocal written, replies
        items, where = [], []
        for ci, conv in enumerate(pending):
            for ti, turn in enumerate(conv.turns):
                if turn.reply is not None:
                    items.append((conv.system, conv.exchanges(ti)))
                    where.append((ci, ti))
        if known is not None:
            preds = [next(known) for _ in items]
        else:
            preds = apm.predict_exchanges(items, batch_size=batch_size) if items else []
        for (ci, ti), pred in zip(where, preds):
            turn = pending[ci].turns[ti]
            labels = {}
            for spec in schema.specs:
                if keep_labels and turn.labels and spec.name in turn.labels:
                    labels[spec.name] = schema.clamp(spec.name, turn.labels[spec.name])
                elif spec.name in apm.trained:
                    labels[spec.name] = apm.level(spec.name, pred[spec.name])
                else:
                    labels[spec.name] = spec.default
            turn.labels = labels
        fh.write("".join(dumps(writer(conv)) + "\n" for conv in pending))
        fh.flush()
        os.fsync(fh.fileno())
        written += len(pending)
        replies += len(items)
        save_state(written)
        bar.update(len(pending))
        pending.clear()

    with open(out, "a", encoding="utf-8", newline="\n") as fh:
        n_pending_replies = 0
        for index, conv in enumerate(records):
            if limit and index >= limit:
                break
            if index < done:
                if known is not None:  # already written: skip its predictions too
                    for _ in range(sum(t.reply is not None for t in conv.turns)):
                        next(known)
                continue
            pending.append(conv)
            n_pending_replies += sum(t.reply is not None for t in conv.turns)
            if n_pending_replies >= batch_size:
                flush_batch(fh)
                n_pending_replies = 0
        if pending:
            flush_batch(fh)
    bar.close()
    summary = {"records": written, "replies_annotated_this_run": replies, "skipped_bad": stats.skipped}
    save_state(written, complete=True, skipped_bad=stats.skipped)
    if stats.skipped:
        _log(f"skipped {stats.skipped} bad record(s); first: {stats.first_errors[0]}")
    _log(f"annotated {written} records -> {out}")
    return summary
