"""The verdict rule, the measures of generated pairs on a constructed folder whose right answer is
known, the quality-control reading, and the report's order (the answer first).

The constructed product is a textured grey surface with two drawn types: a dark round ``hole``
and a bright thin ``scratch``. The generated ``hole`` pairs are drawn like the real ones with the
mask on the defect; the generated ``scratch`` pairs show a scratch, but their masks lie elsewhere.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seas.cli.demo import measure_lines
from seas.evaluation.generated_measures import (
    load_pairs,
    measure_generated,
    reference_reader,
)
from seas.evaluation.rejected import qc_counts, qc_examples, read_rejected
from seas.generation.generated import GeneratedFolder
from seas.evaluation.report import write_report
from seas.evaluation.verdict import MAX_DROP, TOLERANCE, compare, verdict
from seas.files.images import read_rgb

S = 64
KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "iou",
        "iou_at_0.5", "aupro_0.3")


# ----------------------------------------------------------------------------- the verdict


def _metrics(base: float = 0.5, **changes) -> dict:
    return {k: base + changes.get(k.replace(".", "_"), 0.0) for k in KEYS}


def test_verdict_helped_mixed_and_not():
    real = _metrics()
    helped = _metrics(image_auroc=0.05, image_ap=0.05, image_f1_max=0.05, pixel_auroc=0.05, pixel_ap=0.05,
                      pixel_f1_max=-0.015, iou=TOLERANCE * 0.8)  # 5 of 9 up, one small drop, one within tolerance
    result = verdict({"real_only": real, "real+generated": helped})
    assert result["helped"] == "yes" and result["vs_cut_paste"] is None
    assert result["improved"] == ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap"]
    assert result["worsened"] == ["pixel_f1_max"] and result["compared"] == 9
    assert result["sentence"].startswith("Adding the generated pairs improved 5 of 9 metrics and worsened 1")
    assert "they helped" in result["sentence"]

    # the same gains with one metric falling by more than MAX_DROP: not a "yes"
    dropped = dict(helped)
    dropped["aupro_0.3"] = 0.5 - MAX_DROP - 0.01
    result = verdict({"real_only": real, "real+generated": dropped})
    assert result["helped"] == "mixed" and "AUPRO@0.3 fell by more than 0.02" in result["sentence"]

    # a large gain on the metric that looks best does not outvote the others
    one_big = _metrics(pixel_ap=0.12, image_auroc=0.01, pixel_auroc=-0.10, aupro_0_3=-0.22, iou=-0.03,
                       iou_at_0_5=-0.02, image_f1_max=-0.01)
    result = verdict({"real_only": real, "real+generated": one_big, "cut_paste": _metrics(0.7)})
    assert result["helped"] == "no"
    assert "improved 2 of 9 metrics and worsened 5 (AUPRO@0.3 -0.220, pixel AP +0.120, pixel AUROC -0.100" \
        in result["sentence"]
    assert "they did not help" in result["sentence"]
    assert result["vs_cut_paste"]["helped"] == "no" and "cut-paste did at least as well" in result["sentence"]


def test_verdict_leaves_undefined_metrics_out():
    real = _metrics()
    real["image_auroc"] = float("nan")
    better = _metrics(0.6)
    better["pixel_ap"] = None
    result = compare(better, real)
    assert result["compared"] == 7 and set(result["undefined"]) == {"image_auroc", "pixel_ap"}
    assert result["helped"] == "yes"
    nothing = verdict({"real_only": {"iou": float("nan")}, "real+generated": {"iou": 0.5}})
    assert nothing["helped"] == "mixed" and "cannot be judged" in nothing["sentence"]


# ----------------------------------------------------------------------------- a constructed folder


def _surface(rng) -> np.ndarray:
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (S, S)).astype(np.float32), (0, 0), 3)
    grey = 128 + coarse * 6 / (coarse.std() + 1e-6) + rng.normal(0, 4, (S, S))
    return np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def _draw(kind: str, base: np.ndarray, centre: tuple[int, int], rng) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) with a defect of ``kind`` drawn on ``base`` at ``centre``."""
    image, mask = base.copy(), np.zeros((S, S), np.uint8)
    if kind == "hole":
        cv2.circle(mask, centre, int(rng.integers(5, 7)), 1, -1)
        image[mask > 0] = 35
    else:
        angle = rng.uniform(0, math.pi)
        dx, dy = 6 * math.cos(angle), 6 * math.sin(angle)
        cv2.line(mask, (int(centre[0] - dx), int(centre[1] - dy)), (int(centre[0] + dx), int(centre[1] + dy)), 1, 2)
        image[mask > 0] = 235
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return image, mask.astype(bool)


