"""What both training stages share: run folders, checkpoints with rotation and resume,
optimizers, seeds, logging.

A stage writes into its run folder:
    <stage>-state.json         the resolved config, written when the stage starts
    checkpoints/<stage>-NNNNNN accelerate states (models, optimizer, step), rotated
    logs/                      TensorBoard events, where tensorboard is installed
and, when it finishes, its exported weights and a marker file. Checkpoints are written to a
temporary folder and renamed, so a checkpoint folder under its final name is always complete.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError, RunError

CHECKPOINTS = "checkpoints"


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name, replacing an older one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot be read ({err}); the run folder is damaged, start a new run") from None


def checkpoint_dirs(run: Path, stage: str) -> list[Path]:
    """Complete checkpoints of ``stage``, oldest first."""
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(f"{stage}-"))


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def save_checkpoint(accelerator, run: Path, stage: str, step: int, keep: int) -> Path:
    """Save the accelerate state at ``step`` atomically, then keep only the newest ``keep``."""
    folder = run / CHECKPOINTS
    final = folder / f"{stage}-{step:06d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{stage}-{step:06d}"
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "seas_step.json", {"step": step})
        replace_dir(tmp, final)
        for old in checkpoint_dirs(run, stage)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_checkpoint(accelerator, run: Path, stage: str, resume: str) -> int:
    """Load ``resume`` ("latest" or a checkpoint path); return the step it was taken at.

    A checkpoint that fails to load is skipped in favour of the previous one, with a message.
    """
    if resume == "latest":
        candidates = checkpoint_dirs(run, stage)[::-1]
        if not candidates:
            accelerator.print(f"no {stage} checkpoint in {run / CHECKPOINTS}; starting from step 0")
            return 0
    else:
        path = Path(resume)
        if not path.is_dir():
            raise RunError(f"--resume {resume}: no such checkpoint folder; use 'latest' or a folder in {run / CHECKPOINTS}")
        candidates = [path]
    for path in candidates:
        try:
            step = int(read_json(path / "seas_step.json")["step"])
            accelerator.load_state(str(path))
        except (RunError, OSError, RuntimeError, KeyError, ValueError) as err:
            accelerator.print(f"checkpoint {path} is damaged ({type(err).__name__}); trying the previous one")
            continue
        accelerator.print(f"resumed from {path} (step {step})")
        return step
    raise RunError(f"{run / CHECKPOINTS}: no loadable {stage} checkpoint; remove the folder and start again")


def prepare_run_folder(run: Path, stage: str, marker: str, config: dict, resume: str | None, overwrite: bool) -> None:
    """Check that ``run`` may receive this stage, and record the stage's config.

    * finished stage (``marker`` exists): refused unless ``overwrite``;
    * unfinished stage: refused unless ``resume`` (then the config must match) or ``overwrite``;
    * a non-empty folder that is not a SeaS run: refused.
    """
    state_file = run / f"{stage}-state.json"
    if (run / marker).exists() and not overwrite:
        raise RunError(f"{run}: holds a finished {stage} run; choose another --out or pass --overwrite")
    if overwrite:
        for path in [run / marker, state_file, *checkpoint_dirs(run, stage)]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif state_file.exists():
        if resume is None:
            raise RunError(f"{run}: holds an unfinished {stage} run; pass --resume latest to continue it or --overwrite")
        previous = read_json(state_file)["config"]
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise RunError(f"{run}: --resume with a different configuration ({', '.join(changed)}); use the original options")
    run.mkdir(parents=True, exist_ok=True)
    write_json(state_file, {"stage": stage, "config": config})


def check_new_folder(run: Path, allowed: set[str]) -> None:
    """Refuse a non-empty ``run`` that holds files other than ``allowed`` names (another run's)."""
    if run.exists() and not run.is_dir():
        raise RunError(f"--out {run}: exists and is not a folder; choose a new folder")
    if run.is_dir():
        foreign = sorted(p.name for p in run.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if foreign:
            raise RunError(f"--out {run}: not empty and not a SeaS run (holds {', '.join(foreign[:3])}); choose a new folder")


def make_optimizer(name: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (the reference's choice; needs the package)."""
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--optimizer adamw8bit needs the bitsandbytes package: pip install bitsandbytes")
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(groups, weight_decay=weight_decay)


def make_accelerator(run: Path, mixed_precision: str):
    """An Accelerator logging to TensorBoard under ``run/logs`` when tensorboard is installed."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    has_tb = importlib.util.find_spec("tensorboard") is not None
    return Accelerator(
        mixed_precision=mixed_precision,
        log_with="tensorboard" if has_tb else None,
        project_config=ProjectConfiguration(project_dir=str(run), logging_dir=str(run / "logs")),
    )


def progress(total: int, initial: int, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True)


def step_generator(seed: int, *index: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, index...): the same draws after a resume."""
    mixed = seed
    for i in index:
        mixed = (mixed * 1_000_003 + i + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def stream_index(seed: int, position: int, n: int, stream: int) -> int:
    """Element ``position`` of an endless sequence of seeded permutations of range(n).

    Every item appears once per pass of n; the order depends only on (seed, stream, pass).
    """
    lap, offset = divmod(position, n)
    perm = torch.randperm(n, generator=step_generator(seed, stream, lap))
    return int(perm[offset])


def _maybe_no_sync(accelerator, models: list, sync: bool):
    """Skip the gradient all-reduce on micro-steps before the last of an accumulation."""
    stack = contextlib.ExitStack()
    if not sync:
        for model in models:
            stack.enter_context(accelerator.no_sync(model))
    return stack


def run_updates(
    accelerator,
    *,
    run: Path,
    stage: str,
    models: list,
    optimizer,
    start: int,
    total_steps: int,
    grad_accum: int,
    micro_losses: Callable[[int], dict],
    after_update: Callable[[], None] | None = None,
    checkpoint_every: int,
    keep_checkpoints: int,
    log_every: int,
    desc: str,
) -> None:
    """The optimisation loop both stages share.

    ``micro_losses(micro_step)`` returns a dict of scalar losses whose ``total`` is minimised;
    ``grad_accum`` micro-steps make one update. Progress bar with every term, TensorBoard
    logs every ``log_every`` updates, checkpoints every ``checkpoint_every`` updates (not at
    the last one: the stage exports its result then).
    """
    bar = progress(total_steps, start, desc, not accelerator.is_local_main_process)
    for step in range(start, total_steps):
        logs: dict[str, float] = {}
        for j in range(grad_accum):
            with _maybe_no_sync(accelerator, models, sync=j == grad_accum - 1):
                losses = micro_losses(step * grad_accum + j)
                accelerator.backward(losses["total"] / grad_accum)
            for key, value in losses.items():
                logs[key] = logs.get(key, 0.0) + value.item() / grad_accum
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_update is not None:
            after_update()
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
        if accelerator.log_with and (step + 1) % log_every == 0:
            accelerator.log({f"{stage}/{k}": v for k, v in logs.items()}, step=step + 1)
        if (step + 1) % checkpoint_every == 0 and step + 1 < total_steps:
            save_checkpoint(accelerator, run, stage, step + 1, keep_checkpoints)
    bar.close()
