"""Turn a growing list of token ids into clean text deltas.

Handles what streaming gets wrong most often: multi-byte characters split across tokens,
stop strings that arrive in pieces, and whitespace around the reply. The deltas it
emits always concatenate to exactly the final text.
"""

from __future__ import annotations

from typing import Any, Sequence


class TextAssembler:
    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self._raw = ""  # decoded text so far
        self._prefix = 0  # incremental decoding window (as in vLLM): only the last few
        self._read = 0  # tokens are decoded per step, not the whole reply

    def _decode_step(self) -> None:
        before = self.tokenizer.decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self._prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._raw += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)

    def _visible(self) -> tuple[str, bool]:
        """(text that may be shown so far, whether a stop string was hit)."""
        text = self._raw.lstrip()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            return text[:cut].rstrip(), True
        # Hold back an incomplete character, a possible start of a stop string, and
        # trailing whitespace (a reply's last newline belongs to the end-of-turn marker).
        if text.endswith("\ufffd"):
            text = text.rstrip("\ufffd")
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        text = text[: len(text) - hold] if hold else text
        return text.rstrip(), False

    def add(self, token_id: int) -> str:
        """Add one token; return the new text to show (may be empty)."""
        self.ids.append(int(token_id))
        self._decode_step()
        visible, self.stopped = self._visible()
        if not visible.startswith(self.emitted):  # a re-tokenization changed earlier text
            return ""
        delta = visible[len(self.emitted):]
        self.emitted = visible
        return delta

    def finish(self) -> str:
        """The rest of the text once generation ends (whatever was held back)."""
        if self.stopped:
            return ""
        rest = self.tokenizer.decode(self.ids[self._prefix :], skip_special_tokens=True)
        done = self.tokenizer.decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        text = (self._raw + rest[len(done) :]).strip()
        if not text.startswith(self.emitted):
            return ""
        delta = text[len(self.emitted):]
        self.emitted = text
        return delta

    @property
    def text(self) -> str:
        return self.emitted
