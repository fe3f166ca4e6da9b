"""Anomaly detection and segmentation metrics.

Conventions
-----------
* ``scores``: real array ``(N, H, W)`` of per-pixel anomaly scores (higher means
  more anomalous), ``masks``: bool or 0/1 array ``(N, H, W)`` of ground truth.
* A threshold ``t`` predicts "anomalous" where ``score >= t``; equal scores
  always cross a threshold together (ties handled as in scikit-learn). Nothing
  is interpolated except where stated.
* Image level: the image score is the maximum of its map and the image is
  anomalous when its mask has any positive pixel.

Thresholds are swept without a per-threshold loop: one value sort of all
scores, an (arg)sort of the positive samples, binary searches and cumulative
sums (int64 counts, float64 weights). Only the distinct scores of positive
samples are visited; the curves and metrics are nevertheless exactly those of
the full sweep over every distinct score (see :func:`_sweep`).

Scalar metrics raise :class:`UndefinedMetricError` (a ``ValueError``) when the
data lack the class the definition needs. The dictionary functions
(:func:`image_metrics`, :func:`pixel_metrics`, :func:`all_metrics`) report such
entries as NaN instead, so e.g. an all-normal test set yields NaN for every
metric that needs anomalies rather than an exception.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "UndefinedMetricError",
    "roc_curve",
    "pr_curve",
    "pro_curve",
    "roc_auc",
    "average_precision",
    "f1_max",
    "image_metrics",
    "pixel_metrics",
    "iou",
    "iou_at",
    "aupro",
    "all_metrics",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class UndefinedMetricError(ValueError):
    """A metric is undefined for the given data (a needed class is absent)."""


class _Sweep(NamedTuple):
    """Counts at the distinct scores of the positive samples, descending.

    ``thresholds`` (G,): distinct positive scores, descending. ``tp`` / ``fp``
    (G,): positives / negatives with ``score >= threshold``; ``fp_above`` (G,):
    negatives with ``score > threshold``; ``pos_weight`` (G,): summed weight of
    the positives with ``score >= threshold`` (``None`` if unweighted);
    ``ordered`` (n,): all scores, ascending.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fp_above: np.ndarray
    n_pos: int
    n_neg: int
    ordered: np.ndarray
    pos_weight: np.ndarray | None


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------


def _as_labels(y_true: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.dtype == bool:
        return y_true
    if not ((y_true == 0) | (y_true == 1)).all():
        raise ValueError("labels/masks must be boolean or contain only 0 and 1")
    return y_true.astype(bool)


def _as_scores(y_score: np.ndarray) -> np.ndarray:
    y_score = np.asarray(y_score)
    if not (np.issubdtype(y_score.dtype, np.floating) or np.issubdtype(y_score.dtype, np.integer)):
        raise ValueError(f"scores must be real numbers, got dtype {y_score.dtype}")
    if not np.isfinite(y_score).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y_score


def _as_binary(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label/score pair of equal shape and flatten both to 1-D."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_score shape {y_score.shape}")
    if y_true.size == 0:
        raise ValueError("empty input: no samples to evaluate")
    return _as_labels(y_true).ravel(), _as_scores(y_score).ravel()


def _as_maps(scores, masks) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, H, W)`` score maps and masks of equal shape."""
    scores, masks = np.asarray(scores), np.asarray(masks)
    if scores.ndim != 3 or scores.shape != masks.shape:
        raise ValueError(
            f"scores and masks must both be (N, H, W) with the same shape, "
            f"got {scores.shape} and {masks.shape}"
        )
    if scores.size == 0:
        raise ValueError("empty input: no pixels to evaluate")
    return _as_scores(scores), _as_labels(masks)


def _require(condition: bool, metric: str, reason: str) -> None:
    if not condition:
        raise UndefinedMetricError(f"{metric} is undefined: {reason}")


# ----------------------------------------------------------------------------
# Threshold sweep
# ----------------------------------------------------------------------------


def _sweep(y_true: np.ndarray, y_score: np.ndarray, pos_weight: np.ndarray | None = None) -> _Sweep:
    """Sweep the thresholds that matter, from one sort of all scores.

    ``y_true`` (n,) bool, ``y_score`` (n,) real; ``pos_weight`` optionally
    gives one weight per positive, ordered like ``y_score[y_true]``.

    Only thresholds equal to a positive score are needed: between two of them
    only negatives cross the threshold, which moves the ROC and PRO curves
    horizontally (their corners are kept through ``fp_above``) and can only
    lower precision, F1 and IoU. Negatives are then counted by binary search
    in the sorted scores, so the cost is one value sort of all n scores plus
    a sort (an argsort when weighted) of the usually few positives.
    """
    ordered = np.sort(y_score)
    pos = y_score[y_true]
    if pos_weight is None:
        pos = np.sort(pos)[::-1]
    else:
        order = np.argsort(pos)[::-1]
        pos, pos_weight = pos[order], np.asarray(pos_weight, dtype=np.float64)[order]
    last_of_run = np.ones(pos.size, dtype=bool)
    last_of_run[:-1] = pos[1:] != pos[:-1]
    ends = np.flatnonzero(last_of_run)
    thresholds = pos[ends]
    tp = ends + 1
    tp_above = np.concatenate(([0], tp[:-1]))
    fp = _count_above(ordered, thresholds, "left") - tp
    fp_above = _count_above(ordered, thresholds, "right") - tp_above
    weight = None if pos_weight is None else np.cumsum(pos_weight)[ends]
    return _Sweep(thresholds, tp, fp, fp_above, pos.size, y_score.size - pos.size, ordered, weight)


def _count_above(ordered: np.ndarray, thresholds: np.ndarray, side: str) -> np.ndarray:
    """Number of ``ordered`` (ascending) values ``>=`` (side "left") or ``>``
    (side "right") each of the descending ``thresholds``."""
    return ordered.size - np.searchsorted(ordered, thresholds[::-1], side=side)[::-1]


def _corners(sweep: _Sweep, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corner points of a curve ``height`` (G,) versus the FPR.

    Each positive threshold contributes the point just above it (only the
    negatives above it counted, previous height) and the point at it; the
    curve starts at ``(0, 0)`` and ends at FPR 1. Returns ``fpr, height``,
    each ``(2G + 2,)``; consecutive points may coincide.
    """
    fpr = np.empty(2 * height.size + 2)
    fpr[0], fpr[1:-1:2], fpr[2:-1:2], fpr[-1] = 0.0, sweep.fp_above, sweep.fp, sweep.n_neg
    y = np.empty_like(fpr)
    y[0], y[1:-1:2], y[2:-1:2], y[-1] = 0.0, np.append(0.0, height[:-1]), height, height[-1]
    return fpr / sweep.n_neg, y