def _centre(rng, far: bool = False) -> tuple[int, int]:
    """Near the top left corner, or (``far``) the bottom right one: a crop around a far mask
    (about twice the defect's extent) does not reach a defect drawn near."""
    low = 44 if far else 16
    return int(rng.integers(low, low + 4)), int(rng.integers(low, low + 4))


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8) * (255 if array.dtype == bool else 1)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    """Real pairs, normals, and manifest rows (absolute paths) of a generated folder:
    6 right holes (4 placed on their reference, 2 without a placement field), 6 scratches whose
    masks miss the defect plus one empty mask, 4 normal images; the maps a perfect segmenter
    would give (the true defects)."""
    folder = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)
    real = {k: [_draw(k, _surface(rng), _centre(rng), rng) for _ in range(4)] for k in ("hole", "scratch")}
    normals = [_surface(rng) for _ in range(6)]
    rows, truth = [], []
    for i in range(6):
        ref = _surface(rng)
        image, mask = _draw("hole", ref, _centre(rng), rng)
        rows.append({"kind": "hole", "image": _png(folder / f"hole/image/{i}.png", image),
                     "mask": _png(folder / f"hole/mask/{i}.png", mask),
                     "reference": _png(folder / f"ref/hole{i}.png", ref),
                     **({"placement": "real-masks"} if i < 4 else {})})
        truth.append(mask)
    for i in range(7):
        ref = _surface(rng)
        image, defect = _draw("scratch", ref, _centre(rng), rng)
        mask = _draw("scratch", ref, _centre(rng, far=True), rng)[1] if i < 6 else np.zeros((S, S), bool)
        rows.append({"kind": "scratch", "image": _png(folder / f"scratch/image/{i}.png", image),
                     "mask": _png(folder / f"scratch/mask/{i}.png", mask), "placement": "real-masks",
                     "reference": _png(folder / f"ref/scratch{i}.png", ref) if i else "train/good"})
        truth.append(defect)
    for i in range(4):
        rows.append({"kind": "good", "image": _png(folder / f"good/image/{i}.png", _surface(rng)), "mask": None,
                     "reference": "train/good"})
    return real, normals, rows, truth


def test_measures_tell_right_pairs_from_masks_that_miss(constructed):
    real, normals, rows, truth = constructed
    pairs = load_pairs(rows, S, reference_reader(read_rgb, S))
    assert [p.placement for p in pairs[:7]] == ["real-masks"] * 4 + ["free"] * 2 + ["real-masks"]
    assert pairs[6].reference is None and pairs[7].reference is not None  # "train/good" is no image
    for pair, defect in zip([p for p in pairs if p.kind != "good"], truth):
        pair.prob = defect.astype(np.float32)  # a segmenter that finds every real-looking defect
    result = measure_generated(pairs, real, normals, seed=0, steps=120)
    json.dumps(result, default=float)

    fid = result["type_fidelity"]
    assert fid["rows"] == ["hole", "scratch", "good"] and fid["columns"] == ["hole", "scratch", "good"]
    assert fid["classifier"]["trained_on"] == {"hole": 4, "scratch": 4, "good": 6}
    assert np.array(fid["confusion"]).sum(1).tolist() == [6, 7, 4]
    assert fid["per_type"]["hole"]["accuracy"] >= 5 / 6
    assert fid["per_type"]["scratch"]["accuracy"] <= 1 / 7  # the crops around its masks show no scratch
    assert fid["per_type"]["scratch"]["good_rate"] >= 5 / 7
    assert fid["chance"] == 0.5 and fid["good_accuracy"] >= 3 / 4

    agreement = result["mask_agreement"]["per_kind"]
    assert agreement["hole"]["mean_iou"] == pytest.approx(1.0) and agreement["hole"]["found_rate"] == 1.0
    assert agreement["scratch"]["mean_iou"] < 0.05 and agreement["scratch"]["found_rate"] == 0.0
    assert agreement["scratch"]["n_empty"] == 1 and "iou" not in agreement["scratch"]  # per-pair lists dropped
    assert result["mask_agreement"]["all"]["found_rate"] == pytest.approx(6 / 13)

    evidence = result["anomaly_evidence"]
    assert set(evidence["per_kind"]["hole"]) == {"real-masks", "free"}
    assert evidence["per_kind"]["hole"]["real-masks"]["n"] == 4 and evidence["per_kind"]["hole"]["free"]["n"] == 2
    assert evidence["per_kind"]["hole"]["real-masks"]["contrast"] > 0.8
    assert evidence["per_kind"]["scratch"]["real-masks"]["contrast"] < 0.3
    assert evidence["without_reference"] == {"scratch": 1}
    assert evidence["per_placement"]["real-masks"]["n"] == 10

    areas = result["area_position"]
    assert areas["per_kind"]["hole"]["in_range_rate"] == 1.0
    assert areas["per_kind"]["scratch"]["empty_rate"] == pytest.approx(1 / 7)
    assert areas["all"]["n"] == 13 and areas["foreground_fraction"] == 1.0  # a texture: all product
    assert areas["all"]["empty_rate"] == pytest.approx(1 / 13)
    assert areas["all"]["in_range_rate"] == pytest.approx((6 + 7 * areas["per_kind"]["scratch"]["in_range_rate"]) / 13)
    assert areas["all"]["area_mean"] == pytest.approx(np.mean([p.mask.mean() for p in pairs if p.mask is not None
                                                              and p.mask.any()]))


