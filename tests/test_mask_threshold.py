"""benchmarks.mask_threshold: the re-thresholded masks and the area-matched threshold."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from benchmarks.mask_threshold import kind_threshold, real_areas, rethreshold


def test_the_area_mode_picks_the_threshold_whose_masks_cover_the_real_area():
    ramp = np.tile(np.linspace(0, 1, 100, endpoint=False), (100, 1))  # column j has probability j / 100
    probs = np.stack([ramp, ramp])
    # 30 % of the pixels lie above 0.69 (columns 70 to 99), so a real area of 0.3 asks for about that
    assert abs(kind_threshold("area", "hole", probs, {"hole": 0.3}) - 0.70) < 0.011
    # a mixture's real area is the sum of its types'
    assert abs(kind_threshold("area", "hole+stain", probs, {"hole": 0.3, "stain": 0.2}) - 0.50) < 0.011
    assert kind_threshold("0.4", "hole", probs, {"hole": 0.3}) == 0.4


def test_rethresholding_rewrites_masks_and_areas_and_leaves_the_source_alone(tmp_path):
    source = tmp_path / "generated"
    (source / "hole/prob").mkdir(parents=True)
    (source / "hole/mask").mkdir(parents=True)
    rows = []
    for i, level in enumerate((100, 200)):
        prob = np.zeros((8, 8), np.uint8)
        prob[:4] = level  # the top half at level / 255, the rest 0
        Image.fromarray(prob).save(source / f"hole/prob/{i:03d}.png")
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(source / f"hole/mask/{i:03d}.png")
        rows.append({"kind": "hole", "index": i, "image": f"hole/image/{i:03d}.png", "mask": f"hole/mask/{i:03d}.png",
                     "prob": f"hole/prob/{i:03d}.png", "mask_area": 1.0})
    rows.append({"kind": "good", "index": 0, "image": "good/image/000.png", "mask": None, "mask_area": None})
    (source / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    chosen = rethreshold(source, tmp_path / "t0.5", "0.5", {"hole": 0.25})
    masks = [np.asarray(Image.open(tmp_path / "t0.5" / f"hole/mask/{i:03d}.png")) for i in (0, 1)]
    assert not masks[0].any()  # 100 / 255 < 0.5
    assert (masks[1][:4] == 255).all() and not masks[1][4:].any()  # 200 / 255 > 0.5
    written = [json.loads(line) for line in (tmp_path / "t0.5" / "manifest.jsonl").read_text().splitlines()]
    assert [r["mask_area"] for r in written] == [0.0, 0.5, None]
    assert chosen == {"hole": (0.5, 0.25)}
    # the source folder is the ablation's own: untouched
    assert (np.asarray(Image.open(source / "hole/mask/000.png")) == 255).all()
    assert [json.loads(line)["mask_area"] for line in (source / "manifest.jsonl").read_text().splitlines()] == [1.0, 1.0, None]


def test_real_areas_average_each_masks_share_also_over_photographs_of_different_sizes(tmp_path):
    from types import SimpleNamespace

    small = np.zeros((10, 10), np.uint8)
    small[:5] = 255  # half of a 10 x 10 image
    large = np.zeros((40, 20), np.uint8)
    large[:4] = 255  # a tenth of a 40 x 20 image
    for name, mask in (("small", small), ("large", large)):
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
    samples = [SimpleNamespace(mask=tmp_path / "small.png"), SimpleNamespace(mask=tmp_path / "large.png")]
    run = SimpleNamespace(mask_rule="half", split=SimpleNamespace(types=["crack"], train={"crack": samples}))
    assert real_areas(run) == {"crack": (0.5 + 0.1) / 2}
