"""``seas generate``: write generated images, masks and a manifest to a folder, resumably.

Layout of ``<out>``::

    generation.json                 the run and every parameter that changes the outputs
    manifest.jsonl                  one JSON row per finished output, sorted by (kind, index)
    <kind>/image/<NNNN>.png         RGB images
    <kind>/mask/<NNNN>.png          0/255 masks (none for "good")

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

Modules that import torch are imported inside the functions that use them, so that building
the command line (:func:`add_parser`) stays free of torch (profile names come from :mod:`seas.config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, RunError

if TYPE_CHECKING:
    from .pipeline import Generated, Kind, SeaSPipeline
    from .profiles import GenerationSwitches

MANIFEST = "manifest.jsonl"
SETTINGS = "generation.json"
FORMAT = "seas-generation-1"
DEFAULT_NUM = 1000  # per kind, as the reference

# Settings keys that change the outputs, and the option a user sets each with. The memory
# switches change float rounding, hence bytes; the profile only chooses them, so it is not here.
OPTIONS = {
    "run": "--run", "kinds": "--type/--normal/--mix", "num": "--num", "seed": "--seed",
    "steps": "--steps", "guidance": "--guidance", "signal": "--signal", "noise": "noise",
    "mask_threshold": "--mask-threshold", "mask_steps": "mask_steps",
    "dtype": "--dtype", "vae_slicing": "--vae-slicing", "vae_tiling": "--vae-tiling",
    "attention_slicing": "--attention-slicing",
}
# The switches of folders written before they were recorded: fp32, nothing sliced or tiled.
PLAIN_SWITCHES = {"dtype": "float32", "vae_slicing": False, "vae_tiling": False, "attention_slicing": False}


def name_width(num: int) -> int:
    """Digits of the file names of ``num`` outputs: those of ``num - 1``, at least 3."""
    return max(3, len(str(num - 1)))


def output_paths(kind: Kind, index: int, width: int) -> tuple[str, str | None]:
    """Relative image and mask paths of one output (no mask for normal images)."""
    name = f"{index:0{width}d}.png"
    return f"{kind.label}/image/{name}", None if kind.is_normal else f"{kind.label}/mask/{name}"


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
    paths = [row.get("image"), row.get("mask")] if row.get("mask") else [row.get("image")]
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


def write_atomically(path: Path, rank: int, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into ``.<name>.rank<R>.tmp`` beside ``path``, then rename it to ``path``.

    A failed write removes the temporary and raises ``OSError`` naming ``path``.
    """
    tmp = path.with_name(f".{path.name}.rank{rank}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err


def write_rows(path: Path, rows: list[dict], rank: int = 0) -> None:
    """Write a manifest atomically (temporary file, then rename)."""
    write_atomically(path, rank, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)))


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
        previous = PLAIN_SWITCHES | json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot be read ({err}); choose a new --out") from None
    changed = [key for key in OPTIONS if previous.get(key) != settings[key]]
    if previous.get("format") != FORMAT or changed:
        what = ", ".join(OPTIONS[key] for key in changed) or "the format"
        raise RunError(
            f"--out {out}: holds outputs generated with a different {what} "
            f"(see {path}); choose a new --out or repeat the original options"
        )


def write_settings(out: Path, settings: dict, rank: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / SETTINGS, rank, lambda tmp: tmp.write_text(json.dumps(settings, indent=1)))


# ----------------------------------------------------------------------------- generation


