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


def _convert(node: yaml.Node, path: tuple, lines: dict, file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise SourceError([Problem(file, key_node.start_mark.line + 1, "mapping keys must be plain names")])
            if key in out:
                raise SourceError(
                    [Problem(file, key_node.start_mark.line + 1, f"{_dotted(path + (key,))} appears twice")]
                )
            lines[("__key__",) + path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, path + (i,), lines, file) for i, child in enumerate(node.value)]
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
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        reason = exc.problem or str(exc)
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
