"""The ``dynzoo`` command. ``COMMANDS`` names each sub-command's module, whose ``add_commands(subparsers)``
adds it (and its siblings in that module); a sub-command sets ``func(args) -> int`` as its default.

A command's module is imported only when that command runs, and the package's Keras API only for the
commands that need TensorFlow: ``dynzoo --help``, ``dynzoo --version`` and ``dynzoo serve-demo`` start
without it (see ``dynzoo/__init__.py``).

Flags are spelled with hyphens (``--input-size``); the underscore spellings (``--input_size``) are accepted
too, by :func:`hyphenate_flags`, and not shown in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command: (the module whose add_commands() defines it, its line in `dynzoo --help`)
COMMANDS = {
    "train": ("dynzoo.train.cli", "train a model with a paper's recipe (absl flags; `dynzoo train --help`)"),
    "eval": ("dynzoo.train.evaluate", "top-1/top-5 of a Keras model or a .tflite on a dataset"),
    "quickstart": (
        "dynzoo.quickstart",
        "train MicroNet-M0 on the offline digits, export float32/int8 bundles, compare",
    ),
    "list": ("dynzoo.profile_cli", "list the registered models"),
    "profile": ("dynzoo.profile_cli", "parameters and MAdds per layer of registered models"),
    "weights": ("dynzoo.weights.cli", "pretrained weights: list, download, convert, publish, pin"),
    "export": ("dynzoo.export.cli", "convert a model to TFLite (builtin ops only) in one or more modes"),
    "bench": ("dynzoo.export.cli", "TFLite latency of models and modes, beside keras.applications baselines"),
    "serve-demo": ("dynzoo.serve_demo", "serve the web demo and a folder of bundles on 127.0.0.1"),
}
WITHOUT_TENSORFLOW = {"serve-demo"}  # commands that run without the package's Keras API


def hyphenate_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with each long option's name spelled with hyphens: ``--input_size=32`` → ``--input-size=32``.
    Values and everything after a lone ``--`` are left as they are. The one place where the ``dynzoo``
    command (and the benchmark scripts) accept the underscore spellings."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            out[i] = "--" + name.replace("_", "-") + eq + value
    return out


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``dynzoo COMMAND``: with a known ``command``, that command's module adds its real
    sub-parsers; without one, each command is a one-line stub (enough for ``dynzoo --help``)."""
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
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).add_commands(subparsers)
    else:
        for name, (_, help_line) in COMMANDS.items():
            subparsers.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = hyphenate_flags(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # the global options take no value
    if command in COMMANDS and command not in WITHOUT_TENSORFLOW:
        import dynzoo

        dynzoo.load_api()  # before the command's module: TensorFlow's import stays quiet (dynzoo.logs)
    parser = build_parser(command)
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