def test_mask_agreement_says_why_without_the_segmenter(constructed):
    real, normals, rows, _ = constructed
    pairs = load_pairs(rows[:2], S, reference_reader(read_rgb, S))
    result = measure_generated(pairs, real, normals, seed=0, steps=2)
    assert "downstream" in result["mask_agreement"]["skipped"]
    lines = measure_lines(json.loads(json.dumps(result, default=float).replace("NaN", "null")))
    assert any(line.startswith("mask agreement skipped: ") for line in lines)
    assert lines[0].startswith("type fidelity of the generated pairs: ") and "(chance 0.50)" in lines[0]
    assert lines[-1].startswith("generated mask areas in the real range: 100% (mean area 2% of the image; real ")


# ----------------------------------------------------------------------------- quality control and the report


def _qc_folder(folder: Path) -> tuple[list[dict], Path]:
    """Accepted rows (absolute paths) and a rejected.jsonl with 2 usable rows, one of a kind with
    nothing accepted, a damaged line and a row whose image is missing."""
    rng = np.random.default_rng(5)
    accepted = []
    for i in range(3):
        image, mask = _draw("hole", _surface(rng), _centre(rng), rng)
        accepted.append({"kind": "hole", "image": _png(folder / f"hole/image/{i:04d}.png", image),
                         "mask": _png(folder / f"hole/mask/{i:04d}.png", mask), "qc": {"accepted": True}})
    rejected = []
    for i, kind in enumerate(("hole", "scratch")):
        image = _surface(rng)
        _png(folder / f"rejected/{kind}/image/{i:04d}.png", image)
        _png(folder / f"rejected/{kind}/mask/{i:04d}.png", np.zeros((S, S), bool))
        rejected.append(json.dumps({"kind": kind, "index": i, "image": f"rejected/{kind}/image/{i:04d}.png",
                                    "mask": f"rejected/{kind}/mask/{i:04d}.png",
                                    "qc": {"accepted": False, "reasons": ["empty mask", f"reason <{kind}>"],
                                           "scores": {"area": 0.0}}}))
    rejected += ["{damaged", json.dumps({"kind": "hole", "image": "rejected/hole/image/9999.png"})]
    (folder / "rejected.jsonl").write_text("\n".join(rejected) + "\n")
    return accepted, folder


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def test_report_answer_first_measures_and_rejected_beside_accepted(constructed, tmp_path):
    accepted, folder = _qc_folder(tmp_path / "gen")
    rejected, skipped = read_rejected(GeneratedFolder(folder))
    assert [r["kind"] for r in rejected] == ["hole", "scratch"] and skipped == 2
    assert rejected[0]["reasons"] == ["empty mask", "reason <hole>"] and Path(rejected[0]["mask"]).is_file()
    assert read_rejected(GeneratedFolder(tmp_path / "nothing")) == ([], 0)
    qc = qc_counts(accepted, rejected, ["hole"], skipped)
    assert qc["per_kind"]["hole"] == {"accepted": 3, "rejected": 1, "acceptance_rate": 0.75}
    assert qc["per_kind"]["scratch"]["acceptance_rate"] == 0.0 and qc["skipped_lines"] == 2
    examples = qc_examples(accepted, rejected, list(qc["per_kind"]))
    assert len(examples["hole"]["accepted"]) == 3 and len(examples["hole"]["rejected"]) == 1

    real, normals, rows, _ = constructed
    downstream = {"real_only": _metrics(), "real+generated": _metrics(0.4), "cut_paste": _metrics(0.6),
                  "perlin": _metrics(0.45)}
    pairs = load_pairs(rows, S, reference_reader(read_rgb, S))
    metrics = {"verdict": verdict(downstream), "downstream": downstream, "quality_control": qc,
               "generated_measures": measure_generated(pairs, real, normals, seed=0, steps=2)}
    grid = {"count": 1, "generated": [(normals[0], None)], "real": [(normals[1], None)]}
    html = write_report(tmp_path / "report.html", metrics, {}, {"hole": grid}, None, examples).read_text()

    assert _sections(html)[:4] == ["downstream", "samples", "generated-measures", "quality-control"]
    answer = html.split('<section id="samples"')[0]
    assert metrics["verdict"]["sentence"].split(" (")[0] in answer and "they did not help" in answer
    assert all(f"<td>{name}</td>" in answer for name in downstream)
    assert all(f"<th>{name}</th>" in answer for name in ("image AUROC", "pixel AP", "AUPRO@0.3", "IoU@0.5"))
    assert "Rule: " in answer
    measures = html.split('<section id="generated-measures"')[1].split("</section>")[0]
    assert "Confusion matrix" in measures and "Anomaly evidence" in measures and "hole (real-masks)" in measures
    assert "mask agreement: skipped" in measures and "free placement" in measures
    control = html.split('<section id="quality-control"')[1].split("</section>")[0]
    hole = control.split("<h3>hole</h3>")[1].split("<h3>")[0]
    assert 'alt="accepted"' in hole and "rejected: empty mask; reason &lt;hole&gt;" in hole  # side by side
    assert "<td>0.75</td>" in control and "2 line(s) of rejected.jsonl skipped" in control
    assert "<h3>scratch</h3>" in control  # all rejected: shown too


