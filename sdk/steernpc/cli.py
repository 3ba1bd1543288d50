"""The `steernpc` command. Each subcommand lives in a small function. Other installed
packages add subcommands through the `steernpc.commands` entry point group (the training
toolkit adds data, train, annotate and eval); this module imports none of them."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from steernpc.attributes import InvalidAttribute, parse_pairs
from steernpc.persona import PersonaError, load_persona, load_personas
from steernpc.prompt import FORMATS, Exchange, build_prompt, stop_strings


def cmd_validate(args: argparse.Namespace) -> int:
    personas, problems = load_personas(args.paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s); {len(personas)} valid persona(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(personas)} persona(s) valid ({', '.join(sorted(personas))})", file=sys.stderr)
    return 0


def _attr_overrides(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        out.update(parse_pairs(item, "--attr"))
    return out


def cmd_render(args: argparse.Namespace) -> int:
    persona = load_persona(args.persona)
    vector = persona.resolve(mood=args.mood, override=_attr_overrides(args.attr))
    if args.format is None:
        from steernpc.runtime_defaults import default_adapter, model_format

        args.format = model_format(args.model, default_adapter(args.model))
    tokenizer = None
    if args.format == "chat":
        from steernpc import models

        tokenizer = models.load_tokenizer(args.model)
    text = build_prompt(args.format, persona.card(), [], args.say, vector, persona.schema, tokenizer)
    sys.stdout.write(text)
    if args.show_stops:
        print(f"\n--- stop strings: {stop_strings(args.format, tokenizer)}", file=sys.stderr)
    return 0


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from steernpc import models

    print(models.prepare(args.name, force=args.force))
    return 0


def cmd_model_random(args: argparse.Namespace) -> int:
    from steernpc import models

    print(models.random_model(args.out, full_size=args.full_size, layers=args.layers, hidden=args.hidden, seed=args.seed))
    return 0


def cmd_model_path(args: argparse.Namespace) -> int:
    from steernpc import models

    print(models.resolve(args.name))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from steernpc.chat import run_chat

    return run_chat(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from steernpc.server.serve import run_serve

    return run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steernpc", description="Steerable NPC dialogue (SteerLM) for game engines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("validate", help="check persona files; prints FILE:LINE: message per problem")
    p.add_argument("paths", nargs="+", help="persona files or folders")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="print exactly the prompt the model would see")
    p.add_argument("--persona", required=True, help="persona YAML file")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="prompt format (default: what `steernpc serve` would use for --model: its adapter's or card's, else chat)")
    p.add_argument("--say", required=True, help="the player's line")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE", help="per-reply override (repeatable)")
    p.add_argument("--mood", help="one of the persona's moods")
    p.add_argument("--model", default=None, help="model whose chat template to use (chat format)")
    p.add_argument("--show-stops", action="store_true", help="also print the stop strings (to stderr)")
    p.set_defaults(func=cmd_render)

    model = sub.add_parser("model", help="prepare and locate base models").add_subparsers(dest="model_command", metavar="ACTION")
    model.required = True
    p = model.add_parser("prepare", help="convert the bundled SmolLM2 GGUF into an HF folder (once)")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--force", action="store_true", help="convert again even if prepared")
    p.set_defaults(func=cmd_model_prepare)
    p = model.add_parser("random", help="write a random-weight Llama with SmolLM2's tokenizer (tests, GPU checks)")
    p.add_argument("--out", required=True)
    p.add_argument("--full-size", action="store_true", help="SmolLM2-135M's exact shape")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_model_random)
    p = model.add_parser("path", help="print where a model spec resolves to")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=cmd_model_path)

    from steernpc.chat import add_chat_arguments
    from steernpc.server.serve import add_serve_arguments

    add_chat_arguments(sub.add_parser("chat", help="talk to a persona in the terminal")).set_defaults(func=cmd_chat)
    add_serve_arguments(sub.add_parser("serve", help="serve personas over gRPC (--studio-port: also the web studio)")).set_defaults(func=cmd_serve)
    add_serve_arguments(
        sub.add_parser("studio", help="the web studio (sliders, chat, compare, persona editor) plus gRPC, from one process",
                       description="Serve the studio page and its HTTP/SSE API on --host:--port (127.0.0.1:8765), and "
                       "the gRPC runtime on --grpc-host:--grpc-port, with one model and one set of sessions."),
        studio=True,
    ).set_defaults(func=cmd_serve)

    if not add_plugin_commands(sub):
        add_missing_training(sub)
    from steernpc.export.compile import register_compile

    register_compile(sub)
    return parser


# -- commands from other packages ---------------------------------------------------------------

COMMANDS_GROUP = "steernpc.commands"
TRAINING_COMMANDS = ("data", "train", "annotate", "eval")  # what the training toolkit adds


def add_plugin_commands(sub: argparse._SubParsersAction) -> bool:
    """Let each `steernpc.commands` entry point (a `register(subparsers)` function) add its
    subcommands. Returns whether the training commands are there."""
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError:  # registered in the metadata but not importable: treat as absent
            continue
        register(sub)
    return all(name in sub.choices for name in TRAINING_COMMANDS)


def add_missing_training(sub: argparse._SubParsersAction) -> None:
    """Stand-ins for the training commands that say what to install."""
    for name in TRAINING_COMMANDS:
        if name not in sub.choices:
            # No option prefix: every argument, --help included, lands in `rest`.
            p = sub.add_parser(name, help="(needs the training toolkit: pip install 'steernpc[train]')",
                               add_help=False, prefix_chars="\0")  # fmt: skip
            p.add_argument("rest", nargs="*")
            p.set_defaults(func=cmd_missing_training, command=name)


def cmd_missing_training(args: argparse.Namespace) -> int:
    print(f"steernpc: error: `steernpc {args.command}` needs the training toolkit, "
          "which is not installed: pip install 'steernpc[train]'", file=sys.stderr)  # fmt: skip
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PersonaError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (InvalidAttribute, FileNotFoundError, ValueError) as exc:
        print(f"steernpc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
