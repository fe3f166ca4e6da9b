"""``seas generate``: write generated images, masks and a manifest to a folder, resumably.

The folder's layout, manifest and settings file belong to :class:`seas.generation.generated.
GeneratedFolder`; this module samples the outputs and writes them into it.

Resuming: every file is written under a temporary name (``.<name>.rank<R>.tmp``) and renamed;
a process appends each output's row to its journal ``manifest.rank<R>.jsonl`` only after the
output's files exist, and ``manifest.jsonl`` is written (atomically) when the work is done. On
start, rows whose files are missing or damaged are dropped and the outputs without a valid row
are produced. A folder made with other parameters is refused.

Batches: the indices of a kind are cut into batches ``[0, B), [B, 2B), ...`` whatever was
already made, and a batch with any output missing is sampled whole (only the missing outputs
are written): each image comes from the same batch as in an uninterrupted run, hence the same
bytes.

Quality control (``--qc``, :mod:`seas.judge.qc`): the judge (type classifier, thresholds,
product foreground) is trained once on the run's real training pairs and saved in ``qc/``; a
resumed folder reloads it. ``score`` adds ``"qc": {"accepted", "reasons", "scores"}`` to every
row and rejects nothing. ``filter`` (one process) walks the candidates ``0, 1, 2, ...`` of a kind
in batches, scores each new one, writes it as an output when accepted and under ``rejected/``
(row in ``rejected.jsonl``) otherwise, and stops at ``num`` accepted; an output keeps its
candidate index, so image ``i`` still has seed ``seed + i``. A kind that reaches ``qc_attempts x
num`` candidates first ends with an error naming it (its accepted outputs are kept; a rerun with
a larger ``--qc-attempts`` continues). Decisions are deterministic, so a resumed folder accepts
the same set.

Several processes: process ``rank`` of ``world`` samples the batches ``b % world == rank`` and
journals into ``manifest.rank<R>.jsonl``; after all have finished, the main process calls
:meth:`GeneratedFolder.merge_journals`. Seeds depend on the index only (seed of image i = seed +
i), and the batches do not depend on the process count: the outputs are those of one process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from seas.config import GenerationConfig, GenerationSwitches
from seas.errors import ConfigError, RunError
from seas.files.atomic import write_file, write_json
from seas.generation.generated import FORMAT, GeneratedFolder, name_width, output_paths
from seas.run import Run

if TYPE_CHECKING:
    from seas.generation.pipeline import Generated, Kind
    from seas.generation.placement import Placer

# ----------------------------------------------------------------------------- generation


def batches_of(num: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """The index batches ``[0, B), [B, 2B), ...`` of one kind that process ``rank`` samples."""
    starts = range(0, num, batch_size)
    return [list(range(s, min(s + batch_size, num))) for b, s in enumerate(starts) if b % world == rank]


def generate_to_folder(
    run: Run | str | Path,
    out: str | Path | None,
    kinds: list,
    cfg: GenerationConfig | None = None,
    switches: GenerationSwitches | None = None,
    *,
    device: str | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
) -> Path:
    """Generate ``cfg.num`` outputs of each kind into ``out`` (default ``<run>/generated``).

    ``run``: a loaded :class:`Run` (or its folder, loaded here). ``kinds``: :class:`Kind` objects, or
    entries ``"good"``, a type name, ``"A+B"`` or a list of type names. ``cfg`` (default
    :class:`GenerationConfig`): its ``guidance`` ``None`` takes the run's dataset default.
    ``switches`` (default: fp32, nothing sliced): memory and precision, as the caller resolved
    them from a profile. Both are recorded in ``generation.json``; a folder resumes only with
    the same. Outputs already complete are kept (see the module docstring). With ``world > 1``
    the caller merges the journals after every process returns
    (:meth:`GeneratedFolder.merge_journals`). Everything is checked, and the user's masks read,
    before the models are loaded; nothing is written before they are. Returns ``out``.
    """
    import torch

    from seas.generation.pipeline import Kind, is_grey, resolve_kind
    from seas.generation.placement import Placer

    cfg = cfg or GenerationConfig()
    switches = switches or GenerationSwitches()
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is outside 0..{world - 1}")
    if cfg.qc == "filter" and world > 1:
        raise ConfigError("--qc filter runs in one process (which candidates are kept depends on the ones "
                          "before); run it without torchrun, or use --qc score")
    run = run if isinstance(run, Run) else Run.load(run)
    chosen = _distinct([k if isinstance(k, Kind) else resolve_kind(k, run.prompt) for k in kinds])
    if not chosen:
        raise ConfigError("nothing to generate: name at least one of --type, --good, --mix")
    placer = None
    if cfg.placement != "free" and any(not k.is_normal for k in chosen):
        placer = Placer(run, cfg.placement, cfg.masks, is_grey(run))  # every mask read and checked here
    if cfg.guidance is None:
        cfg = dataclasses.replace(cfg, guidance=run.guidance)
    folder = GeneratedFolder(out) if out is not None else GeneratedFolder.of_run(run.path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = {
        "format": FORMAT, "run": str(run.path.resolve()), "product": run.product,
        "kinds": sorted(k.label for k in chosen), **cfg.to_dict(), "resolution": run.resolution, **switches.to_dict(),
    }
    folder.check_settings(settings)
    done = folder.valid_rows()
    rejected = folder.valid_rows(files=[folder.rejected_file]) if cfg.qc == "filter" else {}
    if cfg.qc == "filter":
        todo = [(k, []) for k in chosen if sum(key[0] == k.label for key in done) < cfg.num]
        missing = sum(cfg.num - sum(key[0] == k.label for key in done) for k, _ in todo)
    else:
        todo = [(k, batch) for k in chosen for batch in batches_of(cfg.num, cfg.batch_size, rank, world)
                if any((k.label, i) not in done for i in batch)]
        missing = sum((k.label, i) not in done for k, batch in todo for i in batch)
    pipe = _load_pipeline(run, todo, device, switches, placer) if todo else None

    folder.remove_temporaries(rank)
    folder.write_settings(settings, rank)
    judge = _judge(folder, run, pipe, cfg, rank) if todo and cfg.qc != "off" else None
    writer = _Writer(folder, name_width(cfg.num), rank, cfg, judge)
    journal = folder.start_journal(done, rank, world, cfg.batch_size)
    short = {}
    with journal.open("a") as fh, progress_bar(missing, progress) as bar:
        for kind, batch in todo:
            if cfg.qc == "filter":
                accepted = _filter_kind(pipe, kind, cfg, done, rejected, writer, fh, journal, bar)
                if accepted < cfg.num:
                    short[kind.label] = accepted
                continue
            for item in pipe.generate(kind.label, batch, cfg, batch_size=len(batch)):
                if (kind.label, item.index) not in done:
                    append_row(fh, journal, writer.write(kind, item))
                    bar.update(1)
    if cfg.qc == "filter":
        folder.sort_rejected(rank)
    if world == 1:
        folder.merge_journals()
    if short:
        kinds_short = ", ".join(f"{label} {n} of {cfg.num}" for label, n in short.items())
        raise RunError(f"--qc filter: only {kinds_short} accepted after {cfg.qc_attempts * cfg.num} candidates "
                       f"each (--qc-attempts {cfg.qc_attempts}); the accepted pairs are in {folder.path} and the "
                       f"reasons in {folder.rejected_file}; rerun with a larger --qc-attempts to continue")
    return folder.path


def _judge(folder: GeneratedFolder, run: Run, pipe, cfg: GenerationConfig, rank: int):
    """The folder's judge: loaded from ``qc/judge.pt`` when a previous call saved it (a resumed
    folder decides as before), else trained on the run's real training pairs and saved."""
    from seas.judge.qc import Judge, build_judge

    if folder.judge_file.is_file():
        return Judge.load(folder.judge_file)
    judge = build_judge(run, grey=pipe.grey, seed=cfg.seed)
    folder.judge_file.parent.mkdir(parents=True, exist_ok=True)
    judge.save(folder.judge_file)
    write_json(folder.thresholds_file, judge.thresholds.to_dict(), f".rank{rank}")
    return judge