def test_type_fidelity_reads_the_held_out_real_images_with_the_same_classifier(constructed, tmp_path):
    """``real_test`` is the generated pairs' classifier reading the held-out real test images:
    equal to a classifier fitted alike reading them; empty anomaly masks and types it never
    learned are left out; the demo's line and the report show it beside the generated reading."""
    from seas.judge.classifier import TypeClassifier
    from seas.judge.measures import type_fidelity

    real, normals, rows, _ = constructed
    rng = np.random.default_rng(11)
    test = {k: [_draw(k, _surface(rng), _centre(rng), rng) for _ in range(3)] for k in ("hole", "scratch")}
    test["hole"].append((_surface(rng), np.zeros((S, S), bool)))  # an empty mask says nothing of its type
    test["crack"] = [_draw("scratch", _surface(rng), _centre(rng), rng)]  # never learned: no class
    test["good"] = [(_surface(rng), None) for _ in range(2)]
    pairs = load_pairs(rows, S, reference_reader(read_rgb, S))
    fid = measure_generated(pairs, real, normals, seed=0, steps=40, test=test)["type_fidelity"]

    expected = type_fidelity(TypeClassifier(device="cpu").fit(real, normals, seed=0, steps=40),
                             {"hole": test["hole"][:3], "scratch": test["scratch"], "good": test["good"]})
    held_out = fid["real_test"]
    assert held_out["rows"] == ["hole", "scratch", "good"]
    assert np.array(held_out["confusion"]).sum(1).tolist() == [3, 3, 2] and held_out["n"] == 6
    assert held_out["confusion"] == expected["confusion"]
    assert held_out["accuracy"] == pytest.approx(expected["accuracy"])
    assert held_out["good_accuracy"] == pytest.approx(expected["good_accuracy"])
    assert "real_test" not in measure_generated(pairs, real, normals, seed=0, steps=2)["type_fidelity"]

    metrics = json.loads(json.dumps({"generated_measures": {"type_fidelity": fid}}, default=float)
                         .replace("NaN", "null"))
    line = measure_lines(metrics["generated_measures"])[0]
    assert f"held-out real anomalies: {held_out['accuracy']:.2f})" in line
    assert line.endswith(f"(held-out real normals: {held_out['good_accuracy']:.2f})")

    downstream = {"real_only": _metrics(), "real+generated": _metrics(0.4)}
    html = write_report(tmp_path / "report.html", dict(metrics, verdict=verdict(downstream), downstream=downstream),
                        {}, {}, None, None).read_text()
    measures = html.split('<section id="generated-measures"')[1].split("</section>")[0]
    cells = re.findall(r"<td>([^<]*)</td>", measures.split("<td>all real test anomalies</td>")[1].split("</tr>")[0])
    assert cells[:2] == ["6", f"{held_out['accuracy']:.4g}"]  # 3 holes + 3 scratches, read as above
    assert "<td>hole (real test)</td>" in measures and "<td>good (real test)</td>" in measures
