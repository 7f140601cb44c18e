"""The ``hands3c`` command line (also ``python -m handS3C``).

One entry point with subcommands, in the style of ``git`` or ``torchrun``: each subcommand lives
in its own module of this package and exposes ``add_parser(subparsers)``, which adds its
``argparse`` parser and sets ``func`` (called with the parsed namespace, returning an exit
status).  Subcommands import the heavy parts of the package lazily, inside ``func``, so that
``hands3c --help`` answers at once.

Errors a user can fix (a missing file, a bad flag value) are raised as :class:`CLIError` or as
the package's own ``ValueError``/``FileNotFoundError``; :func:`main` prints them as one line
``hands3c <cmd>: error: ...`` and exits with status 2 (usage) or 1 (anything else), never with
a traceback unless ``HANDS3C_TRACEBACK=1`` is set.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional, Sequence

# Subcommand modules, in the order ``--help`` lists them.  Each is ``handS3C.cli.<module>``.
SUBCOMMAND_MODULES: List[str] = ["train", "evaluate", "predict", "export_onnx", "make_synthetic", "info"]


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hands3c",
        description="HandS3C: 3-D hand mesh reconstruction with fused state-space kernels. "
                    "Run 'hands3c <command> --help' for the options of one command.",
    )
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__
        print(f"hands3c {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"hands3c {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError) as exc:
        if os.environ.get("HANDS3C_TRACEBACK") == "1":
            raise
        print(f"hands3c {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CLIError) else 1
    return int(status or 0)


__all__ = ["main", "build_parser", "CLIError", "SUBCOMMAND_MODULES"]
