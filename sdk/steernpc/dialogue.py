"""One reply, start to finish: persona + history + player line + steering -> a
GenerationRequest for a backend, and the attribute vector it applies.

Shared by `steernpc chat` and the gRPC server, so both send the model the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from steernpc.generation.base import GenerationRequest, SamplingParams
from steernpc.persona import Persona
from steernpc.prompt import Exchange, build_prompt, stop_strings


@dataclass
class Turn:
    request: GenerationRequest
    attributes: dict[str, int]


def system_text(persona: Persona, player_name: str = "", context: Mapping[str, str] | None = None) -> str:
    """The persona card, plus who the player is and any game context (kept stable across
    turns so the card's KV cache is shared)."""
    text = persona.card()
    if player_name:
        text += f"\nThe player is called {player_name}."
    for key, value in sorted((context or {}).items()):
        text += f"\n{key}: {value}"
    return text


def sampling_params(persona: Persona, options: Mapping[str, Any] | None = None) -> SamplingParams:
    """The persona's generation settings; options given per request (non-zero) win."""
    g = persona.generation
    params = SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        repetition_penalty=g.repetition_penalty,
    )
    for key, value in (options or {}).items():
        if value not in (None, 0, 0.0) and hasattr(params, key):
            setattr(params, key, value)
    return params.validate()


def fit_history(history: Sequence[Exchange], count_tokens, budget: int, step: int = 1) -> list[Exchange]:
    """The newest exchanges whose text fits `budget` tokens; the oldest drop first.
    (The persona card is not history: it never drops.) The newest exchange is always kept.

    `step` > 1 drops old turns in blocks of `step`, so the window's first turn (and with it
    the whole cached prompt prefix) changes only every `step` turns instead of every turn.
    """
    kept = 0
    used = 0
    for ex in reversed(history):
        cost = count_tokens(ex.user) + (count_tokens(ex.reply) if ex.reply else 0)
        if kept and used + cost > budget:
            break
        kept += 1
        used += cost
    dropped = len(history) - kept
    if dropped and step > 1:
        dropped = min(len(history) - 1, -(-dropped // step) * step)
    return list(history[dropped:])


def prepare_turn(
    persona: Persona,
    fmt: str,
    tokenizer: Any,
    history: Sequence[Exchange],
    user: str,
    mood: str | None = None,
    steer: Mapping[str, int] | None = None,
    override: Mapping[str, int] | None = None,
    options: Mapping[str, Any] | None = None,
    cache_key: str | None = None,
    player_name: str = "",
    context: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> Turn:
    """Resolve the attributes (raises InvalidAttribute on bad steering) and build the request."""
    if not user or not user.strip():
        raise ValueError("text is empty: say something to the character")
    vector = persona.resolve(mood=mood, steer=steer, override=override)
    prompt = build_prompt(fmt, system_text(persona, player_name, context), history, user, vector, persona.schema, tokenizer)
    request = GenerationRequest(prompt, sampling_params(persona, options), stop_strings(fmt, tokenizer), cache_key)
    if request_id:
        request.request_id = request_id
    return Turn(request, vector)
