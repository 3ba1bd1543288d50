"""What an NPC can do and show: a persona's declared actions and emotion set, and the
structured *tail* that carries one reply's emotion and (at most one) action.

A persona declares

    emotions: [neutral, happy, angry]          # optional; default: DEFAULT_EMOTIONS
    actions:
      - name: give_item
        description: hand the player something
        args:
          item: [sword, potion, map]           # enum (shorthand for {enum: [...]})
      - name: pay
        args:
          amount: {min: 1, max: 50}            # integer range
      - name: give_quest
        args:
          quest: {max_length: 40}              # free string, at most 40 characters
      - name: call_guards                      # no arguments

The tail is written by the model right after the spoken reply, after the prompt format's
TAIL marker (prompt.tail_marker), on one line:

    angry                                      # an emotion only
    angry call_guards()                        # an emotion and an action
    happy give_item(item=potion)               # enum arguments: bare words
    neutral pay(amount=5)                      # integers
    happy give_quest(quest="find my ring")     # free strings: quoted, no " \\ or newline

Arguments come in the order the persona declares them, all of them, `, `-separated. The
line ends with a newline. Decoding of the tail is constrained by `tail_grammar()` (GBNF:
the grammar dialect llama.cpp reads, and llguidance and TensorRT-LLM's grammar backends
accept), so the model cannot write an undeclared action or a malformed argument.
`parse_tail()` reads a tail back into a `Tail` (and says exactly what is wrong with one
that was not constrained, e.g. from a remote server without grammar support).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The corpus's emotion set (samples/corpus/RUBRIC.md, "emotion and action").
DEFAULT_EMOTIONS = ("neutral", "happy", "angry", "sad", "afraid", "surprised", "disgusted")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_STRING_LENGTH = 200  # the longest free-string argument a persona may declare
MAX_INT = 10**9


class TailError(ValueError):
    """A tail that does not parse against the persona's declared emotions and actions."""


@dataclass(frozen=True)
class ArgSpec:
    """One typed argument: kind "enum" (values), "int" (low..high) or "string" (max_length)."""

    name: str
    kind: str
    values: tuple[str, ...] = ()
    low: int = 0
    high: int = 0
    max_length: int = 0

    def describe(self) -> str:
        if self.kind == "enum":
            return f"{self.name}: one of {', '.join(self.values)}"
        if self.kind == "int":
            return f"{self.name}: an integer {self.low}..{self.high}"
        return f"{self.name}: a string of at most {self.max_length} characters"

    def check(self, raw: str) -> str:
        """The argument's value as the wire carries it (a string); TailError if invalid."""
        if self.kind == "enum":
            if raw not in self.values:
                raise TailError(f"argument {self.name} = {raw!r} is not one of {', '.join(self.values)}")
            return raw
        if self.kind == "int":
            if not re.fullmatch(r"-?(0|[1-9][0-9]*)", raw) or not self.low <= int(raw) <= self.high:
                raise TailError(f"argument {self.name} = {raw!r} is not an integer in {self.low}..{self.high}")
            return raw
        if not (len(raw) >= 2 and raw[0] == raw[-1] == '"'):
            raise TailError(f"argument {self.name} = {raw!r} must be a quoted string")
        text = raw[1:-1]
        if len(text) > self.max_length or any(c in text for c in '"\\\n'):
            raise TailError(f"argument {self.name} must be at most {self.max_length} characters without \" \\ or newlines")
        return text


@dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str = ""
    args: tuple[ArgSpec, ...] = ()

    def signature(self) -> str:
        return f"{self.name}({', '.join(a.describe() for a in self.args)})"


@dataclass(frozen=True)
class Action:
    name: str
    args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tail:
    emotion: str
    action: Action | None = None

    @property
    def actions(self) -> list[Action]:
        return [self.action] if self.action else []


@dataclass(frozen=True)
class TailSpec:
    """What one reply's tail may say: the persona's emotions and actions."""

    emotions: tuple[str, ...] = DEFAULT_EMOTIONS
    actions: tuple[ActionSpec, ...] = ()

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)


# -- writing and reading a tail -----------------------------------------------------------

def format_tail(emotion: str, action: Action | None = None, spec: TailSpec | None = None) -> str:
    """The tail line (without its newline) for an emotion and an optional action. With
    `spec`, arguments follow its declared order; strings are quoted."""
    if action is None:
        return emotion
    declared = spec.action(action.name) if spec else None
    order = [a.name for a in declared.args] if declared else list(action.args)
    kinds = {a.name: a.kind for a in declared.args} if declared else {}
    parts = []
    for name in order:
        value = str(action.args.get(name, ""))
        quoted = kinds.get(name, "string" if not re.fullmatch(r"[A-Za-z0-9_]+", value) else "enum") == "string"
        parts.append(f'{name}="{value}"' if quoted else f"{name}={value}")
    return f"{emotion} {action.name}({', '.join(parts)})"