def _corner_thresholds(sweep: _Sweep) -> np.ndarray:
    """Thresholds giving the points of :func:`_corners`, ``(2G + 2,)``.

    The point just above a threshold is reached at the smallest score above
    it (``inf`` when there is none); the last point at the minimum score.
    """
    index = np.searchsorted(sweep.ordered, sweep.thresholds, side="right")
    found = index < sweep.ordered.size
    thresholds = np.empty(2 * index.size + 2)
    thresholds[0], thresholds[-1] = np.inf, sweep.ordered[0]
    thresholds[1:-1:2] = np.where(found, sweep.ordered[np.where(found, index, 0)], np.inf)
    thresholds[2:-1:2] = sweep.thresholds
    return thresholds


# ----------------------------------------------------------------------------
# Curves and scalar metrics from a sweep
# ----------------------------------------------------------------------------


def _roc_from(sweep: _Sweep, metric: str) -> tuple[np.ndarray, np.ndarray]:
    _require(sweep.n_pos > 0, metric, "no positive samples (ROC needs both classes)")
    _require(sweep.n_neg > 0, metric, "no negative samples (ROC needs both classes)")
    return _corners(sweep, sweep.tp / sweep.n_pos)


def _pr_from(sweep: _Sweep, metric: str) -> tuple[np.ndarray, np.ndarray]:
    _require(sweep.n_pos > 0, metric, "no positive samples (recall has no denominator)")
    precision = sweep.tp / (sweep.tp + sweep.fp)
    recall = sweep.tp / sweep.n_pos
    return precision, recall


def _auroc(sweep: _Sweep) -> float:
    fpr, tpr = _roc_from(sweep, "roc_auc")
    return float(np.trapezoid(tpr, fpr))


def _ap(sweep: _Sweep) -> float:
    precision, recall = _pr_from(sweep, "average_precision")
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1max(sweep: _Sweep) -> float:
    _require(sweep.n_pos > 0, "f1_max", "no positive samples (recall has no denominator)")
    # F1 = 2PR / (P + R) = 2 TP / (TP + FP + n_pos)
    return float(np.max(2.0 * sweep.tp / (sweep.tp + sweep.fp + sweep.n_pos)))


def _or_nan(metric: Callable[..., float], *args) -> float:
    """``metric(*args)``, or NaN when the metric is undefined for these data."""
    try:
        return metric(*args)
    except UndefinedMetricError:
        return float("nan")


def _detection_metrics(sweep: _Sweep, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_auroc": _or_nan(_auroc, sweep),
        f"{prefix}_ap": _or_nan(_ap, sweep),
        f"{prefix}_f1_max": _or_nan(_f1max, sweep),
    }


