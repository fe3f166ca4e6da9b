"""Pre-processing shared by training, generation and evaluation (spec section 2).

Geometry, the dataset's ``fit`` (docs/DATA.md, "Geometry"): how an image of any shape becomes
the model's square. One :class:`Frame` per sample, computed from the image size, its mask and
its path, says which square region of the (possibly padded) image is used; every path that
feeds an image to a model or a metric (the training set, generation's start latents, the
localisation evidence, the downstream evaluation) applies the same frame:

* ``crop`` (the reference): shorter side resized to the resolution, centre crop;
* ``stretch``: the whole image resized to the square (the aspect ratio is lost);
* ``pad``: letterboxed to a square of its longer side, the bands filled with the median colour
  of the image's outermost pixels (masks: 0), then resized;
* ``defect-crop``: a square window of the shorter side that holds the whole mask, at a position
  drawn from the sample's path among the windows that do; when the defect is longer than the
  window, the window that keeps the most defect pixels (the one nearest the defect's centre
  among equals). A normal image (no mask) gets a window drawn the same way among all windows.

Images: RGB (or grey replicated to 3 channels, the dataset's ``channels``), resized with bicubic
interpolation, pixels in [-1, 1]. Masks: the same geometry with bilinear interpolation, so
borders stay soft (the reference keeps those soft values; ``binarize=True`` thresholds them at
0.5 afterwards, a clean choice that changes little).
Augmentation: rotation by k * 90 degrees and an optional horizontal or vertical flip, one draw
applied to an image, its mask and the normal image paired with it.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import torch
from PIL import Image

from seas.data.config import CHANNELS, FITS
from seas.errors import ConfigError
from seas.files.images import read_mask, read_rgb

# Two channels of a grey image stored as RGB may differ by this much (JPEG rounding).
GREY_TOLERANCE = 2
GREY_SAMPLE = 4096  # pixels per image the grey check looks at
GREY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Frame:
    """The square region a sample's image becomes, in its own pixels.

    The image is first padded by ``pad`` = (left, top, right, bottom) pixels (``pad`` only);
    ``box`` = (x0, y0, x1, y1) is then the region, in padded coordinates, resized to the model's
    square (a square except for ``stretch``, where it is the whole image). ``crop`` keeps the
    reference's order of operations in :func:`image_to_tensor` (resize, then crop); its box is
    the same centre window in the image's own pixels.
    """

    fit: str
    box: tuple[int, int, int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def is_identity(self) -> bool:
        """The whole, unpadded image (a square image under every fit)."""
        return self.pad == (0, 0, 0, 0) and self.box[:2] == (0, 0) and self.box[2] == self.box[3]


def sample_seed(key: str | PurePath) -> int:
    """A seed from a sample's path: its last three components (so that moving the dataset
    elsewhere keeps every window), as a CRC-32."""
    parts = PurePath(str(key)).parts[-3:]
    return zlib.crc32("/".join(parts).encode("utf-8"))


def fit_frame(size: tuple[int, int], fit: str, mask: np.ndarray | None = None, key: str | PurePath = "") -> Frame:
    """The :class:`Frame` of an image of ``size`` = (width, height) under ``fit``.

    ``mask``: its (H, W) boolean mask (``defect-crop`` keeps it whole when it fits); ``key``:
    the sample's path, which seeds the ``defect-crop`` window among those that hold the mask.
    """
    if fit not in FITS:
        raise ConfigError(f"fit {fit!r}: choose one of {', '.join(FITS)}")
    w, h = size
    side = min(w, h)
    if fit == "stretch":
        return Frame(fit, (0, 0, w, h))
    if fit == "pad":
        long = max(w, h)
        left, top = (long - w) // 2, (long - h) // 2
        return Frame(fit, (0, 0, long, long), (left, top, long - w - left, long - h - top))
    if fit == "crop":
        x0, y0 = (w - side) // 2, (h - side) // 2
        return Frame(fit, (x0, y0, x0 + side, y0 + side))
    # defect-crop: a window of the shorter side, sliding along the longer one
    wide = w >= h
    length = w if wide else h
    lo, hi = 0, length - side  # the window's first pixel along the long axis
    if mask is not None and mask.any():
        if mask.shape != (h, w):
            raise ValueError(f"mask of shape {mask.shape} for an image of {w}x{h}")
        profile = mask.sum(axis=0 if wide else 1)  # defect pixels per position along the long axis
        along = np.flatnonzero(profile)
        first, last = int(along[0]), int(along[-1]) + 1  # the defect spans [first, last)
        if last - first <= side:
            lo, hi = max(lo, last - side), min(hi, first)
        else:  # longer than the window: the window keeping the most defect pixels, nearest the defect's centre
            sums = np.convolve(profile, np.ones(side, dtype=np.int64), mode="valid")  # window starting at each position
            best = np.flatnonzero(sums == sums.max())
            lo = hi = int(best[np.argmin(np.abs(best - (first + last - side) / 2))])
    start = lo if hi <= lo else int(np.random.default_rng(sample_seed(key)).integers(lo, hi + 1))
    return Frame(fit, (start, 0, start + side, side) if wide else (0, start, side, start + side))


def _fill(rgb: np.ndarray) -> tuple[int, ...]:
    """Median colour of the image's outermost pixels: the neutral fill of ``pad``."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).reshape(-1, rgb.shape[-1] if rgb.ndim == 3 else 1)
    return tuple(int(v) for v in np.median(border, axis=0).round())


