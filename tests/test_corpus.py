"""Tests for the procedural pretraining corpus (seas.data.corpus and its two helper modules)."""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from seas.data import corpus, corpus_defects, corpus_families
from seas.data.corpus import (
    COMPATIBLE,
    DEFECTS,
    FAMILIES,
    caption_words,
    render_batch,
    render_sample,
    write_contact_sheet,
)

SEED = 7
CAPTION = re.compile(r"a photo of a (?P<name>[a-z ]+?)(?: with a (?P<kind>[a-z ]+))?")


@lru_cache(maxsize=None)
def _corpus(n: int = 240) -> tuple:
    """Samples 0..n-1 of corpus SEED at 128 px (shared, do not modify)."""
    return tuple(render_sample(SEED, i) for i in range(n))


@lru_cache(maxsize=None)
def _pairs() -> tuple:
    """(family, defect, clean image, sample) for every compatible pair, two indices each."""
    rows = []
    for family, kinds in COMPATIBLE.items():
        for defect in kinds:
            for index in (0, 1):
                clean, sample = corpus._render(SEED, index, 128, family, defect)
                rows.append((family, defect, clean, sample))
    return tuple(rows)


def test_names_are_plain_words_and_compatibility_is_consistent():
    assert len(FAMILIES) >= 8 and len(DEFECTS) >= 12
    for name in FAMILIES + DEFECTS:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", name), name
    assert set(COMPATIBLE) == set(FAMILIES)
    used = {d for kinds in COMPATIBLE.values() for d in kinds}
    assert used == set(DEFECTS)
    for kinds in COMPATIBLE.values():
        assert len(set(kinds)) == len(kinds) and set(kinds) <= set(DEFECTS)
    # defects that need an outline are only drawn on objects, threads only on fabric
    objects = {f for f in FAMILIES if corpus_families.FAMILY_RENDERERS[f](np.random.default_rng(0), 64).radius > 0}
    for family, kinds in COMPATIBLE.items():
        if family not in objects:
            assert "missing piece" not in kinds and "bent edge" not in kinds, family
    assert [f for f, kinds in COMPATIBLE.items() if "frayed thread" in kinds] == ["woven fabric"]


def test_same_arguments_give_identical_samples():
    first, second = render_sample(3, 17), render_sample(3, 17)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert (first.family, first.defect, first.caption) == (second.family, second.defect, second.caption)


def test_different_indices_and_seeds_give_different_images():
    base = render_sample(3, 17).image
    assert not np.array_equal(base, render_sample(3, 18).image)
    assert not np.array_equal(base, render_sample(4, 17).image)


def test_a_sample_does_not_depend_on_its_batch():
    indices = [5, 0, 12, 5]
    images, masks, captions = render_batch(SEED, indices)
    for row, index in enumerate(indices):
        alone = _corpus()[index]
        np.testing.assert_array_equal(images[row], alone.image)
        np.testing.assert_array_equal(masks[row], alone.mask)
        assert captions[row] == alone.caption


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_dtypes(size):
    images, masks, captions = render_batch(SEED, range(6), size=size)
    assert images.shape == (6, size, size, 3) and images.dtype == np.uint8
    assert masks.shape == (6, size, size) and masks.dtype == bool
    assert len(captions) == 6 and all(isinstance(c, str) for c in captions)
    sample = render_sample(SEED, 0, size=size)
    assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (size, size) and sample.mask.dtype == bool


def test_empty_batch():
    images, masks, captions = render_batch(SEED, [], size=64)
    assert images.shape == (0, 64, 64, 3) and masks.shape == (0, 64, 64) and captions == []


def test_choice_does_not_depend_on_size():
    for index in range(6):
        assert render_sample(SEED, index, 64).family == _corpus()[index].family


def test_every_family_and_defect_is_drawn_only_on_compatible_families():
    choices = [corpus._choose(SEED, i, 0.6) for i in range(3000)]
    assert {family for family, _ in choices} == set(FAMILIES)
    assert {defect for _, defect in choices} == set(DEFECTS) | {None}
    for family, defect in choices:
        assert defect is None or defect in COMPATIBLE[family]
    rendered = _corpus()
    assert {s.family for s in rendered} == set(FAMILIES)
    for sample in rendered:
        assert sample.defect is None or sample.defect in COMPATIBLE[sample.family]


def test_every_compatible_pair_renders_with_an_exact_mask():
    drawn = set()
    for family, defect, clean, sample in _pairs():
        assert sample.family == family
        if sample.defect is None:  # every draw failed: a normal image, untouched
            np.testing.assert_array_equal(sample.image, clean)
            assert not sample.mask.any()
            continue
        drawn.add((family, defect))
        area = sample.mask.mean()
        assert 0 < area <= 0.35, (family, defect, area)
        # outside the mask the image is the clean one; inside, every pixel visibly changed
        np.testing.assert_array_equal(sample.image[~sample.mask], clean[~sample.mask])
        change = np.abs(sample.image.astype(int) - clean).max(axis=-1)
        assert change[sample.mask].min() > corpus._VISIBLE, (family, defect)
    # at most a rare failed draw: each pair renders for at least one of its two indices
    pairs = {(f, d) for f, kinds in COMPATIBLE.items() for d in kinds}
    assert drawn == pairs