_TAIL_LINE = re.compile(r"^([a-z][a-z0-9_]*)(?: ([a-z][a-z0-9_]*)\((.*)\))?$")
_ARG = re.compile(r'\s*([a-z][a-z0-9_]*)=("(?:[^"\\\n])*"|[^,"]*)\s*(?:,|$)')


def parse_tail(text: str, spec: TailSpec) -> Tail:
    """Read a tail line against `spec`; TailError names what is wrong."""
    line = text.strip()
    m = _TAIL_LINE.match(line)
    if not m:
        raise TailError(f"tail {line!r} is not `emotion` or `emotion action(arg=value, ...)`")
    emotion, name, arg_text = m.groups()
    if emotion not in spec.emotions:
        raise TailError(f"emotion {emotion!r} is not declared; emotions: {', '.join(spec.emotions)}")
    if name is None:
        return Tail(emotion)
    declared = spec.action(name)
    if declared is None:
        allowed = ", ".join(a.name for a in spec.actions) or "none declared"
        raise TailError(f"action {name!r} is not declared for this character; actions: {allowed}")
    raw: dict[str, str] = {}
    pos = 0
    arg_text = arg_text.strip()
    while pos < len(arg_text):
        am = _ARG.match(arg_text, pos)
        if not am or am.end() == pos:
            raise TailError(f"action {name}: cannot read the arguments {arg_text!r}")
        raw[am.group(1)] = am.group(2).strip()
        pos = am.end()
    expected = [a.name for a in declared.args]
    if list(raw) != expected:
        raise TailError(f"action {name} takes ({', '.join(expected)}), got ({', '.join(raw)})")
    args = {a.name: a.check(raw[a.name]) for a in declared.args}
    return Tail(emotion, Action(name, args))


# -- the grammar -----------------------------------------------------------------------------

def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def int_range_gbnf(low: int, high: int) -> str:
    """A GBNF expression that matches exactly the decimal integers low..high."""
    if low < 0:
        parts = []
        if high >= 0:
            parts.append(int_range_gbnf(0, high))
        neg_hi, neg_lo = -low, max(1, -high) if high < 0 else 1
        parts.append('"-" (' + int_range_gbnf(neg_lo, neg_hi) + ")")
        return " | ".join(f"({p})" for p in parts)
    alts = [_digits_range(str(lo), str(hi)) for lo, hi in _split_by_length(low, high)]
    return " | ".join(f"({a})" for a in alts)


def _split_by_length(low: int, high: int) -> list[tuple[int, int]]:
    out = []
    while low <= high:
        top = min(high, 10 ** len(str(low)) - 1)
        out.append((low, top))
        low = top + 1
    return out


def _digits_range(lo: str, hi: str) -> str:
    """Same-length decimal strings lo..hi (no leading zeros unless the number is 0)."""
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_digits_range(lo[1:], hi[1:])})'
    n = len(lo) - 1
    parts = []
    # lo[0] followed by lo[1:]..99..9
    parts.append(f'"{lo[0]}" ({_digits_range(lo[1:], "9" * n)})')
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}]" + " [0-9]" * n)
    parts.append(f'"{hi[0]}" ({_digits_range("0" * n, hi[1:])})')
    return " | ".join(f"({p})" for p in parts)


def tail_grammar(spec: TailSpec) -> str:
    """The GBNF grammar of one tail line (ending in a newline) for `spec`."""
    rules = ['root ::= emotion' + (' (" " action)?' if spec.actions else "") + ' "\\n"']
    rules.append("emotion ::= " + " | ".join(_lit(e) for e in spec.emotions))
    if spec.actions:
        rules.append("action ::= " + " | ".join(f"act-{i}" for i in range(len(spec.actions))))
        for i, act in enumerate(spec.actions):
            body = [_lit(act.name + "(")]
            for j, arg in enumerate(act.args):
                body.append(_lit(("" if j == 0 else ", ") + arg.name + "="))
                if arg.kind == "enum":
                    body.append("(" + " | ".join(_lit(v) for v in arg.values) + ")")
                elif arg.kind == "int":
                    body.append("(" + int_range_gbnf(arg.low, arg.high) + ")")
                else:
                    body.append('"\\"" [^"\\\\\\n]{0,' + str(arg.max_length) + '} "\\""')
            body.append(_lit(")"))
            rules.append(f"act-{i} ::= " + " ".join(body))
    return "\n".join(rules) + "\n"


# -- the persona's `actions:` and `emotions:` fields --------------------------------------------

