"""SteerNPC: steerable NPC dialogue (SteerLM) for game engines."""

from steernpc.attributes import AttributeSchema, AttributeSpec, InvalidAttribute, resolve_attributes
from steernpc.persona import Persona, PersonaError, load_persona, load_personas

from importlib.metadata import PackageNotFoundError, version

try:  # the one version string is pyproject.toml's
    __version__ = version("steernpc")
except PackageNotFoundError:  # a source tree on PYTHONPATH without an install
    __version__ = "0+unknown"

__all__ = [
    "AttributeSchema",
    "AttributeSpec",
    "InvalidAttribute",
    "resolve_attributes",
    "Persona",
    "PersonaError",
    "load_persona",
    "load_personas",
]