def fit_array(array: np.ndarray, frame: Frame, fill=None) -> np.ndarray:
    """An (H, W[, C]) array cut (and padded) to ``frame``'s region, at the image's own scale.

    ``fill``: the padding value (default: the median colour of the outermost pixels for images,
    0 for boolean masks)."""
    left, top, right, bottom = frame.pad
    if any(frame.pad):
        if fill is None:
            fill = 0 if array.dtype == bool else _fill(array)
        padded = np.empty((array.shape[0] + top + bottom, array.shape[1] + left + right, *array.shape[2:]),
                          dtype=array.dtype)
        padded[...] = np.asarray(fill, dtype=array.dtype)
        padded[top : top + array.shape[0], left : left + array.shape[1]] = array
        array = padded
    x0, y0, x1, y1 = frame.box
    return np.ascontiguousarray(array[y0:y1, x0:x1])


def _resize_crop(img: Image.Image, resolution: int, resample: int) -> Image.Image:
    w, h = img.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((new_w, new_h), resample=resample)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def _fit_image(img: Image.Image, array: np.ndarray, frame: Frame | None, resolution: int,
               resample: int, fill=None) -> Image.Image:
    if frame is None or frame.fit == "crop":  # the reference: resize, then crop
        return _resize_crop(img, resolution, resample)
    if frame.is_identity:
        return img.resize((resolution, resolution), resample=resample)
    return Image.fromarray(fit_array(array, frame, fill)).resize((resolution, resolution), resample=resample)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 grey (ITU-R 601 luminance, as PIL's "L"), replicated."""
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    return np.repeat(grey[..., None], 3, axis=2)


def image_to_tensor(rgb: np.ndarray, resolution: int, frame: Frame | None = None, grey: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, R, R) float32 in [-1, 1].

    ``frame`` (:func:`fit_frame`): the geometry; ``None`` is the reference's ``crop``. ``grey``:
    converted to grey first (replicated to the 3 channels the model reads)."""
    if grey:
        rgb = to_grey(rgb)
    img = _fit_image(Image.fromarray(rgb), rgb, frame, resolution, Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: np.ndarray, resolution: int, binarize: bool = False, frame: Frame | None = None) -> torch.Tensor:
    """(H, W) bool -> (1, R, R) float32 in [0, 1] (soft borders unless ``binarize``); ``frame``
    as for :func:`image_to_tensor` (the image's frame)."""
    values = mask.astype(np.float32)
    img = Image.fromarray(values)  # mode "F" keeps bilinear values exact
    arr = np.asarray(_fit_image(img, values, frame, resolution, Image.BILINEAR, fill=0.0),
                     dtype=np.float32).clip(0.0, 1.0)
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


# ----------------------------------------------------------------------------- one sample


def sample_tensors(image: str | Path, mask: str | Path | None, resolution: int, fit: str = "crop",
                   mask_rule: str = "half", grey: bool = False, binarize: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A sample's image ``(3, R, R)`` in [-1, 1] and mask ``(1, R, R)`` in [0, 1] (``None``
    without a mask file), both under ``fit`` with the frame of the sample (its mask, its path).
    Training, generation's start latents and the localisation evidence all read images here."""
    rgb = read_rgb(image)
    binary = None if mask is None else read_mask(mask, mask_rule)
    frame = fit_frame((rgb.shape[1], rgb.shape[0]), fit, binary, image)
    pixels = image_to_tensor(rgb, resolution, frame, grey)
    return pixels, None if binary is None else mask_to_tensor(binary, resolution, binarize, frame)


def sample_uint8(image: str | Path, mask: str | Path | None, resolution: int, fit: str = "crop",
                 mask_rule: str = "half", grey: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`sample_tensors` as arrays: image ``(R, R, 3)`` uint8 and mask ``(R, R)`` bool (mask
    value > 0.5), in the frame generated images have (placement, quality control)."""
    pixels, mask_tensor = sample_tensors(image, mask, resolution, fit, mask_rule, grey)
    rgb = ((pixels.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return rgb, None if mask_tensor is None else mask_tensor[0].numpy() > 0.5


def sample_arrays(image: str | Path, mask: str | Path | None, fit: str = "crop", mask_rule: str = "half",
                  grey: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """A sample's image (h, w, 3) uint8 and mask (h, w) bool (``None`` without a mask file)
    cut to its frame under ``fit``, at the image's own scale: the caller resizes them to its
    square (the downstream evaluation: area or bilinear, masks by nearest neighbour). The
    region is the one :func:`sample_tensors` resizes (``crop``: the same centre window; the
    tensors resize first and crop after, as the reference)."""
    rgb = read_rgb(image)
    if grey:
        rgb = to_grey(rgb)
    binary = None if mask is None else read_mask(mask, mask_rule)
    frame = fit_frame((rgb.shape[1], rgb.shape[0]), fit, binary, image)
    return fit_array(rgb, frame), None if binary is None else fit_array(binary, frame)


# ----------------------------------------------------------------------------- defect pixels kept


def _crop_window(size: tuple[int, int], resolution: int) -> tuple[float, float, float, float]:
    """The region of the image (its own pixels, fractional) that ``crop`` keeps at ``resolution``."""
    w, h = size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    sx, sy = new_w / w, new_h / h
    return left / sx, top / sy, (left + resolution) / sx, (top + resolution) / sy


def kept_defect_share(mask: np.ndarray, resolution: int, fit: str, key: str | PurePath = "") -> float:
    """Share of a mask's defect pixels inside the region ``fit`` keeps (1.0: all; NaN for an
    empty mask). ``stretch`` and ``pad`` keep the whole image; ``crop`` the centre window at
    ``resolution``; ``defect-crop`` the window of the sample (``key``: its image path)."""
    mask = np.asarray(mask, dtype=bool)
    total = int(mask.sum())
    if not total:
        return math.nan
    if fit in ("stretch", "pad"):
        return 1.0
    h, w = mask.shape
    if fit == "crop":
        x0, y0, x1, y1 = _crop_window((w, h), resolution)
    else:
        x0, y0, x1, y1 = fit_frame((w, h), fit, mask, key).box
    cols, rows = np.arange(w) + 0.5, np.arange(h) + 0.5  # pixel centres
    inside = np.outer((rows >= y0) & (rows < y1), (cols >= x0) & (cols < x1))
    return float((mask & inside).sum()) / total


def kept_defect_table(samples: Iterable, mask_rule: str = "half", resolution: int = 512
                      ) -> list[tuple[str, dict[str, tuple[int, int, int, float]]]]:
    """Per anomaly type (in the order first met): for each fit, how many of its masks are kept
    fully, partly and not at all, and the share of all its defect pixels that is kept.
    ``samples``: objects with ``image``, ``mask`` and ``type`` (normal images and empty masks are
    left out)."""
    counts: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        if s.mask is None:
            continue
        mask = read_mask(s.mask, mask_rule)
        if not mask.any():
            continue
        row = counts.setdefault(s.type, {fit: [0, 0, 0, 0.0, 0.0] for fit in FITS})
        for fit in FITS:
            share = kept_defect_share(mask, resolution, fit, s.image)
            row[fit][0 if share >= 1.0 else 2 if share <= 0.0 else 1] += 1
            row[fit][3] += share * mask.sum()  # defect pixels kept
            row[fit][4] += mask.sum()  # defect pixels
    return [(kind, {fit: (int(v[0]), int(v[1]), int(v[2]), float(v[3] / v[4])) for fit, v in row.items()})
            for kind, row in counts.items()]


# ----------------------------------------------------------------------------- channels


def is_grey_image(path: str | Path) -> bool:
    """Whether an image file is grey: a single-channel mode, or R = G = B (within
    :data:`GREY_TOLERANCE`) on an even sample of its pixels."""
    try:
        with Image.open(path) as img:
            if img.mode in GREY_MODES:
                return True
    except OSError:
        pass  # read_rgb says what is wrong with the file
    rgb = read_rgb(path).reshape(-1, 3)
    step = max(1, len(rgb) // GREY_SAMPLE)
    sample = rgb[::step].astype(np.int16)
    return int(np.abs(sample - sample[:, :1]).max(initial=0)) <= GREY_TOLERANCE


@functools.lru_cache(maxsize=16)
def _grey_product(paths: tuple[str, ...]) -> bool:
    return bool(paths) and all(is_grey_image(p) for p in paths)


def resolve_channels(channels: str, images: Sequence[str | Path]) -> str:
    """``"grey"`` or ``"rgb"``: ``channels`` itself, or for ``"auto"`` whether every image of
    ``images`` (the training images) is grey (:func:`is_grey_image`)."""
    if channels not in CHANNELS:
        raise ConfigError(f"channels {channels!r}: choose one of {', '.join(CHANNELS)}")
    if channels != "auto":
        return channels
    return "grey" if _grey_product(tuple(str(p) for p in images)) else "rgb"
