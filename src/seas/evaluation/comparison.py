"""The training sets compared: one segmenter trained per set (the ``real_only`` one kept in the
run for reuse), each scored on the whole held-out test set and per anomaly type, with its pixel
ROC and PR curves."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from seas.data.readers import GOOD
from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import predict
from seas.evaluation.metrics import UndefinedMetricError, all_metrics, pr_curve, roc_curve
from seas.evaluation.segmenter_cache import cached_segmenter

CURVE_POINTS = 300  # points kept per curve in metrics.json and the report


def _thin(x, y, n: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    """About ``n`` points of a polyline, evenly spaced along its length, both ends kept."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    keep = np.union1d(np.searchsorted(length, np.linspace(0.0, length[-1], n)), [len(x) - 1])
    return x[keep].tolist(), y[keep].tolist()


def _pixel_curves(scores: np.ndarray, masks: np.ndarray) -> dict:
    """Thinned pixel ROC and PR curves of (N, S, S) scores and masks (empty when undefined)."""
    try:
        fpr, tpr, _ = roc_curve(masks, scores)
        precision, recall, _ = pr_curve(masks, scores)
    except UndefinedMetricError:
        return {}
    fpr, tpr = _thin(fpr, tpr)
    recall, precision = _thin(recall, precision)
    return {"roc": {"fpr": fpr, "tpr": tpr}, "pr": {"recall": recall, "precision": precision}}


def _per_type(scores: np.ndarray, masks: np.ndarray, test_types: list[str], types: list[str]) -> dict:
    """``all_metrics`` of each type's test anomalies together with every normal test image."""
    kinds = np.asarray(test_types)
    return {t: all_metrics(scores[(kinds == t) | (kinds == GOOD)], masks[(kinds == t) | (kinds == GOOD)])
            for t in types if (kinds == t).any()}


def run_downstream(train_sets: dict[str, list], test_pairs: list, test_types: list[str],
                   types: list[str], cfg: EvalConfig, scored: list[np.ndarray] = (),
                   run_dir: Path | None = None) -> dict:
    """Train and score one segmenter per training set.

    ``scored``: further ``(S, S, 3)`` images (the generated anomalies) the ``real_only`` model
    also maps, so that the mask agreement reuses it instead of training another.
    ``run_dir``: with ``cfg.reuse_segmenter``, the ``real_only`` model is kept in and read back from
    ``<run_dir>/segmenters`` (:mod:`seas.evaluation.segmenter_cache`).
    Returns ``{"metrics": {set: all_metrics}, "per_type": {set: {type: all_metrics}},
    "curves": {set: {"roc": .., "pr": ..}}, "seconds": {set: s}, "reused": {set: bool},
    "scored": (N, S, S) maps}``.
    """
    dcfg = cfg.downstream()
    images = [image for image, _ in test_pairs]
    masks = np.stack([np.zeros((cfg.size, cfg.size), bool) if m is None else m for _, m in test_pairs])
    out = {"metrics": {}, "per_type": {}, "curves": {}, "seconds": {}, "reused": {},
           "scored": np.zeros((0, cfg.size, cfg.size))}
    for name, pairs in train_sets.items():
        start = time.perf_counter()
        keep = run_dir if name == "real_only" and cfg.reuse_segmenter else None
        model, out["reused"][name] = cached_segmenter(pairs, dcfg, keep, name)
        scores = predict(model, images, cfg.size, resize_back=False, batch_size=dcfg.eval_batch_size)
        out["metrics"][name] = all_metrics(scores, masks)
        out["per_type"][name] = _per_type(scores, masks, test_types, types)
        out["curves"][name] = _pixel_curves(scores, masks)
        out["seconds"][name] = time.perf_counter() - start
        if name == "real_only" and len(scored):
            out["scored"] = predict(model, scored, cfg.size, resize_back=False, batch_size=dcfg.eval_batch_size)
    return out
