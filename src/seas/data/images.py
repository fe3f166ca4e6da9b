"""Read images and masks from disk into RGB uint8 and boolean arrays, with clear errors.

Conversions (documented behaviour, applied silently):
* grayscale, palette, CMYK, RGBA (alpha dropped) images become RGB;
* 16-bit images (PIL modes ``I;16*`` and ``I``) are scaled from 0..65535 to 0..255;
* masks are reduced to one channel and binarised. ``half`` (default): a pixel is defect when it
  is at least half of the mask's range, where the range is 0..1 if the mask's maximum is 1 or
  less (masks stored as 0/1), else the range of its bit depth (0..255 or 0..65535); so 0/255
  masks and anti-aliased edges both work. ``nonzero``: any non-zero pixel is defect (VisA's
  masks store small label values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

MASK_THRESHOLDS = ("half", "nonzero")


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


def read_mask(path: str | Path, threshold: str = "half") -> np.ndarray:
    """Mask as (H, W) bool, binarised by ``threshold`` (see module docstring)."""
    if threshold not in MASK_THRESHOLDS:
        raise DataError(f"mask threshold {threshold!r}: choose one of {', '.join(MASK_THRESHOLDS)}")
    img = _open(Path(path))
    wide = img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N")
    if img.mode not in ("L", "1") and not wide and img.mode != "F":
        img = img.convert("L")
    arr = np.asarray(img) if not wide else np.asarray(img, dtype=np.int64)
    if arr.dtype == bool:
        return arr.copy()
    if threshold == "nonzero":
        return arr > 0
    top = float(arr.max()) if arr.size else 0.0
    value_range = 1.0 if top <= 1.0 else (65535.0 if wide and top > 255 else 255.0)
    return arr >= value_range / 2.0


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path or the dataset description") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err}); re-export the file or remove it from the dataset") from None
