"""The ``seas`` command: a thin layer that parses options, builds configs and calls the library.

Each subcommand module registers its parsers (``add_parsers``) and runs them (``cmd_*``).
User mistakes (bad data, bad options, wrong folders) print one line ``error: ...`` and exit 2;
so does an output that cannot be written (full disk, read-only folder).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from seas.cli import augment, data, demo, evaluate, generate, review, tools, train
from seas.errors import SeasError

SUBCOMMANDS = (data, train, generate, augment, evaluate, review, demo, tools)


class Parser(argparse.ArgumentParser):
    """argparse with seas's way of saying a mistake: one line ``error: seas CMD: ...`` naming the
    option and where the help is, not the whole usage (exit code 2, as argparse's)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="seas", description="SeaS: few-shot anomaly image generation with masks.")
    parser.add_argument("--version", action="version", version=f"seas {__import__('seas').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parsers(sub)
    return parser


# Failures of a write (the writers name the output path; temporaries are already removed).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def may_download(args) -> bool:
    """Whether the command may have to download from the Hugging Face hub: it names a base (``--base``,
    ``--base-config``, or ``train: base:`` of its ``--config`` file) that is neither a local path nor a
    name seas resolves itself, or a single-file base without a local config folder."""
    from pathlib import Path

    values = [getattr(args, "base", None), getattr(args, "base_config", None)]
    if getattr(args, "config", None):
        try:
            from seas.config import read_config_file

            values += [read_config_file(args.config, "train").get(k) for k in ("base", "base_config")]
        except (SeasError, AttributeError):
            pass  # the command says what is wrong with the file
    values = [v for v in values if isinstance(v, str) and v]

    def local(value: str) -> bool:
        return (value in ("tiny", "seas-tiny") or value.startswith((".", "/", "~"))
                or Path(value).expanduser().exists())

    single_file = any(Path(v).suffix in (".safetensors", ".ckpt") for v in values)
    configs = [v for v in values if Path(v).suffix not in (".safetensors", ".ckpt")]
    return any(not local(v) for v in configs) or (single_file and not configs)


def interrupted(args) -> str:
    """The line said when the user stops a command (Ctrl-C): what is kept and how to go on."""
    from seas.run import RunFolder

    command = args.command
    if command in ("train", "train-mask"):
        folder = RunFolder(args.out if command == "train" else args.run)
        stage = "generator" if command == "train" else "mask"
        saved = folder.checkpoint_dirs(stage)
        kept = (f"{folder.path} keeps its checkpoints (the last: {saved[-1].name})" if saved
                else f"{folder.path} holds no checkpoint yet")
        return f"{kept}; run the same command with --resume latest to continue (from update 0 without a checkpoint)"
    if command == "generate":
        return "the outputs finished so far are kept; run the same command to generate the rest"
    if command == "demo":
        return f"run the same command to start the demo again in {args.out} (it replaces only what it wrote there)"
    if command == "weights":
        return "nothing was stored and the partial download is removed; run the same command again"
    return "nothing was finished; run the same command again"


def main(argv: list[str] | None = None) -> int:
    # Keep library progress bars and advice out of the user's terminal (read at their import).
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    # bitsandbytes (the 8-bit AdamW extra) and its `kernels` loader warn at import, on every
    # command, that an optional CPU kernel could not be fetched from the hub; seas uses none
    for noisy in ("bitsandbytes", "kernels"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    if not may_download(args):
        # nothing to fetch: no hub lookups at all (as 'make demo' runs it); HF_HUB_OFFLINE=0 overrides
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {interrupted(args)}", file=sys.stderr)
        return 130
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
