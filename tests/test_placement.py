"""Placement of generated defects (``--placement real-masks|masks``): moved real masks, user masks,
and the blended sampler that keeps the reference normal image outside the region."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from seas.cli import main
from seas.config import GenerationConfig
from seas.errors import ConfigError
from seas.data.transforms import sample_uint8
from seas.generation.folder import generate_to_folder
from seas.generation.pipeline import SeaSPipeline, _pixel_region, _to_pil
from seas.generation.placement import ON_PRODUCT, SCALES, move_mask, read_user_masks

FAST = dict(steps=3, guidance=2.0)


def disk(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, centre[::-1], radius, 1, -1)
    return mask > 0


def test_move_mask_keeps_the_defect_and_puts_it_on_the_product():
    size = 96
    ellipse = np.zeros((size, size), np.uint8)
    cv2.ellipse(ellipse, (20, 20), (12, 4), 0, 0, 360, 1, -1)  # a long defect in the top-left corner
    ellipse = ellipse > 0
    foreground = np.zeros((size, size), bool)
    foreground[:, 48:] = True  # the product: the right half
    for seed in range(20):
        moved = move_mask(ellipse, foreground, np.random.default_rng(seed))
        ratio = moved.sum() / ellipse.sum()
        assert SCALES[0] ** 2 * 0.8 <= ratio <= SCALES[1] ** 2 * 1.2  # scaled mildly, nearest neighbour
        assert (moved & foreground).sum() / moved.sum() >= ON_PRODUCT
        n, _ = cv2.connectedComponents(moved.astype(np.uint8))
        assert n == 2  # still one defect
    a = move_mask(ellipse, foreground, np.random.default_rng(3))
    b = move_mask(ellipse, foreground, np.random.default_rng(3))
    c = move_mask(ellipse, foreground, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_user_masks_are_resized_and_bad_ones_named(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray((disk(100, (50, 30), 10) * 255).astype(np.uint8)).resize((80, 100)).save(good / "b.png")
    Image.fromarray((disk(40, (10, 10), 5) * 255).astype(np.uint8)).save(good / "a.png")
    masks = read_user_masks(good, 64)
    assert [m.shape for m in masks] == [(64, 64), (64, 64)]
    assert masks[0][16, 16] and not masks[0][48, 48]  # a.png first (sorted), resized by 64/40

    empty = tmp_path / "empty"
    empty.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(empty / "blank.png")
    with pytest.raises(ConfigError, match=re.escape(str(empty / "blank.png")) + ": empty mask"):
        read_user_masks(empty, 64)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_text("not an image")
    with pytest.raises(ConfigError, match=re.escape(str(broken / "x.png")) + ": unreadable mask"):
        read_user_masks(broken, 64)
    with pytest.raises(ConfigError, match="no image files"):
        read_user_masks(_folder(tmp_path), 64)
    with pytest.raises(ConfigError, match="not a folder"):
        read_user_masks(tmp_path / "missing", 64)


def _folder(tmp_path):
    folder = tmp_path / "no-images"
    folder.mkdir()
    (folder / "notes.txt").write_text("masks go here")
    return folder


@pytest.fixture(scope="module")
def pipe(gen_run):
    return SeaSPipeline.from_run(gen_run)


def test_real_mask_placement_keeps_the_reference_outside_the_region(pipe):
    cfg = GenerationConfig(**FAST, placement="real-masks")
    items = pipe.generate("hole", [0, 1, 2], cfg, batch_size=3)
    for item in items:
        assert item.placement == "real-masks" and item.region.any()
        keep = pipe.latent_region(item.region[None], cfg.region_dilation)
        area = _pixel_region(keep, pipe.resolution)[0]
        assert area[item.region].all()  # the region grown to latent cells holds the placed mask
        reference = sample_uint8(item.reference, None, 64, pipe.run.data.fit, pipe.run.data.mask_rule)[0]
        assert np.array_equal(np.asarray(item.background), reference)
        image = np.asarray(item.image).astype(int)
        assert np.abs(image - reference)[~area].max() == 0  # outside: the reference normal image itself
        assert np.abs(image - reference)[area].mean() > 1  # inside: something was drawn
        assert not (item.mask & ~area).any()  # the mask never leaves the region
        if item.mask_source == "placed":
            assert np.array_equal(item.mask, item.region)
        # the placed defect is a moved real training mask of the type: its area is in the real range
        real = pipe.placer("real-masks").real["hole"]
        lo, hi = min(m.mean() for m in real), max(m.mean() for m in real)
        assert SCALES[0] ** 2 * lo * 0.8 <= item.region.mean() <= SCALES[1] ** 2 * hi * 1.2
    # the same image in another batch: the same region and pixels (the draws depend on the index)
    again = pipe.generate("hole", [1], cfg, batch_size=1)[0]
    assert np.array_equal(again.region, items[1].region)
    assert np.abs(np.asarray(again.image).astype(int) - np.asarray(items[1].image).astype(int)).max() <= 1


def test_round_trip_background_is_the_decoded_reference_latent(pipe):
    cfg = GenerationConfig(**FAST, placement="real-masks", background="round-trip")
    item = pipe.generate("stain", [2], cfg)[0]
    decoded = pipe.vae.decode(pipe.reference_latent(2) / pipe.vae.config.scaling_factor).sample
    round_trip = np.asarray(_to_pil(decoded[0], pipe.grey)).astype(int)
    area = _pixel_region(pipe.latent_region(item.region[None], 1), 64)[0]
    assert np.abs(np.asarray(item.image).astype(int) - round_trip)[~area].max() <= 1
    assert np.abs(np.asarray(item.background).astype(int) - round_trip).max() <= 1


def test_free_placement_is_unchanged(pipe):
    free = pipe.generate("scratch", [0, 1], GenerationConfig(**FAST))
    assert all(item.region is None and item.mask_source is None and item.background is None for item in free)
    latents = pipe.start_latents([0, 1], 0)
    pixels, _ = pipe._sample(latents, pipe._text_embeddings(free[0].prompt, True), 2.0, 3, 0)
    assert np.array_equal(np.asarray(free[0].image), np.asarray(_to_pil(pixels[0], pipe.grey)))


def test_user_masks_of_another_size_in_a_folder(tmp_path, gen_run):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((disk(200, (60, 140), 25) * 255).astype(np.uint8)).save(masks / "m0.png")
    Image.fromarray((disk(50, (40, 10), 6) * 255).astype(np.uint8)).save(masks / "m1.png")
    out = generate_to_folder(gen_run, tmp_path / "gen", ["stain"],
                             GenerationConfig(num=3, placement="masks", masks=str(masks), **FAST), progress=False)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["placement"] for r in rows] == ["masks"] * 3
    assert all(r["mask_source"] in ("head", "placed") for r in rows)
    regions = [np.asarray(Image.open(out / r["region"])) > 127 for r in rows]
    expected = read_user_masks(masks, 64)
    assert np.array_equal(regions[0], expected[0]) and np.array_equal(regions[1], expected[1])
    assert np.array_equal(regions[2], expected[0])  # cycled
    assert regions[0].shape == (64, 64) and regions[0][21, 49]  # m0's disk centre scaled by 64/200


def test_bad_user_mask_is_one_line_and_writes_nothing(capsys, tmp_path, gen_run):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((disk(64, (30, 30), 8) * 255).astype(np.uint8)).save(masks / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "b.png")
    out = tmp_path / "gen"
    code = main(["generate", "--run", str(gen_run), "--out", str(out), "--type", "hole", "--num", "2",
                 "--placement", "masks", "--masks", str(masks), "--quiet"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1 and str(masks / "b.png") in err[0] and "empty mask" in err[0]
    assert not out.exists()
    code = main(["generate", "--run", str(gen_run), "--out", str(out), "--type", "hole", "--num", "2",
                 "--placement", "masks", "--quiet"])
    assert code == 2 and "--masks DIR" in capsys.readouterr().err and not out.exists()
