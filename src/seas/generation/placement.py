"""Where a generated defect goes: the region of each anomaly image under ``--placement``.

* ``free``: SeaS as published; no region, the sampler redraws the whole image.
* ``real-masks``: for image ``i`` of a kind, one real training mask of each of the kind's types
  (read in the frame generated images have: the run's ``fit``, at its resolution) is drawn,
  rotated by a random angle, flipped with probability 1/2, scaled by 0.8-1.25 and moved to a
  place where at least ``ON_PRODUCT`` of its pixels lie on the product's foreground
  (:func:`seas.data.foreground.product_foreground` of the normal training images); a mixture
  gets the union of one mask per type.
* ``masks``: the user's mask files (a folder, sorted by name), image ``i`` taking file
  ``i % n``, resized to the resolution by nearest neighbour.

Every draw of image ``i`` comes from a generator seeded with ``(seed, i)``, so a region does not
depend on the batch, the process count or a resume. The sampler keeps the reference normal
image's latent outside the region (blended latent diffusion, :mod:`seas.generation.pipeline`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from seas.config import PLACEMENTS
from seas.data.foreground import product_foreground
from seas.data.readers import IMAGE_SUFFIXES
from seas.data.transforms import sample_uint8
from seas.errors import ConfigError
from seas.files.images import mask_file_problem, read_mask
from seas.run import Run

ON_PRODUCT = 0.95  # least share of a moved mask's pixels on the product's foreground
TRIES = 50  # positions tried per mask; the best one is kept when none reaches ON_PRODUCT
SCALES = (0.8, 1.25)
GAP = 2  # pixels kept free around each region when several types are placed on one image


def read_user_masks(folder: str | Path | None, resolution: int) -> list[np.ndarray]:
    """Every mask file of ``folder`` (sorted by name) as ``(R, R)`` bool, nearest-neighbour
    resized. A missing folder, a folder without images, an unreadable or an empty mask, or a
    file that is no mask (a photograph: grey tones, colours) is a ``ConfigError`` naming the file;
    all are read before anything is generated."""
    if folder is None:
        raise ConfigError("--placement masks needs --masks DIR, a folder of mask images (white = defect)")
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--masks {folder}: not a folder; give a folder of mask images (white = defect)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--masks {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}); add masks or fix the path")
    masks = []
    for path in files:
        try:
            binary = read_mask(path)
        except Exception as err:  # noqa: BLE001 -- any reader failure is the same user error
            raise ConfigError(f"{path}: unreadable mask ({err}); re-export it or remove it from --masks") from None
        problem = mask_file_problem(path)  # a photograph binarises into a region of half the image
        if problem:
            raise ConfigError(f"--masks {folder}: {problem}")
        if not binary.any():
            raise ConfigError(f"{path}: empty mask (no pixel at half range or above); draw the defect white "
                              f"or remove the file from --masks")
        masks.append(cv2.resize(binary.astype(np.uint8), (resolution, resolution),
                                interpolation=cv2.INTER_NEAREST) > 0)
        if not masks[-1].any():
            raise ConfigError(f"{path}: the defect vanishes when resized to {resolution} px; draw it larger")
    return masks


def move_mask(mask: np.ndarray, foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``mask (R, R)`` rotated, maybe flipped, scaled and moved onto ``foreground (R, R)``.

    The defect's bounding-box patch is transformed about its centre (nearest neighbour, so it
    stays binary), shrunk if it no longer fits, then pasted at the first of :data:`TRIES`
    random positions with at least :data:`ON_PRODUCT` of its pixels on the foreground (the
    best position when none has)."""
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    patch = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    angle, scale = rng.uniform(0, 360), rng.uniform(*SCALES)
    side = int(np.ceil(np.hypot(*patch.shape) * max(scale, 1.0))) + 2  # room for any rotation
    canvas = np.zeros((side, side), np.uint8)
    top, left = (side - patch.shape[0]) // 2, (side - patch.shape[1]) // 2
    canvas[top: top + patch.shape[0], left: left + patch.shape[1]] = patch
    turn = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, scale)
    canvas = cv2.warpAffine(canvas, turn, (side, side), flags=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(canvas)
    if len(ys) == 0:  # a one-pixel defect scaled below a pixel: keep the original patch
        canvas, ys, xs = patch, *np.nonzero(patch)
    patch = canvas[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    if max(patch.shape) > size:
        shrink = size / max(patch.shape)
        patch = cv2.resize(patch, (max(1, int(patch.shape[1] * shrink)), max(1, int(patch.shape[0] * shrink))),
                           interpolation=cv2.INTER_NEAREST)
    ph, pw = patch.shape
    pixels = max(int(patch.sum()), 1)
    best, best_share = (0, 0), -1.0
    for _ in range(TRIES):
        y, x = int(rng.integers(size - ph + 1)), int(rng.integers(size - pw + 1))
        share = float((foreground[y: y + ph, x: x + pw] & (patch > 0)).sum()) / pixels
        if share > best_share:
            best, best_share = (y, x), share
        if share >= ON_PRODUCT:
            break
    moved = np.zeros_like(mask, dtype=bool)
    moved[best[0]: best[0] + ph, best[1]: best[1] + pw] = patch > 0
    return moved


class Placer:
    """The regions of one run under one placement (see the module docstring).

    Args:
        run: the finished run (its split gives the real masks and the normal images).
        placement: one of :data:`PLACEMENTS` other than ``free``.
        masks: the user's mask folder (``masks`` placement only).
        grey: whether the product is read as grey (the pipeline's ``grey``).
    """

    def __init__(self, run: Run, placement: str, masks: str | Path | None = None, grey: bool = False):
        if placement not in PLACEMENTS or placement == "free":
            raise ConfigError(f"--placement {placement}: a region needs real-masks or masks")
        self.placement, self.masks = placement, masks
        self.resolution = run.resolution
        self.user = read_user_masks(masks, self.resolution) if placement == "masks" else []
        self.real: dict[str, list[np.ndarray]] = {}
        self.foreground = None
        if placement == "real-masks":
            data = run.data
            for name in run.types:
                read = [sample_uint8(s.image, s.mask, self.resolution, data.fit, data.mask_rule, grey)[1]
                        for s in run.split.train[name] if s.mask]
                self.real[name] = [m for m in read if m is not None and m.any()]
                if not self.real[name]:
                    raise ConfigError(f"--placement real-masks: type {name} has no non-empty training mask "
                                      f"at {self.resolution} px; use --placement masks or free")
            normals = [sample_uint8(path, None, self.resolution, data.fit, data.mask_rule, grey)[0]
                       for path in run.references]
            self.foreground = product_foreground(normals)  # (R, R) bool

    def region(self, types: tuple[str, ...], index: int, seed: int) -> np.ndarray:
        """The placed mask ``(R, R)`` bool of image ``index`` of a kind with ``types``."""
        if self.placement == "masks":
            return self.user[index % len(self.user)].copy()
        rng = np.random.default_rng([seed & 0xFFFFFFFF, index])
        placed = np.zeros((self.resolution, self.resolution), dtype=bool)
        for name in types:
            real = self.real[name]
            placed |= move_mask(real[int(rng.integers(len(real)))], self.foreground, rng)
        return placed

    def separate(self, types: tuple[str, ...], index: int, seed: int) -> list[np.ndarray]:
        """One moved real mask ``(R, R)`` bool per type for image ``index`` (``real-masks``), no
        two touching: a draw that meets an earlier type's region (grown by :data:`GAP` pixels)
        is drawn again, up to :data:`TRIES` times; a ``ConfigError`` when none is free (said
        before anything is sampled, since the regions are drawn first)."""
        rng = np.random.default_rng([seed & 0xFFFFFFFF, index, len(types)])
        taken = np.zeros((self.resolution, self.resolution), dtype=bool)
        regions = []
        for name in types:
            real = self.real[name]
            for _ in range(TRIES):
                region = move_mask(real[int(rng.integers(len(real)))], self.foreground, rng)
                if not (region & taken).any():
                    break
            else:
                raise ConfigError(f"--placement real-masks: no place for a {name} region beside the other types' "
                                  f"on image {index} after {TRIES} draws; use fewer types or --placement masks")
            regions.append(region)
            grown = cv2.dilate(region.astype(np.uint8), np.ones((2 * GAP + 1, 2 * GAP + 1), np.uint8)) > 0
            taken |= grown
        return regions