def batches_of(num: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """The index batches ``[0, B), [B, 2B), ...`` of one kind that process ``rank`` samples."""
    starts = range(0, num, batch_size)
    return [list(range(s, min(s + batch_size, num))) for b, s in enumerate(starts) if b % world == rank]


def check_counts(num: int, steps: int, batch_size: int, rank: int, world: int) -> None:
    for option, value in (("--num", num), ("--steps", steps), ("--batch-size", batch_size)):
        if value <= 0:
            raise ConfigError(f"{option} {value}: must be a positive whole number")
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is outside 0..{world - 1}")


def generate_to_folder(
    run: str | Path,
    out: str | Path | None,
    kinds: list,
    num: int = DEFAULT_NUM,
    seed: int = 0,
    batch_size: int = 4,
    steps: int = 25,
    guidance: float | None = None,
    signal: float | None = None,
    noise: float | None = None,
    mask_threshold: float = 0.2,
    mask_steps: int = 3,
    device: str | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    profile: str | None = None,
    switches: GenerationSwitches | None = None,
) -> Path:
    """Generate ``num`` outputs of each kind into ``out`` (default ``<run>/generated``).

    ``kinds``: entries ``"good"``, a type name, ``"A+B"`` or a list of type names.
    ``guidance``, ``signal``, ``noise``: ``None`` takes the run's dataset default and the
    reference's start-latent recipe (0.0979, 0.99984). ``switches``: memory and precision;
    ``None`` takes those of ``profile`` (default "default") on the device. Both are recorded in
    ``generation.json``; only the switches must match to resume. Outputs already complete are
    kept (see the module docstring). With ``world > 1`` the caller merges the manifest parts after every
    process returns (:func:`merge_manifests`). Everything is checked, and the models loaded,
    before the first file is written. Returns ``out``.
    """
    import torch

    from .pipeline import NOISE, SIGNAL, resolve_kind
    from .profiles import generation_switches
    from .prompts import PromptSpec
    from .run import read_run_meta

    check_counts(num, steps, batch_size, rank, world)
    if not 0.0 <= mask_threshold <= 1.0:
        raise ConfigError(f"--mask-threshold {mask_threshold}: must lie in [0, 1] (default 0.2)")
    run = Path(run).resolve()
    meta = read_run_meta(run)
    spec = PromptSpec(**meta["prompt"])
    chosen = _distinct([resolve_kind(k, spec) for k in kinds])
    if not chosen:
        raise ConfigError("nothing to generate: name at least one of --type, --normal, --mix")
    guidance = float(meta["guidance"] if guidance is None else guidance)
    if not math.isfinite(guidance):
        raise ConfigError(f"--guidance {guidance}: must be a finite number")
    out = Path(out) if out is not None else run / "generated"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if switches is None:
        profile = profile or "default"
        switches = generation_switches(profile, device)
    settings = {
        "format": FORMAT, "run": str(run), "product": meta["split"]["normal_train"][0]["product"],
        "kinds": sorted(k.label for k in chosen), "num": num, "seed": seed, "steps": steps,
        "guidance": guidance, "signal": SIGNAL if signal is None else signal, "noise": NOISE if noise is None else noise,
        "mask_threshold": mask_threshold, "mask_steps": mask_steps, "resolution": meta["config"]["resolution"],
        "profile": profile, **switches.to_dict(),
    }
    check_settings(out, settings)
    done = valid_rows(out)
    todo = [(k, batch) for k in chosen for batch in batches_of(num, batch_size, rank, world)
            if any((k.label, i) not in done for i in batch)]
    missing = sum((k.label, i) not in done for k, batch in todo for i in batch)
    pipe = _load_pipeline(run, todo, device, switches) if todo else None

    _remove_temporaries(out, rank)
    write_settings(out, settings, rank)
    manifest = start_manifest(out, done, rank, world, batch_size)
    with manifest.open("a") as fh, _progress(missing, progress) as bar:
        for kind, batch in todo:
            for item in _sample(pipe, kind, batch, settings):
                if (kind.label, item.index) not in done:
                    _append_row(fh, manifest, write_output(out, kind, item, name_width(num), rank, settings))
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


def _sample(pipe: SeaSPipeline, kind: Kind, indices: list[int], settings: dict) -> list[Generated]:
    return pipe.generate(
        kind.label, indices, seed=settings["seed"], steps=settings["steps"], guidance=settings["guidance"],
        signal=settings["signal"], noise=settings["noise"], mask_threshold=settings["mask_threshold"],
        mask_steps=settings["mask_steps"], batch_size=len(indices),
    )


def write_output(out: Path, kind: Kind, item: Generated, width: int, rank: int, settings: dict) -> dict:
    """Write one image (and mask) atomically; return its manifest row."""
    import numpy as np
    from PIL import Image

    image_path, mask_path = output_paths(kind, item.index, width)
    _save_png(item.image, out / image_path, rank)
    area = None
    if mask_path is not None:
        _save_png(Image.fromarray(item.mask.astype(np.uint8) * 255), out / mask_path, rank)
        area = float(item.mask.mean())
    return {
        "kind": kind.label, "index": item.index, "image": image_path, "mask": mask_path, "prompt": item.prompt,
        "seed": item.seed, "reference": item.reference, "mask_area": area, "steps": settings["steps"],
        "guidance": settings["guidance"], "signal": settings["signal"],
    }


def _save_png(image, path: Path, rank: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, rank, lambda tmp: image.save(tmp, format="PNG"))


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


def _load_pipeline(run: Path, todo: list[tuple[Kind, list[int]]], device: str, switches: GenerationSwitches):
    from .pipeline import SeaSPipeline

    with_masks = any(not kind.is_normal for kind, _ in todo)
    return SeaSPipeline.from_run(run, device=device, with_masks=with_masks, switches=switches)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", unit="img", disable=not enabled, dynamic_ncols=True)


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``seas generate`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "generate", help="generate anomaly images with masks, and normal images",
        description="Sample a finished run (stage 1 and 2) into a folder of images, masks and a manifest "
        "(see docs/GENERATION.md). Re-running the same command resumes; several processes "
        "(torchrun / accelerate launch) share the work.",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="folder of a finished 'seas train' + 'seas train-mask'")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <run>/generated)")
    p.add_argument("--type", action="append", default=None, metavar="NAME",
                   help="anomaly type to generate (repeatable), or 'all' for every type of the run")
    p.add_argument("--normal", action="store_true", help="also generate normal images (folder 'good', no masks)")
    p.add_argument("--mix", action="append", default=None, metavar="A+B",
                   help="unseen anomalies mixing the token groups of several types, in this order (repeatable)")
    p.add_argument("--num", type=int, default=DEFAULT_NUM, help=f"outputs per kind (default {DEFAULT_NUM})")
    p.add_argument("--batch-size", type=int, default=4, help="images per sampler call (default 4); outputs do not depend on it")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps (default 25)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale; <= 1 turns it off (default: the run's dataset preset: "
                   "8 MVTec AD, 2 VisA, 5 MVTec 3D AD)")
    p.add_argument("--signal", type=float, default=None,
                   help="weight of the normal image's latent in the start latent (default 0.0979, the reference's)")
    p.add_argument("--mask-threshold", type=float, default=0.2, help="binary mask = mean probability > this (default 0.2)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu; with several processes each takes its own GPU)")
    add_memory_args(p)
    p.add_argument("--export-mvtec", default=None, metavar="DIR",
                   help="afterwards, also write the outputs as an MVTec AD product folder DIR/<product>")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
    return p


def add_memory_args(p: argparse.ArgumentParser) -> None:
    """--profile and the memory switches it sets (an option given explicitly wins)."""
    from .config import PROFILES

    g = p.add_argument_group("memory and precision (docs/GENERATION.md; a folder resumes only with the same)")
    g.add_argument("--profile", choices=PROFILES, default="default",
                   help="default: fp32; fast: fp16 weights on a GPU (fp32 on a CPU, where bf16 is slower); "
                   "low-memory: half-precision weights (fp16 on a GPU, bf16 on a CPU) plus VAE slicing and tiling. "
                   "Explicit options below win")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="precision of the weights and activations (default: the profile's)")
    g.add_argument("--vae-slicing", action=argparse.BooleanOptionalAction, default=None,
                   help="decode, and run the mask head, one image at a time (default: the profile's)")
    g.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=None,
                   help="decode images without masks (normal images) in tiles when larger than the VAE's "
                   "tile size; decodes the mask head reads are never tiled (default: the profile's)")
    g.add_argument("--attention-slicing", action=argparse.BooleanOptionalAction, default=None,
                   help="U-Net attention computed in slices of heads (default: off in every profile)")


def switches_from_args(args, device: str) -> GenerationSwitches:
    """The switches of ``args.profile`` on ``device``, with the options given explicitly."""
    import torch

    from .profiles import generation_switches

    names = ("vae_slicing", "vae_tiling", "attention_slicing")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.dtype is not None:
        given["dtype"] = getattr(torch, args.dtype)
    return dataclasses.replace(generation_switches(args.profile, device), **given)


def kinds_from_args(args, types: list[str]) -> list[str]:
    """The kinds an invocation asks for: types (``all`` expanded), mixtures, then ``good``."""
    from .pipeline import GOOD, MIX

    kinds = []
    for name in args.type or []:
        kinds += types if name == "all" else [name]
    kinds += args.mix or []
    if args.normal:
        kinds.append(GOOD)
    if not kinds:
        raise ConfigError("nothing to generate: give --type NAME (or --type all), --mix A+B and/or --normal")
    bad_mix = [m for m in args.mix or [] if MIX not in m]
    if bad_mix:
        raise ConfigError(f"--mix {bad_mix[0]}: name two or more types joined by '+', e.g. --mix {'+'.join(types[:2])}")
    named = [("--type", name) for name in args.type or [] if name not in ("all", GOOD)]
    named += [("--mix", part) for mix in args.mix or [] for part in mix.split(MIX)]
    for option, name in named:
        if name not in types:
            raise ConfigError(f"{option} {name}: the run {args.run} has no such type; "
                              f"choose from {', '.join(types)} (or --type all)")
    return kinds


def cmd_generate(args) -> int:
    import torch
    from accelerate import PartialState

    from .export import export_mvtec
    from .run import read_run_meta

    kinds = kinds_from_args(args, read_run_meta(args.run)["types"])
    # On a machine without a GPU, cpu=True lets torchrun's processes find each other (gloo).
    state = PartialState(cpu=args.device == "cpu" or (args.device is None and not torch.cuda.is_available()))
    # One GPU per process under torchrun / accelerate. A distributed CPU state says "cpu:0",
    # which takes other kernels than "cpu": plain "cpu" keeps the outputs of one process.
    device = args.device or ("cpu" if state.device.type == "cpu" else str(state.device))
    out = generate_to_folder(
        args.run, args.out, kinds, num=args.num, seed=args.seed, batch_size=args.batch_size, steps=args.steps,
        guidance=args.guidance, signal=args.signal, mask_threshold=args.mask_threshold, device=device,
        rank=state.process_index, world=state.num_processes, progress=state.is_main_process and not args.quiet,
        profile=args.profile, switches=switches_from_args(args, device),
    )
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    manifest = merge_manifests(out)
    print(f"{len(read_rows(manifest))} outputs in {out} (manifest {manifest})")
    if args.export_mvtec:
        print(f"MVTec AD layout written to {export_mvtec(out, args.export_mvtec)}")
    return 0