def check_emotions(raw, bad) -> tuple[str, ...]:
    """`emotions:` -> a tuple of names; problems go to bad(path, message, key=False)."""
    if raw is None:
        return DEFAULT_EMOTIONS
    if not isinstance(raw, list) or not raw:
        bad(("emotions",), "emotions must be a non-empty list of names, e.g. [neutral, happy, angry]", key=True)
        return DEFAULT_EMOTIONS
    out: list[str] = []
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            bad(("emotions", i), f"emotions[{i}] = {name!r} must match [a-z][a-z0-9_]*")
        elif name in out:
            bad(("emotions", i), f"emotions[{i}]: {name!r} appears twice")
        else:
            out.append(name)
    return tuple(out) or DEFAULT_EMOTIONS


def check_actions(raw, bad) -> tuple[ActionSpec, ...]:
    """`actions:` -> ActionSpecs; problems go to bad(path, message, key=False)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        bad(("actions",), "actions must be a list of {name, description, args}", key=True)
        return ()
    out: list[ActionSpec] = []
    for i, item in enumerate(raw):
        where = ("actions", i)
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            bad(where, f"actions[{i}] must be a mapping with name, description and args")
            continue
        unknown = set(item) - {"name", "description", "args"}
        for key in sorted(map(str, unknown)):
            bad(where + (key,), f"actions[{i}]: unknown field {key!r}; allowed: name, description, args", key=True)
        name = item.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            bad(where + ("name",), f"actions[{i}].name = {name!r} must match [a-z][a-z0-9_]*")
            continue
        if any(a.name == name for a in out):
            bad(where + ("name",), f"actions[{i}].name: action {name!r} is declared twice")
            continue
        description = item.get("description") or ""
        if not isinstance(description, str):
            bad(where + ("description",), f"actions.{name}.description must be a string")
            description = ""
        args = _check_args(item.get("args"), where, name, bad)
        if not unknown:
            out.append(ActionSpec(name, description.strip(), args))
    return tuple(out)


def _check_args(raw, where: tuple, action: str, bad) -> tuple[ArgSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        bad(where + ("args",), f"actions.{action}.args must be a mapping of argument: type", key=True)
        return ()
    out = []
    for name, kind in raw.items():
        at = where + ("args", name)
        field_name = f"actions.{action}.args.{name}"
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            bad(at, f"{field_name}: argument name must match [a-z][a-z0-9_]*", key=True)
            continue
        if isinstance(kind, list):
            kind = {"enum": kind}
        if not isinstance(kind, dict) or len(kind) == 0:
            bad(at, f"{field_name} must be a list of values, {{min, max}} (an integer) or {{max_length}} (a string)")
            continue
        keys = set(kind)
        if keys == {"enum"}:
            values = kind["enum"]
            ok = (isinstance(values, list) and values and
                  all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_]+", v) for v in values))  # fmt: skip
            if not ok:
                bad(at, f"{field_name}: enum values must be a non-empty list of words ([A-Za-z0-9_]+)")
                continue
            if len(set(values)) != len(values):
                bad(at, f"{field_name}: an enum value appears twice")
                continue
            out.append(ArgSpec(name, "enum", values=tuple(values)))
        elif keys and keys <= {"min", "max"}:
            low, high = kind.get("min"), kind.get("max")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
                bad(at, f"{field_name}: an integer argument needs integer min and max, e.g. {{min: 1, max: 50}}")
                continue
            if low > high or abs(low) > MAX_INT or abs(high) > MAX_INT:
                bad(at, f"{field_name}: min {low} > max {high}" if low > high else f"{field_name}: min and max must lie within ±{MAX_INT}")
                continue
            out.append(ArgSpec(name, "int", low=low, high=high))
        elif keys == {"max_length"}:
            cap = kind["max_length"]
            if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_STRING_LENGTH:
                bad(at + ("max_length",), f"{field_name}.max_length = {cap!r} must be an integer 1..{MAX_STRING_LENGTH}")
                continue
            out.append(ArgSpec(name, "string", max_length=cap))
        else:
            bad(at, f"{field_name}: unknown argument type {sorted(map(str, keys))}; use a list of values, {{min, max}} or {{max_length}}")
    return tuple(out)


def tail_card(spec: TailSpec) -> str:
    """The system text's last lines when a model writes tails: what this character can
    show and do (training and serving append the same text)."""
    lines = [f"Emotions: {', '.join(spec.emotions)}."]
    if spec.actions:
        acts = []
        for a in spec.actions:
            acts.append(a.signature() + (f" - {a.description}" if a.description else ""))
        lines.append("Actions: " + "; ".join(acts) + ".")
    return "\n".join(lines)
