"""Tests for seas.evaluation.metrics against scikit-learn and slow references."""

import math

import cv2
import numpy as np
import pytest
from sklearn import metrics as skm

from seas.evaluation import metrics as M

# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def _binary(rng, n, pos_rate=0.3, levels=None):
    """Labels and informative scores; ``levels`` quantises scores (heavy ties)."""
    y = rng.random(n) < pos_rate
    s = rng.random(n) + 0.6 * y
    if levels is not None:
        s = np.floor(s / s.max() * (levels - 1))
    return y, s


def _maps(rng, n=8, size=32, levels=None, normal_images=2):
    """Score maps (float32) and blob masks; the first ``normal_images`` are normal."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(normal_images, n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.integers(1, size // 5, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    scores = rng.random(masks.shape) * 0.8 + 0.5 * masks * rng.random(masks.shape)
    if levels is not None:
        scores = np.round(scores / scores.max() * (levels - 1)) / (levels - 1)
    return scores.astype(np.float32), masks


# ----------------------------------------------------------------------------
# Slow references (one loop iteration per threshold)
# ----------------------------------------------------------------------------


def _pairwise_auroc(y, s):
    """P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    pos, neg = s[y][:, None], s[~y][None, :]
    return np.mean((pos > neg) + 0.5 * (pos == neg))


def _sklearn_f1_max(y, s):
    precision, recall, _ = skm.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        return np.nanmax(2 * precision * recall / (precision + recall))


def _best_iou_reference(score, mask):
    ious = []
    for t in np.unique(score):
        pred = score >= t
        ious.append((pred & mask).sum() / (pred | mask).sum())
    return max(ious)


def _regions(masks):
    """(image index, region mask) for every 8-connected region, via OpenCV."""
    regions = []
    for i, mask in enumerate(masks):
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [(i, labels == k) for k in range(1, count)]
    return regions


def _pro_points(scores, masks, thresholds):
    """(FPR, PRO) of ``scores >= t`` for each threshold, computed directly."""
    regions, normal = _regions(masks), ~masks
    points = []
    for t in thresholds:
        pred = scores >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([pred[i][region].mean() for i, region in regions])
        points.append((fpr, pro))
    return points


