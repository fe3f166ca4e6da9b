"""What a training stage will cost before it starts: the base it reads, the disk it needs, and
how long stage 1 takes on a CPU (the line printed before a long run)."""

from __future__ import annotations

import json
from pathlib import Path

from seas.errors import ConfigError
from seas.files.checks import path_size
from seas.weights import SHIPPED_BASES, SHIPPED_DIR, shipped_base

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


def base_size_multiple(base: str) -> int | None:
    """What image sizes must be a multiple of for ``base`` (VAE factor x the U-Net's down-sampling),
    read from its configs without loading it; ``None`` when they are not local files to read."""
    folder = SHIPPED_DIR / base if base in SHIPPED_BASES else Path(base).expanduser()
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        unet = json.loads((folder / "unet" / "config.json").read_text())
        return 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["down_block_types"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolution_problem(base: str | None, resolution: int) -> str | None:
    """What is wrong with ``resolution`` for ``base`` (read from its configs, without loading it),
    in the words of :meth:`seas.model.backbone.Backbone.check_resolution`; ``None`` when it fits
    or when the base is not local files to read (then it is checked once loaded)."""
    multiple = base_size_multiple(base) if base else None
    if multiple is None or (resolution > 0 and resolution % multiple == 0):
        return None
    folder = SHIPPED_DIR / base if base in SHIPPED_BASES else Path(base).expanduser()
    factor = 2 ** (len(json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    return (f"--resolution {resolution} is not a positive multiple of {multiple} (VAE factor {factor} x U-Net "
            f"down-sampling) for backbone {base}; "
            f"use e.g. {max(multiple, round(resolution / multiple) * multiple)}")


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
