"""Which folders a training stage may write into, and how it starts one.

A stage writes ``<stage>-state.json`` (its resolved config) when it starts and a marker file
when it finishes. Every process checks the folder before anything is written; then only the
main process removes leftover temporaries and writes the state file.
"""

from __future__ import annotations

from pathlib import Path

from seas.errors import ConfigError, RunError
from seas.files.atomic import read_json, remove_path, remove_temporaries, write_json
from seas.files.checks import path_size
from seas.training.checkpoints import CHECKPOINTS, check_resume_path, checkpoint_dirs, config_changes
from seas.weights import SHIPPED_BASES, SHIPPED_DIR, shipped_base


def check_run_folder(run: Path, stage: str, marker: str, config: dict, resume: str | None, overwrite: bool,
                     allowed: set[str] | None = None, option: str = "--out") -> None:
    """Refuse ``run`` for this stage; every process calls it before anything is written.

    * not a folder, or (given ``allowed``) holding other names than ``allowed``: not ours;
    * finished stage (``marker`` exists): refused unless ``overwrite``;
    * unfinished stage: refused unless ``resume`` (then the config must match) or ``overwrite``;
    * ``--resume PATH``: a checkpoint folder taken with the same config.
    """
    state_file = run / f"{stage}-state.json"
    if run.exists() and not run.is_dir():
        raise RunError(f"{option} {run}: exists and is not a folder; choose a new folder")
    if (run / marker).exists() and not overwrite:
        raise RunError(f"{option} {run}: holds a finished {stage} run; choose another {option} or pass --overwrite")
    if allowed is not None and run.is_dir():
        foreign = sorted(p.name for p in run.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            raise RunError(f"{option} {run}: not empty and not a SeaS {stage} run (holds {', '.join(foreign[:3])}); "
                           f"choose a new folder")
    if not overwrite and state_file.exists():
        if resume is None:
            raise RunError(f"{option} {run}: holds an unfinished {stage} run; pass --resume latest to continue it "
                           f"or --overwrite")
        changes = config_changes(read_json(state_file)["config"], config)
        if changes:
            raise RunError(f"--resume {resume}: {run} was started with other options ({'; '.join(changes)}); "
                           f"repeat the original options or choose another {option}")
    if resume not in (None, "latest"):
        check_resume_path(resume, run, config)


def start_run_folder(accelerator, run: Path, stage: str, marker: str, config: dict, overwrite: bool) -> None:
    """Once every process has checked the folder: the main process removes leftover
    temporaries (and, with ``overwrite``, the stage's checkpoints, state and marker) and
    writes the state file."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        remove_temporaries(run, run / CHECKPOINTS)
        state_file = run / f"{stage}-state.json"
        if overwrite:
            for path in [*checkpoint_dirs(run, stage), run / marker, state_file]:
                remove_path(path)
        write_json(state_file, {"stage": stage, "config": config})
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- checks before work

TINY = "tiny"
UNKNOWN_BASE_BYTES = 2 * 2**30  # a hub id: SD 1.x in half precision, the smallest it comes in
SD_SIZED = 2**30  # a base this large is costed with the SD-1.x table below


def check_base(base: str | None) -> None:
    """Refuse a missing ``--base`` or one that names a local path that does not exist (the
    rest of what a base must be is checked when it is loaded, before anything is written)."""
    if base is None:
        raise ConfigError("--base is required: a diffusers SD 1.x folder, a .safetensors/.ckpt file, a hub id, "
                          "'seas-tiny' (the small pretrained base shipped with seas) or 'tiny' (random, for tests)")
    if base in SHIPPED_BASES:
        shipped_base(base)  # verified now: a damaged installation is said before any work
        return
    path = Path(base).expanduser()
    local = base.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".ckpt")
    if base != TINY and local and not path.exists():
        raise ConfigError(f"--base {base}: not found; give an existing diffusers folder or .safetensors/.ckpt file, "
                          "a hub id, or 'tiny'")


def base_bytes(base: str | None) -> int:
    """Rough size of a base model's weights: its files when local, else a guess (hub id)."""
    if base is None or base == TINY:
        return 0
    path = SHIPPED_DIR / base if base in SHIPPED_BASES else Path(base).expanduser()
    return path_size(path) if path.exists() else UNKNOWN_BASE_BYTES


def training_bytes(base: str | None) -> int:
    """Free space a stage-1 run needs, roughly: the export (about the base's size) and one
    checkpoint (U-Net and text encoder with AdamW's two states: about 3x), plus logs."""
    return 4 * base_bytes(base) + 16 * 2**20


def cpu_seconds_per_update(resolution: int, batch_size: int, grad_accum: int) -> float:
    """Seconds of one stage-1 update of an SD-1.x-sized base on a CPU: docs/RELIABILITY.md.

    Per micro-batch of 2 anomaly + 2 normal images, about 4 s + 25 s x (resolution / 256)^2
    (measured 11 s at 128 px and 29 s at 256 px on the project's 2-core CPU, docs/PERFORMANCE.md).
    """
    return grad_accum * batch_size / 2 * (4.0 + 25.0 * (resolution / 256) ** 2)


def cpu_duration_note(base: str | None, resolution: int, batch_size: int, grad_accum: int, updates: int,
                      min_updates: int = 100, min_resolution: int = 256) -> str | None:
    """The line printed before a long stage 1 on a CPU, or ``None`` (GPU, short run, small base)."""
    import torch

    if torch.cuda.is_available() or updates <= min_updates or resolution < min_resolution:
        return None
    if base_bytes(base) < SD_SIZED:
        return None
    hours = updates * cpu_seconds_per_update(resolution, batch_size, grad_accum) / 3600
    return (f"note: stage 1 runs {updates} updates at {resolution} px on a CPU: about {hours:.0f} hours for an "
            f"SD-1.x-sized base on this project's 2-core CPU (docs/RELIABILITY.md); use --steps/--resolution "
            "or a GPU")
