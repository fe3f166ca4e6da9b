"""Options shared by several subcommands: the dataset, the run configuration, the processes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seas.data.config import DataConfig
from seas.errors import SeasError


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--data`` and the dataset fields (docs/DATA.md); the folder layout's globs by hand."""
    g = p.add_argument_group("data (see docs/DATA.md)")
    g.add_argument("--data", required=required, help="dataset root folder, or a YAML dataset description (.yaml/.yml)")
    g.add_argument("--normal", action="append", default=None, metavar="GLOB", help="folder layout: normal images (repeatable)")
    g.add_argument("--normal-test", action="append", default=None, metavar="GLOB",
                   help="folder layout: normal test images (default: the last third of --normal, sorted)")
    g.add_argument("--anomaly", action="append", default=None, metavar="TYPE=GLOB",
                   help="folder layout: anomaly images of one type (repeatable)")
    DataConfig.add_arguments(g, exclude=("root", "normal_test_fraction"))


def data_config(args) -> DataConfig:
    """The DataConfig of ``--data`` (a folder, or a YAML description) and the options given.

    Where a command has them, ``--reference`` (the reference's geometry and colour: ``fit: crop``,
    ``channels: rgb``) and the ``data:`` section of ``--config`` come first; the dataset
    description and the options given win over them.
    """
    from seas.config import REFERENCE, read_config_file

    base = dict(REFERENCE["data"]) if getattr(args, "reference", False) else {}
    if getattr(args, "config", None):
        base.update(read_config_file(args.config, "data"))
    given = DataConfig.given(args)
    if args.anomaly:
        anomalies: dict[str, list[str]] = {}
        for item in args.anomaly:
            kind, sep, pattern = item.partition("=")
            if not sep or not kind or not pattern:
                raise SeasError(f"--anomaly {item!r}: write TYPE=GLOB, e.g. --anomaly scratch='scratch/*.png'")
            anomalies.setdefault(kind, []).append(pattern)
        given["anomalies"] = anomalies
    for name in ("normal", "normal_test"):
        if getattr(args, name):
            given[name] = getattr(args, name)
    if Path(args.data).suffix in (".yaml", ".yml"):
        return DataConfig.from_yaml(args.data, defaults=base, **given)
    return DataConfig.from_dict({"root": args.data, **base, **given})


class _Deprecated(argparse.Action):
    """An old option name: says so on stderr, then sets the new option's value."""

    def __init__(self, option_strings, dest, new: str, value=None, **kwargs):
        self.new, self.value = new, value
        super().__init__(option_strings, dest, nargs=0 if value is not None else None, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and will be removed; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.value if self.value is not None else values)


def add_deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, value=None, type=None) -> None:
    """Accept ``old`` (hidden from --help) as ``new`` with a deprecation line; ``value``: the
    constant a flag without argument sets (``--no-x`` -> False)."""
    kwargs = {"type": type} if type is not None else {}
    p.add_argument(old, action=_Deprecated, dest=dest, new=new, value=value, default=None, **kwargs)


def add_run_config_args(p: argparse.ArgumentParser, profile_help: str) -> None:
    """``--config``, ``--reference`` and ``--profile`` (train, train-mask, generate)."""
    from seas.config import PROFILES

    g = p.add_argument_group("where settings come from (last wins: defaults < --profile < --reference < "
                             "--config < options)")
    g.add_argument("--config", default=None, metavar="RUN.yaml",
                   help="run-configuration file with sections train:, mask:, generate: (any field of "
                        "docs/TRAINING.md and docs/GENERATION.md)")
    g.add_argument("--reference", action="store_true",
                   help="every behaviour of the authors' release at once (docs/TRAINING.md, 'The reference switch')")
    g.add_argument("--profile", choices=PROFILES, default="default", help=profile_help)


def resolve_config(cls, args, defaults: dict | None = None):
    """``cls`` (a config of :mod:`seas.config`) from ``defaults`` (a profile's switches),
    ``--reference``, ``--config`` and the options given, last wins."""
    from seas.config import REFERENCE, read_config_file

    values = dict(defaults or {})
    if args.reference:
        values.update(REFERENCE[cls.section])
    if args.config:
        values.update(read_config_file(args.config, cls.section))
    values.update(cls.given(args))
    return cls.from_dict(values, where=args.config or "")