# ----------------------------------------------------------------------------
# Generic binary metrics
# ----------------------------------------------------------------------------


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve through all of its corners.

    ``y_true``: bool/0-1 labels, ``y_score``: real scores, same shape (any).
    Returns ``fpr, tpr, thresholds``, each ``(2G + 2,)`` for G distinct
    positive scores: every point is the (FPR, TPR) of ``score >= threshold``,
    from ``(0, 0)`` at ``inf`` to ``(1, 1)`` at the minimum score. Each
    positive score contributes the point at it and the point at the next
    higher score, so the polyline is exactly the full-resolution ROC curve
    (collinear points omitted, consecutive points may coincide). Raises
    :class:`UndefinedMetricError` unless both classes are present.
    """
    sweep = _sweep(*_as_binary(y_true, y_score))
    return (*_roc_from(sweep, "roc_curve"), _corner_thresholds(sweep))


def pr_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve at every distinct score of a positive sample.

    Returns ``precision, recall, thresholds``, each ``(G,)``, thresholds in
    descending order so recall is increasing; no artificial end point is
    added. Thresholds at which only negatives enter change no recall and only
    lower precision, so they are left out. Raises
    :class:`UndefinedMetricError` without positives.
    """
    sweep = _sweep(*_as_binary(y_true, y_score))
    precision, recall = _pr_from(sweep, "pr_curve")
    return precision, recall, sweep.thresholds


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve (trapezoidal, ties counted as half).

    Equals ``sklearn.metrics.roc_auc_score``. Needs both classes.
    """
    return _auroc(_sweep(*_as_binary(y_true, y_score)))


def average_precision(y_true, y_score) -> float:
    """Step-wise average precision ``sum_k (R_k - R_{k-1}) P_k``.

    ``k`` runs over distinct thresholds in descending order with ``R_0 = 0``;
    no interpolation, identical to ``sklearn.metrics.average_precision_score``.
    Needs positives; with no negatives it is 1.
    """
    return _ap(_sweep(*_as_binary(y_true, y_score)))


def f1_max(y_true, y_score) -> float:
    """Maximum F1 over all thresholds of the precision-recall curve.

    Needs positives; with no negatives it is 1.
    """
    return _f1max(_sweep(*_as_binary(y_true, y_score)))


# ----------------------------------------------------------------------------
# Image and pixel level
# ----------------------------------------------------------------------------


def image_metrics(scores, masks) -> dict[str, float]:
    """Image-level detection metrics.

    ``scores`` ``(N, H, W)``, ``masks`` ``(N, H, W)``. Image score = map
    maximum, image label = mask has any positive pixel. Returns
    ``image_auroc, image_ap, image_f1_max``; an entry whose definition needs a
    missing class (no anomalous or, for AUROC, no normal image) is NaN.
    """
    scores, masks = _as_maps(scores, masks)
    sweep = _sweep(masks.any(axis=(1, 2)), scores.max(axis=(1, 2)))
    return _detection_metrics(sweep, "image")


def pixel_metrics(scores, masks) -> dict[str, float]:
    """Pixel-level metrics over all pixels of all images pooled together.

    Returns ``pixel_auroc, pixel_ap, pixel_f1_max``; undefined entries (no
    anomalous pixel, or for AUROC no normal pixel) are NaN.
    """
    scores, masks = _as_maps(scores, masks)
    return _detection_metrics(_sweep(masks.ravel(), scores.ravel()), "pixel")


# ----------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------


def _anomalous(scores: np.ndarray, masks: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    keep = masks.any(axis=(1, 2))
    _require(keep.any(), metric, "no anomalous image (IoU is averaged over anomalous images)")
    return scores[keep], masks[keep]


def _best_iou(score: np.ndarray, mask: np.ndarray) -> float:
    """Max over the image's distinct scores ``t`` of IoU(score >= t, mask)."""
    sweep = _sweep(mask.ravel(), score.ravel())
    # |pred & mask| = TP, |pred | mask| = TP + FP + FN = FP + n_pos
    return float(np.max(sweep.tp / (sweep.fp + sweep.n_pos)))


def iou(scores, masks) -> float:
    """Mean over anomalous images of each image's best-threshold IoU.

    For every image whose mask has a positive pixel, the IoU between
    ``score >= t`` and its mask is maximised over that image's distinct scores
    ``t``; the result is the mean of these maxima (the IoU protocol of the
    SeaS evaluation). Normal images are ignored; raises
    :class:`UndefinedMetricError` if there is no anomalous image.
    """
    scores, masks = _anomalous(*_as_maps(scores, masks), "iou")
    return float(np.mean([_best_iou(s, m) for s, m in zip(scores, masks)]))


