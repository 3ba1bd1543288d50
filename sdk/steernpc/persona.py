"""Persona YAML -> Persona. Every problem is reported as FILE:LINE: message.

A persona is a character: its card (role, backstory, style, knowledge), an attribute
profile on a schema, named moods (partial overrides), hard limits and generation settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from steernpc.actions import DEFAULT_EMOTIONS, ActionSpec, TailSpec, check_actions, check_emotions
from steernpc.attributes import AttributeSchema, InvalidAttribute, resolve_attributes, resolve_layers
from steernpc.generation.base import MAX_GUIDANCE
from steernpc.yamlsource import Located, Problem, SourceError, load_located

ID_PATTERN = re.compile(r"^[a-z0-9_-]+$")
TEXT_FIELDS = ("backstory", "speaking_style", "greeting")
ALLOWED_FIELDS = (
    "id", "name", "role", "backstory", "speaking_style", "knowledge", "greeting",
    "schema", "emotions", "attributes", "moods", "limits", "generation", "actions",
)  # fmt: skip
REQUIRED_FIELDS = ("id", "name", "role", "attributes")
DEFAULT_SCHEMA = "npc"


class PersonaError(SourceError):
    """A persona file (or folder) has problems; `.problems` lists each FILE:LINE."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    guidance: float = 1.0  # classifier-free guidance against the persona's own vector (1 = off)

    # name -> (type, check, what is allowed)
    RULES = {
        "max_new_tokens": (int, lambda v: 1 <= v <= 4096, "an integer 1..4096"),
        "temperature": (float, lambda v: 0.0 <= v <= 5.0, "a number 0..5 (0 = greedy)"),
        "top_p": (float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
        "top_k": (int, lambda v: v >= 0, "an integer >= 0 (0 = off)"),
        "repetition_penalty": (float, lambda v: 0.0 < v <= 10.0, "a number in (0, 10]"),
        "guidance": (float, lambda v: 0.0 <= v <= MAX_GUIDANCE, f"a number 0..{MAX_GUIDANCE:g} (1 = off)"),
    }


@dataclass(frozen=True)
class Persona:
    id: str
    name: str
    role: str
    schema: AttributeSchema
    attributes: dict[str, int]
    backstory: str = ""
    speaking_style: str = ""
    knowledge: tuple[str, ...] = ()
    greeting: str = ""
    moods: dict[str, dict[str, int]] = field(default_factory=dict)
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    generation: GenerationSettings = GenerationSettings()
    source: str = ""
    emotions: tuple[str, ...] = DEFAULT_EMOTIONS
    actions: tuple[ActionSpec, ...] = ()

    @property
    def tail_spec(self) -> TailSpec:
        """What this character's structured tail may say (steernpc.actions)."""
        return TailSpec(self.emotions, self.actions)

    def card(self) -> str:
        """The character card: the persona part of the system message."""
        lines = [f"You are {self.name}, {self.role}."]
        if self.backstory:
            lines.append(f"Backstory: {self.backstory.strip()}")
        if self.speaking_style:
            lines.append(f"Speaking style: {self.speaking_style.strip()}")
        if self.knowledge:
            lines.append("You know:")
            lines.extend(f"- {fact.strip()}" for fact in self.knowledge)
        lines.append(f"Stay in character as {self.name} and answer the player directly.")
        return "\n".join(lines)

    def resolve(
        self,
        mood: str | None = None,
        steer: Mapping[str, int] | None = None,
        override: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """The attribute vector for one reply (see attributes.resolve_attributes)."""
        return resolve_attributes(
            self.schema, self.attributes, self.mood(mood), steer, override, self.limits
        )

    def resolve_layers(
        self,
        mood: str | None = None,
        steer: Mapping[str, int] | None = None,
        override: Mapping[str, int] | None = None,
    ) -> list[tuple[str, dict[str, int]]]:
        """resolve() step by step (attributes.resolve_layers); the last vector is resolve()'s."""
        return resolve_layers(self.schema, self.attributes, self.mood(mood), steer, override, self.limits)

    def mood(self, name: str | None) -> dict[str, int]:
        if not name:
            return {}
        if name not in self.moods:
            allowed = ", ".join(sorted(self.moods)) or "none defined"
            raise InvalidAttribute("mood", f"mood {name!r} is not defined for {self.id}; moods: {allowed}")
        return self.moods[name]


# -- loading -------------------------------------------------------------------------------

def load_persona(path: str | Path) -> Persona:
    """Load and validate one persona file; raise PersonaError listing every problem."""
    path = Path(path)
    try:
        src = load_located(path)
    except SourceError as exc:
        raise PersonaError(exc.problems) from None
    return persona_from_located(src, base_dir=path.parent)


def persona_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, *.yaml / *.yml) in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()))
        else:
            out.append(p)
    return out


