"""Turn generated tokens (or streamed text) into clean reply deltas.

Handles what streaming gets wrong most often: multi-byte characters split across tokens,
stop strings that arrive in pieces, and whitespace around the reply. The deltas always
concatenate to exactly the final text.
"""

from __future__ import annotations

from typing import Any, Sequence


class TextStops:
    """Text-level stop strings for streamed text: cut at the first stop string, hold back
    what could be the start of one (and trailing whitespace, which may belong to the
    end-of-turn marker), drop leading whitespace. feed() and finish() return deltas that
    concatenate to `text`."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self.raw = ""
        self.text = ""  # emitted so far
        self.stopped = False

    def _visible(self) -> str:
        text = self.raw.lstrip()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut].rstrip()
        return self._without_partial_stop(text)

    def _without_partial_stop(self, text: str) -> str:
        """`text` less a trailing start of a stop string ("... <extra_"), and whitespace."""
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return text[: len(text) - hold].rstrip()

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        self.raw += piece
        visible = self._visible()
        delta = visible[len(self.text) :] if visible.startswith(self.text) else ""
        self.text += delta
        return delta

    def finish(self) -> str:
        if self.stopped:
            return ""
        # A reply cut by the token limit in the middle of a stop marker ("... <extra_") ends
        # before the marker: the fragment is never text a player should see.
        text = self._without_partial_stop(self.raw.strip())
        delta = text[len(self.text) :] if text.startswith(self.text) else ""
        self.text += delta
        return delta


class TextAssembler:
    """Token ids in, text deltas out. Decodes incrementally (as vLLM does): only the last
    few tokens are decoded per step, and text is released once it is no longer an
    incomplete multi-byte character."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._stops = TextStops(stop)
        self._prefix = 0
        self._read = 0

    def _decode(self, start: int, end: int | None = None) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Add one token; return the new text to show (may be empty)."""
        self.ids.append(int(token_id))
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return self._stops.feed(after[len(before) :])

    def finish(self) -> str:
        """The rest of the text once generation ends (whatever was held back)."""
        rest = self._decode(self._prefix)[len(self._decode(self._prefix, self._read)) :]
        return self._stops.feed(rest) + self._stops.finish()

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    @property
    def text(self) -> str:
        return self._stops.text


def reply_token_count(tokenizer: Any, generated: Sequence[int], stops: Sequence[str]) -> int:
    """How many of `generated` tokens the reply's text takes when it ended at one of `stops`
    (a stop string, the structured tail's marker): the tokens of that text and what came
    after it do not belong to the reply (the runtime writes the tail's marker itself)."""
    text = tokenizer.decode(list(generated), skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not cuts:
        return len(generated)
    target = len(text[: min(cuts)].rstrip())
    keep = len(generated)
    while keep > 0 and len(tokenizer.decode(list(generated[:keep]), skip_special_tokens=True)) > target:
        keep -= 1
    return keep
