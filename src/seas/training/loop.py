"""The optimisation loop both training stages share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from seas.training.checkpoints import save_checkpoint


def progress(total: int, initial: int, desc: str, disable: bool):
    """The training stages' bar (:func:`seas.progress.bar`: slow where no terminal watches)."""
    from seas.progress import bar

    return bar(total=total, initial=initial, desc=desc, disable=disable)



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

    ``micro_losses(micro_step)`` returns a dict of scalar losses whose ``total`` is minimised, or
    ``None`` for a micro-step to skip (an update whose micro-steps were all skipped changes nothing);
    ``grad_accum`` micro-steps make one update. Progress bar with every term, TensorBoard
    logs every ``log_every`` updates, checkpoints every ``checkpoint_every`` updates (not at
    the last one: the stage exports its result then).
    """
    with progress(total_steps, start, desc, not accelerator.is_local_main_process) as bar:  # closed on errors too
        for step in range(start, total_steps):
            logs: dict[str, float] = {}
            used = 0
            for j in range(grad_accum):
                with _maybe_no_sync(accelerator, models, sync=j == grad_accum - 1):
                    losses = micro_losses(step * grad_accum + j)
                    if losses is not None:  # None: a micro-step the stage skips (no target)
                        accelerator.backward(losses["total"] / grad_accum)
                        used += 1
                for key, value in (losses or {}).items():
                    logs[key] = logs.get(key, 0.0) + value.item() / grad_accum
            if used:
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
