"""``seas.SeaSAugmenter``: SeaS defects inside a detector's training loop.

The call shape of the synthetic-anomaly augmenters of anomaly-detection libraries (anomalib's
DRAEM ``augmenter``, GLASS's ``augmentor``): ``augmented, masks = augmenter(images)`` with
``images (B, 3, H, W)`` floats in [0, 1], ``augmented`` of the same shape, dtype and device, and
``masks (B, 1, H, W)`` 0/1 floats pixel-aligned with it. Each image is augmented with
``probability`` (the rest come back unchanged, with an empty mask); which images, which bank
pair or type, and where, come from one generator seeded by ``seed``, so a training run is
repeatable.

Two modes:

* **bank** (``bank=DIR``, fast: no diffusion in the loop): replays the pairs of a folder that
  ``seas augment`` or ``seas generate`` wrote with this run (each type of an augmented image
  with several types is a pair of its own, with that type's mask). A drawn pair is resized to the
  image (bilinear; masks nearest) and its pixels replace the image's inside its mask grown by
  ``grow`` pixels; **everywhere else the output is the input tensor itself**, bit for bit. The
  returned mask is the pair's mask.
* **direct** (``bank=None``, slow: one placed sampling per augmented image, seconds each on a
  CPU): a moved real training mask of a drawn type is the region, and the run draws the defect
  into the image itself (:func:`seas.generation.augment.augment_batch`); the image's pixels
  outside the region come back unchanged (up to the [0, 1] -> 8-bit -> [0, 1] rounding of the
  region's pixels only). Augmented image ``n`` (counted over the augmenter's life) has seed
  ``sampling.seed + n``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from seas.config import GenerationConfig, GenerationSwitches
from seas.errors import ConfigError
from seas.files.images import read_mask
from seas.generation.generated import GeneratedFolder
from seas.run import Run


class Bank:
    """The anomaly pairs of a generated or augmented folder of ``run`` whose types are all among
    ``types``; one-line errors for a folder of another run or without such pairs."""

    def __init__(self, path: str | Path, run: Run, types: Sequence[str], grow: int = 2):
        self.folder = GeneratedFolder.existing(path, option="bank")
        written_by = self.folder.settings().get("run")
        if written_by is None or Path(written_by).resolve() != run.path.resolve():
            raise ConfigError(f"bank {self.folder.path}: written by the run {written_by}, not {run.path}; give a folder "
                              "that 'seas augment' or 'seas generate' wrote with this run")
        # (image, mask, kind) of every defect of the wanted types: one per type of an augmented
        # image with several (its per-type masks), else the pair itself when all its types are wanted
        self.pairs: list[tuple[str, str, str]] = []
        for row in self.folder.rows():
            if row.get("type_masks"):
                self.pairs += [(row["image"], path, name) for name, path in row["type_masks"].items() if name in types]
            elif row.get("mask") and row.get("mask_area") != 0 and set(row["kind"].split("+")) <= set(types):
                self.pairs.append((row["image"], row["mask"], row["kind"]))
        if not self.pairs:
            raise ConfigError(f"bank {self.folder.path}: holds no anomaly pair of the types {', '.join(types)}; "
                              "generate or augment some first")
        self.kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
        self.pair = functools.lru_cache(maxsize=512)(self._read)  # decoded pairs, the most recent kept

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pair ``number``: image ``(h, w, 3)`` float32 in [0, 1], mask and pasted area ``(h, w)`` bool."""
        from seas.files.images import read_rgb

        image, mask, _ = self.pairs[number]
        image = read_rgb(self.folder.file(image)).astype(np.float32) / 255.0
        mask = read_mask(self.folder.file(mask))
        return image, mask, cv2.dilate(mask.astype(np.uint8), self.kernel) > 0

    def at_size(self, number: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pair ``number`` resized to ``(height, width)``: image bilinear, mask and area nearest."""
        image, mask, area = self.pair(number)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            mask, area = (cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
                          for m in (mask, area))
        return image, mask, area


class SeaSAugmenter(torch.nn.Module):
    """SeaS anomalies for a training loop (module docstring).

    Args:
        run: a finished run (folder or :class:`~seas.run.Run`); direct mode needs its mask head.
        types: the anomaly types to draw (default: all of the run's).
        probability: the chance that an image is augmented.
        bank: a folder ``seas augment`` / ``seas generate`` wrote with this run (bank mode), or
            ``None`` (direct mode).
        seed: seeds the draws (which images, which pair or type, where).
        grow: bank mode: pixels the pasted area extends beyond the pair's mask.
        sampling: direct mode: the sampler's options (default :class:`GenerationConfig`).
        switches, device: direct mode: memory switches and the device the run samples on.
    """

    def __init__(self, run: Run | str | Path, types: Sequence[str] | None = None, probability: float = 0.5,
                 bank: str | Path | None = None, seed: int = 0, grow: int = 2,
                 sampling: GenerationConfig | None = None, switches: GenerationSwitches | None = None,
                 device: str | None = None):
        super().__init__()
        self.run = run if isinstance(run, Run) else Run.load(run)
        self.types = list(types or self.run.types)
        unknown = [t for t in self.types if t not in self.run.types]
        if unknown:
            raise ConfigError(f"SeaSAugmenter types: the run has no type {unknown[0]}; choose from "
                              f"{', '.join(self.run.types)}")
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"SeaSAugmenter probability {probability}: give a number between 0 and 1")
        self.probability = probability
        self.bank = None if bank is None else Bank(bank, self.run, self.types, grow)
        self.sampling = sampling or GenerationConfig()
        self.switches = switches or GenerationSwitches()
        self.device_name = device
        self.rng = np.random.default_rng(seed)
        self.drawn = 0  # direct mode: augmented images so far (image n has seed sampling.seed + n)
        self.last_kinds: list[str | None] = []  # per image of the last call: the kind drawn into it, or None
        self._pipe = self._placer = None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 3, H, W)`` floats in [0, 1] -> ``(augmented (B, 3, H, W), masks (B, 1, H, W))``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
                or not images.is_floating_point():
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"SeaSAugmenter: images must be a (B, 3, H, W) float tensor in [0, 1], got {got}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ConfigError("SeaSAugmenter: images must lie in [0, 1] (got values from "
                              f"{float(images.min()):.3g} to {float(images.max()):.3g}); scale them first")
        batch, _, height, width = images.shape
        chosen = np.flatnonzero(self.rng.random(batch) < self.probability)
        self.last_kinds = [None] * batch
        augmented = images.clone()
        masks = torch.zeros(batch, 1, height, width, dtype=images.dtype, device=images.device)
        if len(chosen) == 0:
            return augmented, masks
        if self.bank is not None:
            numbers = self.rng.integers(len(self.bank), size=len(chosen))
            drawn = [self.bank.at_size(int(n), height, width) for n in numbers]
            kinds = [self.bank.pairs[n][2] for n in numbers]
        else:
            drawn, kinds = self._direct(images[torch.from_numpy(chosen).to(images.device)])
        for b, (pixels, mask, area), kind in zip(chosen, drawn, kinds):
            self.last_kinds[b] = kind
            pixels = torch.from_numpy(pixels).permute(2, 0, 1).to(images.device, images.dtype)
            area = torch.from_numpy(area).to(images.device)
            augmented[b] = torch.where(area, pixels, images[b])
            masks[b, 0] = torch.from_numpy(mask).to(images.device, images.dtype)
        return augmented, masks

    def _direct(self, images: torch.Tensor) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[str]]:
        """Sample a defect into each of ``images (n, 3, H, W)``; per image (pixels (H, W, 3) in
        [0, 1], mask (H, W) bool, region (H, W) bool), and the types drawn."""
        from seas.generation.augment import augment_batch, to_size

        pipe, placer = self._pipeline()
        pictures = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        height, width = pictures.shape[1:3]
        kinds = [self.types[int(k)] for k in self.rng.integers(len(self.types), size=len(pictures))]
        indices = list(range(self.drawn, self.drawn + len(pictures)))
        self.drawn += len(pictures)
        results = [None] * len(pictures)
        for name in dict.fromkeys(kinds):  # one sampler call per type, in order of first appearance
            group = [j for j, k in enumerate(kinds) if k == name]
            regions = [[to_size(placer.separate((name,), indices[j], self.sampling.seed)[0], (width, height))]
                       for j in group]
            items = augment_batch(pipe, [name], [pictures[j] for j in group], regions, [indices[j] for j in group],
                                  self.sampling)
            for j, item, region in zip(group, items, regions):
                results[j] = (item.image.astype(np.float32) / 255.0, item.mask, region[0])
        return results, kinds

    def _pipeline(self):
        if self._pipe is None:
            from seas.generation.pipeline import SeaSPipeline, is_grey
            from seas.generation.placement import Placer

            device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = self.switches.torch_dtype
            self._pipe = SeaSPipeline(self.run, self.run.load_backbone(dtype), self.run.load_mask_head(dtype), device,
                                      self.switches)
            self._placer = Placer(self.run, "real-masks", grey=is_grey(self.run))
        return self._pipe, self._placer

    def extra_repr(self) -> str:
        mode = f"bank={self.bank.folder.path} ({len(self.bank)} pairs)" if self.bank is not None else "direct"
        return f"run={self.run.path}, types={self.types}, probability={self.probability}, {mode}"
