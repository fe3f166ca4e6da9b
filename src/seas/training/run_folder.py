"""Which folders a training stage may write into, and how it starts one.

A stage writes ``<stage>-state.json`` (its resolved config) when it starts and a marker file
when it finishes. Every process checks the folder before anything is written; then only the
main process removes leftover temporaries and writes the state file.
"""

from __future__ import annotations

from pathlib import Path

from seas.errors import RunError
from seas.files.atomic import read_json, remove_path, remove_temporaries, write_json
from seas.training.checkpoints import CHECKPOINTS, check_resume_path, checkpoint_dirs, config_changes


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
