"""Read images and masks from disk into RGB uint8 and boolean arrays, with clear errors.

Conversions (documented behaviour, applied silently):
* grayscale, palette, CMYK, RGBA (alpha dropped) images become RGB;
* 16-bit images (PIL modes ``I;16*`` and ``I``) are scaled from 0..65535 to 0..255;
* masks are reduced to one channel and binarised by a *mask rule*. ``half`` (default): a pixel
  is defect when it is at least half of the mask's range, where the range is 0..1 if the mask's
  maximum is 1 or less (masks stored as 0/1), else the range of its bit depth (0..255 or
  0..65535); so 0/255 masks, 0/1 masks and anti-aliased edges all work. ``nonzero``: any
  non-zero pixel is defect (VisA's masks store small label values). Files and in-memory arrays
  follow the same rule (:func:`binarize_mask`), everywhere in the package.

Every module reads images and masks through this one: :func:`read_rgb` / :func:`read_mask` for
files, :func:`as_rgb` / :func:`as_mask` for "a path or an array", and :func:`resize_image` /
:func:`resize_mask` for a fixed square size.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from seas.errors import DataError

MASK_RULES = ("half", "nonzero")


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image; a missing, unreadable or truncated file is a DataError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path or the dataset description") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(
            f"{path}: unreadable or truncated image ({err}); re-export the file or remove it from the dataset"
        ) from None


def _to_array(img: Image.Image) -> np.ndarray:
    """Pixel array with 16-bit and 32-bit integer modes scaled to 0..255 (uint8)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64)
        return np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    return np.asarray(img)


def read_rgb(path: str | Path) -> np.ndarray:
    """Image as (H, W, 3) uint8 RGB."""
    img = _open(Path(path))
    if img.mode in ("RGB", "L", "RGBA", "LA", "CMYK", "YCbCr", "1", "P"):
        return np.asarray(img.convert("RGB"))
    gray = _to_array(img)  # 16-bit or float single-channel
    return np.repeat(gray[..., None], 3, axis=2)


def read_mask(path: str | Path, rule: str = "half") -> np.ndarray:
    """Mask file as (H, W) bool, binarised by ``rule`` (see module docstring)."""
    if rule not in MASK_RULES:
        raise DataError(f"mask rule {rule!r}: choose one of {', '.join(MASK_RULES)}")
    img = _open(Path(path))
    wide = img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N")
    if img.mode not in ("L", "1") and not wide and img.mode != "F":
        img = img.convert("L")
    arr = np.asarray(img) if not wide else np.asarray(img, dtype=np.int64)
    return binarize_mask(arr, rule, wide=wide)


def binarize_mask(arr: np.ndarray, rule: str = "half", wide: bool = False) -> np.ndarray:
    """(H, W) or (H, W, C) mask values -> (H, W) bool by ``rule`` (channels reduced by max).

    ``wide``: the values came from a 16-bit file (range 0..65535 when above 255)."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.dtype == bool:
        return arr.copy()
    if rule == "nonzero":
        return arr > 0
    top = float(arr.max()) if arr.size else 0.0
    wide = wide or arr.dtype == np.uint16
    value_range = 1.0 if top <= 1.0 else (65535.0 if wide and top > 255 else 255.0)
    return arr >= value_range / 2.0


MASK_MID_SHARE = 0.2  # a mask has few pixels that are neither dark nor bright (anti-aliased edges)
MASK_COLOUR_SHARE = 0.2  # ... and few coloured ones


def mask_file_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` does not look like a mask, or ``None``: a mask is black and white
    (with soft edges at most), a photograph is mostly mid-tones and colours. Counted on the grey
    value (channels reduced by max, 16-bit scaled): more than :data:`MASK_MID_SHARE` of the pixels
    between 10 % and 90 % of the range, or more than :data:`MASK_COLOUR_SHARE` whose channels
    differ by more than 10 % of the range. A 0/1 mask is black and white."""
    rgb = read_rgb(path).astype(np.int16)
    grey = rgb.max(axis=-1)
    if grey.max() <= 1:
        return None
    mid = float(((grey > 25) & (grey < 230)).mean())
    colour = float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 25).mean())
    if mid > MASK_MID_SHARE or colour > MASK_COLOUR_SHARE:
        what = f"{mid:.0%} of its pixels are grey tones" if mid > MASK_MID_SHARE else f"{colour:.0%} are coloured"
        return f"{path}: does not look like a mask ({what}; a photograph?); give black-and-white masks, white = defect"
    return None


def as_rgb(image) -> np.ndarray:
    """A path, or an (H, W) / (H, W, 3|4) uint8 array -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def as_mask(mask, shape: tuple[int, int] | None = None, rule: str = "half") -> np.ndarray:
    """A path, an array or ``None`` -> (H, W) bool (``None``: empty, needs ``shape``).

    A mask of another size than ``shape`` is resized by nearest neighbour."""
    if mask is None:
        if shape is None:
            raise ValueError("an empty mask needs a shape")
        return np.zeros(shape, dtype=bool)
    binary = read_mask(mask, rule) if isinstance(mask, (str, os.PathLike)) else binarize_mask(mask, rule)
    if shape is not None and binary.shape != tuple(shape):
        binary = cv2.resize(binary.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    return binary


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): area when shrinking, bilinear when enlarging."""
    shrink = min(rgb.shape[:2]) > size
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (size, size) bool, nearest neighbour."""
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path or the dataset description") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err}); re-export the file or remove it from the dataset") from None
