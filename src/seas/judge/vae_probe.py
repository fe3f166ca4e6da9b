"""What a VAE keeps of the demo product's real defects: the round trip every generated image takes.

Every image SeaS generates is decoded by the base's VAE, so a defect the VAE cannot reconstruct
cannot be generated, whatever the U-Net and stage 1 learn. :class:`VaeProbe` holds the demo's
synthetic product in memory (the images ``seas demo`` writes for the same seed, split as the demo
splits them), fits the type classifier once on its few-shot training anomalies and normal images,
and reads any VAE: the held-out test anomalies are round-tripped (encode -> mean latent ->
decode) and scored by

* ``l1`` (mean absolute error, [0, 1] grey units) and ``psnr`` (dB, peak 1) against the originals;
* ``type_fidelity``: the share of round-tripped anomalies the classifier names as their type
  (cropped around their true mask); ``good_rate``: the share it reads as normal.

``originals()`` gives the same reading of the untouched images: the ceiling a VAE is held to.
"""

from __future__ import annotations

import numpy as np
import torch

from seas.data.readers import GOOD
from seas.data.synthetic import SYNTHETIC_TYPES, synthetic_image
from seas.judge.classifier import TypeClassifier
from seas.judge.measures import type_fidelity

PRODUCT = "tile"  # the demo's product name (seas.cli.demo writes the synthetic product under it)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> (N, R, R, 3) uint8."""
    return ((x.permute(0, 2, 3, 1).float().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


class VaeProbe:
    """The demo product of ``seed`` at ``size`` px: ``n_per_type`` images per type of which the
    first ``train_per_type`` train the classifier (with ``n_normals`` normal training images) and
    the rest are round-tripped."""

    def __init__(self, seed: int = 0, size: int = 128, n_per_type: int = 54, train_per_type: int = 4,
                 n_normals: int = 60, classifier_steps: int = 300):
        train, self.images, self.masks, self.types = {}, [], [], []
        for kind in SYNTHETIC_TYPES:
            pairs = [synthetic_image(seed, PRODUCT, f"test/{kind}", i, size) for i in range(n_per_type)]
            train[kind] = [(image, mask > 0) for image, mask in pairs[:train_per_type]]
            for image, mask in pairs[train_per_type:]:
                self.images.append(image)
                self.masks.append(mask > 0)
                self.types.append(kind)
        normals = [synthetic_image(seed, PRODUCT, "train/good", i, size)[0] for i in range(n_normals)]
        self.classifier = TypeClassifier().fit(train, normals, seed=seed, steps=classifier_steps)
        self.pixels = torch.from_numpy(np.stack(self.images)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, R, R)

    def reading(self, images: np.ndarray) -> dict:
        """Type fidelity and good rate of the test anomalies shown as ``images (T, R, R, 3)`` uint8."""
        pairs: dict[str, list] = {}
        for image, mask, kind in zip(images, self.masks, self.types):
            pairs.setdefault(kind, []).append((image, mask))
        result = type_fidelity(self.classifier, pairs)
        per_type = {k: v["accuracy"] for k, v in result["per_type"].items() if k != GOOD}
        good = [v["good_rate"] for k, v in result["per_type"].items() if k != GOOD]
        return {"type_fidelity": result["accuracy"], "good_rate": float(np.mean(good)), "per_type": per_type}

    def originals(self) -> dict:
        return {"l1": 0.0, "psnr": float("inf"), **self.reading(np.stack(self.images))}

    @torch.no_grad()
    def round_trip(self, vae) -> torch.Tensor:
        """The test anomalies through ``vae`` (mean latent), ``(T, 3, R, R)`` in [-1, 1]."""
        dtype = next(vae.parameters()).dtype
        out = [vae.decode(vae.encode(chunk.to(dtype)).latent_dist.mean).sample.float()
               for chunk in self.pixels.split(16)]
        return torch.cat(out).clamp(-1, 1)

    def measure(self, vae) -> dict:
        recon = self.round_trip(vae)
        error = (recon - self.pixels) / 2  # [0, 1] units
        mse = float((error ** 2).mean())
        return {"l1": float(error.abs().mean()), "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12))),
                **self.reading(to_uint8(recon))}