def sampling_processes(device: str | None):
    """The process state and device of a sampling command (``seas generate``, ``seas augment``),
    one process or several under torchrun / accelerate launch: ``(PartialState, device)``."""
    import torch
    from accelerate import PartialState

    # On a machine without a GPU, cpu=True lets torchrun's processes find each other (gloo).
    state = PartialState(cpu=device == "cpu" or (device is None and not torch.cuda.is_available()))
    # One GPU per process under torchrun / accelerate. A distributed CPU state says "cpu:0",
    # which takes other kernels than "cpu": plain "cpu" keeps the outputs of one process.
    return state, device or ("cpu" if state.device.type == "cpu" else str(state.device))


def main_process() -> bool:
    """True in a single process, and in process 0 under torchrun / accelerate launch (the
    launch as accelerate sees it, as in ``seas generate``)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def device_problem(device: str | None, option: str = "--device") -> str | None:
    """What stops ``device`` (a torch device string; ``None`` and ``auto`` choose one) on this
    machine: not a device name, a CUDA device without CUDA or beyond the GPUs there are, MPS
    without MPS. Said before any model is loaded."""
    import torch

    if device in (None, "auto"):
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return f"{option} {device}: not a torch device; use cpu, cuda, cuda:N or leave {option} out"
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            why = "this torch has no CUDA support" if torch.version.cuda is None else "torch finds no CUDA GPU"
            return f"{option} {device}: no CUDA GPU on this machine ({why}); use --device cpu or leave {option} out"
        if dev.index is not None and dev.index >= count:
            return (f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; choose "
                    f"one of them or leave {option} out")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            return f"{option} {device}: no MPS device on this machine; use --device cpu or leave {option} out"
    elif dev.type != "cpu":
        return f"{option} {device}: device type {dev.type} is not supported by seas; use cpu, cuda or cuda:N"
    return None


def run_dataset_problems(run, out, option: str = "--out") -> list[str]:
    """``out`` against the dataset ``run`` was trained on (its recorded data): a command that
    reads a run never writes into the data it reads."""
    from seas.data.readers import dataset_folder
    from seas.files.checks import nested_problems

    return nested_problems(out, dataset_folder(run.data), option=option,
                           dataset=f"{dataset_folder(run.data)} (the data of --run {run.path})")


EVALUATION_BYTES = 64 * 2**20  # metrics.json and report.html with its image grids: rough
MASK_HEAD_BYTES = 256 * 2**20  # the mask head, two checkpoints of it with AdamW states, logs: rough


def check_run_inputs(run_dir, out, needed_bytes: int, whole_split: bool, option: str = "--out",
                     device: str | None = None) -> None:
    """Every problem of a command that reads a finished run, in one list, before its work: the
    run record, the images and masks it will decode (the training split, or ``whole_split``
    with the held-out test split too, which must then hold anomaly images), ``out`` (outside the
    run's dataset, writable, with ``needed_bytes`` free) and ``device``. Writes nothing."""
    from seas.data.split import check_samples, held_out_anomaly_problem, split_samples_used, train_samples
    from seas.files.checks import ProblemList, output_folder_problems
    from seas.run import Run

    problems = ProblemList()
    run = None
    with problems.collect():
        run = Run.load(run_dir, verify=False)
    if run is not None:
        samples = split_samples_used(run.split) if whole_split else train_samples(run.split)
        check_samples(samples, run.mask_rule, problems)
        if whole_split:
            problems.extend(filter(None, [held_out_anomaly_problem(
                run.split, f"--run {run.path}", "nothing can be evaluated; train a run on a dataset with at least "
                "2 images per anomaly type (or a lower --train-per-type)")]))
        problems.extend(run_dataset_problems(run, out, option))
    if run is not None or Path(out) != Path(run_dir):  # without a run, its own folder says nothing more
        problems.extend(output_folder_problems(out, needed_bytes, option=option))
    problems.extend(filter(None, [device_problem(device)]))
    problems.raise_any()


def check_evaluate_inputs(run_dir, out, device: str | None = None) -> None:
    """``seas evaluate``'s checks before any segmenter trains: the whole split (the evaluation
    tests on the held-out part, which must hold anomaly images), ``out`` and ``--device``."""
    check_run_inputs(run_dir, out, EVALUATION_BYTES, whole_split=True, device=device)
