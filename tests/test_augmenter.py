"""``seas.SeaSAugmenter``: the training-loop augmenter's contract in bank and direct mode, and a
short training loop of a small segmenter that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import seas
from seas.config import AugmentConfig, GenerationConfig
from seas.errors import SeasError
from seas.generation.augment import augment_to_folder, to_size
from seas.generation.placement import Placer

FAST = GenerationConfig(steps=2, guidance=2.0, batch_size=4)


@pytest.fixture(scope="module")
def bank(gen_run, product64, tmp_path_factory):
    """An augment folder of the run: its 4 normal training images, two copies each, real-mask regions."""
    aug = AugmentConfig(type="hole,scratch", placement="real-masks", num_per_image=2)
    out = tmp_path_factory.mktemp("bank") / "bank"
    return augment_to_folder(gen_run, product64 / "train" / "good", out, aug, FAST, progress=False)


def batch(n: int = 5, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_the_call_is_seeded_and_has_the_detector_libraries_shape(gen_run, bank):
    images = batch()
    augmenter = seas.SeaSAugmenter(gen_run, bank=bank, probability=0.6, seed=3)
    assert isinstance(augmenter, torch.nn.Module)
    augmented, masks = augmenter(images)
    assert augmented.shape == images.shape and augmented.dtype == images.dtype
    assert masks.shape == (5, 1, 40, 56) and masks.dtype == images.dtype
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and 0 <= augmented.min() and augmented.max() <= 1

    # the same draws by hand: which images, which pairs; each pasted exactly inside its area
    rng = np.random.default_rng(3)
    chosen = np.flatnonzero(rng.random(5) < 0.6)
    numbers = rng.integers(len(augmenter.bank), size=len(chosen))
    assert 0 < len(chosen) < 5
    for b in range(5):
        if b not in chosen:
            assert torch.equal(augmented[b], images[b]) and not masks[b].any() and augmenter.last_kinds[b] is None
            continue
        number = int(numbers[list(chosen).index(b)])
        assert augmenter.last_kinds[b] == augmenter.bank.pairs[number][2]
        pixels, mask, area = augmenter.bank.at_size(number, 40, 56)
        outside = torch.from_numpy(~area)
        assert torch.equal(augmented[b][:, outside], images[b][:, outside])  # bit-identical outside the area
        assert torch.allclose(augmented[b][:, ~outside], torch.from_numpy(pixels).permute(2, 0, 1)[:, ~outside])
        assert torch.equal(masks[b, 0].bool(), torch.from_numpy(mask)) and mask.any() and not (mask & ~area).any()

    again = seas.SeaSAugmenter(gen_run, bank=bank, probability=0.6, seed=3)(images)
    assert all(torch.equal(x, y) for x, y in zip(again, (augmented, masks)))
    other = seas.SeaSAugmenter(gen_run, bank=bank, probability=0.6, seed=4)(images)
    assert not torch.equal(other[1], masks)


def test_probability_is_the_share_of_augmented_images(gen_run, bank):
    images = batch(n=400, height=16, width=16)
    for probability in (0.0, 0.3, 1.0):
        augmented, masks = seas.SeaSAugmenter(gen_run, bank=bank, probability=probability)(images)
        share = masks.flatten(1).any(dim=1).float().mean().item()
        assert abs(share - probability) < 0.07, (probability, share)
        if probability == 0.0:
            assert torch.equal(augmented, images)


def test_types_choose_the_pairs_and_bad_arguments_are_one_line(gen_run, bank, tmp_path):
    both = seas.SeaSAugmenter(gen_run, bank=bank).bank.pairs
    only_holes = seas.SeaSAugmenter(gen_run, bank=bank, types=["hole"]).bank.pairs
    assert len(both) == 16 and len(only_holes) == 8  # 8 images, a hole and a scratch on each
    assert all("/type-mask/hole/" in mask and kind == "hole" for _, mask, kind in only_holes)
    with pytest.raises(SeasError, match="holds no anomaly pair of the types stain"):
        seas.SeaSAugmenter(gen_run, bank=bank, types=["stain"])
    with pytest.raises(SeasError, match="the run has no type dent"):
        seas.SeaSAugmenter(gen_run, bank=bank, types=["dent"])
    with pytest.raises(SeasError, match="probability 1.5"):
        seas.SeaSAugmenter(gen_run, bank=bank, probability=1.5)
    augmenter = seas.SeaSAugmenter(gen_run, bank=bank)
    with pytest.raises(SeasError, match=r"\(B, 3, H, W\) float tensor"):
        augmenter(torch.rand(3, 16, 16))
    with pytest.raises(SeasError, match="must lie in \\[0, 1\\]"):
        augmenter(batch() * 255)

    foreign = tmp_path / "foreign"  # the bank's files, but written by another run
    import shutil

    shutil.copytree(bank, foreign)
    settings = json.loads((foreign / "generation.json").read_text())
    (foreign / "generation.json").write_text(json.dumps(settings | {"run": str(tmp_path / "elsewhere")}))
    with pytest.raises(SeasError, match="written by the run .*elsewhere, not"):
        seas.SeaSAugmenter(gen_run, bank=foreign)


def test_direct_mode_draws_into_the_image_itself(gen_run):
    images = batch(n=3, height=48, width=40)
    augmenter = seas.SeaSAugmenter(gen_run, probability=1.0, seed=1, sampling=FAST)
    augmented, masks = augmenter(images)
    rng = np.random.default_rng(1)
    rng.random(3)
    kinds = [augmenter.types[int(k)] for k in rng.integers(len(augmenter.types), size=3)]
    placer = Placer(augmenter.run, "real-masks")
    for b in range(3):
        region = torch.from_numpy(to_size(placer.separate((kinds[b],), b, FAST.seed)[0], (40, 48)))
        assert torch.equal(augmented[b][:, ~region], images[b][:, ~region])
        assert masks[b, 0].bool().any() and not (masks[b, 0].bool() & ~region).any()
        assert (augmented[b][:, region] - images[b][:, region]).abs().max() > 0.05  # something drawn
    assert augmenter.drawn == 3 and augmenter.last_kinds == kinds


def test_a_small_segmenter_learns_the_defects_from_the_augmenter(gen_run, bank, product64):
    from seas.files.images import read_rgb

    normals = torch.stack([torch.from_numpy(read_rgb(p).copy()).permute(2, 0, 1).float() / 255
                           for p in sorted((product64 / "train" / "good").glob("*.png"))])
    torch.manual_seed(0)
    segmenter = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2), torch.nn.ReLU(),
                                    torch.nn.Conv2d(16, 1, 1))
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=3e-3)
    augmenter = seas.SeaSAugmenter(gen_run, bank=bank, probability=0.5, seed=0)
    losses = []
    for _ in range(300):  # a DRAEM-style step: augment, predict the mask, learn it
        augmented, masks = augmenter(normals)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(segmenter(augmented), masks,
                                                                  pos_weight=torch.tensor(10.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    with torch.no_grad():
        augmented, masks = seas.SeaSAugmenter(gen_run, bank=bank, probability=1.0, seed=9)(normals)
        scores = segmenter(augmented)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(masks.flatten().numpy(), scores.flatten().numpy()) > 0.8
