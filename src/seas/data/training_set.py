"""The few-shot training images held in memory, and the batches both stages draw from them.

A few dozen images fit easily (uint8 at the training resolution), so there is no DataLoader:
batch ``m`` is a pure function of (seed, m, process), which makes a resumed run draw exactly
the batches an uninterrupted one would. Anomaly and normal images are drawn from two
independent streams of seeded permutations, so every normal image is used (the reference
pairs normal i with anomaly i and never sees the others: defect 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seas.data.split import Split
from seas.data.transforms import apply_augmentation, draw_augmentation, resolve_channels, sample_tensors
from seas.seeds import stream_index


def training_images(split: Split) -> list[str]:
    """The images SeaS trains on: each type's few-shot anomalies, then the normal images."""
    return [s.image for kind in split.types for s in split.train[kind]] + [s.image for s in split.normal_train]


def split_channels(channels: str, split: Split) -> str:
    """The dataset's ``channels`` resolved on ``split``'s training images: ``"grey"`` or ``"rgb"``."""
    return resolve_channels(channels, training_images(split))


@dataclass
class TrainingSet:
    anomaly_images: torch.Tensor  # (Na, 3, R, R) float32 in [-1, 1]
    anomaly_masks: torch.Tensor  # (Na, 1, R, R) float32 in [0, 1]
    anomaly_types: torch.Tensor  # (Na,) long: index into the sorted type list
    normal_images: torch.Tensor  # (Nn, 3, R, R) float32 in [-1, 1]

    @classmethod
    def from_split(cls, split: Split, resolution: int, mask_rule: str, binarize: bool, fit: str = "defect-crop",
                   channels: str = "auto") -> "TrainingSet":
        """The few-shot images of ``split`` under the dataset's ``fit`` and ``channels`` (``auto``
        resolved on these images), as every other reader of a run's images sees them."""
        grey = split_channels(channels, split) == "grey"
        images, masks, types = [], [], []
        for k, kind in enumerate(split.types):
            for sample in split.train[kind]:
                image, mask = sample_tensors(sample.image, sample.mask, resolution, fit, mask_rule, grey, binarize)
                images.append(image)
                masks.append(mask)
                types.append(k)
        normals = [sample_tensors(s.image, None, resolution, fit, mask_rule, grey)[0] for s in split.normal_train]
        return cls(torch.stack(images), torch.stack(masks), torch.tensor(types), torch.stack(normals))


@dataclass
class Batch:
    anomaly_images: torch.Tensor  # (B, 3, R, R)
    anomaly_masks: torch.Tensor  # (B, 1, R, R)
    anomaly_types: torch.Tensor  # (B,)
    normal_images: torch.Tensor  # (B, 3, R, R)


def draw_batch(data: TrainingSet, seed: int, micro_step: int, batch_size: int, augment: bool,
               rank: int = 0, world: int = 1) -> Batch:
    """Micro-batch ``micro_step`` of process ``rank``: B anomaly samples and B normal samples.

    With augmentation, sample b's anomaly image, its mask and its paired normal image share one
    draw of (quarter turns, flip).
    """
    n_an, n_normal = len(data.anomaly_images), len(data.normal_images)
    an_imgs, an_masks, an_types, normals = [], [], [], []
    for b in range(batch_size):
        position = (micro_step * world + rank) * batch_size + b
        i = stream_index(seed, position, n_an, stream=0)
        j = stream_index(seed, position, n_normal, stream=1)
        image, mask, normal = data.anomaly_images[i], data.anomaly_masks[i], data.normal_images[j]
        if augment:
            rng = np.random.default_rng([seed, 2, position])
            turns, flip = draw_augmentation(rng)
            image, mask, normal = (apply_augmentation(x, turns, flip) for x in (image, mask, normal))
        an_imgs.append(image)
        an_masks.append(mask)
        an_types.append(data.anomaly_types[i])
        normals.append(normal)
    return Batch(torch.stack(an_imgs), torch.stack(an_masks), torch.stack(an_types), torch.stack(normals))
