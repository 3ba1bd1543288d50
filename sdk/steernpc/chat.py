"""`steernpc chat --persona FILE`: talk to one character in the terminal.

Replies stream as they are generated. Commands steer the character between lines:
/set NAME VALUE, /mood NAME, /attrs, /reset, /quit (and /help).
"""

from __future__ import annotations

import argparse
import sys

from steernpc.attributes import InvalidAttribute, parse_pairs
from steernpc.conversation import Conversation
from steernpc.generation.base import Delta
from steernpc.persona import Persona, load_persona
from steernpc.prompt import FORMATS
from steernpc.sessions import Session

# The chat's one session; its id is also the backend's cache key.
CHAT_SESSION_ID = "chat"

HELP = """commands:
  /set NAME VALUE   steer one attribute for the rest of the chat (e.g. /set humor 4)
  /unset NAME       drop that steer again
  /mood NAME        switch mood (/mood none to clear)
  /attrs            show the attribute vector the next reply will use
  /reset            forget the conversation and all steering
  /quit             leave"""


def add_chat_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--persona", required=True, help="persona YAML file")
    parser.add_argument("--model", default=None, help="HF folder, .gguf or prepared name (default: smollm2)")
    parser.add_argument("--adapter", default=None, help="PEFT LoRA adapter folder (default: the sample adapter if present)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="prompt format (default: the model's, else chat)")
    parser.add_argument("--mood", default=None, help="start in this mood")
    parser.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE", help="initial steer (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed for reproducible replies")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--history-tokens", type=int, default=1024, help="token budget for past turns")
    return parser


def run_command(persona: Persona, session: Session, line: str) -> str | None:
    """Apply a /command to the chat's session; return a message to print, or None to quit."""
    parts = line.split()
    name, args = parts[0].lower(), parts[1:]
    schema = persona.schema
    if name in ("/quit", "/exit"):
        return None
    if name == "/help":
        return HELP
    if name == "/attrs":
        vector = persona.resolve(mood=session.mood or None, steer=session.steer)
        return f"mood: {session.mood or 'none'}  steer: {session.steer or '{}'}\nnext reply: {schema.encode(vector)}"
    if name == "/reset":
        session.history.clear()
        session.apply_steer(clear=True)
        return "conversation and steering reset"
    if name == "/set":
        if len(args) != 2:
            return f"usage: /set NAME VALUE  (attributes: {', '.join(f'{s.name} {s.range_text}' for s in schema.specs)})"
        try:
            value = int(args[1])
        except ValueError:
            return f"/set: {args[1]!r} is not an integer; {args[0]} takes {schema[args[0]].range_text if args[0] in schema else 'an integer'}"
        try:
            schema.check(args[0], value, args[0])
        except InvalidAttribute as exc:
            return f"/set: {exc}"
        session.apply_steer(attributes={args[0]: value})
        return f"{args[0]} = {value}"
    if name == "/unset":
        if len(args) != 1 or args[0] not in session.steer:
            return f"usage: /unset NAME  (steered now: {', '.join(session.steer) or 'none'})"
        del session.steer[args[0]]
        session.touch()
        return f"{args[0]} back to the persona's value"
    if name == "/mood":
        moods = ", ".join(sorted(persona.moods)) or "none defined"
        if len(args) != 1:
            return f"usage: /mood NAME  (moods: {moods}; /mood none clears)"
        if args[0] in ("none", "-"):
            session.mood = ""
            session.touch()
            return "mood cleared"
        if args[0] not in persona.moods:
            return f"/mood: {persona.id} has no mood {args[0]!r}; moods: {moods}"
        session.apply_steer(mood=args[0])
        return f"mood: {args[0]}"
    return f"unknown command {name}\n{HELP}"


def run_chat(args: argparse.Namespace) -> int:
    from steernpc.generation import create_backend
    from steernpc.runtime_defaults import default_adapter, model_format

    persona = load_persona(args.persona)
    steer = {}
    for item in args.attr:
        steer.update(parse_pairs(item, "--attr"))
    persona.resolve(mood=args.mood, steer=steer)  # fail fast on bad flags
    # The same Session and Conversation the server runs, so chat sends the same prompts.
    session = Session.new(persona.id, CHAT_SESSION_ID, mood=args.mood or "", steer=steer)

    adapter = args.adapter if args.adapter is not None else default_adapter(args.model)
    print(f"loading model{' + adapter ' + str(adapter) if adapter else ''} ...", file=sys.stderr, flush=True)
    backend = create_backend("torch", model=args.model, adapter=adapter)
    conversation = Conversation(backend, args.format or model_format(args.model, adapter), args.history_tokens)
    options = {"seed": args.seed, "max_new_tokens": args.max_new_tokens}
    out = sys.stdout
    out.write(f"Talking to {persona.name} ({persona.role}). /help for commands, /quit to leave.\n")
    if persona.greeting:
        out.write(f"{persona.name}: {persona.greeting}\n")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                message = run_command(persona, session, line)
                if message is None:
                    break
                out.write(message + "\n")
                continue
            turn = conversation.begin(persona, session, line, options=options)
            stream = conversation.submit(turn)
            out.write(f"{persona.name}: ")
            out.flush()
            final = None
            for event in stream:
                if isinstance(event, Delta):
                    out.write(event.text)
                    out.flush()
                else:
                    final = event
            out.write("\n")
            conversation.finish(turn, final)
    finally:
        backend.close()
    return 0
