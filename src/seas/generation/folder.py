"""``seas generate``: write generated images, masks and a manifest to a folder, resumably.

Layout of ``<out>``::

    generation.json                 the run and every parameter that changes the outputs
    manifest.jsonl                  one JSON row per finished output, sorted by (kind, index)
    <kind>/image/<NNNN>.png         RGB images
    <kind>/mask/<NNNN>.png          0/255 masks (none for "good")
    <kind>/prob/<NNNN>.png          the mean anomaly probability as 8-bit grey (none for "good")

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
    "reference_images": "--reference-images",
    "dtype": "--dtype", "vae_slicing": "--vae-slicing", "vae_tiling": "--vae-tiling",
    "attention_slicing": "--attention-slicing",
}
# The switches of folders written before they were recorded: fp32, nothing sliced or tiled.
PLAIN_SWITCHES = {"dtype": "float32", "vae_slicing": False, "vae_tiling": False, "attention_slicing": False}
# Settings of folders written before these options existed: the values that behaved the same.
EARLIER_DEFAULTS = {"mask_batchnorm": "eval", "reference_images": None}


def name_width(num: int) -> int:
    """Digits of the file names of ``num`` outputs: those of ``num - 1``, at least 3."""
    return max(3, len(str(num - 1)))


def output_paths(kind: Kind, index: int, width: int) -> dict[str, str]:
    """Relative paths of one output: ``image``, and for anomalies ``mask`` and ``prob``."""
    name = f"{index:0{width}d}.png"
    if kind.is_normal:
        return {"image": f"{kind.label}/image/{name}"}
    return {part: f"{kind.label}/{part}/{name}" for part in ("image", "mask", "prob")}


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
    paths = [row.get(part) for part in ("image", "mask", "prob") if part == "image" or row.get(part)]
    check = png_complete if verify else Path.is_file
    return all(isinstance(p, str) and check(out / p) for p in paths)


def valid_rows(out: Path, verify: bool = True) -> dict[tuple[str, int], dict]:
    """Rows of the manifest and of every part whose files are complete, by (kind, index).

    A later row for the same output replaces an earlier one (parts are read after the manifest).
    """
    rows = {}
    for path in [out / MANIFEST, *part_files(out)]:
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
    from seas.profiles import generation_switches

    cfg = dataclasses.replace(cfg or GenerationConfig(), **options)
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is outside 0..{world - 1}")
    run_record = Run.load(run)
    chosen = _distinct([resolve_kind(k, run_record.prompt) for k in kinds])
    if not chosen:
        raise ConfigError("nothing to generate: name at least one of --type, --normal, --mix")
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
    todo = [(k, batch) for k in chosen for batch in batches_of(cfg.num, cfg.batch_size, rank, world)
            if any((k.label, i) not in done for i in batch)]
    missing = sum((k.label, i) not in done for k, batch in todo for i in batch)
    pipe = _load_pipeline(run_record, todo, device, switches) if todo else None

    _remove_temporaries(out, rank)
    write_settings(out, settings, rank)
    manifest = start_manifest(out, done, rank, world, cfg.batch_size)
    with manifest.open("a") as fh, _progress(missing, progress) as bar:
        for kind, batch in todo:
            for item in pipe.generate(kind.label, batch, cfg, batch_size=len(batch)):
                if (kind.label, item.index) not in done:
                    _append_row(fh, manifest, write_output(out, kind, item, name_width(cfg.num), rank, cfg))
                    bar.update(1)
    if world == 1:
        merge_manifests(out)
    return out


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


def write_output(out: Path, kind: Kind, item: Generated, width: int, rank: int, cfg: GenerationConfig) -> dict:
    """Write one image (with its mask and probability map) atomically; return its manifest row.

    The image is written in its own mode: RGB, or one-channel grey ("L") for a grey product
    (the pipeline converts it: docs/DATA.md, "Channels"). The probability map is an 8-bit grey
    PNG of the mean anomaly probability (0..255); the mask is 0/255. ``mask_area`` is the defect share of the image (0 for an empty mask).
    """
    import numpy as np
    from PIL import Image

    paths = output_paths(kind, item.index, width)
    _save_png(item.image, out / paths["image"], rank)
    if "mask" in paths:
        _save_png(Image.fromarray(item.mask.astype(np.uint8) * 255), out / paths["mask"], rank)
        _save_png(Image.fromarray(np.round(item.prob * 255).astype(np.uint8)), out / paths["prob"], rank)
    return {
        "kind": kind.label, "index": item.index, **paths, "mask": paths.get("mask"), "prompt": item.prompt,
        "seed": item.seed, "reference": item.reference,
        "mask_area": None if item.mask is None else float(item.mask.mean()),
        "steps": cfg.steps, "guidance": cfg.guidance, "signal": cfg.signal,
    }


def _save_png(image, path: Path, rank: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: image.save(tmp, format="PNG"), f".rank{rank}")


def _remove_temporaries(out: Path, rank: int) -> None:
    """Files this rank left half-written when it was stopped."""
    for tmp in [*out.glob(f".*.rank{rank}.tmp"), *out.glob(f"*/*/.*.rank{rank}.tmp")]:
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
