"""Tests for the procedural synthetic product (seas.data.synthetic)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import pytest

from seas.data.synthetic import SYNTHETIC_TYPES, add_defect, render_normal, write_synthetic_product

SIZE = 128


def _read(path):
    """Read a PNG as stored: (H, W, 3) BGR or (H, W) grey uint8."""
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _files(root):
    """Relative paths of all files under root, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@lru_cache(maxsize=None)
def _defects(defect_type, n=12):
    """n (normal, defective, mask) triples for one defect type (shared, do not modify)."""
    triples = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        normal = render_normal(rng, SIZE)
        defective, mask = add_defect(normal, defect_type, rng)
        triples.append((normal, defective, mask))
    return triples


def _chroma(image):
    """(H, W, 3) float chromaticity: each channel over the channel sum."""
    rgb = image.astype(np.float64) + 1
    return rgb / rgb.sum(-1, keepdims=True)


def test_layout_and_counts(tmp_path):
    out = write_synthetic_product(tmp_path, "tile", n_train_good=3, n_test_good=2, n_per_type=2)
    assert out == tmp_path / "tile"
    expected = [f"train/good/{i:03d}.png" for i in range(3)]
    expected += [f"test/good/{i:03d}.png" for i in range(2)]
    for t in SYNTHETIC_TYPES:
        expected += [f"test/{t}/{i:03d}.png" for i in range(2)]
        expected += [f"ground_truth/{t}/{i:03d}_mask.png" for i in range(2)]
    assert _files(out) == sorted(expected)
    assert [p.name for p in tmp_path.iterdir()] == ["tile"]  # no staging folder left


def test_images_and_masks_on_disk(tmp_path):
    out = write_synthetic_product(tmp_path, n_train_good=1, n_test_good=1, n_per_type=2)
    assert _read(out / "train/good/000.png").shape == (SIZE, SIZE, 3)
    for t in SYNTHETIC_TYPES:
        for i in range(2):
            image = _read(out / f"test/{t}/{i:03d}.png")
            mask = _read(out / f"ground_truth/{t}/{i:03d}_mask.png")
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
            assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}


def test_deterministic(tmp_path):
    kwargs = dict(n_train_good=2, n_test_good=1, n_per_type=1)
    a = write_synthetic_product(tmp_path / "a", seed=3, **kwargs)
    b = write_synthetic_product(tmp_path / "b", seed=3, **kwargs)
    c = write_synthetic_product(tmp_path / "c", seed=4, **kwargs)
    for name in _files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() != (c / name).read_bytes(), name


def test_more_images_keep_earlier_ones(tmp_path):
    small = write_synthetic_product(tmp_path / "s", n_train_good=1, n_test_good=1, n_per_type=1)
    large = write_synthetic_product(tmp_path / "l", n_train_good=3, n_test_good=2, n_per_type=3)
    for name in _files(small):
        assert (small / name).read_bytes() == (large / name).read_bytes(), name


def test_normals_vary():
    images = np.stack([render_normal(np.random.default_rng(s), SIZE) for s in range(6)])
    images = images.astype(float)
    assert images.shape == (6, SIZE, SIZE, 3)
    assert np.abs(images - images.mean(0)).mean() > 3  # pose, grain and lighting differ
    centre = images[:, SIZE // 2 - 20 : SIZE // 2 + 20, SIZE // 2 - 20 : SIZE // 2 + 20]
    assert centre.std(axis=(1, 2)).min() > 3  # textured, not flat
    assert (centre[..., 0] > centre[..., 2]).all()  # warm tile in the middle
    assert (images[:, :3, :3, 0] < images[:, :3, :3, 2]).all()  # bluish bench in the corner


@pytest.mark.parametrize("defect_type", SYNTHETIC_TYPES)
def test_mask_is_exactly_the_changed_pixels(defect_type):
    for normal, defective, mask in _defects(defect_type):
        assert defective.shape == normal.shape and defective.dtype == np.uint8
        assert mask.shape == normal.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        changed = np.any(defective != normal, axis=-1)
        np.testing.assert_array_equal(mask == 255, changed)


@pytest.mark.parametrize("defect_type", SYNTHETIC_TYPES)
def test_mask_size_shape_and_placement(defect_type):
    for normal, _, mask in _defects(defect_type):
        assert 0.003 <= (mask > 0).mean() <= 0.08
        n_labels, _ = cv2.connectedComponents(mask)
        assert n_labels == 2  # background plus one solid defect
        under = normal[mask > 0].astype(int)
        assert (under[:, 0] >= under[:, 2]).all()  # on the warm tile, not on the bluish bench


def test_hole_is_dark_pit():
    core = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    for normal, defective, mask in _defects("hole"):
        pit = cv2.erode(mask, core) > 0  # strips the rim, which is at most 4 px wide
        assert pit.any()
        assert defective[pit].mean() < 0.5 * normal[pit].mean()
        assert defective[mask > 0].mean() < 0.85 * normal[mask > 0].mean()


def test_scratch_is_thin_and_contrasted():
    for normal, defective, mask in _defects("scratch"):
        assert not cv2.erode(mask, np.ones((5, 5), np.uint8)).any()  # at most ~4 px wide
        contrast = np.abs(defective[mask > 0].astype(float) - normal[mask > 0]).mean()
        assert contrast > 15


def test_stain_shifts_hue_hole_does_not():
    def chroma_shift(triples):
        shifts = [np.abs(_chroma(d) - _chroma(n))[m > 0].sum(-1).mean() for n, d, m in triples]
        return np.mean(shifts)

    stain, hole = chroma_shift(_defects("stain")), chroma_shift(_defects("hole"))
    assert stain > 0.03
    assert stain > 3 * hole
    for normal, _, mask in _defects("stain"):
        assert cv2.erode(mask, np.ones((5, 5), np.uint8)).any()  # a blob, not a line


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown defect type"):
        add_defect(render_normal(np.random.default_rng(0), SIZE), "crack", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 image"):
        add_defect(np.zeros((64, 32, 3), np.uint8), "hole", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown defect types"):
        write_synthetic_product(tmp_path, types=("crack",))
    with pytest.raises(ValueError, match="plain folder name"):
        write_synthetic_product(tmp_path, product="../escape")
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "tile").mkdir()
    (tmp_path / "tile" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="non-empty"):
        write_synthetic_product(tmp_path, n_train_good=1, n_test_good=0, n_per_type=0)
    assert _files(tmp_path) == ["tile/keep.txt"]


def test_fills_existing_empty_folder(tmp_path):
    (tmp_path / "tile").mkdir()
    out = write_synthetic_product(tmp_path, n_train_good=1, n_test_good=0, n_per_type=0, types=())
    assert _files(out) == ["train/good/000.png"]


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("seas.data.synthetic.add_defect", broken)
    with pytest.raises(OSError, match="disk full"):  # a failed write names its target (files.atomic)
        write_synthetic_product(tmp_path, n_train_good=2, n_test_good=1, n_per_type=1)
    assert list(tmp_path.iterdir()) == []