def load_personas(paths: Iterable[str | Path]) -> tuple[dict[str, Persona], list[Problem]]:
    """Load every persona under `paths`. Returns the good ones by id, and all problems
    (including ids used by more than one file; the first file keeps the id)."""
    personas: dict[str, Persona] = {}
    problems: list[Problem] = []
    for file in persona_files(paths):
        if not file.exists():
            problems.append(Problem(str(file), 1, "no such file or folder"))
            continue
        try:
            persona = load_persona(file)
        except PersonaError as exc:
            problems.extend(exc.problems)
            continue
        if persona.id in personas:
            first = personas[persona.id].source
            problems.append(Problem(str(file), _id_line(file), f"id {persona.id!r} is already used by {first}"))
            continue
        personas[persona.id] = persona
    return personas, problems


def _id_line(file: Path) -> int:
    try:
        return load_located(file).line("id")
    except SourceError:
        return 1


def persona_from_located(src: Located, base_dir: Path | None = None) -> Persona:
    problems: list[Problem] = []

    def bad(path: tuple, message: str, key: bool = False) -> None:
        problems.append(Problem(src.file, src.key_line(*path) if key else src.line(*path), message))

    data = src.data
    if data is None:
        raise PersonaError([Problem(src.file, 1, "the file is empty; a persona needs at least id, name, role and attributes")])
    if not isinstance(data, dict):
        raise PersonaError([Problem(src.file, src.line(), "a persona file must be a mapping (id, name, role, attributes, ...)")])

    for key in data:
        if key not in ALLOWED_FIELDS:
            bad((key,), f"unknown field {key!r}; allowed: {', '.join(ALLOWED_FIELDS)}", key=True)
    for key in REQUIRED_FIELDS:
        if key not in data or data[key] is None:
            problems.append(Problem(src.file, src.line() if key not in data else src.line(key), f"{key} is required"))

    pid = data.get("id")
    if pid is not None and (not isinstance(pid, str) or not ID_PATTERN.match(pid)):
        bad(("id",), f"id = {pid!r} must match [a-z0-9_-]+ (lowercase letters, digits, _ and -)")
    for key in ("name", "role") + TEXT_FIELDS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            bad((key,), f"{key} must be a string, got {type(value).__name__}")
    knowledge = data.get("knowledge", [])
    if knowledge is None:
        knowledge = []
    if not isinstance(knowledge, list):
        bad(("knowledge",), "knowledge must be a list of strings", key=True)
        knowledge = []
    for i, fact in enumerate(knowledge):
        if not isinstance(fact, str):
            bad(("knowledge", i), f"knowledge[{i}] must be a string")

    # The schema decides which attributes exist, so load it before checking values.
    schema_ref = data.get("schema", DEFAULT_SCHEMA)
    schema: AttributeSchema | None = None
    if not isinstance(schema_ref, str):
        bad(("schema",), "schema must be a built-in name (nemo, npc) or a path to a schema YAML")
    else:
        try:
            schema = AttributeSchema.load(schema_ref, relative_to=base_dir)
        except SourceError as exc:
            bad(("schema",), f"schema {schema_ref!r} is invalid: {exc.problems[0]}")
        except (FileNotFoundError, ValueError) as exc:
            bad(("schema",), str(exc))

    attributes: dict[str, int] = {}
    moods: dict[str, dict[str, int]] = {}
    limits: dict[str, tuple[int, int]] = {}
    if schema is not None:
        raw = data.get("attributes")
        if raw is not None and not isinstance(raw, dict):
            bad(("attributes",), f"attributes must be a mapping of attribute: value ({', '.join(schema.names)})", key=True)
        elif raw:
            attributes = _check_vector(schema, raw, ("attributes",), bad)

        raw_moods = data.get("moods") or {}
        if not isinstance(raw_moods, dict):
            bad(("moods",), "moods must be a mapping of mood name -> {attribute: value}", key=True)
        else:
            for mood, values in raw_moods.items():
                if not isinstance(mood, str) or not ID_PATTERN.match(mood):
                    bad(("moods", mood), f"mood name {mood!r} must match [a-z0-9_-]+", key=True)
                    continue
                if not isinstance(values, dict) or not values:
                    bad(("moods", mood), f"moods.{mood} must be a non-empty mapping of attribute: value", key=True)
                    continue
                moods[mood] = _check_vector(schema, values, ("moods", mood), bad)

        raw_limits = data.get("limits") or {}
        if not isinstance(raw_limits, dict):
            bad(("limits",), "limits must be a mapping of attribute -> {min, max}", key=True)
        else:
            for name, bounds in raw_limits.items():
                limit = _check_limit(schema, name, bounds, bad)
                if limit is not None:
                    limits[name] = limit

    generation = _check_generation(data.get("generation"), bad)
    emotions = check_emotions(data.get("emotions"), bad)
    actions = check_actions(data.get("actions"), bad)

    if problems:
        problems.sort(key=lambda p: p.line)
        raise PersonaError(problems)
    return Persona(
        id=pid,
        name=data["name"],
        role=data["role"],
        schema=schema,
        attributes=attributes,
        backstory=data.get("backstory") or "",
        speaking_style=data.get("speaking_style") or "",
        knowledge=tuple(knowledge),
        greeting=data.get("greeting") or "",
        moods=moods,
        limits=limits,
        generation=generation,
        source=src.file,
        emotions=emotions,
        actions=actions,
    )


