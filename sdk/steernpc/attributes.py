"""Attribute schemas and profiles: defaults, merge, clamp, and the "a:1,b:2" label codec.

An attribute vector is a plain `dict[str, int]`. The schema fixes the order (the order of
the SteerLM label line) and each attribute's integer range. An attribute may also name its
levels in words (`levels: [hostile, cold, neutral, friendly, warm]`): the `verbal` prompt
format writes those words in the label line instead of digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

from steernpc.yamlsource import Located, Problem, SourceError, load_located, parse_located

BUILTIN_SCHEMAS = ("nemo", "npc")


class InvalidAttribute(ValueError):
    """An unknown attribute name or a value outside its range.

    `field` names where it came from (e.g. "attributes.humor"), so that a CLI, a persona
    loader or a gRPC handler can tell the caller exactly what to fix.
    """

    def __init__(self, field: str, message: str, attribute: str | None = None, allowed: str | None = None):
        self.field = field
        self.attribute = attribute
        self.allowed = allowed
        super().__init__(message)


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    min: int
    max: int
    default: int
    description: str = ""
    levels: tuple[str, ...] = ()  # one word per value min..max, or none

    @property
    def range_text(self) -> str:
        return f"{self.min}..{self.max}"

    def word(self, value: int) -> str:
        return self.levels[value - self.min]


class AttributeSchema:
    """An ordered set of integer attributes."""

    def __init__(self, name: str, specs: list[AttributeSpec]):
        if not specs:
            raise ValueError(f"schema {name!r} has no attributes")
        self.name = name
        self.specs: tuple[AttributeSpec, ...] = tuple(specs)
        self._by_name = {s.name: s for s in specs}
        if len(self._by_name) != len(specs):
            raise ValueError(f"schema {name!r} names an attribute twice")

    # -- lookups ---------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> AttributeSpec:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.specs)

    def __repr__(self) -> str:
        return f"AttributeSchema({self.name!r}, {self.names})"

    def defaults(self) -> dict[str, int]:
        return {s.name: s.default for s in self.specs}

    # -- validation --------------------------------------------------------------------
    def check(self, name: str, value: object, field: str | None = None) -> int:
        """Return `value` as an int if `name` is known and `value` in range, else raise."""
        field = field or name
        if name not in self._by_name:
            raise InvalidAttribute(
                field,
                f"{field}: unknown attribute {name!r}; schema {self.name!r} has {', '.join(self.names)}",
                attribute=name,
                allowed=", ".join(self.names),
            )
        spec = self._by_name[name]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InvalidAttribute(
                    field,
                    f"{field} = {value!r} is not an integer; allowed {spec.range_text}",
                    attribute=name,
                    allowed=spec.range_text,
                )
        if not spec.min <= value <= spec.max:
            raise InvalidAttribute(
                field, f"{field} = {value} is outside {spec.range_text}", attribute=name, allowed=spec.range_text
            )
        return value

    def check_vector(self, values: Mapping[str, object], field: str = "attributes") -> dict[str, int]:
        return {name: self.check(name, value, f"{field}.{name}") for name, value in values.items()}

    def clamp(self, name: str, value: int) -> int:
        spec = self._by_name[name]
        return max(spec.min, min(spec.max, int(value)))

    # -- label line codec ---------------------------------------------------------------
    @property
    def has_levels(self) -> bool:
        """Every attribute names its levels in words (what the `verbal` format needs)."""
        return all(s.levels for s in self.specs)

    def encode(self, vector: Mapping[str, int], words: bool = False) -> str:
        """`quality:4,toxicity:0,...` with every attribute, in schema order; with `words`,
        each value as its level's word (`humor:dry,friendliness:warm,...`)."""
        missing = [n for n in self.names if n not in vector]
        if missing:
            raise InvalidAttribute("attributes", f"label line needs every attribute; missing {', '.join(missing)}")
        if words and not self.has_levels:
            bare = [s.name for s in self.specs if not s.levels]
            raise ValueError(f"schema {self.name!r} names no levels for {', '.join(bare)}; the verbal format needs `levels:` on every attribute")
        if words:
            return ",".join(f"{s.name}:{s.word(int(vector[s.name]))}" for s in self.specs)
        return ",".join(f"{name}:{int(vector[name])}" for name in self.names)

    def decode(self, text: str, field: str = "labels") -> dict[str, int]:
        """Parse `name:value,...` (any subset, any order; a value may be a level word) back
        into a checked vector."""
        words = {s.name: {w: s.min + i for i, w in enumerate(s.levels)} for s in self.specs}
        return self.check_vector(parse_pairs(text, field, words), field)

    # -- serialising ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The schema as plain data, in the schema file's layout (schema.yaml, model cards)."""
        return {
            "name": self.name,
            "attributes": [
                {"name": s.name, "min": s.min, "max": s.max, "default": s.default, "description": s.description,
                 **({"levels": list(s.levels)} if s.levels else {})}
                for s in self.specs
            ],
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> "AttributeSchema":
        """`to_dict()`'s inverse, validated like a schema file; errors name `where`."""
        import json

        # JSON is YAML: reuse the schema file validation.
        return cls.from_located(parse_located(json.dumps(data, indent=1), where))

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> "AttributeSchema":
        if name not in BUILTIN_SCHEMAS:
            raise ValueError(f"unknown built-in schema {name!r}; built-in: {', '.join(BUILTIN_SCHEMAS)}")
        text = resources.files("steernpc").joinpath(f"builtin/{name}.yaml").read_text(encoding="utf-8")
        return cls.from_located(parse_located(text, f"<builtin {name}>"))

    @classmethod
    def load(cls, name_or_path: str | Path, relative_to: Path | None = None) -> "AttributeSchema":
        """A built-in name (`nemo`, `npc`) or a path to a schema YAML."""
        text = str(name_or_path)
        if text in BUILTIN_SCHEMAS:
            return cls.builtin(text)
        path = Path(text)
        if not path.is_absolute() and relative_to is not None and (relative_to / path).exists():
            path = relative_to / path
        if not path.exists():
            raise FileNotFoundError(
                f"schema {text!r} is neither a built-in ({', '.join(BUILTIN_SCHEMAS)}) nor an existing file"
            )
        return cls.from_located(load_located(path))

    @classmethod
    def from_located(cls, src: Located) -> "AttributeSchema":
        problems: list[Problem] = []

        def bad(path: tuple, message: str) -> None:
            problems.append(Problem(src.file, src.line(*path), message))

        data = src.data
        if not isinstance(data, dict):
            raise SourceError([Problem(src.file, 1, "a schema file must be a mapping with `name` and `attributes`")])
        for key in data:
            if key not in ("name", "attributes"):
                bad((key,), f"unknown field {key!r}; allowed: name, attributes")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            bad(("name",), "name is required and must be a string")
        items = data.get("attributes")
        specs: list[AttributeSpec] = []
        if not isinstance(items, list) or not items:
            bad(("attributes",), "attributes must be a non-empty list of {name, min, max, default, description}")
            items = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = ("attributes", i)
            if not isinstance(item, dict):
                bad(where, f"attributes[{i}] must be a mapping")
                continue
            for key in item:
                if key not in ATTRIBUTE_FIELDS:
                    bad(where + (key,), f"attributes[{i}]: unknown field {key!r}; allowed: {', '.join(ATTRIBUTE_FIELDS)}")
            aname = item.get("name")
            if not isinstance(aname, str) or not aname.isidentifier():
                bad(where + ("name",), f"attributes[{i}].name must be an identifier")
                continue
            if aname in seen:
                bad(where + ("name",), f"attribute {aname!r} is defined twice")
            seen.add(aname)
            nums = {}
            for key in ("min", "max", "default"):
                value = item.get(key)
                if isinstance(value, bool) or not isinstance(value, int):
                    bad(where + (key,), f"attributes.{aname}.{key} must be an integer")
                nums[key] = value
            if any(isinstance(v, bool) or not isinstance(v, int) for v in nums.values()):
                continue
            if nums["min"] > nums["max"]:
                bad(where + ("min",), f"attributes.{aname}: min {nums['min']} > max {nums['max']}")
            elif not nums["min"] <= nums["default"] <= nums["max"]:
                bad(where + ("default",), f"attributes.{aname}.default = {nums['default']} is outside {nums['min']}..{nums['max']}")
            else:
                levels = _levels(item.get("levels"), aname, nums["max"] - nums["min"] + 1, lambda m: bad(where + ("levels",), m))
                specs.append(AttributeSpec(aname, nums["min"], nums["max"], nums["default"], str(item.get("description", "")), levels))
        if problems:
            raise SourceError(problems)
        return cls(name, specs)


ATTRIBUTE_FIELDS = ("name", "min", "max", "default", "description", "levels")
LEVEL_WORD = re.compile(r"[a-z][a-z-]*")


def _levels(value: object, name: str, count: int, bad) -> tuple[str, ...]:
    """A schema attribute's `levels:` list, checked: one distinct lowercase word per value."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(w, str) and LEVEL_WORD.fullmatch(w) for w in value):
        bad(f"attributes.{name}.levels must be a list of lowercase words (letters and '-'), one per level")
        return ()
    if len(value) != count:
        bad(f"attributes.{name}.levels has {len(value)} words; its range has {count} levels")
        return ()
    if len(set(value)) != len(value):
        bad(f"attributes.{name}.levels names a word twice")
        return ()
    return tuple(value)


def parse_pairs(text: str, field: str = "attributes", words: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, int]:
    """`"humor:4, verbosity:1"` (also `=`) -> {"humor": 4, "verbosity": 1}; names unchecked.
    With `words` (attribute -> level word -> value), a value may be its level's word."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        sep = ":" if ":" in part else "="
        name, _, value = part.partition(sep)
        name, value = name.strip(), value.strip()
        if not name or not value:
            raise InvalidAttribute(field, f"{field}: {part!r} is not name:value")
        if words and value in words.get(name, {}):
            out[name] = words[name][value]
            continue
        try:
            out[name] = int(value)
        except ValueError:
            raise InvalidAttribute(f"{field}.{name}", f"{field}.{name} = {value!r} is not an integer") from None
    return out


LAYERS = ("defaults", "attributes", "mood", "steer", "override", "limits")


def resolve_attributes(
    schema: AttributeSchema,
    profile: Mapping[str, int] | None = None,
    mood: Mapping[str, int] | None = None,
    steer: Mapping[str, int] | None = None,
    override: Mapping[str, int] | None = None,
    limits: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, int]:
    """The attribute vector for one reply.

    Order (later wins, limits last): schema defaults -> persona profile -> active mood ->
    session steer -> per-request override -> limits (clamp). The steer and override
    layers come from players and game code, so they are validated here and raise
    InvalidAttribute naming the field and allowed range.
    """
    return resolve_layers(schema, profile, mood, steer, override, limits)[-1][1]


def resolve_layers(
    schema: AttributeSchema,
    profile: Mapping[str, int] | None = None,
    mood: Mapping[str, int] | None = None,
    steer: Mapping[str, int] | None = None,
    override: Mapping[str, int] | None = None,
    limits: Mapping[str, tuple[int, int]] | None = None,
) -> list[tuple[str, dict[str, int]]]:
    """resolve_attributes step by step: [(layer, the full vector after it), ...] for each
    layer of LAYERS; the last entry ("limits") is the vector a reply is generated under.
    (The studio shows this table, so a designer sees where each value came from and what
    a limit clamped.)"""
    vector = schema.defaults()
    steps = [("defaults", dict(vector))]
    for layer_name, layer in (("attributes", profile), ("mood", mood), ("steer", steer), ("override", override)):
        for name, value in (layer or {}).items():
            vector[name] = schema.check(name, value, f"{layer_name}.{name}")
        steps.append((layer_name, dict(vector)))
    for name, (low, high) in (limits or {}).items():
        vector[name] = max(low, min(high, vector[name]))
    steps.append(("limits", dict(vector)))
    return steps
