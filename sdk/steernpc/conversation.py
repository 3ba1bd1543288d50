"""One turn of a conversation, for the gRPC server and `steernpc chat` alike:

    begin:  resolve the attribute vector -> window the session's history -> build the prompt
            (older turns drop further if the model cannot hold it)
    submit: hand the request to the backend and get its Stream
    finish: record the exchange in the session -> keep it within the session limits -> save

Each step runs once per turn. Both callers go through here, so for the same session
history they send the model byte-identical text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from steernpc.actions import tail_card, tail_grammar
from steernpc.generation.base import Backend, Finished, GenerationRequest, PromptTooLong, SamplingParams, TailRequest
from steernpc.limits import MAX_HISTORY_TURNS, MAX_SNAPSHOT_BYTES
from steernpc.generation.stream import Stream
from steernpc.persona import Persona
from steernpc.prompt import build_prompt, stop_strings, tail_marker
from steernpc.sessions import Session, SessionStore, export_snapshot

# Old turns leave the prompt in blocks of this many, so a long conversation's cached
# prefix stays valid for several turns instead of being recomputed every turn.
HISTORY_STEP = 4


def system_text(persona: Persona, player_name: str = "", context: Mapping[str, str] | None = None,
                tails: bool = False) -> str:  # fmt: skip
    """The persona card, plus who the player is and any game context (kept stable across
    turns so the card's KV cache is shared). With `tails` (a model trained to write the
    structured tail), the character's emotions and actions close it (actions.tail_card)."""
    text = persona.card()
    if player_name:
        text += f"\nThe player is called {player_name}."
    for key, value in sorted((context or {}).items()):
        text += f"\n{key}: {value}"
    if tails:
        text += "\n" + tail_card(persona.tail_spec)
    return text


def sampling_params(persona: Persona, options: Mapping[str, Any] | None = None) -> SamplingParams:
    """The persona's generation settings; options given per request (non-zero) win.
    Not validated here: Backend.submit validates every request's params, first thing."""
    g = persona.generation
    params = SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        repetition_penalty=g.repetition_penalty,
        guidance=g.guidance,
    )
    for key, value in (options or {}).items():
        if value not in (None, 0, 0.0) and hasattr(params, key):
            setattr(params, key, value)
    return params


@dataclass
class Turn:
    """One player line on its way to a reply."""

    session: Session
    user: str
    attributes: dict[str, int]  # the resolved vector the reply is generated under
    request: GenerationRequest


class Conversation:
    """Runs turns on one backend with one prompt format; saves sessions to `store` (None:
    the caller keeps the session, as `steernpc chat` does). `tails`: the model was trained
    to write the structured tail (its model card says so), so each reply asks for one
    unless the request turns it off."""

    def __init__(self, backend: Backend, fmt: str, history_tokens: int = 1024, store: SessionStore | None = None,
                 tails: bool = False):  # fmt: skip
        self.backend = backend
        self.fmt = fmt
        self.history_tokens = history_tokens
        self.store = store
        self.tails = tails

    def begin(
        self,
        persona: Persona,
        session: Session,
        text: str,
        override: Mapping[str, int] | None = None,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        system: str | None = None,
        tail: bool = True,
    ) -> Turn:
        """Resolve, window and build the prompt (raises InvalidAttribute on bad steering,
        ValueError on an empty line, PromptTooLong when even without history the prompt is
        longer than the model holds). `system` replaces the session's system text (a scene
        member's card with the scene's line, steernpc.scene_turns). `tail` False: no
        structured tail for this reply (it has none anyway unless the model writes tails)."""
        if not text or not text.strip():
            raise ValueError("text is empty: say something to the character")
        vector = persona.resolve(mood=session.mood or None, steer=session.steer, override=override)
        history = session.window(self.backend.count_tokens, self.history_tokens, step=HISTORY_STEP)
        tails = self.tails
        if system is None:
            system = system_text(persona, session.player_name, session.context, tails=tails)
        elif tails:
            system += "\n" + tail_card(persona.tail_spec)
        tailed = tails and tail

        def build(history) -> str:
            return build_prompt(self.fmt, system, history, text, vector, persona.schema, self.backend.tokenizer)

        prompt = build(history)
        limit = getattr(self.backend, "max_prompt_tokens", None)
        if limit:
            # The window keeps the newest turn even over its budget; if the model cannot
            # hold the result, the older half of the history drops until it can, so that
            # one long turn never makes every later turn fail.
            tokens = self.backend.count_tokens(prompt)
            while tokens > limit and history:
                history = history[(len(history) + 1) // 2 :]
                prompt = build(history)
                tokens = self.backend.count_tokens(prompt)
            if tokens > limit:
                raise PromptTooLong(tokens, limit)
        request = GenerationRequest(
            prompt, sampling_params(persona, options), stop_strings(self.fmt, self.backend.tokenizer, tail=tailed),
            session.session_id,
        )
        if tailed:
            request.tail = TailRequest(tail_marker(self.fmt), tail_grammar(persona.tail_spec), persona.tail_spec)
        if request.params.guidance != 1.0:
            # the same conversation under the persona's own vector (profile and limits):
            # guidance amplifies how far mood, steer and override move the reply from it
            own = persona.resolve()
            request.guide_prompt = build_prompt(self.fmt, system, history, text, own, persona.schema, self.backend.tokenizer)
        if request_id:
            request.request_id = request_id
        return Turn(session, text, vector, request)

    def submit(self, turn: Turn) -> Stream:
        """Queue the turn's request (raises QueueFull, or ValueError on bad options)."""
        return self.backend.submit(turn.request)

    def finish(self, turn: Turn, final: Finished) -> bool:
        """Record the reply in the session and save it; False when there is nothing to keep."""
        if final.reason == "error" or not final.text:
            return False
        # A cancelled reply's partial text is kept too: the player saw it.
        turn.session.record(turn.user, final.text, turn.attributes)
        keep_within_limits(turn.session)
        if self.store is not None:
            # update, not put: a DeleteSession on another server sharing the store while
            # this reply ran must not be undone by this save
            self.store.update(turn.session)
        return True


def keep_within_limits(session: Session) -> int:
    """Drop the oldest turns until the session holds at most MAX_HISTORY_TURNS and its
    snapshot fits MAX_SNAPSHOT_BYTES (so every stored session exports into a snapshot that
    imports again); the newest turn always stays. Return how many were dropped."""
    dropped = session.trim(MAX_HISTORY_TURNS)
    size = len(export_snapshot(session))
    if size <= MAX_SNAPSHOT_BYTES:
        return dropped
    cut = 0
    while size > MAX_SNAPSHOT_BYTES and cut < len(session.history) - 1:
        ex = session.history[cut]
        size -= len(ex.user.encode()) + len((ex.reply or "").encode())  # labels: a few bytes, not counted
        cut += 1
    return dropped + session.trim(len(session.history) - cut)
