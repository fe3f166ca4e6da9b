"""The ``seas`` command: a thin layer that parses options, builds configs and calls the library.

Each subcommand module registers its parsers (``add_parsers``) and runs them (``cmd_*``).
User mistakes (bad data, bad options, wrong folders) print one line ``error: ...`` and exit 2;
so does an output that cannot be written (full disk, read-only folder).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from seas.cli import data, demo, evaluate, generate, review, tools, train
from seas.errors import SeasError

SUBCOMMANDS = (data, train, generate, evaluate, review, demo, tools)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seas", description="SeaS: few-shot anomaly image generation with masks.")
    parser.add_argument("--version", action="version", version=f"seas {__import__('seas').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parsers(sub)
    return parser


# Failures of a write (the writers name the output path; temporaries are already removed).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def main(argv: list[str] | None = None) -> int:
    # Keep library progress bars and advice out of the user's terminal (read at their import).
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SeasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRNOS or err.filename is None:
            raise
        print(f"error: cannot write {err.filename}: {err.strerror}; free space or choose another --out", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
