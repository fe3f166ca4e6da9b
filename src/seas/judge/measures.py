"""Measures of generated anomaly image/mask pairs, per anomaly type.

A user has generated image/mask pairs of ``K`` anomaly types of one product (and
normal images) and holds the real few-shot training pairs and real normal
training images.  This module answers, without any ground truth for the
generated data, *does each generated pair look like what it claims to be?*

* **Type fidelity** (:class:`~seas.judge.classifier.TypeClassifier`, :func:`type_fidelity`): a small
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
* **Area and position** (:func:`area_position`, :func:`seas.data.foreground.product_foreground`):
  generated mask areas against the real range of the type, empty masks, and the
  share of mask pixels lying on the product.
* Quality control of single pairs from these measures: :mod:`seas.judge.qc`.

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
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from seas.data.readers import GOOD
from seas.files.images import as_mask, as_rgb
from seas.judge.classifier import TypeClassifier

ImageLike = np.ndarray | str | os.PathLike
MaskLike = np.ndarray | str | os.PathLike | None

_EPS = 1.0 / 255.0  # one grey level: floor of the evidence ratio/contrast denominators


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
        ``n``, ``accuracy`` / ``mean_confidence``: count and pooled values over all
        anomaly pairs (``"good"`` excluded); ``mean_type_accuracy``: mean of the per-type
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
        entry = {"n": len(probs), "accuracy": _nan_mean(correct),
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
        "n": len(hits),
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


def foreground_share(mask: np.ndarray, foreground: np.ndarray) -> float:
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
            :func:`seas.data.foreground.product_foreground` (resized to each mask by nearest
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
        share = _nan_mean([foreground_share(m, fg) for m in gen if m.any()])
        real_share = _nan_mean([foreground_share(m, fg) for m in real])
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


