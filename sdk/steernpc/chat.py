"""`steernpc chat` (being written)."""


def add_chat_arguments(parser):
    parser.add_argument("--persona", required=True)
    return parser


def run_chat(args) -> int:
    raise SystemExit("steernpc chat: not implemented yet")