def _filter_kind(pipe, kind: Kind, cfg: GenerationConfig, done: dict, rejected: dict, writer: _Writer,
                 fh, manifest: Path, bar) -> int:
    """Walk the candidates of ``kind`` in batches until ``cfg.num`` are accepted or
    ``cfg.qc_attempts x cfg.num`` were drawn; returns the number accepted. Candidates decided
    by an earlier call keep their decision; a batch with any undecided candidate is sampled
    whole, as in an uninterrupted call."""
    accepted = {i for label, i in done if label == kind.label}
    decided = accepted | {i for label, i in rejected if label == kind.label}
    cap, count = cfg.qc_attempts * cfg.num, 0
    for start in range(0, cap, cfg.batch_size):
        batch = [i for i in range(start, start + cfg.batch_size) if i < cap]
        items = (pipe.generate(kind.label, batch, cfg, batch_size=cfg.batch_size)
                 if any(i not in decided for i in batch) else [None] * len(batch))
        for i, item in zip(batch, items):
            if i in decided:
                count += i in accepted
            else:
                row = writer.write(kind, item)
                if row["qc"]["accepted"]:
                    count += 1
                    append_row(fh, manifest, row)
                    bar.update(1)
                else:
                    with writer.folder.rejected_file.open("a") as rejected_fh:
                        append_row(rejected_fh, writer.folder.rejected_file, row)
            if count >= cfg.num:
                return count
    return count


