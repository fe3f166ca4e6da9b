"""benchmarks.generated_set_probe: the generated part of each variant's training set."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from benchmarks.generated_set_probe import colour_matched, generated_part, variant


def _pairs():
    rng = np.random.default_rng(0)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    return [(kind, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mask.copy())
            for kind in ("hole", "scratch", "hole+scratch", "stain")]


def test_colour_matched_takes_the_target_channel_statistics():
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, (16, 16, 3), dtype=np.uint8)
    target = torch.from_numpy(rng.normal([120.0, 100.0, 80.0], [10.0, 20.0, 5.0], (64, 64, 3))).permute(2, 0, 1)[None]
    out = colour_matched(image, target).reshape(-1, 3).astype(np.float64)
    want = target.reshape(3, -1)
    np.testing.assert_allclose(out.mean(0), want.mean(1), atol=0.5)  # rounding to uint8 only
    np.testing.assert_allclose(out.std(0, ddof=1), want.std(1), atol=0.5)


def test_variants_change_only_what_they_name():
    pairs, normals = _pairs(), [np.full((8, 8, 3), 100, np.uint8), np.full((8, 8, 3), 140, np.uint8)]
    assert generated_part("real-only", pairs, normals) == []
    as_is = generated_part("as-is", pairs, normals)
    assert len(as_is) == 4 and all(a[0] is p[1] for a, p in zip(as_is, pairs))
    without = generated_part("without:scratch", pairs, normals)
    assert [id(im) for im, _ in without] == [id(pairs[0][1]), id(pairs[3][1])]  # hole and stain; the mixture goes
    eroded = generated_part("eroded", pairs, normals)
    assert all(m.sum() == 4 and m[3:5, 3:5].all() for _, m in eroded)  # a 4 x 4 square loses its border
    colour = generated_part("colour", pairs, normals)
    assert all(abs(im.reshape(-1, 3).mean(0) - 120).max() < 1 for im, _ in colour)  # the normals' mean, 120
    assert all(np.array_equal(m, p[2]) for (_, m), p in zip(colour, pairs))


def test_unknown_variant_is_refused():
    assert variant("without:hole") == "without:hole"
    for bad in ("without:", "colours"):
        with pytest.raises(argparse.ArgumentTypeError, match="a variant is one of"):
            variant(bad)

