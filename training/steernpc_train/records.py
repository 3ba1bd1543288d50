"""The record types every dataset format reads into and writes from (data.py) and that
scene records expand into (scenes.py): a conversation of turns, and the error that names a
record's file and line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steernpc.prompt import Exchange


class DataError(ValueError):
    """A malformed record: str() is ``FILE:LINE: message``."""

    def __init__(self, file: str, line: int, message: str):
        self.file, self.line, self.message = str(file), line, message
        super().__init__(f"{file}:{line}: {message}")


@dataclass
class Turn:
    """One user line and (optionally) the reply, with the reply's attribute labels.

    `labels` keeps the order it was read in, so a NeMo label string round-trips exactly.
    `user_label` is a label string NeMo files may carry on user turns (OASST); kept as is.
    """

    user: str
    reply: str | None = None
    labels: dict[str, int] | None = None
    user_label: str | None = None
    emotion: str | None = None  # npc format: the emotion the reply shows (samples/corpus/RUBRIC.md)
    action: dict | None = None  # npc format: {"name", "args"} of the action the reply takes


@dataclass
class Conversation:
    turns: list[Turn]
    system: str | None = None
    character: str | None = None
    id: str | None = None
    weight: float | None = None  # SteerLM 2.0 sample weight (bootstrap), optional
    source: tuple[str, int] = ("", 0)  # (file, line) it was read from
    category: str | None = None  # npc format: the player line's category (greetings, threats, ...)
    scene: str | None = None  # a scene member's view (steernpc_train.scenes): `system` is its scene system text
    scene_record: Any = None  # npc format: an unexpanded scene record (scenes.SceneRecord; the SFT expands it)

    def exchanges(self, upto: int | None = None) -> list[Exchange]:
        turns = self.turns if upto is None else self.turns[: upto + 1]
        return [Exchange(t.user, t.reply, dict(t.labels or {})) for t in turns]
