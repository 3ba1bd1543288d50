"""`steernpc serve` (being written)."""


def add_serve_arguments(parser):
    return parser


def run_serve(args) -> int:
    raise SystemExit("steernpc serve: not implemented yet")
