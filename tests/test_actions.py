"""Persona actions and emotions (steernpc.actions): typed arguments, the tail line, its
GBNF grammar (compiled by llguidance, the library the runtime constrains with) and the
parser that reads a tail back."""

from __future__ import annotations

import pytest

from steernpc.actions import (
    DEFAULT_EMOTIONS, Action, Tail, TailError, TailSpec, format_tail, int_range_gbnf, parse_tail, tail_grammar,
)  # fmt: skip
from steernpc.persona import load_persona

GUARD = """\
id: gate_guard
name: Bram
role: a guard at the north gate
attributes: {humor: 1, friendliness: 1, creativity: 1, verbosity: 1}
emotions: [neutral, angry, afraid]
actions:
  - name: call_guards
    description: shout for the watch
  - name: give_item
    args:
      item: [sword, potion, map]
  - name: pay
    args:
      amount: {min: 1, max: 250}
  - name: give_quest
    args:
      quest: {max_length: 12}
"""


@pytest.fixture
def guard(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text(GUARD)
    return load_persona(path)


def test_persona_declares_typed_actions_and_emotions(guard):
    spec = guard.tail_spec
    assert spec.emotions == ("neutral", "angry", "afraid")
    assert [a.name for a in spec.actions] == ["call_guards", "give_item", "pay", "give_quest"]
    assert spec.action("call_guards").description == "shout for the watch"
    item, = spec.action("give_item").args
    assert (item.kind, item.values) == ("enum", ("sword", "potion", "map"))
    amount, = spec.action("pay").args
    assert (amount.kind, amount.low, amount.high) == ("int", 1, 250)
    quest, = spec.action("give_quest").args
    assert (quest.kind, quest.max_length) == ("string", 12)


def test_default_emotions_are_the_corpus_set(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("\n".join(l for l in GUARD.splitlines() if not l.startswith("emotions")) + "\n")
    persona = load_persona(path)
    assert persona.emotions == DEFAULT_EMOTIONS == ("neutral", "happy", "angry", "sad", "afraid", "surprised", "disgusted")


def test_tail_round_trip(guard):
    spec = guard.tail_spec
    for tail in (Tail("angry"), Tail("angry", Action("call_guards")), Tail("neutral", Action("give_item", {"item": "map"})),
                 Tail("afraid", Action("pay", {"amount": "250"})), Tail("neutral", Action("give_quest", {"quest": "find my cat"}))):
        line = format_tail(tail.emotion, tail.action, spec)
        assert parse_tail(line + "\n", spec) == tail
    assert format_tail("neutral", Action("give_quest", {"quest": "find my cat"}), spec) == 'neutral give_quest(quest="find my cat")'


@pytest.mark.parametrize("line,fragment", [
    ("happy", "emotion 'happy' is not declared"),
    ("angry attack()", "action 'attack' is not declared for this character; actions: call_guards, give_item, pay, give_quest"),
    ("angry give_item(item=axe)", "argument item = 'axe' is not one of sword, potion, map"),
    ("angry pay(amount=0)", "argument amount = '0' is not an integer in 1..250"),
    ("angry pay(amount=12x)", "not an integer in 1..250"),
    ('angry give_quest(quest="a very long quest text")', "at most 12 characters"),
    ("angry give_item()", "action give_item takes (item), got ()"),
    ("angry, call_guards", "is not `emotion` or `emotion action(arg=value, ...)`"),
])
def test_parse_tail_names_what_is_wrong(guard, line, fragment):
    with pytest.raises(TailError) as info:
        parse_tail(line, guard.tail_spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize("low,high", [(0, 9), (1, 250), (7, 7), (5, 1234), (-20, 15), (-9, -3), (0, 100000)])
def test_int_range_grammar_is_exact(low, high):
    """The integer rule matches exactly low..high: checked with llguidance over strings."""
    llguidance = pytest.importorskip("llguidance")
    grammar = llguidance.grammar_from("gbnf", "root ::= " + int_range_gbnf(low, high) + "\n")
    inside = set(range(low, high + 1))
    probes = set(range(low - 30, low + 30)) | set(range(high - 30, high + 30)) | {0, 10, 99, 100, 101, 999, 1000}
    for n in sorted(probes):
        assert _matches(llguidance, grammar, str(n)) == (n in inside), n
    assert not _matches(llguidance, grammar, "0" + str(max(low, 1))) or low == high == 0


def _matches(llguidance, grammar: str, text: str) -> bool:
    interp = llguidance.LLMatcher(_byte_tokenizer(llguidance), grammar)
    for b in text.encode():
        if not interp.consume_token(b):
            return False
    return interp.is_accepting()


_TOK = {}


def _byte_tokenizer(llguidance):
    """A tokenizer of 256 byte tokens + EOS, so a matcher checks strings byte by byte."""
    if "t" not in _TOK:
        _TOK["t"] = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))
    return _TOK["t"]


class _Bytes:
    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, text):
        return list(text if isinstance(text, bytes) else text.encode())


def test_grammar_text_is_gbnf_for_every_declared_action(guard):
    grammar = tail_grammar(guard.tail_spec)
    assert grammar.startswith('root ::= emotion (" " action)? "\\n"\n')
    for name in ("call_guards(", "give_item(", "pay(", "give_quest("):
        assert f'"{name}' in grammar
    no_actions = tail_grammar(TailSpec(("neutral",), ()))
    assert no_actions == 'root ::= emotion "\\n"\nemotion ::= "neutral"\n'
