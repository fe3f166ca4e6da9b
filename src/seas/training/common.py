"""What both training stages share: run folders, checkpoints with rotation and resume,
optimizers, seeds, logging.

A stage writes into its run folder:
    <stage>-state.json         the resolved config, written when the stage starts
    checkpoints/<stage>-NNNNNN accelerate states (models, optimizer, step), rotated
    logs/                      TensorBoard events, where tensorboard is installed
and, when it finishes, its exported weights and a marker file.

Crash safety: every file and folder is written under a temporary name (``.tmp-*`` folders,
``.*.tmp`` files) and renamed, so nothing under a final name is ever partial; the main
process deletes leftover temporaries when a stage starts. A checkpoint lists the size and
SHA-256 of each of its files (``seas_step.json``); on resume one that fails the check or
fails to load is skipped, with a message, in favour of the previous one. A failed write
raises ``OSError`` naming the final path, with its temporary removed.

Several processes: every process checks the run folder, then only the main process writes
(state, split, exports, markers, checkpoint metadata); each writes its own random-state file
into a checkpoint, with barriers before the rename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError, RunError
from ..profiles import has_bitsandbytes

CHECKPOINTS = "checkpoints"
CHECKPOINT_META = "seas_step.json"
OPTIONS = {"root": "--data"}  # config keys whose command-line option has another name


# ----------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def write_errors(target: Path, temporary: Path | None = None):
    """Turn a failed write into ``OSError`` naming ``target``; remove the partial ``temporary``.

    torch and safetensors report a full disk as ``RuntimeError`` / ``SafetensorError``: those
    become ``OSError(EIO, <their message>)``.
    """
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            error = OSError(err.errno, err.strerror, str(target))
        else:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            error = OSError(errno.EIO, f"{message} ({_free_space(target)} free on that disk)", str(target))
        if temporary is not None:
            remove_path(temporary)
        raise error from err


def _free_space(path: Path) -> str:
    while not path.exists() and path != path.parent:
        path = path.parent
    return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB"


def remove_path(path: Path) -> None:
    """Delete a file or folder; a folder is first renamed to a temporary name, so that a
    stopped deletion never leaves a partial folder under its final name."""
    if path.is_dir() and not path.is_symlink():
        if not path.name.startswith(".tmp-"):
            doomed = path.with_name(f".tmp-old-{path.name}")
            remove_path(doomed)
            os.replace(path, doomed)
            path = doomed
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with write_errors(path, tmp):
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name, replacing an older one.

    The older folder is renamed away first: ``final`` is always absent or whole.
    """
    old = final.with_name(f".tmp-old-{final.name}")
    remove_path(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


def write_dir(final: Path, save: Callable[[Path], None]) -> Path:
    """Write a folder atomically: ``save(tmp)`` into ``.tmp-<name>`` beside it, then rename."""
    tmp = final.with_name(f".tmp-{final.name}")
    remove_path(tmp)
    with write_errors(final, tmp):
        save(tmp)
    replace_dir(tmp, final)
    return final


def remove_temporaries(run: Path) -> None:
    """Delete what a stopped or failed writer left in ``run`` and ``run/checkpoints``."""
    for folder in (run, run / CHECKPOINTS):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.startswith(".tmp-") or (path.name.startswith(".") and path.name.endswith(".tmp")):
                    remove_path(path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot be read ({err}); the run folder is damaged, start a new run") from None


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(run: Path, stage: str) -> list[Path]:
    """Complete checkpoints of ``stage``, oldest first."""
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(f"{stage}-"))


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _file_table(folder: Path) -> dict[str, list]:
    """[size, sha256] of every file in ``folder`` by relative path."""
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, _file_digest(p)]
            for p in sorted(folder.rglob("*")) if p.is_file()}


