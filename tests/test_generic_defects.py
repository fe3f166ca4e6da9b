"""Generic defects for the bootstrap: drawn where their mask says, named by their caption, and
never taken from the product's anomaly images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seas.data.generic_defects import COLOURS, draw_generic_defect
from seas.data.synthetic import render_normal
from seas.training.bootstrap import BootstrapConfig, defect_pool


def test_each_defect_changes_its_mask_and_is_named():
    rng = np.random.default_rng(0)
    normals = [render_normal(np.random.default_rng(i), 64) for i in range(3)]
    seen = set()
    for k in range(60):
        image = normals[k % 3]
        drawn, mask, what = draw_generic_defect(image, normals, rng)
        seen.add(what.split()[-1])
        assert drawn.shape == image.shape and drawn.dtype == np.uint8 and mask.shape == (64, 64)
        assert 0.001 < mask.mean() < 0.25
        change = np.abs(drawn.astype(int) - image.astype(int)).sum(axis=2)
        grown = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        grown[max(ys.min() - 2, 0): ys.max() + 3, max(xs.min() - 2, 0): xs.max() + 3] = True
        assert change[~grown].max() == 0  # nothing changes away from the defect
        assert change[mask].mean() > 5  # and the defect is visible
        if what.endswith(("spot", "line")):
            assert what.split()[0] in COLOURS
    assert seen == {"spot", "line", "patch", "area"}
    a = draw_generic_defect(normals[0], normals, np.random.default_rng(5))
    b = draw_generic_defect(normals[0], normals, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    with pytest.raises(ValueError, match="square"):
        draw_generic_defect(np.zeros((10, 12, 3), np.uint8), [], rng)


def test_pool_mixes_captioned_defects_at_the_asked_share():
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    cfg = BootstrapConfig(resolution=64, generic_defects=0.3, defect_pool=2)
    pool, captions, weights = defect_pool(images, cfg, "tile")
    assert pool.shape == (12, 3, 64, 64) and torch.equal(pool[:4], images)
    assert captions[:4] == ["a photo of a tile"] * 4
    assert all(c.startswith("a photo of a tile with a ") for c in captions[4:])
    assert weights.sum() == pytest.approx(1.0) and weights[4:].sum() == pytest.approx(0.3)
    plain, captions, weights = defect_pool(images, BootstrapConfig(resolution=64, generic_defects=0.0), "tile")
    assert plain is images and weights is None and set(captions) == {"a photo of a tile"}
