"""YAML loading that remembers where every value came from (file and line).

Persona and schema errors must name FILE:LINE, so we compose the YAML node tree and
convert it ourselves, recording the 1-based line of each key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class SourceError(ValueError):
    """One or more problems in a source file; str() gives one FILE:LINE: line each."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Located:
    """Parsed YAML data plus the line of every key path (tuple of keys / indices)."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, *path) -> int:
        """Line of `path`, or of its closest ancestor that exists."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def key_line(self, *path) -> int:
        """Line of the key itself (where `name:` is written)."""
        return self.lines.get(("__key__",) + tuple(path), self.line(*path))


MERGE_TAG = "tag:yaml.org,2002:merge"


def _convert(node: yaml.Node, path: tuple, lines: dict, file: str, active: frozenset = frozenset()) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in active:  # `a: &x [*x]`: an alias inside its own anchor
            raise SourceError([Problem(file, node.start_mark.line + 1, "YAML error: an alias refers to its own anchor")])
        active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                raise SourceError(
                    [Problem(file, key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported; write the values out")]
                )
            key = _scalar(key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise SourceError([Problem(file, key_node.start_mark.line + 1, "mapping keys must be plain names")])
            if key in out:
                raise SourceError(
                    [Problem(file, key_node.start_mark.line + 1, f"{_dotted(path + (key,))} appears twice")]
                )
            lines[("__key__",) + path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, file, active)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, path + (i,), lines, file, active) for i, child in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted


def load_located(path: str | Path, display: str | None = None) -> Located:
    """Parse a YAML file; a syntax error becomes a SourceError with the right line."""
    display = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError([Problem(display, 1, f"cannot read file: {exc}")]) from None
    return parse_located(text, display)


def parse_located(text: str, display: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, reason = _syntax_error(text, exc)
        raise SourceError([Problem(display, line, f"YAML syntax error: {reason}")]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise SourceError([Problem(display, 1, f"YAML error: {exc}")]) from None
    if node is None:
        return Located(display, None, {(): 1})
    lines: dict[tuple, int] = {}
    try:
        data = _convert(node, (), lines, display)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise SourceError([Problem(display, mark.line + 1 if mark else 1, f"YAML error: {exc.problem}")]) from None
    return Located(display, data, lines)


# Contexts that open something on one line (a quote, a bracket, a key) that a later line
# failed to finish; when the parser only notices at a later line that is indented no
# deeper (the next key, or the end of the file), the opening line is the one to fix.
_OPENERS = {
    "while scanning a quoted scalar": "the quoted string opened here is not closed",
    "while parsing a flow sequence": "the '[' opened here is not closed",
    "while parsing a flow mapping": "the '{' opened here is not closed",
    "while scanning a simple key": "this key has no ':'",
}
_HINTS = {
    "found character '\\t'": "indent with spaces, not tabs",
    "mapping values are not allowed here": "check the indentation, or quote a value that contains ': '",
    "expected <block end>": "check the indentation",
}


def _syntax_error(text: str, exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    """(1-based line, message) for a YAML syntax error: the line a person has to fix."""
    lines = text.splitlines()
    last = max(1, len(lines))
    problem, context = exc.problem_mark, exc.context_mark
    reason = exc.problem or str(exc)

    def indent(index: int) -> int:
        if index >= len(lines):  # the end of the file
            return -1
        row = lines[index]
        return len(row) - len(row.lstrip(" \t"))

    opener = _OPENERS.get(exc.context or "")
    if opener and context is not None and (
        problem is None or (problem.line > context.line and indent(problem.line) <= indent(context.line))
    ):
        return min(context.line + 1, last), f"{opener} ({reason})"
    mark = problem or context
    hint = next((h for key, h in _HINTS.items() if key in reason), None)
    return (min(mark.line + 1, last) if mark else 1), (f"{reason} ({hint})" if hint else reason)
