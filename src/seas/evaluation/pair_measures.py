"""Measures of generated anomaly image/mask pairs, per anomaly type, and quality control.

A user has generated image/mask pairs of ``K`` anomaly types of one product (and
normal images) and holds the real few-shot training pairs and real normal
training images.  This module answers, without any ground truth for the
generated data, *does each generated pair look like what it claims to be?*

* **Type fidelity** (:class:`TypeClassifier`, :func:`type_fidelity`): a small
  CNN trained from scratch on crops around the *real* training anomalies (plus a
  ``"good"`` class of normal crops) labels crops around the *generated* masks.
  A generator that renders the requested type where its mask says scores a high
  accuracy; one that draws the wrong type, nothing, or a defect away from its
  mask does not.
* **Mask agreement** (:func:`mask_agreement`): IoU between a segmenter trained on
  real data only (its probability maps are computed by the caller, e.g. with
  :func:`seas.evaluation.downstream.predict`) and the generated masks.
* **Anomaly evidence** (:func:`anomaly_evidence`): how much a generated image
  changed from its reference normal image inside its mask versus outside it;
  meaningful only when the defect was placed *on* that reference.
* **Area and position** (:func:`area_position`, :func:`product_foreground`):
  generated mask areas against the real range of the type, empty masks, and the
  share of mask pixels lying on the product.
* **Quality control** (:class:`QCThresholds`, :func:`learn_thresholds`,
  :func:`qc_scores`, :func:`qc_accept`): thresholds learned from the real
  training pairs, and an accept/reject decision with reasons for one generated
  pair.

Conventions: images are ``(H, W, 3)`` uint8 RGB arrays (paths are accepted and
read with :func:`seas.files.images.as_rgb`); masks are ``(H, W)``
bool arrays (anything :func:`seas.files.images.as_mask` accepts,
binarised at half range; ``None`` is an empty mask and a mask of another size is
resized to its image by nearest neighbour).  Areas are fractions of the image.
Image differences are in ``[0, 1]`` units (uint8 difference / 255, averaged over
the three channels).  Everything is deterministic given a seed on the CPU.
Dictionary measures report undefined entries (e.g. a mean over no element) as
NaN, as :mod:`seas.evaluation.metrics` does; the QC scores omit them instead, so
they are always strict-JSON plain floats.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence, Union

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from seas.data.readers import GOOD
from seas.files.images import as_mask, as_rgb

__all__ = [
    "GOOD",
    "iou_binary",
    "crop_box",
    "crop",
    "TypeClassifier",
    "type_fidelity",
    "mask_agreement",
    "anomaly_evidence",
    "product_foreground",
    "area_position",
    "QCThresholds",
    "learn_thresholds",
    "qc_scores",
    "qc_accept",
]

ImageLike = Union[np.ndarray, str, os.PathLike]
MaskLike = Union[np.ndarray, str, os.PathLike, None]

#: Name of the normal class of :class:`TypeClassifier` (also the ``kind`` of a normal image in QC).

_EPS = 1.0 / 255.0  # one grey level: floor of the evidence ratio/contrast denominators


# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------


def _image(image: ImageLike) -> np.ndarray:
    return as_rgb(image)


def _mask(mask: MaskLike, shape: tuple[int, int]) -> np.ndarray:
    return as_mask(mask, shape)


def _nan_mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _resize_bool(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w)`` bool map to ``shape``."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0


def iou_binary(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool maps; 0 when both are empty (nothing was matched)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ----------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------


def crop_box(mask: np.ndarray | None, shape: tuple[int, int], *, context: float = 2.0,
             min_side: float = 0.125) -> tuple[int, int, int]:
    """The square box ``(y0, x0, side)`` the classifier looks at.

    Rule: the bounding box of ``mask`` (``(H, W)`` bool), a square of side
    ``context * max(box height, box width)`` centred on it, at least
    ``min_side * min(H, W)`` (and 8 px) so that a tiny defect keeps some
    surroundings, at most ``min(H, W)``, moved inside the image when it
    crosses a border.  With ``context = 2`` the defect fills about a quarter of
    the crop: enough context to tell e.g. a stain from the surface it lies on,
    while the defect still dominates the pooled features.  An empty or
    ``None`` mask gives the centre square of side ``min(H, W)`` (the whole
    image of a square picture).
    """
    h, w = shape
    short = min(h, w)
    if mask is None or not mask.any():
        return (h - short) // 2, (w - short) // 2, short
    ys, xs = np.nonzero(mask)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = context * max(y2 - y1, x2 - x1)
    side = int(round(min(max(side, min_side * short, 8), short)))
    cy, cx = (y1 + y2) / 2, (x1 + x2) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, x0, side


def crop(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Cut ``box = (y0, x0, side)`` out of ``(H, W, 3)`` uint8 and resize it to ``(size, size, 3)``."""
    y0, x0, side = box
    patch = image[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def _jitter_box(box: tuple[int, int, int], shape: tuple[int, int], rng: np.random.Generator,
                shift: float, scale: tuple[float, float]) -> tuple[int, int, int]:
    """Random scale (log-uniform in ``scale``) and shift (``+-shift * side``) of a box, kept inside."""
    h, w = shape
    y0, x0, side = box
    cy, cx = y0 + side / 2, x0 + side / 2
    new = side * math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    new = int(round(min(max(new, 8), min(h, w))))
    cy += rng.uniform(-shift, shift) * side
    cx += rng.uniform(-shift, shift) * side
    return (int(np.clip(round(cy - new / 2), 0, h - new)),
            int(np.clip(round(cx - new / 2), 0, w - new)), new)


def _photometric(patch: np.ndarray, rng: np.random.Generator, orientation: bool) -> np.ndarray:
    """Random dihedral transform (when ``orientation``) and brightness of a ``(s, s, 3)`` uint8 crop."""
    if orientation:
        patch = np.rot90(patch, int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-8.0, 8.0)
    return np.clip(patch.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Type classifier
# ----------------------------------------------------------------------------


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _TypeNet(nn.Module):
    """Conv-BN-ReLU blocks and global pooling: ``(B, 3, S, S)`` -> logits ``(B, C)``.

    A strided first block (S/2), then two blocks each followed by 2x2 max
    pooling (S/8) and a last block; global average and max pooling are
    concatenated (the max keeps small, strong defects visible) before a linear
    layer.
    """

    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        c = width
        self.features = nn.Sequential(
            _Block(3, c, stride=2), _Block(c, 2 * c), nn.MaxPool2d(2),
            _Block(2 * c, 4 * c), nn.MaxPool2d(2), _Block(4 * c, 4 * c),
        )
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8 * c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.fc(self.drop(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)))


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` -> float ``(N, 3, S, S)`` centred at 0.5 with scale 0.25.

    No per-crop normalisation: brightness is part of what tells a dark hole
    from a bright scratch.
    """
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25


class TypeClassifier:
    """Anomaly-type classifier of one product, trained from scratch on the real few-shot data.

    Classes: the anomaly types in the order given to :meth:`fit`, then
    ``"good"``.  Inputs are crops chosen by :func:`crop_box` (a square around
    the mask, ``context`` times its larger side) resized to ``size`` px; the
    ``"good"`` class is random crops of the normal training images at the
    scales the real anomaly crops have, plus whole-image (centre-square)
    views, so the classifier can also say that a generated normal image looks
    normal and that a crop around a mask with no defect under it looks normal.

    Args:
        context: crop side / larger side of the mask's bounding box.
        min_side: smallest crop side, as a fraction of the image's shorter side.
        orientation_invariant: augment with flips and 90-degree rotations and
            average the prediction over the 8 flips/rotations (test-time
            augmentation).  Turn off for orientation-sensitive products.
        device: torch device for training and prediction (default CPU, which
            keeps the results deterministic).
    """

    def __init__(self, *, context: float = 2.0, min_side: float = 0.125,
                 orientation_invariant: bool = True, device: str | torch.device = "cpu"):
        self.context = context
        self.min_side = min_side
        self.orientation_invariant = orientation_invariant
        self.device = torch.device(device)
        self.classes: list[str] = []
        self.size = 64
        self.net: _TypeNet | None = None

    # -- data ---------------------------------------------------------------

    @property
    def types(self) -> list[str]:
        """The anomaly types (all classes but ``"good"``), ``(K,)``."""
        return self.classes[:-1]

    def box(self, mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[int, int, int]:
        """:func:`crop_box` with this classifier's crop settings."""
        return crop_box(mask, shape, context=self.context, min_side=self.min_side)

    def _augmented_crop(self, image: np.ndarray, box: tuple[int, int, int],
                        rng: np.random.Generator) -> np.ndarray:
        """One view of a real anomaly: box shifted by up to 12% of its side, scaled by 0.8-1.25,
        then flipped/rotated (when orientation-invariant) and brightness-jittered (gain
        0.85-1.15, offset +-8 grey levels)."""
        box = _jitter_box(box, image.shape[:2], rng, shift=0.12, scale=(0.8, 1.25))
        return _photometric(crop(image, box, self.size), rng, self.orientation_invariant)

    def _wide_crop(self, image: np.ndarray, bbox: tuple[int, int, int, int],
                   rng: np.random.Generator) -> np.ndarray:
        """A wider view of a real anomaly: a square of side log-uniform between the defect's
        crop side and the image's shorter side, placed at random among the positions that keep
        the defect's bounding box ``(y1, y2, x1, x2)`` inside.  Training on these teaches the
        classifier that a whole image with a defect somewhere is not "good"."""
        h, w = image.shape[:2]
        y1, y2, x1, x2 = bbox
        short = min(h, w)
        lo = max(y2 - y1, x2 - x1, 8)
        side = int(round(min(lo * math.exp(rng.uniform(0, math.log(max(short / lo, 1.0)))), short)))
        y0 = int(rng.integers(max(0, y2 - side), min(y1, h - side) + 1))
        x0 = int(rng.integers(max(0, x2 - side), min(x1, w - side) + 1))
        return _photometric(crop(image, (y0, x0, side), self.size), rng, self.orientation_invariant)

    def _good_crop(self, image: np.ndarray, side_range: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
        """A random normal crop: a quarter are whole-image views, the rest squares whose side
        (fraction of the shorter image side) is log-uniform in ``side_range``, placed uniformly."""
        h, w = image.shape[:2]
        short = min(h, w)
        if rng.random() < 0.25:
            box = crop_box(None, (h, w))
            box = _jitter_box(box, (h, w), rng, shift=0.05, scale=(0.85, 1.0))
        else:
            lo, hi = side_range
            side = short * math.exp(rng.uniform(math.log(lo), math.log(hi)))
            side = int(round(min(max(side, 8), short)))
            box = (int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1)), side)
        return _photometric(crop(image, box, self.size), rng, self.orientation_invariant)

    # -- training -----------------------------------------------------------

    def fit(self, pairs_by_type: Mapping[str, Sequence[tuple[ImageLike, MaskLike]]],
            normal_images: Sequence[ImageLike], *, seed: int = 0, steps: int = 300,
            size: int = 64, batch_size: int = 32, lr: float = 3e-3, width: int = 16,
            wide: float = 0.25) -> "TypeClassifier":
        """Train from scratch; returns ``self`` (in eval mode).

        Args:
            pairs_by_type: ``{type: [(image, mask), ...]}`` real training
                anomalies; ``(H, W, 3)`` uint8 images, ``(H, W)`` masks.  Pairs
                with an empty mask are skipped (an empty mask shows no defect);
                every type needs at least one non-empty one.
            normal_images: real normal training images (at least one).
            seed: seeds the weights, the class/example draws and the augmentation.
            steps: AdamW steps (learning rate decayed by a cosine to 0).
            size: crop resolution in px.
            batch_size: crops per step; each crop's class is drawn uniformly,
                so every class, ``"good"`` included, is balanced whatever its
                number of examples.
            lr: peak learning rate.
            width: channels of the first block (doubled twice).
            wide: fraction of the anomaly views taken wider than the mask's
                crop, up to the whole image (:meth:`_wide_crop`), so that a
                whole (e.g. generated "normal") image showing a defect is not
                read as "good".

        The global torch RNG is left as it was.
        """
        types = list(pairs_by_type)
        if not types:
            raise ValueError("no anomaly types")
        if GOOD in types:
            raise ValueError(f"{GOOD!r} is reserved for the normal class")
        if not normal_images:
            raise ValueError("need at least one normal image for the 'good' class")
        examples: list[list[tuple[np.ndarray, tuple[int, int, int], tuple[int, int, int, int]]]] = []
        fractions = []
        for name in types:
            items = []
            for image, mask in pairs_by_type[name]:
                rgb = _image(image)
                binary = _mask(mask, rgb.shape[:2])
                if binary.any():
                    box = self.box(binary, rgb.shape[:2])
                    ys, xs = np.nonzero(binary)
                    items.append((rgb, box, (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)))
                    fractions.append(box[2] / min(rgb.shape[:2]))
            if not items:
                raise ValueError(f"type {name!r} has no pair with a non-empty mask")
            examples.append(items)
        normals = [_image(im) for im in normal_images]
        side_range = (max(0.8 * min(fractions), 0.05), 1.0)

        self.classes = types + [GOOD]
        self.size = size
        rng = np.random.default_rng(seed)
        n_classes = len(self.classes)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            net = _TypeNet(n_classes, width).to(self.device).train()
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
            for _ in range(steps):
                labels = rng.integers(n_classes, size=batch_size)
                patches = []
                for c in labels:
                    if c == n_classes - 1:
                        patches.append(self._good_crop(normals[rng.integers(len(normals))], side_range, rng))
                    else:
                        rgb, box, bbox = examples[c][rng.integers(len(examples[c]))]
                        if rng.random() < wide:
                            patches.append(self._wide_crop(rgb, bbox, rng))
                        else:
                            patches.append(self._augmented_crop(rgb, box, rng))
                x = _to_tensor(np.stack(patches)).to(self.device)
                loss = F.cross_entropy(net(x), torch.from_numpy(labels).to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        self.net = net.eval()
        return self

    # -- prediction ---------------------------------------------------------

    def _check(self) -> _TypeNet:
        if self.net is None:
            raise RuntimeError("TypeClassifier is not fitted; call fit() first")
        return self.net

    @torch.inference_mode()
    def predict_crops(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities ``(N, C)`` float64 of prepared crops ``(N, size, size, 3)`` uint8.

        When orientation-invariant, the softmax is averaged over the 8
        flips/rotations of each crop (the symmetry the training used).
        """
        net = self._check()
        out = []
        for i in range(0, len(patches), batch_size):
            x = _to_tensor(patches[i:i + batch_size]).to(self.device)
            if self.orientation_invariant:
                views = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
            else:
                views = [x]
            probs = torch.stack([F.softmax(net(v), dim=1) for v in views]).mean(0)
            out.append(probs.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def crop_of(self, image: ImageLike, mask: MaskLike) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 crop :meth:`predict` classifies."""
        rgb = _image(image)
        binary = _mask(mask, rgb.shape[:2])
        return crop(rgb, self.box(binary, rgb.shape[:2]), self.size)

    def predict(self, image: ImageLike, mask: MaskLike = None) -> np.ndarray:
        """Probabilities ``(C,)`` over :attr:`classes` of the crop around ``mask``.

        ``image`` ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` bool; ``None`` or
        an empty mask classifies the centre square of the image (its whole
        extent when square) -- the view of a generated normal image.
        """
        return self.predict_many([(image, mask)])[0]

    def predict_many(self, pairs: Iterable[tuple[ImageLike, MaskLike]]) -> np.ndarray:
        """:meth:`predict` of each ``(image, mask)``, batched: ``(N, C)``."""
        patches = [self.crop_of(image, mask) for image, mask in pairs]
        if not patches:
            return np.zeros((0, len(self.classes)))
        return self.predict_crops(np.stack(patches))

    # -- persistence --------------------------------------------------------

    def state(self) -> dict:
        """Everything needed to rebuild the classifier (for ``torch.save``)."""
        net = self._check()
        return {"classes": list(self.classes), "size": self.size, "context": self.context,
                "min_side": self.min_side, "orientation_invariant": self.orientation_invariant,
                "width": net.features[0][0].out_channels,
                "weights": {k: v.cpu() for k, v in net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: Mapping, device: str | torch.device = "cpu") -> "TypeClassifier":
        """Inverse of :meth:`state`."""
        clf = cls(context=state["context"], min_side=state["min_side"],
                  orientation_invariant=state["orientation_invariant"], device=device)
        clf.classes, clf.size = list(state["classes"]), int(state["size"])
        net = _TypeNet(len(clf.classes), int(state["width"]))
        net.load_state_dict(state["weights"])
        clf.net = net.to(clf.device).eval()
        return clf


def type_fidelity(classifier: TypeClassifier,
                  generated: Mapping[str, Sequence[tuple[ImageLike, MaskLike]]]) -> dict:
    """How often the classifier recognises each generated pair as the type it was generated as.

    Args:
        classifier: a fitted :class:`TypeClassifier` of the product.
        generated: ``{type: [(image, mask), ...]}``; every key must be one of
            ``classifier.classes``.  A ``"good"`` key holds generated normal
            images (mask ``None``), classified on their whole (centre-square)
            view.

    Returns a dict:
        ``rows``: the true types present, in classifier order; ``columns``:
        ``classifier.classes``; ``confusion``: ``len(rows) x len(columns)``
        counts (row: true type, column: predicted class);
        ``per_type[type]``: ``n``, ``accuracy`` (argmax is the type),
        ``type_accuracy`` (argmax over the anomaly types only: right type
        given that it is read as an anomaly), ``good_rate`` (read as normal),
        ``mean_confidence`` (mean probability of the true type);
        ``accuracy`` / ``mean_confidence``: pooled over all anomaly pairs
        (``"good"`` excluded); ``mean_type_accuracy``: mean of the per-type
        accuracies (insensitive to unequal counts); ``chance``: ``1 / K`` for
        ``K`` anomaly types, the accuracy of guessing a type at random;
        ``good_accuracy``: accuracy on the ``"good"`` row (NaN without one).
        Undefined entries are NaN.
    """
    unknown = [t for t in generated if t not in classifier.classes]
    if unknown:
        raise ValueError(f"types {unknown} are not classes of the classifier {classifier.classes}")
    rows = [c for c in classifier.classes if c in generated]
    n_types = len(classifier.types)
    confusion = np.zeros((len(rows), len(classifier.classes)), dtype=np.int64)
    per_type, hits, confidences = {}, [], []
    for r, name in enumerate(rows):
        probs = classifier.predict_many(generated[name])
        true = classifier.classes.index(name)
        pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
        np.add.at(confusion[r], pred, 1)
        correct = (pred == true).astype(float)
        conf = probs[:, true] if len(probs) else np.zeros(0)
        entry = {"n": int(len(probs)), "accuracy": _nan_mean(correct),
                 "good_rate": _nan_mean((pred == n_types).astype(float)),
                 "mean_confidence": _nan_mean(conf)}
        if name != GOOD:
            type_pred = probs[:, :n_types].argmax(1) if len(probs) else pred
            entry["type_accuracy"] = _nan_mean((type_pred == true).astype(float))
            hits.extend(correct)
            confidences.extend(conf)
        per_type[name] = entry
    anomaly_acc = [per_type[t]["accuracy"] for t in rows if t != GOOD and per_type[t]["n"]]
    return {
        "rows": rows,
        "columns": list(classifier.classes),
        "confusion": confusion.tolist(),
        "per_type": per_type,
        "accuracy": _nan_mean(hits),
        "mean_type_accuracy": _nan_mean(anomaly_acc),
        "mean_confidence": _nan_mean(confidences),
        "chance": 1.0 / n_types,
        "good_accuracy": per_type[GOOD]["accuracy"] if GOOD in per_type else float("nan"),
    }


# ----------------------------------------------------------------------------
# Mask agreement
# ----------------------------------------------------------------------------


def mask_agreement(pred_probs: Sequence[np.ndarray], gen_masks: Sequence[MaskLike],
                   threshold: float = 0.5, found_iou: float = 0.1) -> dict:
    """Agreement of a real-only segmenter with the generated masks of one type.

    Args:
        pred_probs: per pair an ``(h, w)`` float map of anomaly probabilities
            from a segmenter trained on real data only (e.g.
            :func:`seas.evaluation.downstream.predict`); resized bilinearly
            to its mask's size when they differ.
        gen_masks: the generated ``(H, W)`` bool masks, same order.
        threshold: probability at which the prediction counts as anomalous.
        found_iou: a generated mask is *found* when the IoU of the thresholded
            prediction with it exceeds this (default 0.1: the prediction
            must both touch the defect and not be a blob many times its size).

    Returns a dict: ``n``; ``iou`` (per pair) and ``mean_iou``; ``found``
    (per pair, IoU > ``found_iou``) and ``found_rate``; ``touched_rate``
    (the more lenient "any overlapping pixel"); ``n_empty``.  An empty
    generated mask is never a mask: its IoU is 0 and it is never found.

    A real-only segmenter that finds the generated defects under their masks
    says that the pairs are consistent with what real defects look like; a low
    value means defects off their masks, invisible defects, or defects unlike
    the real ones (the segmenter's own recall bounds it from above).
    """
    if len(pred_probs) != len(gen_masks):
        raise ValueError(f"{len(pred_probs)} prediction maps for {len(gen_masks)} masks")
    ious, found, touched, n_empty = [], [], [], 0
    for prob, mask in zip(pred_probs, gen_masks):
        prob = np.asarray(prob, dtype=np.float32)
        binary = np.zeros(prob.shape, dtype=bool) if mask is None else _as_mask(mask)
        if prob.shape != binary.shape:
            prob = cv2.resize(prob, binary.shape[::-1], interpolation=cv2.INTER_LINEAR)
        pred = prob >= threshold
        if not binary.any():
            n_empty += 1
            ious.append(0.0)
            found.append(False)
            touched.append(False)
            continue
        value = iou_binary(pred, binary)
        ious.append(value)
        found.append(value > found_iou)
        touched.append(bool(np.logical_and(pred, binary).any()))
    return {
        "n": len(ious),
        "iou": [float(v) for v in ious],
        "mean_iou": _nan_mean(ious),
        "found": found,
        "found_rate": _nan_mean([float(v) for v in found]),
        "touched_rate": _nan_mean([float(v) for v in touched]),
        "n_empty": n_empty,
        "threshold": float(threshold),
        "found_iou": float(found_iou),
    }


# ----------------------------------------------------------------------------
# Anomaly evidence
# ----------------------------------------------------------------------------


def anomaly_evidence(generated: ImageLike, reference: ImageLike, mask: MaskLike,
                     ring: int | None = None) -> dict:
    """Change from a reference normal image inside vs outside the generated mask.

    Args:
        generated: ``(H, W, 3)`` uint8 generated image.
        reference: ``(H', W', 3)`` uint8 normal image the defect was placed on
            (resized to ``(H, W)`` if needed).  The measure is meaningful only
            for such pairs (inpainting, cut-paste, generation started from
            that image); for an image generated from noise every pixel changes.
        mask: ``(H, W)`` bool generated mask.
        ring: width in px of the band around the mask reported as ``ring``;
            default ``max(2, round(sqrt(mask area) / 2))``.

    Returns a dict of floats (per-pixel mean absolute difference in ``[0, 1]``,
    averaged over channels): ``inside`` (mask), ``outside`` (rest of the
    image), ``ring`` (band around the mask: a defect spilling over its mask
    shows here), ``ratio = (inside + e) / (outside + e)`` and
    ``contrast = (inside - outside) / (inside + outside + e)`` in ``(-1, 1)``,
    with ``e = 1/255`` so that an unchanged background does not divide by zero.
    A defect inside its mask gives a contrast near 1; a mask that misses the
    defect gives a contrast near or below 0.  An empty mask has ``inside = 0``
    (nothing marked, no evidence) and ``ring = NaN``.
    """
    gen = _image(generated).astype(np.float32)
    ref = _image(reference)
    h, w = gen.shape[:2]
    if ref.shape[:2] != (h, w):
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA if ref.shape[0] > h else cv2.INTER_LINEAR)
    diff = np.abs(gen - ref.astype(np.float32)).mean(axis=2) / 255.0
    binary = _mask(mask, (h, w))
    area = int(binary.sum())
    inside = float(diff[binary].mean()) if area else 0.0
    outside = float(diff[~binary].mean()) if area < h * w else 0.0
    if area:
        width = ring if ring is not None else max(2, int(round(math.sqrt(area) / 2)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
        band = (cv2.dilate(binary.astype(np.uint8), kernel) > 0) & ~binary
        ring_value = float(diff[band].mean()) if band.any() else float("nan")
    else:
        ring_value = float("nan")
    return {
        "inside": inside,
        "outside": outside,
        "ring": ring_value,
        "ratio": (inside + _EPS) / (outside + _EPS),
        "contrast": (inside - outside) / (inside + outside + _EPS),
    }


# ----------------------------------------------------------------------------
# Area and position
# ----------------------------------------------------------------------------


def _otsu(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu threshold of 1-D ``values`` and its separability (between-class / total variance)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return hi, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mean = m0[-1]
    w1 = 1 - w0
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0)
    between[valid] = (mean * w0[valid] - m0[valid]) ** 2 / (w0[valid] * w1[valid])
    k = int(between.argmax())
    total = float((p * (centres - mean) ** 2).sum())
    return float(edges[k + 1]), float(between[k] / total) if total > 0 else 0.0


def product_foreground(normal_images: Sequence[ImageLike], *, min_contrast: float = 0.08,
                       border: float = 0.03, plain_border: float = 0.75,
                       min_fraction: float = 0.01, max_fraction: float = 0.95) -> np.ndarray:
    """Estimate where the product is: ``(H, W)`` bool at the first image's size.

    Rule (documented estimate, not a segmentation):

    1. ``M`` = mean of the normal images (resized to the first one), blurred
       with a Gaussian of sigma 1% of the size; moving parts of the product
       blur into the region they may occupy.
    2. The background colour ``b`` is the median colour of ``M``'s border
       frame (``border`` of the size wide), and ``d = ||M - b||`` (RGB in
       [0, 1]) is each pixel's distance from it.
    3. If the frame is not one plain colour (fewer than ``plain_border`` of
       its pixels within ``min_contrast`` of ``b``), the product or a
       structured background fills the frame: all True.
    4. Otherwise foreground = ``d`` above both its Otsu threshold and
       ``min_contrast``; opened to drop specks, holes filled (the inside of a
       bottle seen from above is as dark as the background), dilated by 2% of
       the size so defects on the product's edge count as on it.
    5. A result below ``min_fraction`` (nothing stands out from the border
       colour: a texture filling the frame, whose mean image is flat) or above
       ``max_fraction`` of the image is returned as all True.
    """
    if not normal_images:
        raise ValueError("need at least one normal image")
    first = _image(normal_images[0])
    h, w = first.shape[:2]
    acc = np.zeros((h, w, 3), dtype=np.float64)
    for image in normal_images:
        rgb = _image(image)
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        acc += rgb
    mean = (acc / len(normal_images) / 255.0).astype(np.float32)
    sigma = max(0.01 * min(h, w), 0.5)
    mean = cv2.GaussianBlur(mean, (0, 0), sigma)
    b = max(1, int(round(border * min(h, w))))
    frame = np.zeros((h, w), dtype=bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    background = np.median(mean[frame], axis=0)
    dist = np.linalg.norm(mean - background, axis=2)
    everything = np.ones((h, w), dtype=bool)
    if (dist[frame] <= min_contrast).mean() < plain_border:
        return everything
    threshold, _ = _otsu(dist.ravel())
    fg = dist > max(threshold, min_contrast)
    r = max(1, int(round(0.01 * min(h, w))))
    fg = ndimage.binary_opening(fg, structure=np.ones((2 * r + 1, 2 * r + 1), bool))
    fg = ndimage.binary_fill_holes(fg)
    grow = max(1, int(round(0.02 * min(h, w))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    fg = cv2.dilate(fg.astype(np.uint8), kernel) > 0
    if not min_fraction <= fg.mean() <= max_fraction:
        return everything
    return fg


def _foreground_share(mask: np.ndarray, foreground: np.ndarray) -> float:
    """Fraction of the pixels of a non-empty ``(H, W)`` mask lying on ``foreground``."""
    fg = _resize_bool(foreground, mask.shape)
    return float(fg[mask].mean())


def _as_mask(mask: MaskLike) -> np.ndarray:
    """A mask given alone (no image): arrays keep their size; paths are read at their own size."""
    if isinstance(mask, (str, os.PathLike)):
        from PIL import Image

        with Image.open(mask) as im:
            return _mask(mask, (im.height, im.width))
    if mask is None:
        raise ValueError("a mask given without its image cannot be None")
    arr = np.asarray(mask)
    return _mask(arr, arr.shape[:2])


def area_position(gen_masks: Sequence[MaskLike], real_masks_of_type: Sequence[MaskLike],
                  foreground: np.ndarray | None = None, widen: float = 1.0) -> dict:
    """Generated mask areas and positions of one type against its real masks.

    Args:
        gen_masks: generated ``(H, W)`` bool masks of the type.
        real_masks_of_type: the real training masks of the type (empty ones
            are ignored; at least one must be non-empty).
        foreground: ``(H', W')`` bool product region, e.g. from
            :func:`product_foreground` (resized to each mask by nearest
            neighbour), or ``None`` to skip the position measures.
        widen: the accepted range is ``[min / widen, max * widen]`` of the real
            areas (1: the real range itself).

    Returns a dict: ``n``; ``areas`` (per generated mask, fraction of the
    image); ``area_mean`` / ``area_median`` (non-empty masks);
    ``real_range`` ``[lo, hi]`` (the accepted range) and ``real_area_mean``;
    ``in_range_rate``: fraction of *all* generated masks with an area in the
    range -- an empty mask is never a mask, so it is always out of range;
    ``n_empty`` / ``empty_rate``; ``foreground_share``: mean over non-empty
    generated masks of the fraction of their pixels on the foreground, and
    ``real_foreground_share`` the same for the real masks (NaN without a
    foreground).  Real defects of an object lie on the object; generated
    masks on the background say that the generator placed defects where no
    product is.
    """
    real = [m for m in (_as_mask(m) for m in real_masks_of_type) if m.any()]
    if not real:
        raise ValueError("no non-empty real mask of this type")
    gen = [_as_mask(m) for m in gen_masks]
    real_areas = [float(m.mean()) for m in real]
    lo, hi = min(real_areas) / widen, max(real_areas) * widen
    areas = [float(m.mean()) for m in gen]
    nonempty = [a for a in areas if a > 0]
    n_empty = len(areas) - len(nonempty)
    in_range = [float(a > 0 and lo <= a <= hi) for a in areas]
    if foreground is None:
        share, real_share = float("nan"), float("nan")
    else:
        fg = np.asarray(foreground, dtype=bool)
        share = _nan_mean([_foreground_share(m, fg) for m in gen if m.any()])
        real_share = _nan_mean([_foreground_share(m, fg) for m in real])
    return {
        "n": len(areas),
        "areas": areas,
        "area_mean": _nan_mean(nonempty),
        "area_median": float(np.median(nonempty)) if nonempty else float("nan"),
        "real_range": [lo, hi],
        "real_area_mean": _nan_mean(real_areas),
        "in_range_rate": _nan_mean(in_range),
        "n_empty": n_empty,
        "empty_rate": n_empty / len(areas) if areas else float("nan"),
        "foreground_share": share,
        "real_foreground_share": real_share,
    }


# ----------------------------------------------------------------------------
# Quality control
# ----------------------------------------------------------------------------


@dataclass
class QCThresholds:
    """Acceptance thresholds of generated pairs of one product (see :func:`learn_thresholds`).

    Attributes:
        classes: the classifier's classes (types, then ``"good"``), to name
            the predicted class in rejection reasons.
        min_confidence: ``{type or "good": p}``: the classifier's probability
            of the requested class must be at least ``p``.
        area_range: ``{type: (lo, hi)}``: accepted mask area fractions.
        min_foreground_share: ``{type: s}``: at least ``s`` of the mask's
            pixels must lie on the product (0: not checked).
        min_evidence_contrast: least :func:`anomaly_evidence` contrast, used
            only when a reference image is scored (not learned: real pairs have
            no reference; 0.2 means the change inside the mask is at least 1.5
            times the change outside).
        require_top_class: also require the requested class to be the
            classifier's most probable one.
    """

    classes: list[str]
    min_confidence: dict[str, float]
    area_range: dict[str, tuple[float, float]]
    min_foreground_share: dict[str, float] = field(default_factory=dict)
    min_evidence_contrast: float = 0.2
    require_top_class: bool = False

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["area_range"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.area_range.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "QCThresholds":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["area_range"] = {k: (float(v[0]), float(v[1])) for k, v in data["area_range"].items()}
        return cls(**data)


def learn_thresholds(classifier: TypeClassifier,
                     real_pairs_by_type: Mapping[str, Sequence[tuple[ImageLike, MaskLike]]],
                     normal_images: Sequence[ImageLike] = (), *, foreground: np.ndarray | None = None,
                     seed: int = 0, n_aug: int = 8, safety: float = 0.5, area_widen: float = 2.0,
                     min_evidence_contrast: float = 0.2, require_top_class: bool = False) -> QCThresholds:
    """Learn QC thresholds from the real training pairs (the only data known to be right).

    Args:
        classifier: fitted on these pairs (:meth:`TypeClassifier.fit`).
        real_pairs_by_type: ``{type: [(image, mask), ...]}`` real training
            anomalies (empty masks ignored).
        normal_images: real normal images, for the ``"good"`` threshold
            (without any, ``"good"`` gets the chance level ``1 / C``).
        foreground: ``(H, W)`` bool product region (:func:`product_foreground`),
            or ``None`` to disable the foreground check.
        seed: seeds the augmented views.
        n_aug: augmented views per real example (plus its plain view).
        safety: factor (< 1) applied to the learned minima.
        area_widen: the area range is ``[min / area_widen, max * area_widen]``.
        min_evidence_contrast, require_top_class: copied to the result.

    Rules:
        * ``min_confidence[type] = safety * min`` over the real anomalies of
          the type and their ``n_aug`` augmented views (the training
          augmentation) of the probability of the type: a right generated
          pair should look at least about as typical as a perturbed real one.
          The classifier has seen these examples, so the minimum is
          optimistic; the safety factor absorbs that.  ``"good"`` likewise
          from whole-image views of the normal images.
        * ``area_range[type]``: the real areas' range, widened by ``area_widen``
          (few shots cover little of the true range).
        * ``min_foreground_share[type] = safety * min`` share of the real masks'
          pixels on the foreground (0 without a foreground).
    """
    rng = np.random.default_rng(seed)
    min_conf, area_range, min_share = {}, {}, {}
    for name, pairs in real_pairs_by_type.items():
        if name not in classifier.types:
            raise ValueError(f"type {name!r} is not a class of the classifier {classifier.classes}")
        true = classifier.classes.index(name)
        patches, areas, shares = [], [], []
        for image, mask in pairs:
            rgb = _image(image)
            binary = _mask(mask, rgb.shape[:2])
            if not binary.any():
                continue
            box = classifier.box(binary, rgb.shape[:2])
            patches.append(crop(rgb, box, classifier.size))
            patches.extend(classifier._augmented_crop(rgb, box, rng) for _ in range(n_aug))
            areas.append(float(binary.mean()))
            if foreground is not None:
                shares.append(_foreground_share(binary, np.asarray(foreground, bool)))
        if not areas:
            raise ValueError(f"type {name!r} has no pair with a non-empty mask")
        probs = classifier.predict_crops(np.stack(patches))[:, true]
        min_conf[name] = safety * float(probs.min())
        area_range[name] = (min(areas) / area_widen, max(areas) * area_widen)
        min_share[name] = safety * min(shares) if shares else 0.0
    if normal_images:
        patches = []
        for image in normal_images:
            rgb = _image(image)
            box = crop_box(None, rgb.shape[:2])
            patches.append(crop(rgb, box, classifier.size))
            patches.extend(classifier._augmented_crop(rgb, box, rng) for _ in range(n_aug))
        good = classifier.classes.index(GOOD)
        min_conf[GOOD] = safety * float(classifier.predict_crops(np.stack(patches))[:, good].min())
    else:
        min_conf[GOOD] = 1.0 / len(classifier.classes)
    return QCThresholds(classes=list(classifier.classes), min_confidence=min_conf,
                        area_range=area_range, min_foreground_share=min_share,
                        min_evidence_contrast=float(min_evidence_contrast),
                        require_top_class=require_top_class)


def qc_scores(classifier: TypeClassifier, image: ImageLike, mask: MaskLike, kind: str,
              foreground: np.ndarray | None = None, reference: ImageLike | None = None) -> dict[str, float]:
    """Ground-truth-free scores of one generated pair, as plain floats.

    Args:
        classifier: fitted :class:`TypeClassifier`.
        image: ``(H, W, 3)`` uint8 generated image.
        mask: ``(H, W)`` bool generated mask (``None`` for a normal image).
        kind: the requested type, or ``"good"`` for a generated normal image.
        foreground: ``(H', W')`` bool product region, or ``None``.
        reference: the normal image the defect was placed on, if any.

    Returns ``{name: float}``: ``prob_kind`` (classifier probability of
    ``kind``), ``prob_good``, ``predicted_index`` (index into
    ``classifier.classes`` of the most probable class), ``area`` (mask area
    fraction); when the mask is non-empty, ``foreground_share`` (with a
    foreground) and ``evidence_inside`` / ``evidence_outside`` /
    ``evidence_contrast`` (with a reference).  Keys whose measure does not
    apply are left out, so every value is finite and strict-JSON safe.
    """
    if kind not in classifier.classes:
        raise ValueError(f"kind {kind!r} is not a class of the classifier {classifier.classes}")
    rgb = _image(image)
    binary = _mask(mask, rgb.shape[:2])
    probs = classifier.predict(rgb, binary)
    scores = {
        "prob_kind": float(probs[classifier.classes.index(kind)]),
        "prob_good": float(probs[classifier.classes.index(GOOD)]),
        "predicted_index": float(probs.argmax()),
        "area": float(binary.mean()),
    }
    if binary.any():
        if foreground is not None:
            scores["foreground_share"] = _foreground_share(binary, np.asarray(foreground, bool))
        if reference is not None:
            ev = anomaly_evidence(rgb, reference, binary)
            scores.update(evidence_inside=float(ev["inside"]), evidence_outside=float(ev["outside"]),
                          evidence_contrast=float(ev["contrast"]))
    return scores


def qc_accept(scores: Mapping[str, float], kind: str, thresholds: QCThresholds) -> tuple[bool, list[str]]:
    """Accept or reject one generated pair from its :func:`qc_scores`.

    An anomaly pair is rejected for: an empty mask (never a mask), an area
    outside ``area_range[kind]``, a classifier probability of ``kind`` below
    ``min_confidence[kind]`` (or, with ``require_top_class``, another class
    ranked first), too few mask pixels on the product, or, when scored with a
    reference, an evidence contrast below ``min_evidence_contrast``.  A normal
    (``"good"``) image is rejected for a non-empty mask or a probability of
    ``"good"`` below ``min_confidence["good"]``.

    Returns ``(accepted, reasons)``; ``reasons`` is empty when accepted.
    """
    if kind not in thresholds.min_confidence:
        raise ValueError(f"no thresholds for kind {kind!r}")
    reasons = []
    predicted = thresholds.classes[int(scores["predicted_index"])]
    p, p_min = scores["prob_kind"], thresholds.min_confidence[kind]
    if kind == GOOD:
        if scores["area"] > 0:
            reasons.append(f"normal image with a non-empty mask (area {scores['area']:.4f})")
    elif scores["area"] <= 0:
        reasons.append("empty mask")
    else:
        lo, hi = thresholds.area_range[kind]
        if not lo <= scores["area"] <= hi:
            reasons.append(f"mask area {scores['area']:.4f} outside [{lo:.4f}, {hi:.4f}]")
    if p < p_min:
        reasons.append(f"classifier probability of {kind!r} {p:.3f} < {p_min:.3f} "
                       f"(reads as {predicted!r})")
    elif thresholds.require_top_class and predicted != kind:
        reasons.append(f"classifier ranks {predicted!r} above {kind!r}")
    share_min = thresholds.min_foreground_share.get(kind, 0.0)
    if "foreground_share" in scores and scores["foreground_share"] < share_min:
        reasons.append(f"only {scores['foreground_share']:.2f} of the mask on the product (< {share_min:.2f})")
    if "evidence_contrast" in scores and scores["evidence_contrast"] < thresholds.min_evidence_contrast:
        reasons.append(f"evidence contrast {scores['evidence_contrast']:.2f} "
                       f"< {thresholds.min_evidence_contrast:.2f} (the change is not in the mask)")
    return not reasons, reasons
