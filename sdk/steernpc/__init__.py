"""SteerNPC: steerable NPC dialogue (SteerLM) for game engines."""

from steernpc.attributes import AttributeSchema, AttributeSpec, InvalidAttribute, resolve_attributes
from steernpc.persona import Persona, PersonaError, load_persona, load_personas

__version__ = "0.1.0"

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
