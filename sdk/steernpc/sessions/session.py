"""Session: one player's conversation with one character, and its token-budgeted history.

A session holds what the runtime must remember between turns: the character, the active
mood and session-level steer (attribute overrides), who the player is, free-form game
context, and the history of exchanges, each with the attribute vector its reply was
generated under (so a prompt can replay earlier turns exactly as they were made).

The session does not validate mood or steer against the persona; the server does that
(persona.resolve) before it changes a session.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Mapping

from steernpc.prompt import Exchange
from steernpc.sessions.window import fit_history


def new_session_id() -> str:
    """A fresh random session id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass
class Session:
    session_id: str
    character_id: str
    mood: str = ""  # "" = no mood
    steer: dict[str, int] = field(default_factory=dict)  # session-level attribute overrides
    player_name: str = ""
    context: dict[str, str] = field(default_factory=dict)
    history: list[Exchange] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)  # unix seconds
    updated_at: float = 0.0  # unix seconds; 0 = same as created_at

    def __post_init__(self) -> None:
        if not self.updated_at:
            self.updated_at = self.created_at

    @classmethod
    def new(
        cls,
        character_id: str,
        session_id: str | None = None,
        *,
        mood: str = "",
        steer: Mapping[str, int] | None = None,
        player_name: str = "",
        context: Mapping[str, str] | None = None,
    ) -> "Session":
        """A new empty session; a random id when `session_id` is None or ""."""
        return cls(
            session_id=session_id or new_session_id(),
            character_id=character_id,
            mood=mood,
            steer=dict(steer or {}),
            player_name=player_name,
            context=dict(context or {}),
        )

    @property
    def turns(self) -> int:
        """Number of exchanges in the history."""
        return len(self.history)

    def touch(self) -> None:
        """Mark the session as changed now (call after editing fields directly)."""
        self.updated_at = max(time.time(), self.created_at)

    def append(self, exchange: Exchange) -> Exchange:
        """Add one exchange (with the labels its reply was generated under) to the history."""
        if not isinstance(exchange, Exchange):
            raise TypeError(f"append() takes a steernpc.prompt.Exchange, got {type(exchange).__name__}")
        self.history.append(exchange)
        self.touch()
        return exchange

    def record(self, user: str, reply: str | None, labels: Mapping[str, int]) -> Exchange:
        """append(Exchange(user, reply, dict(labels))) and return it."""
        return self.append(Exchange(user=user, reply=reply, labels=dict(labels)))

    def apply_steer(
        self,
        mood: str | None = None,
        attributes: Mapping[str, int] | None = None,
        clear: bool = False,
    ) -> None:
        """Steer the rest of the session: `clear` drops the earlier mood and steer first,
        a non-empty `mood` replaces the mood, `attributes` are merged into the steer."""
        if clear:
            self.mood = ""
            self.steer = {}
        if mood:
            self.mood = mood
        if attributes:
            self.steer.update({k: int(v) for k, v in attributes.items()})
        self.touch()

    def trim(self, keep: int) -> int:
        """Keep only the newest `keep` exchanges in storage; return how many were dropped."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        dropped = max(0, len(self.history) - keep)
        if dropped:
            del self.history[:dropped]
            self.touch()
        return dropped

    def window(self, count_tokens: Callable[[str], int], budget: int, step: int = 1) -> list[Exchange]:
        """The most recent exchanges whose total token count fits `budget`, oldest first.

        Each exchange costs count_tokens(user) + count_tokens(reply) (a missing reply
        costs nothing). Turns are taken from the newest backwards and the window stops at
        the first turn that no longer fits, so the oldest turns drop first and the window
        is always a contiguous tail of the history. The newest exchange is always kept,
        even if alone it exceeds the budget (the caller truncates it if it must).

        Only history is windowed: the persona card (system message) and the label line
        are not part of history, never drop, and are not counted here; budget for them
        separately (budget = context limit - card - label line - reply reserve).
        """
        if budget is None or isinstance(budget, bool) or not isinstance(budget, int):
            raise TypeError(f"budget must be an integer number of tokens, got {budget!r}")
        return fit_history(self.history, count_tokens, budget, step)

    def copy(self) -> "Session":
        """A deep copy (stores hand out copies, so edits never leak into stored state)."""
        return Session(
            session_id=self.session_id,
            character_id=self.character_id,
            mood=self.mood,
            steer=dict(self.steer),
            player_name=self.player_name,
            context=dict(self.context),
            history=[Exchange(user=e.user, reply=e.reply, labels=dict(e.labels)) for e in self.history],
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
