"""Pre-processing shared by training and generation (spec section 2).

Images: RGB, shorter side resized to the resolution (bicubic), centre crop, pixels in [-1, 1].
Masks: the same geometry with bilinear interpolation, so borders stay soft (the reference keeps
those soft values; ``binarize=True`` thresholds them at 0.5 afterwards, a clean choice that
changes little).
Augmentation: rotation by k * 90 degrees and an optional horizontal or vertical flip, one draw
applied to an image, its mask and the normal image paired with it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _resize_crop(img: Image.Image, resolution: int, resample: int) -> Image.Image:
    w, h = img.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((new_w, new_h), resample=resample)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def image_to_tensor(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, R, R) float32 in [-1, 1]."""
    img = _resize_crop(Image.fromarray(rgb), resolution, Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: np.ndarray, resolution: int, binarize: bool = False) -> torch.Tensor:
    """(H, W) bool -> (1, R, R) float32 in [0, 1] (soft borders unless ``binarize``)."""
    img = Image.fromarray(mask.astype(np.float32))  # mode "F" keeps bilinear values exact
    arr = np.asarray(_resize_crop(img, resolution, Image.BILINEAR), dtype=np.float32).clip(0.0, 1.0)
    if binarize:
        arr = (arr >= 0.5).astype(np.float32)
    return torch.from_numpy(arr)[None].contiguous()


def draw_augmentation(rng: np.random.Generator) -> tuple[int, int]:
    """(quarter turns 0..3, flip: 0 none, 1 horizontal, 2 vertical)."""
    return int(rng.integers(4)), int(rng.integers(3))


def apply_augmentation(x: torch.Tensor, turns: int, flip: int) -> torch.Tensor:
    """Rotate (C, H, W) by ``turns`` x 90 degrees, then flip (1: horizontal, 2: vertical)."""
    x = torch.rot90(x, turns, dims=(-2, -1))
    if flip == 1:
        x = torch.flip(x, dims=(-1,))
    elif flip == 2:
        x = torch.flip(x, dims=(-2,))
    return x