def test_defect_masks_are_nonempty_and_bounded_normal_masks_empty():
    for sample in _corpus():
        if sample.defect is None:
            assert not sample.mask.any()
        else:
            assert 0 < sample.mask.mean() <= 0.35


def test_share_of_defective_images_follows_defect_share():
    share = np.mean([s.defect is not None for s in _corpus()])
    assert abs(share - 0.6) < 0.1
    assert all(render_sample(SEED, i, 64, defect_share=0.0).defect is None for i in range(8))
    assert sum(render_sample(SEED, i, 64, defect_share=1.0).defect is not None for i in range(8)) >= 7


def test_captions_name_the_family_and_defect():
    vocabulary = set(caption_words())
    for sample in _corpus():
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", sample.caption), sample.caption
        assert set(sample.caption.split()) <= vocabulary
        match = CAPTION.fullmatch(sample.caption)
        assert match, sample.caption
        assert match["name"] in (sample.family, "object")
        if sample.defect is None:
            assert match["kind"] is None
        else:
            assert match["kind"] in (sample.defect, "defect")


def test_generic_words_replace_names_about_fifteen_percent_of_the_time():
    captions = [corpus._caption(SEED, i, "hex nut", "crack") for i in range(4000)]
    generic_family = np.mean([c.startswith("a photo of a object") for c in captions])
    generic_defect = np.mean([c.endswith("with a defect") for c in captions])
    both = np.mean([c == "a photo of a object with a defect" for c in captions])
    assert abs(generic_family - 0.15) < 0.02 and abs(generic_defect - 0.15) < 0.02
    assert abs(both - 0.15 * 0.15) < 0.01  # independent
    assert corpus._caption(SEED, 0, "hex nut", None) in ("a photo of a hex nut", "a photo of a object")


def test_caption_words_cover_every_name():
    words = caption_words()
    assert words == sorted(set(words))
    assert {"a", "photo", "of", "with", "object", "defect"} <= set(words)
    for name in FAMILIES + DEFECTS:
        assert set(name.split()) <= set(words)


def test_images_are_textured_photographs_not_flat_drawings():
    images = np.stack([s.image for s in _corpus()[:60]]).astype(np.float32)
    grey = images.mean(axis=-1)
    assert grey.reshape(len(grey), -1).std(axis=1).min() > 4  # every image has contrast
    # fine texture: the difference between neighbouring pixels
    detail = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    assert detail.min() > 0.5 and np.median(detail) > 2
    # images differ in colour, exposure and content
    means = images.mean(axis=(1, 2))
    assert means.std(axis=0).min() > 10
    # not saturated flat areas
    assert np.mean(images >= 255) < 0.02 and np.mean(images <= 0) < 0.02


def test_line_defects_come_in_thin_and_thick_widths():
    rng = np.random.default_rng(0)
    widths = np.array([corpus_defects._line_width(rng, 1.0, (0.8, 1.8), (2.5, 5)) for _ in range(400)])
    assert 0.35 < np.mean(widths <= 2) < 0.65 and widths.min() >= 1 and widths.max() > 4
    # a thin stroke really is thin: at most 3 pixels across
    stroke = corpus_defects._stroke(64, np.array([[10.0, 32.0], [54.0, 32.0]]), 1.0)
    assert (stroke[:, 32] > 0.05).sum() <= 3 and stroke[:, 32].max() > 0.5


def test_module_is_independent_of_the_demo_product():
    forbidden = ("seas.data.synthetic", "seas.data.generic_defects", "torch")
    for module in (corpus, corpus_families, corpus_defects):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported.append("." * node.level + (node.module or ""))
                imported += [f"{node.module}.{alias.name}" for alias in node.names]
        for name in imported:
            assert not name.startswith("."), f"{module.__name__}: relative import {name}"
            assert not name.startswith(forbidden), f"{module.__name__} imports {name}"


def test_contact_sheet(tmp_path):
    path = write_contact_sheet(tmp_path / "sheet.png", seed=SEED, rows=2, cols=3, size=64)
    sheet = cv2.imread(str(path))
    assert sheet.shape == (2 * (64 + 26), 3 * 64, 3)
    # the first tile is sample 0, its mask outlined in red (BGR on disk)
    first = cv2.cvtColor(sheet[:64, :64], cv2.COLOR_BGR2RGB)
    sample = render_sample(SEED, 0, 64)
    if sample.defect is None:
        np.testing.assert_array_equal(first, sample.image)
    else:
        assert ((first == (255, 0, 0)).all(axis=-1) & sample.mask).any()


@pytest.mark.parametrize("kwargs", [{"size": 16}, {"size": 2048}, {"defect_share": 1.5}, {"defect_share": -0.1}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        render_sample(SEED, 0, **kwargs)