def _check_vector(schema: AttributeSchema, raw: dict, where: tuple, bad) -> dict[str, int]:
    out: dict[str, int] = {}
    field_prefix = ".".join(str(p) for p in where)
    for name, value in raw.items():
        try:
            out[name] = schema.check(name, value, f"{field_prefix}.{name}")
        except InvalidAttribute as exc:
            bad(where + (name,), str(exc), key=name not in schema)
    return out


def _check_limit(schema: AttributeSchema, name: Any, bounds: Any, bad) -> tuple[int, int] | None:
    where = ("limits", name)
    if name not in schema:
        bad(where, f"limits.{name}: unknown attribute {name!r}; schema {schema.name!r} has {', '.join(schema.names)}", key=True)
        return None
    if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
        bad(where, f"limits.{name} must be a mapping with min and/or max, e.g. {{max: 0}}", key=True)
        return None
    spec = schema[name]
    checked = {}
    ok = True
    for key, value in (("min", bounds.get("min", spec.min)), ("max", bounds.get("max", spec.max))):
        try:
            checked[key] = schema.check(name, value, f"limits.{name}.{key}")
        except InvalidAttribute as exc:
            bad(where + (key,), str(exc))
            ok = False
    low, high = checked.get("min"), checked.get("max")
    if ok and low > high:
        bad(where + ("min",), f"limits.{name}: min {low} > max {high}")
        ok = False
    return (low, high) if ok else None


def _check_generation(raw: Any, bad) -> GenerationSettings:
    if raw is None:
        return GenerationSettings()
    if not isinstance(raw, dict):
        bad(("generation",), f"generation must be a mapping of {', '.join(GenerationSettings.RULES)}", key=True)
        return GenerationSettings()
    values = {}
    for key, value in raw.items():
        rule = GenerationSettings.RULES.get(key)
        if rule is None:
            bad(("generation", key), f"generation: unknown field {key!r}; allowed: {', '.join(GenerationSettings.RULES)}", key=True)
            continue
        kind, ok, allowed = rule
        numeric = not isinstance(value, bool) and (isinstance(value, int) or (kind is float and isinstance(value, float)))
        if not numeric or not ok(value):
            bad(("generation", key), f"generation.{key} = {value!r} must be {allowed}")
            continue
        values[key] = kind(value)
    return GenerationSettings(**values)
