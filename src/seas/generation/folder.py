"""``seas generate``: write generated images, masks and a manifest to a folder, resumably.

Layout of ``<out>``::

    generation.json                 the run and every parameter that changes the outputs
    manifest.jsonl                  one JSON row per finished output, sorted by (kind, index)
    <kind>/image/<NNNN>.png         RGB images
    <kind>/mask/<NNNN>.png          0/255 masks (none for "good")
    <kind>/prob/<NNNN>.png          the mean anomaly probability as 8-bit grey (none for "good")
    <kind>/region/<NNNN>.png        --placement real-masks|masks: the placed region (0/255)
    qc/judge.pt, qc/thresholds.json --qc score|filter: the judge learned from the real training pairs
    rejected.jsonl, rejected/...    --qc filter: the rejected pairs, same layout, with their reasons

``<kind>`` is a type name, ``good``, or a mixture ``A+B``; ``NNNN`` is the index zero-padded to
the width of ``num - 1`` (at least 3 digits), so file names sort in index order.

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
:func:`merge_manifests`. Seeds depend on the index only (seed of image i = seed + i), and the
batches do not depend on the process count: the outputs are those of one process.

"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from seas.config import GenerationConfig
from seas.errors import ConfigError, RunError
from seas.files.atomic import write_file, write_json
from seas.run import Run

if TYPE_CHECKING:
    from seas.generation.pipeline import Generated, Kind
    from seas.profiles import GenerationSwitches

MANIFEST = "manifest.jsonl"
SETTINGS = "generation.json"
FORMAT = "seas-generation-1"

# Settings keys that change the outputs, and the option a user sets each with. The memory
# switches change float rounding, hence bytes; the profile only chooses them, so it is not here.
OPTIONS = {
    "run": "--run", "kinds": "--type/--normal/--mix", "num": "--num", "seed": "--seed",
    "steps": "--steps", "guidance": "--guidance", "signal": "--signal", "noise": "noise",
    "mask_threshold": "--mask-threshold", "mask_steps": "--mask-steps", "mask_batchnorm": "--mask-batchnorm",
    "reference_images": "--reference-images", "placement": "--placement", "masks": "--masks",
    "region_dilation": "--region-dilation", "background": "--background", "qc": "--qc",
    "dtype": "--dtype", "vae_slicing": "--vae-slicing", "vae_tiling": "--vae-tiling",
    "attention_slicing": "--attention-slicing",
}
# The switches of folders written before they were recorded: fp32, nothing sliced or tiled.
PLAIN_SWITCHES = {"dtype": "float32", "vae_slicing": False, "vae_tiling": False, "attention_slicing": False}
# Settings of folders written before these options existed: the values that behaved the same.
EARLIER_DEFAULTS = {"mask_batchnorm": "eval", "reference_images": None, "placement": "free", "masks": None,
                    "region_dilation": 1, "background": "reference", "qc": "off"}
REJECTED = "rejected.jsonl"
JUDGE = "qc/judge.pt"


def name_width(num: int) -> int:
    """Digits of the file names of ``num`` outputs: those of ``num - 1``, at least 3."""
    return max(3, len(str(num - 1)))


def output_paths(kind: Kind, index: int, width: int, placed: bool = False, rejected: bool = False
                 ) -> dict[str, str]:
    """Relative paths of one output: ``image``, for anomalies ``mask`` and ``prob``, for placed
    anomalies ``region``; under ``rejected/`` for a pair quality control rejected."""
    name = f"{index:0{width}d}.png"
    folder = f"rejected/{kind.label}" if rejected else kind.label
    parts = ("image",) if kind.is_normal else ("image", "mask", "prob", *(("region",) if placed else ()))
    return {part: f"{folder}/{part}/{name}" for part in parts}


# ----------------------------------------------------------------------------- manifest


def read_rows(path: Path) -> list[dict]:
    """Rows of a manifest file (a torn last line, from a process still writing, is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def part_files(out: Path) -> list[Path]:
    """Per-process manifest parts ``manifest.rank<R>.jsonl``."""
    return sorted(out.glob("manifest.rank*.jsonl"))


def png_complete(path: Path) -> bool:
    """Whether ``path`` is a whole, readable PNG (a truncated file fails the chunk checks)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def row_complete(out: Path, row: dict, verify: bool = True) -> bool:
    """Whether the files a manifest row names exist (and, with ``verify``, are whole PNGs)."""
    paths = [row.get(part) for part in ("image", "mask", "prob", "region") if part == "image" or row.get(part)]
    check = png_complete if verify else Path.is_file
    return all(isinstance(p, str) and check(out / p) for p in paths)


def valid_rows(out: Path, verify: bool = True, files: list[Path] | None = None) -> dict[tuple[str, int], dict]:
    """Rows of the manifest and of every part (or of ``files``) whose files are complete, by
    (kind, index).

    A later row for the same output replaces an earlier one (parts are read after the manifest).
    """
    rows = {}
    for path in files if files is not None else [out / MANIFEST, *part_files(out)]:
        for row in read_rows(path):
            if row_complete(out, row, verify):
                rows[(row["kind"], int(row["index"]))] = row
    return rows


def write_rows(path: Path, rows: list[dict], rank: int = 0) -> None:
    """Write a manifest atomically (temporary file, then rename)."""
    write_file(path, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)), f".rank{rank}")


def merge_manifests(out: str | Path) -> Path:
    """Fold the per-process parts into ``manifest.jsonl``, sorted by (kind, index).

    Rows whose files are gone (dropped by a process on start) are left out; the files
    themselves were verified on start or written by this run.
    """
    out = Path(out)
    rows = valid_rows(out, verify=False)
    write_rows(out / MANIFEST, [rows[key] for key in sorted(rows)])
    for part in part_files(out):
        part.unlink()
    return out / MANIFEST


# ----------------------------------------------------------------------------- settings


def check_settings(out: Path, settings: dict) -> None:
    """Refuse an ``out`` that holds outputs of other settings (or is not a generation folder)."""
    path = out / SETTINGS
    if not path.is_file():
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise RunError(f"--out {out}: not empty and not a 'seas generate' folder; choose a new --out")
        return
    try:
        previous = PLAIN_SWITCHES | EARLIER_DEFAULTS | json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot be read ({err}); choose a new --out") from None
    # With the reference's batch-statistics BatchNorm a mask depends on its batch: then the
    # batch size is a setting too.
    keys = [*OPTIONS, *(["batch_size"] if settings.get("mask_batchnorm") == "batch" else [])]
    changed = [key for key in keys if previous.get(key) != settings[key]]
    if previous.get("format") != FORMAT or changed:
        what = ", ".join(OPTIONS.get(key, "--" + key.replace("_", "-")) for key in changed) or "the format"
        raise RunError(
            f"--out {out}: holds outputs generated with a different {what} "
            f"(see {path}); choose a new --out or repeat the original options"
        )


def write_settings(out: Path, settings: dict, rank: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS, settings, f".rank{rank}")


# ----------------------------------------------------------------------------- generation


def batches_of(num: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """The index batches ``[0, B), [B, 2B), ...`` of one kind that process ``rank`` samples."""
    starts = range(0, num, batch_size)
    return [list(range(s, min(s + batch_size, num))) for b, s in enumerate(starts) if b % world == rank]


def generate_to_folder(
    run: str | Path,
    out: str | Path | None,
    kinds: list,
    cfg: GenerationConfig | None = None,
    device: str | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    profile: str | None = None,
    switches: GenerationSwitches | None = None,
    **options,
) -> Path:
    """Generate ``cfg.num`` outputs of each kind into ``out`` (default ``<run>/generated``).

    ``kinds``: entries ``"good"``, a type name, ``"A+B"`` or a list of type names. ``cfg``
    (default :class:`GenerationConfig`) with fields overridden by ``options``; its ``guidance``
    ``None`` takes the run's dataset default. ``switches``: memory and precision; ``None`` takes
    those of ``profile`` (default "default") on the device. Both are recorded in
    ``generation.json``; only the switches must match to resume. Outputs already complete are
    kept (see the module docstring). With ``world > 1`` the caller merges the manifest parts
    after every process returns (:func:`merge_manifests`). Everything is checked, and the
    models loaded, before the first file is written. Returns ``out``.
    """
    import torch

    from seas.generation.pipeline import resolve_kind
    from seas.generation.placement import read_user_masks
    from seas.profiles import generation_switches

    cfg = dataclasses.replace(cfg or GenerationConfig(), **options)
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is outside 0..{world - 1}")
    if cfg.qc == "filter" and world > 1:
        raise ConfigError("--qc filter runs in one process (which candidates are kept depends on the ones "
                          "before); run it without torchrun, or use --qc score")
    run_record = Run.load(run)
    chosen = _distinct([resolve_kind(k, run_record.prompt) for k in kinds])
    if not chosen:
        raise ConfigError("nothing to generate: name at least one of --type, --normal, --mix")
    if cfg.placement == "masks":
        read_user_masks(cfg.masks, run_record.resolution)  # every file checked before anything is written
    if cfg.guidance is None:
        cfg = dataclasses.replace(cfg, guidance=run_record.guidance)
    out = Path(out) if out is not None else run_record.path / "generated"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if switches is None:
        profile = profile or "default"
        switches = generation_switches(profile, device)
    settings = {
        "format": FORMAT, "run": str(run_record.path.resolve()), "product": run_record.product,
        "kinds": sorted(k.label for k in chosen), **cfg.to_dict(), "resolution": run_record.resolution,
        "profile": profile, **switches.to_dict(),
    }
    check_settings(out, settings)
    done = valid_rows(out)
    rejected = valid_rows(out, files=[out / REJECTED]) if cfg.qc == "filter" else {}
    if cfg.qc == "filter":
        todo = [(k, []) for k in chosen if sum(key[0] == k.label for key in done) < cfg.num]
        missing = sum(cfg.num - sum(key[0] == k.label for key in done) for k, _ in todo)
    else:
        todo = [(k, batch) for k in chosen for batch in batches_of(cfg.num, cfg.batch_size, rank, world)
                if any((k.label, i) not in done for i in batch)]
        missing = sum((k.label, i) not in done for k, batch in todo for i in batch)
    pipe = _load_pipeline(run_record, todo, device, switches) if todo else None

    _remove_temporaries(out, rank)
    write_settings(out, settings, rank)
    judge = _judge(out, run_record, pipe, cfg, rank) if todo and cfg.qc != "off" else None
    writer = _Writer(out, name_width(cfg.num), rank, cfg, judge)
    manifest = start_manifest(out, done, rank, world, cfg.batch_size)
    short = {}
    with manifest.open("a") as fh, _progress(missing, progress) as bar:
        for kind, batch in todo:
            if cfg.qc == "filter":
                accepted = _filter_kind(pipe, kind, cfg, done, rejected, writer, fh, manifest, bar)
                if accepted < cfg.num:
                    short[kind.label] = accepted
                continue
            for item in pipe.generate(kind.label, batch, cfg, batch_size=len(batch)):
                if (kind.label, item.index) not in done:
                    _append_row(fh, manifest, writer.write(kind, item))
                    bar.update(1)
    if cfg.qc == "filter":
        rows = valid_rows(out, verify=False, files=[out / REJECTED])
        write_rows(out / REJECTED, [rows[key] for key in sorted(rows)], rank)
    if world == 1:
        merge_manifests(out)
    if short:
        kinds_short = ", ".join(f"{label} {n} of {cfg.num}" for label, n in short.items())
        raise RunError(f"--qc filter: only {kinds_short} accepted after {cfg.qc_attempts * cfg.num} candidates "
                       f"each (--qc-attempts {cfg.qc_attempts}); the accepted pairs are in {out} and the reasons "
                       f"in {out / REJECTED}; rerun with a larger --qc-attempts to continue")
    return out


def _judge(out: Path, run: Run, pipe, cfg: GenerationConfig, rank: int):
    """The folder's judge: loaded from ``qc/judge.pt`` when a previous call saved it (a resumed
    folder decides as before), else trained on the run's real training pairs and saved."""
    from seas.judge.qc import Judge, build_judge

    path = out / JUDGE
    if path.is_file():
        return Judge.load(path)
    judge = build_judge(run, grey=pipe.grey, seed=cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    judge.save(path)
    write_json(out / "qc" / "thresholds.json", judge.thresholds.to_dict(), f".rank{rank}")
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
                    _append_row(fh, manifest, row)
                    bar.update(1)
                else:
                    with (writer.out / REJECTED).open("a") as rejected_fh:
                        _append_row(rejected_fh, writer.out / REJECTED, row)
            if count >= cfg.num:
                return count
    return count


def start_manifest(out: Path, done: dict[tuple[str, int], dict], rank: int, world: int, batch_size: int) -> Path:
    """Rewrite this process's journal ``manifest.rank<R>.jsonl`` with the valid rows of the
    batches it owns; return its path."""
    path = out / f"manifest.rank{rank}.jsonl"
    write_rows(path, [done[key] for key in sorted(done) if (key[1] // batch_size) % world == rank], rank)
    return path


def _append_row(fh, path: Path, row: dict) -> None:
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

    def __init__(self, out: Path, width: int, rank: int, cfg: GenerationConfig, judge=None):
        self.out, self.width, self.rank, self.cfg, self.judge = out, width, rank, cfg, judge

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
        paths = output_paths(kind, item.index, self.width, item.region is not None, rejected)
        _save_png(item.image, self.out / paths["image"], self.rank)
        if "mask" in paths:
            _save_png(Image.fromarray(item.mask.astype(np.uint8) * 255), self.out / paths["mask"], self.rank)
            _save_png(Image.fromarray(np.round(item.prob * 255).astype(np.uint8)), self.out / paths["prob"], self.rank)
        if "region" in paths:
            _save_png(Image.fromarray(item.region.astype(np.uint8) * 255), self.out / paths["region"], self.rank)
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


def _save_png(image, path: Path, rank: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: image.save(tmp, format="PNG"), f".rank{rank}")


def _remove_temporaries(out: Path, rank: int) -> None:
    """Files this rank left half-written when it was stopped."""
    for tmp in [*out.glob(f".*.rank{rank}.tmp"), *out.glob(f"*/*/.*.rank{rank}.tmp"),
                *out.glob(f"*/*/*/.*.rank{rank}.tmp"), *out.glob(f"qc/.*.rank{rank}.tmp")]:
        tmp.unlink()


def _distinct(kinds: list[Kind]) -> list[Kind]:
    seen, result = set(), []
    for kind in kinds:
        if kind.label not in seen:
            seen.add(kind.label)
            result.append(kind)
    return result


def _load_pipeline(run: Run, todo: list[tuple[Kind, list[int]]], device: str, switches: GenerationSwitches):
    from seas.generation.pipeline import SeaSPipeline

    with_masks = any(not kind.is_normal for kind, _ in todo)
    head = run.load_mask_head(switches.dtype) if with_masks else None
    return SeaSPipeline(run, run.load_backbone(switches.dtype), head, device, switches)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", unit="img", disable=not enabled, dynamic_ncols=True)
