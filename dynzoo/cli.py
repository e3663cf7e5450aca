"""The ``dynzoo`` command. Each feature adds its sub-commands through an ``add_commands(subparsers)``
function listed in ``COMMAND_MODULES``; a sub-command sets ``func(args) -> int`` as its default."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "dynzoo.train.cli",
    "dynzoo.train.evaluate",
    "dynzoo.quickstart",
    "dynzoo.profile_cli",
    "dynzoo.weights.cli",
    "dynzoo.export.cli",
    "dynzoo.serve_demo",
]


def build_parser() -> argparse.ArgumentParser:
    from dynzoo import __version__

    parser = argparse.ArgumentParser(
        prog="dynzoo", description="Dynamic convolutional networks for Keras 3, from the papers to the phone."
    )
    parser.add_argument("--version", action="version", version=f"dynzoo {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and LiteRT's native log lines (hidden by default; also "
        "DYNZOO_VERBOSE=1); the first argument when given",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A sub-command that sets `forward_arguments` (``dynzoo train``) receives its arguments unparsed.
    args, forwarded = parser.parse_known_args(argv)
    if forwarded and not getattr(args, "forward_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(forwarded)}")
    args.forwarded = forwarded
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"dynzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