def append_row(fh, path: Path, row: dict) -> None:
    try:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err


class _Writer:
    """Writes one output's files atomically (accepted under ``<kind>/``, rejected under
    ``rejected/<kind>/``) and returns its manifest row; with a judge, the row carries its scores
    and decision.

    The image is written in its own mode: RGB, or one-channel grey ("L") for a grey product
    (the pipeline converts it: docs/DATA.md, "Channels"). The probability map is an 8-bit grey
    PNG of the mean anomaly probability (0..255); masks and regions are 0/255. ``mask_area`` is
    the defect share of the image (0 for an empty mask).
    """

    def __init__(self, folder: GeneratedFolder, width: int, rank: int, cfg: GenerationConfig, judge=None):
        self.folder, self.width, self.rank, self.cfg, self.judge = folder, width, rank, cfg, judge

    def write(self, kind: Kind, item: Generated) -> dict:
        import numpy as np
        from PIL import Image

        qc = None
        if self.judge is not None:
            reference = None if item.background is None else np.asarray(item.background.convert("RGB"))
            scores = self.judge.score(np.asarray(item.image.convert("RGB")), item.mask, kind.label, reference)
            ok, reasons = self.judge.decide(scores, kind.label)
            qc = {"accepted": ok, "reasons": reasons, "scores": scores}
        rejected = self.cfg.qc == "filter" and not qc["accepted"]
        paths = output_paths(kind.label, kind.is_normal, item.index, self.width, item.region is not None, rejected)
        file = self.folder.file
        save_png(item.image, file(paths["image"]), self.rank)
        if "mask" in paths:
            save_png(Image.fromarray(item.mask.astype(np.uint8) * 255), file(paths["mask"]), self.rank)
            save_png(Image.fromarray(np.round(item.prob * 255).astype(np.uint8)), file(paths["prob"]), self.rank)
        if "region" in paths:
            save_png(Image.fromarray(item.region.astype(np.uint8) * 255), file(paths["region"]), self.rank)
        row = {
            "kind": kind.label, "index": item.index, **paths, "mask": paths.get("mask"), "prompt": item.prompt,
            "seed": item.seed, "reference": item.reference,
            "mask_area": None if item.mask is None else float(item.mask.mean()),
            "steps": self.cfg.steps, "guidance": self.cfg.guidance, "signal": self.cfg.signal,
            "placement": item.placement,
        }
        if item.mask_source is not None:
            row["mask_source"] = item.mask_source
        if qc is not None:
            row["qc"] = qc
        return row


def save_png(image, path: Path, rank: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: image.save(tmp, format="PNG"), f".rank{rank}")


def _distinct(kinds: list[Kind]) -> list[Kind]:
    seen, result = set(), []
    for kind in kinds:
        if kind.label not in seen:
            seen.add(kind.label)
            result.append(kind)
    return result


def _load_pipeline(run: Run, todo: list[tuple[Kind, list[int]]], device: str, switches: GenerationSwitches,
                   placer: Placer | None):
    from seas.generation.pipeline import SeaSPipeline

    with_masks = any(not kind.is_normal for kind, _ in todo)
    head = run.load_mask_head(switches.torch_dtype) if with_masks else None
    return SeaSPipeline(run, run.load_backbone(switches.torch_dtype), head, device, switches, placer)


def progress_bar(total: int, enabled: bool, desc: str = "generate"):
    """Generation's bar (:func:`seas.progress.bar`: slow where no terminal watches)."""
    from seas.progress import bar

    return bar(total=total, desc=desc, unit="img", disable=not enabled)