def _area_up_to(points, limit):
    """Trapezoid area of a polyline (sorted by x, from x=0) on [0, limit] / limit."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def _aupro_reference(scores, masks, thresholds, limit=0.3):
    """AUPRO from the PRO at the given thresholds (must include the minimum score)."""
    thresholds = np.sort(thresholds)[::-1]
    points = [(0.0, 0.0)] + _pro_points(scores, masks, thresholds)
    return _area_up_to(sorted(points), limit)


# ----------------------------------------------------------------------------
# Generic binary metrics
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 2, 5, 20])
@pytest.mark.parametrize("pos_rate", [0.02, 0.3, 0.9])
def test_binary_metrics_match_sklearn(levels, pos_rate):
    rng = np.random.default_rng(int(pos_rate * 100) + (levels or 0))
    y, s = _binary(rng, 1500, pos_rate, levels)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.roc_auc(y, s) == pytest.approx(_pairwise_auroc(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert M.f1_max(y, s) == pytest.approx(_sklearn_f1_max(y, s), abs=1e-12)


def test_binary_metrics_accept_int_labels_and_any_shape():
    rng = np.random.default_rng(1)
    y, s = _binary(rng, 600, levels=7)
    y2, s2 = y.astype(np.uint8).reshape(20, 30), s.astype(int).reshape(20, 30)
    assert M.roc_auc(y2, s2) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y2.astype(float), s2) == pytest.approx(
        skm.average_precision_score(y, s), abs=1e-12
    )


def test_perfect_and_inverted_scores():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    assert M.roc_auc(y, y * 1.0) == 1.0
    assert M.roc_auc(y, -1.0 * y) == 0.0
    assert M.average_precision(y, y * 1.0) == 1.0
    assert M.f1_max(y, y * 1.0) == 1.0
    assert M.roc_auc(y, np.zeros(6)) == 0.5  # one big tie


@pytest.mark.parametrize("levels", [None, 4])
def test_roc_curve_points_are_exact(levels):
    rng = np.random.default_rng(2)
    y, s = _binary(rng, 400, 0.2, levels)
    fpr, tpr, thresholds = M.roc_curve(y, s)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    for f, t, thr in zip(fpr, tpr, thresholds):
        pred = s >= thr
        assert f == (pred & ~y).sum() / (~y).sum() and t == (pred & y).sum() / y.sum()
    # Every corner is a point of sklearn's full-resolution curve, with the same area.
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert set(zip(fpr, tpr)) <= set(zip(sk_fpr, sk_tpr))
    assert np.trapezoid(tpr, fpr) == pytest.approx(np.trapezoid(sk_tpr, sk_fpr), abs=1e-12)


@pytest.mark.parametrize("levels", [None, 6])
def test_pr_curve_matches_sklearn_at_positive_scores(levels):
    rng = np.random.default_rng(3)
    y, s = _binary(rng, 500, 0.25, levels)
    precision, recall, thresholds = M.pr_curve(y, s)
    np.testing.assert_array_equal(thresholds, np.unique(s[y])[::-1])
    sk_p, sk_r, sk_t = skm.precision_recall_curve(y, s)
    at = np.searchsorted(sk_t, thresholds)
    np.testing.assert_allclose(precision, sk_p[at], atol=1e-12)
    np.testing.assert_allclose(recall, sk_r[at], atol=1e-12)


def test_single_class_errors_name_the_metric():
    y, s = np.zeros(10, dtype=bool), np.linspace(0, 1, 10)
    for fn in (M.roc_auc, M.average_precision, M.f1_max, M.roc_curve, M.pr_curve):
        message = f"{fn.__name__} is undefined: no positive"
        with pytest.raises(M.UndefinedMetricError, match=message):
            fn(y, s)
    with pytest.raises(ValueError, match="roc_auc is undefined: no negative"):
        M.roc_auc(~y, s)


def test_without_negatives_ap_and_f1_are_one():
    s = np.random.default_rng(4).random(50)
    assert M.average_precision(np.ones(50), s) == 1.0
    assert M.f1_max(np.ones(50), s) == 1.0


@pytest.mark.parametrize(
    "y, s, message",
    [
        (np.zeros(3), np.zeros(4), "shape"),
        (np.array([0, 2, 1]), np.zeros(3), "0 and 1"),
        (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.2]), "finite"),
        (np.array([0, 1]), np.array([True, False]), "real numbers"),
        (np.zeros(0), np.zeros(0), "empty"),
    ],
)
def test_invalid_binary_inputs(y, s, message):
    with pytest.raises(ValueError, match=message):
        M.roc_auc(y, s)


# ----------------------------------------------------------------------------
# Image and pixel level
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 3])
def test_image_metrics_match_reference(levels):
    rng = np.random.default_rng(5)
    scores, masks = _maps(rng, n=30, levels=levels, normal_images=12)
    labels = np.array([m.any() for m in masks])
    image_scores = np.array([s.max() for s in scores])
    got = M.image_metrics(scores, masks)
    assert got["image_auroc"] == pytest.approx(skm.roc_auc_score(labels, image_scores), abs=1e-12)
    expected_ap = skm.average_precision_score(labels, image_scores)
    assert got["image_ap"] == pytest.approx(expected_ap, abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(_sklearn_f1_max(labels, image_scores), abs=1e-12)


@pytest.mark.parametrize("levels", [None, 4, 30])
def test_pixel_metrics_match_sklearn(levels):
    rng = np.random.default_rng(6)
    scores, masks = _maps(rng, n=10, levels=levels)
    y, s = masks.ravel(), scores.ravel()
    got = M.pixel_metrics(scores, masks)
    assert got["pixel_auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert got["pixel_f1_max"] == pytest.approx(_sklearn_f1_max(y, s), abs=1e-12)


# ----------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 3, 12])
def test_iou_matches_bruteforce(levels):
    rng = np.random.default_rng(7)
    scores, masks = _maps(rng, n=6, size=24, levels=levels)
    expected = np.mean([_best_iou_reference(s, m) for s, m in zip(scores, masks) if m.any()])
    assert M.iou(scores, masks) == pytest.approx(expected, abs=1e-12)


def test_iou_tiny_masks_and_full_masks():
    scores = np.zeros((3, 5, 5))
    masks = np.zeros((3, 5, 5), dtype=bool)
    masks[0, 2, 2] = True
    scores[0, 2, 2] = 0.9  # single pixel found alone
    masks[1, 0, 4] = True
    scores[1] = 0.5  # single pixel tied with the whole image: IoU 1/25
    masks[2] = True  # fully anomalous image: IoU 1 at the minimum score
    assert M.iou(scores, masks) == pytest.approx((1 + 1 / 25 + 1) / 3)
    assert M.iou_at(scores, masks, 0.5) == pytest.approx((1 + 1 / 25 + 0) / 3)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_iou_at_matches_direct(threshold):
    rng = np.random.default_rng(8)
    scores, masks = _maps(rng, n=7)
    ious = [
        ((s >= threshold) & m).sum() / ((s >= threshold) | m).sum()
        for s, m in zip(scores, masks)
        if m.any()
    ]
    assert M.iou_at(scores, masks, threshold) == pytest.approx(np.mean(ious), abs=1e-12)


# ----------------------------------------------------------------------------
# PRO
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [3, 10, 40])
def test_aupro_matches_reference_on_every_threshold(levels):
    rng = np.random.default_rng(9)
    scores, masks = _maps(rng, n=6, levels=levels)
    expected = _aupro_reference(scores, masks, np.unique(scores))
    assert M.aupro(scores, masks) == pytest.approx(expected, abs=1e-10)


def test_aupro_matches_threshold_grid():
    rng = np.random.default_rng(10)
    scores, masks = _maps(rng, n=6)
    grid = np.linspace(scores.min(), scores.max(), 1000)
    expected = _aupro_reference(scores, masks, grid)
    assert M.aupro(scores, masks) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_other_limits(limit):
    rng = np.random.default_rng(11)
    scores, masks = _maps(rng, n=5, levels=25)
    expected = _aupro_reference(scores, masks, np.unique(scores), limit)
    assert M.aupro(scores, masks, limit) == pytest.approx(expected, abs=1e-10)


def test_pro_curve_points_are_exact():
    rng = np.random.default_rng(12)
    scores, masks = _maps(rng, n=4, size=16, levels=8)
    fpr, pro, thresholds = M.pro_curve(scores, masks)
    assert (fpr[0], pro[0], thresholds[0]) == (0.0, 0.0, np.inf)
    assert fpr[-1] == 1.0 and pro[-1] == pytest.approx(1.0)
    expected = _pro_points(scores, masks, thresholds[1:])
    np.testing.assert_allclose(np.stack([fpr[1:], pro[1:]], axis=1), expected, atol=1e-12)


def test_pro_uses_8_connectivity_and_tiny_regions():
    scores = np.zeros((1, 6, 6))
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # one diagonal region of 2 pixels
    masks[0, 5, 5] = True  # one single-pixel region
    scores[0, 0, 0] = 0.9
    fpr, pro, thresholds = M.pro_curve(scores, masks)
    at = thresholds == 0.9  # (the point may be listed twice)
    # 8-connected: mean(1/2, 0) = 0.25; 4-connectivity would give 1/3.
    assert set(fpr[at]) == {0.0} and set(pro[at]) == {0.25}
    rng = np.random.default_rng(13)
    scores, masks = _maps(rng, n=4, size=16, levels=10)
    masks[:] = False
    masks[:, ::5, ::5] = True  # many single-pixel regions
    expected = _aupro_reference(scores, masks, np.unique(scores))
    assert M.aupro(scores, masks) == pytest.approx(expected, abs=1e-10)


def test_perfect_detector_scores_one_everywhere():
    rng = np.random.default_rng(14)
    _, masks = _maps(rng, n=6)
    result = M.all_metrics(masks.astype(np.float32), masks)
    assert all(value == pytest.approx(1.0) for value in result.values()), result


# ----------------------------------------------------------------------------
# all_metrics and edge cases
# ----------------------------------------------------------------------------

KEYS = {
    "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
    "pixel_f1_max", "iou", "iou_at_0.5", "aupro_0.3",
}


def test_all_metrics_agrees_with_individual_functions():
    rng = np.random.default_rng(15)
    scores, masks = _maps(rng, n=10, levels=50)
    result = M.all_metrics(scores, masks)
    assert set(result) == KEYS
    expected = {
        **M.image_metrics(scores, masks),
        **M.pixel_metrics(scores, masks),
        "iou": M.iou(scores, masks),
        "iou_at_0.5": M.iou_at(scores, masks, 0.5),
        "aupro_0.3": M.aupro(scores, masks, 0.3),
    }
    assert result == pytest.approx(expected, abs=1e-12)


def test_all_normal_test_set_gives_nan():
    scores = np.random.default_rng(16).random((4, 8, 8))
    masks = np.zeros((4, 8, 8), dtype=bool)
    result = M.all_metrics(scores, masks)
    assert set(result) == KEYS and all(math.isnan(v) for v in result.values())
    for fn in (M.iou, M.iou_at, M.aupro, M.pro_curve):
        with pytest.raises(M.UndefinedMetricError, match=f"{fn.__name__} is undefined"):
            fn(scores, masks)


def test_all_anomalous_images():
    rng = np.random.default_rng(17)
    scores, masks = _maps(rng, n=5, normal_images=0)
    result = M.all_metrics(scores, masks)
    assert math.isnan(result["image_auroc"])
    assert result["image_ap"] == 1.0 and result["image_f1_max"] == 1.0
    assert all(np.isfinite(v) for k, v in result.items() if k != "image_auroc")


def test_every_pixel_anomalous():
    scores = np.random.default_rng(18).random((3, 4, 4))
    result = M.all_metrics(scores, np.ones((3, 4, 4), dtype=bool))
    assert math.isnan(result["pixel_auroc"]) and math.isnan(result["aupro_0.3"])
    assert result["pixel_ap"] == 1.0 and result["pixel_f1_max"] == 1.0 and result["iou"] == 1.0


@pytest.mark.parametrize(
    "scores, masks, message",
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "same shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\(N, H, W\)"),
        (np.zeros((1, 2, 2)), np.full((1, 2, 2), 255), "0 and 1"),
        (np.full((1, 2, 2), np.inf), np.zeros((1, 2, 2)), "finite"),
    ],
)
def test_invalid_map_inputs(scores, masks, message):
    with pytest.raises(ValueError, match=message):
        M.all_metrics(scores, masks)


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5])
def test_invalid_fpr_limit(limit):
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(np.zeros((1, 2, 2)), np.eye(2, dtype=bool)[None], limit)
