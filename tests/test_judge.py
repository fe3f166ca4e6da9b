"""Measures of generated pairs on constructed cases whose right answer is known.

The synthetic product is a textured grey surface; its three anomaly types are drawn with cv2:
a dark round hole, a bright thin scratch and a brownish blob stain.  Each pair keeps the clean
surface it was drawn on as its reference normal image.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from seas.data.foreground import product_foreground
from seas.data.readers import GOOD
from seas.judge.classifier import TypeClassifier, crop_box
from seas.judge.measures import anomaly_evidence, area_position, mask_agreement, type_fidelity
from seas.judge.qc import QCThresholds, learn_thresholds, qc_accept, qc_scores

S = 96  # image side
TYPES = ["hole", "scratch", "stain"]


def surface(rng: np.random.Generator) -> np.ndarray:
    """A textured grey ``(S, S, 3)`` uint8 surface: smooth blotches plus fine grain."""
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (S, S)).astype(np.float32), (0, 0), 4)
    coarse *= 6 / (coarse.std() + 1e-6)
    grey = 128 + coarse + rng.normal(0, 5, (S, S))
    img = np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, 2, (1, 1, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def draw(kind: str, rng: np.random.Generator, base: np.ndarray | None = None,
         centre: tuple[int, int] | None = None, scale: float | None = None):
    """``(image, mask, reference)`` with a defect of ``kind`` at ``centre`` (random if None).

    ``scale`` in [0, 1] picks the defect size in its type's range (random if None).
    """
    ref = surface(rng) if base is None else base
    img = ref.copy()
    mask = np.zeros((S, S), np.uint8)
    t = rng.uniform() if scale is None else scale
    cx, cy = centre if centre is not None else (int(rng.integers(22, S - 22)), int(rng.integers(22, S - 22)))
    if kind == "hole":
        r = int(round(5 + 4 * t))
        cv2.circle(mask, (cx, cy), r, 1, -1)
        shade = rng.uniform(25, 45)
        img[mask > 0] = np.clip(shade + rng.normal(0, 4, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
    elif kind == "scratch":
        length, angle = 22 + 14 * t, rng.uniform(0, math.pi)
        dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
        p1, p2 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        line = np.zeros((S, S), np.uint8)
        cv2.line(line, p1, p2, 1, 2)
        img[line > 0] = np.uint8(rng.uniform(225, 245))
        mask = cv2.dilate(line, np.ones((3, 3), np.uint8))
    elif kind == "stain":
        axes = (int(7 + 5 * t), int(5 + 3 * t))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)[..., None] * 0.8
        brown = np.array([130, 85, 40], np.float32)
        img = np.clip(img * (1 - soft) + brown * soft, 0, 255).astype(np.uint8)
    else:
        raise ValueError(kind)
    return img, mask.astype(bool), ref


def real_set(seed: int, per_type: int):
    rng = np.random.default_rng(seed)
    return {k: [draw(k, rng)[:2] for _ in range(per_type)] for k in TYPES}


@pytest.fixture(scope="module")
def trained():
    """A classifier fitted on 4 real pairs per type and 6 normal images, plus its thresholds."""
    real = real_set(0, 4)
    rng = np.random.default_rng(1)
    normals = [surface(rng) for _ in range(6)]
    clf = TypeClassifier().fit(real, normals, seed=0, steps=160, size=40, width=12)
    thresholds = learn_thresholds(clf, real, normals, foreground=np.ones((S, S), bool), seed=0)
    return clf, thresholds, real


# ----------------------------------------------------------------------------
# Type fidelity
# ----------------------------------------------------------------------------


def test_classifier_recognises_fresh_defects_and_normal_images(trained):
    clf, _, _ = trained
    assert clf.classes == TYPES + [GOOD]
    fresh = real_set(100, 8)
    rng = np.random.default_rng(101)
    fresh[GOOD] = [(surface(rng), None) for _ in range(6)]
    result = type_fidelity(clf, fresh)
    assert result["chance"] == pytest.approx(1 / 3)
    assert result["rows"] == TYPES + [GOOD]
    confusion = np.array(result["confusion"])
    assert confusion.shape == (4, 4)
    assert confusion.sum(1).tolist() == [8, 8, 8, 6] and result["n"] == 24  # anomaly pairs only
    assert result["accuracy"] >= 0.85  # chance is 1/3
    for kind in TYPES:
        assert result["per_type"][kind]["accuracy"] >= 0.75, (kind, result["per_type"][kind])
    assert result["good_accuracy"] >= 5 / 6
    assert result["mean_confidence"] > 0.6
    # a plain normal crop (around a mask over no defect) reads as "good"
    probs = clf.predict(surface(np.random.default_rng(7)), draw("hole", rng)[1])
    assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0)
    assert clf.classes[int(probs.argmax())] == GOOD


def test_type_fidelity_reports_wrong_types(trained):
    clf, _, _ = trained
    rng = np.random.default_rng(200)
    # every "scratch" is really a hole, every "hole" a bare surface with a mask
    mislabeled = {"scratch": [draw("hole", rng)[:2] for _ in range(6)],
                  "hole": [(surface(rng), draw("hole", rng)[1]) for _ in range(6)]}
    result = type_fidelity(clf, mislabeled)
    assert result["rows"] == ["hole", "scratch"]
    assert result["per_type"]["scratch"]["accuracy"] <= 1 / 6
    assert result["per_type"]["hole"]["good_rate"] >= 5 / 6
    assert result["accuracy"] < 0.2
    assert np.isnan(result["good_accuracy"])
    with pytest.raises(ValueError):
        type_fidelity(clf, {"crack": mislabeled["hole"]})


def test_classifier_is_deterministic_and_restores_global_rng():
    real = real_set(3, 2)
    normals = [surface(np.random.default_rng(4))]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = TypeClassifier().fit(real, normals, seed=5, steps=4, size=24, width=4)
    after = torch.rand(1)
    b = TypeClassifier().fit(real, normals, seed=5, steps=4, size=24, width=4)
    c = TypeClassifier().fit(real, normals, seed=6, steps=4, size=24, width=4)
    image, mask = real["hole"][0]
    assert np.array_equal(a.predict(image, mask), b.predict(image, mask))
    assert not np.array_equal(a.predict(image, mask), c.predict(image, mask))
    assert torch.equal(before, after)
    restored = TypeClassifier.from_state(a.state())
    assert np.allclose(restored.predict(image, mask), a.predict(image, mask))
    with pytest.raises(ValueError):
        TypeClassifier().fit({"hole": [(image, np.zeros((S, S), bool))]}, normals, steps=1)


def test_crop_box_rule():
    mask = np.zeros((100, 200), bool)
    mask[40:50, 60:80] = True  # 10 x 20 box -> side 40 centred on (45, 70)
    assert crop_box(mask, mask.shape) == (25, 50, 40)
    mask[:] = False
    mask[0:4, 196:200] = True  # tiny defect in a corner: min side, moved inside
    y0, x0, side = crop_box(mask, mask.shape)
    assert side == round(0.125 * 100) and y0 == 0 and x0 + side == 200
    assert crop_box(None, (100, 200)) == (0, 50, 100)


# ----------------------------------------------------------------------------
# Mask agreement
# ----------------------------------------------------------------------------


def test_mask_agreement_perfect_missed_and_empty():
    rng = np.random.default_rng(10)
    _, good_mask, _ = draw("stain", rng, centre=(30, 30))
    _, other, _ = draw("stain", rng, centre=(70, 70))
    perfect = good_mask.astype(np.float32)
    half = cv2.resize(perfect, (S // 2, S // 2), interpolation=cv2.INTER_AREA)  # another resolution
    blob = np.zeros((S, S), np.float32)
    blob[10:90, 10:90] = 0.9  # covers the defect but is many times its size
    result = mask_agreement([perfect, half, other.astype(np.float32), blob, perfect],
                            [good_mask, good_mask, good_mask, good_mask, np.zeros((S, S), bool)])
    assert result["n"] == 5 and result["n_empty"] == 1
    assert result["iou"][0] == pytest.approx(1.0)
    assert result["iou"][1] > 0.7
    assert result["iou"][2] == 0.0
    assert 0 < result["iou"][3] < 0.1
    assert result["found"] == [True, True, False, False, False]
    assert result["found_rate"] == pytest.approx(2 / 5)
    assert result["touched_rate"] == pytest.approx(3 / 5)  # the blob touches but is not "found"
    assert result["mean_iou"] == pytest.approx(np.mean(result["iou"]))


# ----------------------------------------------------------------------------
# Anomaly evidence
# ----------------------------------------------------------------------------


def test_anomaly_evidence_in_mask_vs_missed():
    rng = np.random.default_rng(20)
    image, mask, ref = draw("hole", rng, centre=(30, 30))
    noisy = np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    right = anomaly_evidence(noisy, ref, mask)
    assert right["inside"] > 0.25 and right["outside"] < 0.02
    assert right["contrast"] > 0.85 and right["ratio"] > 10
    assert right["ring"] < 0.05  # the defect stays inside its mask
    _, off_mask, _ = draw("hole", rng, centre=(70, 70))
    missed = anomaly_evidence(noisy, ref, off_mask)
    assert missed["inside"] < 0.02
    assert missed["contrast"] < 0.3
    bigger = cv2.resize(ref, (2 * S, 2 * S), interpolation=cv2.INTER_NEAREST)  # reference resized back
    assert anomaly_evidence(image, bigger, mask)["contrast"] > 0.9
    empty = anomaly_evidence(image, ref, np.zeros((S, S), bool))
    assert empty["inside"] == 0.0 and empty["contrast"] < 0 and np.isnan(empty["ring"])


# ----------------------------------------------------------------------------
# Area and position
# ----------------------------------------------------------------------------


def test_area_position_empty_masks_and_range():
    real = [np.zeros((S, S), bool) for _ in range(3)]
    real[0][10:20, 10:20] = True   # area 100 px
    real[1][10:30, 10:30] = True   # area 400 px
    gen_in = np.zeros((S, S), bool)
    gen_in[50:65, 50:65] = True    # 225 px, in range, on the right half
    gen_big = np.zeros((S, S), bool)
    gen_big[:, :60] = True         # far too large, mostly on the left half
    empty = np.zeros((S, S), bool)
    fg = np.zeros((S, S), bool)
    fg[:, S // 2:] = True
    res = area_position([gen_in, gen_big, empty], real, foreground=fg)
    assert res["n"] == 3 and res["n_empty"] == 1 and res["empty_rate"] == pytest.approx(1 / 3)
    assert res["real_range"] == pytest.approx([100 / S**2, 400 / S**2])
    assert res["areas"][2] == 0.0
    assert res["in_range_rate"] == pytest.approx(1 / 3)  # the empty mask is out of range
    assert res["foreground_share"] == pytest.approx((1.0 + 12 / 60) / 2)
    assert res["real_foreground_share"] == pytest.approx(0.0)
    only_empty = area_position([empty], real, widen=100.0)
    assert only_empty["in_range_rate"] == 0.0 and np.isnan(only_empty["area_mean"])
    assert np.isnan(area_position([gen_in], real)["foreground_share"])
    with pytest.raises(ValueError):
        area_position([gen_in], [empty])


def test_product_foreground_object_and_texture():
    rng = np.random.default_rng(30)
    yy, xx = np.mgrid[:S, :S]
    objects = []
    for _ in range(5):
        img = rng.integers(0, 12, (S, S, 3)).astype(np.uint8)  # dark, slightly noisy background
        cy, cx = 48 + rng.integers(-2, 3), 48 + rng.integers(-2, 3)
        ring = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 30 ** 2) & ((yy - cy) ** 2 + (xx - cx) ** 2 >= 15 ** 2)
        img[ring] = 170  # a bright ring with a dark centre, like a bottle seen from above
        objects.append(img)
    fg = product_foreground(objects)
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= 30 ** 2
    assert fg.shape == (S, S)
    assert fg[48, 48]  # the dark inside of the product is filled
    assert (fg & disc).sum() / (fg | disc).sum() > 0.8
    assert not fg[:5].any() and not fg[:, :5].any()
    textures = [surface(rng) for _ in range(5)]
    assert product_foreground(textures).all()


# ----------------------------------------------------------------------------
# Quality control
# ----------------------------------------------------------------------------


def test_qc_keeps_right_pairs_and_rejects_wrong_ones(trained):
    clf, thresholds, real = trained
    for kind in TYPES:
        lo, hi = thresholds.area_range[kind]
        assert 0 < lo < hi < 1
        assert 0 < thresholds.min_confidence[kind] <= 0.5
    assert thresholds.min_confidence[GOOD] > 0
    rng = np.random.default_rng(300)
    fg = np.ones((S, S), bool)
    kept = 0
    for kind in TYPES:
        for scale in (0.3, 0.5, 0.7):
            image, mask, ref = draw(kind, rng, scale=scale)
            scores = qc_scores(clf, image, mask, kind, fg, reference=ref)
            json.dumps(scores, allow_nan=False)
            assert all(type(v) is float for v in scores.values())
            ok, reasons = qc_accept(scores, kind, thresholds)
            kept += ok
    assert kept >= 8  # of 9 right pairs

    image, mask, ref = draw("hole", rng, centre=(30, 30), scale=0.5)
    # wrong type: a hole requested as a stain
    ok, reasons = qc_accept(qc_scores(clf, image, mask, "stain", fg), "stain", thresholds)
    assert not ok and any("probability of 'stain'" in r for r in reasons)
    # mask off the defect (same size, elsewhere), with and without the reference
    off = np.roll(mask, (40, 40), axis=(0, 1))
    ok, reasons = qc_accept(qc_scores(clf, image, off, "hole", fg), "hole", thresholds)
    assert not ok and any("'good'" in r for r in reasons)
    ok, reasons = qc_accept(qc_scores(clf, image, off, "hole", fg, reference=ref), "hole", thresholds)
    assert not ok and any("evidence contrast" in r for r in reasons)
    # empty mask
    scores = qc_scores(clf, image, np.zeros((S, S), bool), "hole", fg, reference=ref)
    assert "evidence_contrast" not in scores and "foreground_share" not in scores
    ok, reasons = qc_accept(scores, "hole", thresholds)
    assert not ok and "empty mask" in reasons
    # a far too large mask over the right defect
    ok, reasons = qc_accept(qc_scores(clf, image, np.ones((S, S), bool), "hole"), "hole", thresholds)
    assert not ok and any("mask area" in r for r in reasons)
    # mask on the background of an object product
    half = np.zeros((S, S), bool)
    half[:, :S // 2] = True
    strict = QCThresholds.from_dict(json.loads(json.dumps(thresholds.to_dict())))
    strict.min_foreground_share["hole"] = 0.5
    ok, reasons = qc_accept(qc_scores(clf, image, mask, "hole", ~half), "hole", strict)
    assert not ok and any("on the product" in r for r in reasons)
    # generated normal images: a clean surface passes, one with a defect does not
    ok, reasons = qc_accept(qc_scores(clf, surface(rng), None, GOOD), GOOD, thresholds)
    assert ok, reasons
    for kind in ("hole", "scratch"):  # a "normal" image showing a defect somewhere
        ok, reasons = qc_accept(qc_scores(clf, draw(kind, rng, scale=0.8)[0], None, GOOD), GOOD, thresholds)
        assert not ok and any("probability of 'good'" in r for r in reasons)
    ok_mask, reasons = qc_accept(qc_scores(clf, surface(rng), mask, GOOD), GOOD, thresholds)
    assert not ok_mask and any("non-empty mask" in r for r in reasons)