def save_checkpoint(accelerator, run: Path, stage: str, step: int, keep: int) -> Path:
    """Save the accelerate state at ``step`` atomically, then keep only the newest ``keep``.

    Every process writes its random state into the temporary folder; after a barrier the
    main process adds ``seas_step.json`` (step, the stage's config, size and SHA-256 of each
    file) and renames the folder.
    """
    folder = run / CHECKPOINTS
    final = folder / f"{stage}-{step:06d}"
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
        config = read_json(run / f"{stage}-state.json")["config"]
        with write_errors(final, tmp):
            meta = {"step": step, "config": config, "files": _file_table(tmp)}
            (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, final)
        for old in checkpoint_dirs(run, stage)[:-keep]:
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
    for name, (size, digest) in files.items():
        file = path / name
        if not file.is_file():
            raise RunError(f"{name} missing")
        if file.stat().st_size != size:
            raise RunError(f"{name} has {file.stat().st_size} bytes, {size} were written")
        if _file_digest(file) != digest:
            raise RunError(f"{name} altered: checksum differs")
    return {"step": step, "config": config}


def config_changes(previous: dict, current: dict) -> list[str]:
    """'--option was A, now B' for every leaf value that differs between two configs."""
    def leaves(config: dict) -> dict:
        flat = {}
        for key, value in config.items():
            flat.update(leaves(value) if isinstance(value, dict) else {key: value})
        return flat

    old, new = leaves(previous), leaves(current)
    return [f"{OPTIONS.get(key, '--' + key.replace('_', '-'))} was {old.get(key)}, now {new.get(key)}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def resume_checkpoint(accelerator, run: Path, stage: str, resume: str) -> int:
    """Load ``resume`` ("latest" or a checkpoint path); return the step it was taken at.

    A checkpoint that fails its file check or fails to load is skipped in favour of the
    previous one, with a message. One taken with another configuration (another ``--base``,
    say) is refused with the options that differ.
    """
    if resume == "latest":
        candidates = checkpoint_dirs(run, stage)[::-1]
        if not candidates:
            accelerator.print(f"no {stage} checkpoint in {run / CHECKPOINTS}; starting from step 0")
            return 0
    else:
        candidates = [Path(resume)]
    config = read_json(run / f"{stage}-state.json")["config"]
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
    raise RunError(f"{run / CHECKPOINTS}: no loadable {stage} checkpoint; delete the damaged ones and "
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
        raise RunError(f"--resume {resume}: no such checkpoint folder; use 'latest' or a folder in {run / CHECKPOINTS}")
    try:
        taken_with = dict(json.loads((path / CHECKPOINT_META).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # damaged: resume_checkpoint reports it
    _check_checkpoint_config(path, taken_with, config, resume)


# ----------------------------------------------------------------------------- run folders


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
        remove_temporaries(run)
        state_file = run / f"{stage}-state.json"
        if overwrite:
            for path in [*checkpoint_dirs(run, stage), run / marker, state_file]:
                remove_path(path)
        write_json(state_file, {"stage": stage, "config": config})
    accelerator.wait_for_everyone()


def autocast_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype autocast computes in for a ``--mixed-precision`` value (fp32 for "no")."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def make_optimizer(name: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (the reference's choice; needs the package).

    AdamW uses torch's fused kernel (one pass over all parameters) where the torch version and
    device have it: 4.5x faster per update than torch's default multi-tensor kernel on this
    project's CPU, with 3 GiB less peak memory in an SD-sized step (docs/PERFORMANCE.md).
    """
    if name == "adamw":
        try:
            return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):  # no fused kernel for these parameters (torch < 2.4 on a CPU)
            return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if not has_bitsandbytes():
        raise ConfigError("--optimizer adamw8bit needs the bitsandbytes package: pip install bitsandbytes")
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(groups, weight_decay=weight_decay)


def make_accelerator(run: Path, mixed_precision: str):
    """An Accelerator logging to TensorBoard under ``run/logs`` when tensorboard is installed.

    Several stages may run in one process (the Python API, the demo) with different precisions.
    Without a GPU it is a CPU one: several processes (torchrun, accelerate launch) then
    find each other through gloo instead of each acting as process 0.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    # Each stage picks its own precision: forget the one an earlier stage of this process set
    # (accelerate keeps it process-wide and refuses a change). The process group stays.
    AcceleratorState._reset_state()
    has_tb = importlib.util.find_spec("tensorboard") is not None
    return Accelerator(
        cpu=not torch.cuda.is_available(),
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
    with progress(total_steps, start, desc, not accelerator.is_local_main_process) as bar:  # closed on errors too
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
