"""Checkpoints of a training stage: atomic, verified, rotated, and resumed.

``<run>/checkpoints/<stage>-NNNNNN`` holds accelerate's state (models, optimizer, random
states) and ``seas_step.json``: the step, the stage's config, and the size and SHA-256 of each
file. On resume a checkpoint that fails that check, or fails to load, is skipped in favour of
the previous one, with a message; one taken with another configuration is refused with the
options that differ.

Several processes: each writes its own random-state file into the temporary folder, with
barriers before the main process adds the metadata and renames it.
"""

from __future__ import annotations

import json
from pathlib import Path

from seas.errors import RunError
from seas.files.atomic import check_file_table, file_table, remove_path, replace_dir, write_errors
from seas.run import RunFolder, config_changes

CHECKPOINT_META = "seas_step.json"


def save_checkpoint(accelerator, run: Path, stage: str, step: int, keep: int) -> Path:
    """Save the accelerate state at ``step`` atomically, then keep only the newest ``keep``.

    Every process writes its random state into the temporary folder; after a barrier the
    main process adds ``seas_step.json`` (step, the stage's config, size and SHA-256 of each
    file) and renames the folder.
    """
    run = RunFolder(run)
    folder = run.checkpoints
    final = run.checkpoint(stage, step)
    tmp = folder / f".tmp-{final.name}"
    main = accelerator.is_main_process
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        remove_path(tmp)
    accelerator.wait_for_everyone()
    with write_errors(final, tmp if main else None):
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if main:
        config = run.stage_config(stage)
        with write_errors(final, tmp):
            meta = {"step": step, "config": config, "files": file_table(tmp)}
            (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, final)
        for old in run.checkpoint_dirs(stage)[:-keep]:
            remove_path(old)
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(path: Path) -> dict:
    """The metadata of checkpoint ``path`` once each listed file has its recorded size and
    SHA-256; a RunError saying what is wrong (missing, truncated or altered file) otherwise."""
    meta_path = path / CHECKPOINT_META
    try:
        meta = json.loads(meta_path.read_text())
        step, config, files = int(meta["step"]), dict(meta["config"]), dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{meta_path.name} unreadable: {type(err).__name__}") from None
    problem = check_file_table(path, files)
    if problem:
        raise RunError(problem)
    return {"step": step, "config": config}


def resume_checkpoint(accelerator, run: Path, stage: str, resume: str) -> int:
    """Load ``resume`` ("latest" or a checkpoint path); return the step it was taken at.

    A checkpoint that fails its file check or fails to load is skipped in favour of the
    previous one, with a message. One taken with another configuration (another ``--base``,
    say) is refused with the options that differ.
    """
    run = RunFolder(run)
    if resume == "latest":
        candidates = run.checkpoint_dirs(stage)[::-1]
        if not candidates:
            accelerator.print(f"no {stage} checkpoint in {run.checkpoints}; starting from step 0")
            return 0
    else:
        candidates = [Path(resume)]
    config = run.stage_config(stage)
    for path in candidates:
        try:
            meta = verify_checkpoint(path)
        except RunError as err:
            accelerator.print(f"checkpoint {path} is damaged ({err}); trying the previous one")
            continue
        _check_checkpoint_config(path, meta["config"], config, resume)
        try:
            accelerator.load_state(str(path))
        except Exception as err:  # noqa: BLE001 - whatever fails to load, the previous one may not
            accelerator.print(f"checkpoint {path} is damaged ({type(err).__name__} on load); trying the previous one")
            continue
        accelerator.print(f"resumed from {path} (step {meta['step']})")
        return meta["step"]
    raise RunError(f"{run.checkpoints}: no loadable {stage} checkpoint; delete the damaged ones and "
                   f"resume again (it restarts from step 0)")


def _check_checkpoint_config(path: Path, taken_with: dict, config: dict, resume: str) -> None:
    changes = config_changes(taken_with, config)
    if changes:
        raise RunError(f"--resume {resume}: checkpoint {path} was taken with other options "
                       f"({'; '.join(changes)}); repeat the original options or start a new run")


def check_resume_path(resume: str, run: Path, config: dict) -> None:
    """Before anything is written: ``--resume PATH`` must be a checkpoint of this configuration."""
    path = Path(resume)
    if not path.is_dir():
        raise RunError(f"--resume {resume}: no such checkpoint folder; use 'latest' or a folder in "
                       f"{RunFolder(run).checkpoints}")
    try:
        taken_with = dict(json.loads((path / CHECKPOINT_META).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # damaged: resume_checkpoint reports it
    _check_checkpoint_config(path, taken_with, config, resume)


def check_stage_folder(run: Path, stage: str, config: dict, resume: str | None, overwrite: bool,
                       option: str = "--out") -> None:
    """Every process's check before a stage writes into ``run``: the folder
    (:meth:`seas.run.RunFolder.check_stage`) and, for ``--resume PATH``, the checkpoint named."""
    RunFolder(run).check_stage(stage, config, resume, overwrite, option)
    if resume not in (None, "latest"):
        check_resume_path(resume, run, config)
