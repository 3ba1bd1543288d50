"""Constrained decoding of the structured tail on the torch and onnx backends, with
llguidance (the `grammar` extra).

Measured before choosing (SmolLM2's 49,152-token vocabulary, one persona's tail grammar,
2-core CPU; docs/actions.md): xgrammar 121 ms to compile and 2 us a token to mask,
llguidance 294 ms and 27 us, outlines-core 292 ms and 4 us. All three are far below one
forward pass (tens of ms for SmolLM2 on CPU). llguidance was chosen: it has no
dependencies (xgrammar pulls triton and apache-tvm-ffi), it reads the GBNF that
steernpc.actions writes - the grammar text llama.cpp's server reads and TensorRT-LLM's
grammar backends accept - so one grammar serves every backend.

A `TailConstraint` is one request's matcher: `mask(logits)` sets every token the grammar
forbids to -inf (the token bitmask), `accept(token)` advances it, `done` says the tail is
complete.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from steernpc.generation.base import BackendUnavailable

_lock = threading.Lock()
_tokenizers: dict[int, tuple[Any, Any]] = {}  # id(hf tokenizer) -> (that tokenizer, LLTokenizer)
_grammars: dict[str, str] = {}  # GBNF -> llguidance's compiled grammar text


def _llguidance():
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
        import llguidance.numpy  # noqa: F401
    except ImportError:  # pragma: no cover - the extra is in the lock
        raise BackendUnavailable(
            "the structured tail needs llguidance for constrained decoding: pip install 'steernpc[grammar]' "
            "(or send tail off)"
        ) from None
    return llguidance


def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per tokenizer: ~150 ms)."""
    llguidance = _llguidance()
    with _lock:
        hit = _tokenizers.get(id(tokenizer))
        if hit is None or hit[0] is not tokenizer:
            hit = (tokenizer, llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer)))
            _tokenizers[id(tokenizer)] = hit
        return hit[1]


def compile_grammar(gbnf: str) -> str:
    """A GBNF grammar in llguidance's form; ValueError names the problem."""
    llguidance = _llguidance()
    with _lock:
        hit = _grammars.get(gbnf)
    if hit is None:
        hit = llguidance.grammar_from("gbnf", gbnf)  # (the matcher reports what is wrong with it)
        with _lock:
            _grammars[gbnf] = hit
    return hit


class TailConstraint:
    """One request's grammar matcher over one tokenizer's vocabulary."""

    def __init__(self, tokenizer: Any, gbnf: str):
        llguidance = _llguidance()
        self._np = llguidance.numpy
        self._tok = ll_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(self._tok, compile_grammar(gbnf))
        if self.matcher.is_error():
            raise ValueError(f"tail grammar is invalid: {self.matcher.get_error()}")
        self._bits = self._np.allocate_token_bitmask(1, self._tok.vocab_size)

    def allowed(self, size: int) -> np.ndarray:
        """A bool vector over `size` logits: True where the grammar allows the token."""
        self._np.fill_next_token_bitmask(self.matcher, self._bits, 0)
        bits = np.unpackbits(self._bits[0].view(np.uint8), bitorder="little")
        out = np.zeros(size, dtype=bool)
        n = min(size, bits.size)
        out[:n] = bits[:n].astype(bool)
        return out

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every forbidden token at -inf (in place; returned)."""
        logits[~self.allowed(logits.shape[-1])] = -np.inf
        return logits

    def accept(self, token: int) -> bool:
        return bool(self.matcher.consume_token(int(token)))

    @property
    def done(self) -> bool:
        return bool(self.matcher.is_stopped())

    @property
    def error(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None