def iou_at(scores, masks, threshold: float = 0.5) -> float:
    """Mean over anomalous images of IoU(``score >= threshold``, mask)."""
    scores, masks = _anomalous(*_as_maps(scores, masks), "iou_at")
    pred = scores >= threshold
    inter = np.sum(pred & masks, axis=(1, 2), dtype=np.int64)
    union = np.sum(pred | masks, axis=(1, 2), dtype=np.int64)
    return float(np.mean(inter / union))


# ----------------------------------------------------------------------------
# PRO
# ----------------------------------------------------------------------------


def _region_weights(masks: np.ndarray) -> np.ndarray:
    """Weight ``1 / (|region| * n_regions)`` of every anomalous pixel.

    Regions are the 8-connected components of each image's mask, so the
    weights of the pixels a threshold detects sum to its mean region overlap.
    Returns ``(P,)`` float64 ordered like ``x[masks]`` for ``(N, H, W)``
    ``masks``.
    """
    weights, n_regions = [], 0
    for mask in masks:
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        region = labels[mask]
        weights.append(1.0 / np.bincount(region)[region])
        n_regions += count
    return np.concatenate(weights) / max(n_regions, 1)


def _region_sweep(scores: np.ndarray, masks: np.ndarray) -> _Sweep:
    """Pixel sweep over all maps whose ``pos_weight`` is the PRO."""
    return _sweep(masks.ravel(), scores.ravel(), _region_weights(masks))


def _pro_from(sweep: _Sweep, metric: str) -> tuple[np.ndarray, np.ndarray]:
    _require(sweep.n_pos > 0, metric, "no anomalous region (PRO averages over regions)")
    _require(sweep.n_neg > 0, metric, "no normal pixel (the FPR axis needs normal pixels)")
    return _corners(sweep, sweep.pos_weight)


def _partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under ``y(x)`` on ``[0, x_max]``, divided by ``x_max``.

    ``x`` is non-decreasing, starts at 0 and ends at or beyond ``x_max``; the
    point at exactly ``x_max`` is linearly interpolated.
    """
    k = int(np.searchsorted(x, x_max, side="right"))
    if k < x.size:
        slope = (y[k] - y[k - 1]) / (x[k] - x[k - 1])
        x = np.append(x[:k], x_max)
        y = np.append(y[:k], y[k - 1] + slope * (x_max - x[k - 1]))
    return float(np.trapezoid(y, x) / x_max)


def _aupro(sweep: _Sweep, fpr_limit: float) -> float:
    return _partial_area(*_pro_from(sweep, "aupro"), fpr_limit)


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def pro_curve(scores, masks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region-overlap curve (MVTec AD definition) through all its corners.

    At threshold ``t`` the PRO is the mean, over all 8-connected ground-truth
    regions of all images, of the fraction of the region with
    ``score >= t``; the FPR is the fraction of normal pixels (of all images)
    with ``score >= t``. Returns ``fpr, pro, thresholds``, each ``(2G + 2,)``,
    with the same points as :func:`roc_curve`: from ``(0, 0)`` at ``inf`` to
    ``(1, 1)`` at the minimum score. Needs an anomalous and a normal pixel.
    """
    scores, masks = _as_maps(scores, masks)
    sweep = _region_sweep(scores, masks)
    return (*_pro_from(sweep, "pro_curve"), _corner_thresholds(sweep))


def aupro(scores, masks, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AUPRO).

    Trapezoidal integration of :func:`pro_curve` over ``FPR in [0, fpr_limit]``
    (the PRO at exactly ``fpr_limit`` is interpolated), divided by
    ``fpr_limit`` so a perfect detector scores 1. Needs at least one anomalous
    and one normal pixel.
    """
    _check_fpr_limit(fpr_limit)
    scores, masks = _as_maps(scores, masks)
    return _aupro(_region_sweep(scores, masks), fpr_limit)


# ----------------------------------------------------------------------------
# Everything
# ----------------------------------------------------------------------------


def all_metrics(scores, masks) -> dict[str, float]:
    """Every metric of this module for ``(N, H, W)`` scores and masks.

    Keys: ``image_auroc, image_ap, image_f1_max, pixel_auroc, pixel_ap,
    pixel_f1_max, iou, iou_at_0.5, aupro_0.3``. Metrics undefined for the
    data are NaN: on an all-normal test set that is every entry; with only
    anomalous images ``image_auroc``; with no normal pixel ``pixel_auroc`` and
    ``aupro_0.3``. The pixel metrics and the AUPRO share one pixel sweep.
    """
    scores, masks = _as_maps(scores, masks)
    results = image_metrics(scores, masks)
    sweep = _region_sweep(scores, masks)
    results.update(_detection_metrics(sweep, "pixel"))
    results["iou"] = _or_nan(iou, scores, masks)
    results["iou_at_0.5"] = _or_nan(iou_at, scores, masks, 0.5)
    results["aupro_0.3"] = _or_nan(_aupro, sweep, 0.3)
    return results
