"""Segmenters, synthetic-anomaly baselines and the downstream protocol."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from seas.evaluation.baselines import cut_paste, perlin_blend, perlin_mask, perlin_noise
from seas.evaluation.downstream import (
    DownstreamConfig,
    build_untrained,
    evaluate,
    make_cut_paste_set,
    predict,
    segmentation_loss,
    train_segmenter,
)
from seas.evaluation.config import EvalConfig
from seas.evaluation.inputs import build_train_sets
from seas.evaluation.segmenters import BiSeNetV2, SmallUNet, build_segmenter
from seas.files.images import as_mask

METRIC_KEYS = {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
               "pixel_f1_max", "iou", "iou_at_0.5", "aupro_0.3"}
SIZE = 64


def _noisy(rng, size=SIZE):
    return np.clip(rng.normal(90, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def _with_square(rng, size=SIZE):
    """Noisy background with one bright square -> (image, mask)."""
    image = _noisy(rng, size)
    side = int(rng.integers(6, 16))
    y, x = rng.integers(0, size - side, 2)
    mask = np.zeros((size, size), dtype=bool)
    mask[y:y + side, x:x + side] = True
    image[mask] = np.clip(rng.normal(200, 15, (mask.sum(), 3)), 0, 255).astype(np.uint8)
    return image, mask


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    real = [_with_square(rng) for _ in range(6)]
    normals = [_noisy(rng) for _ in range(6)]
    generated = [_with_square(rng) for _ in range(8)]
    test = [_with_square(rng) for _ in range(8)] + [(_noisy(rng), None) for _ in range(8)]
    return real, normals, generated, test


def _cfg(**kw):
    base = dict(segmenter="unet", size=SIZE, steps=15, batch_size=8, lr=3e-3, width=0.25,
                device="cpu", progress=False)
    return DownstreamConfig(**{**base, **kw})


# ---------------------------------------------------------------- segmenters


@pytest.mark.parametrize("name", ["bisenetv2", "unet"])
def test_segmenter_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = build_segmenter(name, width=0.25)
    x = torch.randn(2, 3, SIZE, 48)
    logits, aux = model.forward_train(x)
    assert logits.shape == (2, 2, SIZE, 48)
    assert all(a.shape == (2, 2, SIZE, 48) for a in aux)
    assert len(aux) == (4 if name == "bisenetv2" else 0)
    loss = segmentation_loss(logits, torch.rand(2, SIZE, 48) > 0.9) + sum(a.mean() for a in aux)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    model.eval()
    assert model(torch.randn(1, 3, 40, 56)).shape == (1, 2, 40, 56)


def test_build_segmenter_options():
    assert isinstance(build_segmenter("bisenetv2", aux_heads=False), BiSeNetV2)
    assert build_segmenter("bisenetv2", aux_heads=False).aux is None
    assert isinstance(build_segmenter("unet", base=8, levels=3), SmallUNet)
    with pytest.raises(ValueError):
        build_segmenter("segformer")


def test_loss_kinds():
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=bool)
    target[0, 0, 0] = True
    ce = segmentation_loss(logits, target, "ce_dice")
    focal = segmentation_loss(logits, target, "focal_dice")
    assert ce > focal > 0
    with pytest.raises(ValueError):
        segmentation_loss(logits, target, "l2")


# ---------------------------------------------------------------- baselines


def _defect():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    mask = np.zeros((50, 40), dtype=bool)
    mask[10:30, 5:25] = True
    mask[30:35, 20:38] = True
    return image, mask


def test_cut_paste_exact_mask_and_determinism():
    normal = _noisy(np.random.default_rng(2), 96)
    defect, mask = _defect()
    for seed in range(10):
        image, out_mask = cut_paste(normal, defect, mask, np.random.default_rng(seed))
        assert image.shape == normal.shape and image.dtype == np.uint8
        assert out_mask.dtype == bool and out_mask.shape == normal.shape[:2]
        assert out_mask.any()
        np.testing.assert_array_equal(image[~out_mask], normal[~out_mask])
        assert (image[out_mask] != normal[out_mask]).any(axis=-1).mean() > 0.9
    a = cut_paste(normal, defect, mask, np.random.default_rng(5))
    b = cut_paste(normal, defect, mask, np.random.default_rng(5))
    c = cut_paste(normal, defect, mask, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_cut_paste_without_augmentation_copies_pixels():
    normal = _noisy(np.random.default_rng(3), 96)
    defect, mask = _defect()
    image, out_mask = cut_paste(normal, defect, mask, np.random.default_rng(0), flip=False,
                                rotate=False, scale=(1.0, 1.0), feather=0)
    assert out_mask.sum() == mask.sum()
    np.testing.assert_array_equal(np.sort(image[out_mask], axis=0), np.sort(defect[mask], axis=0))


def test_cut_paste_shrinks_large_defects():
    defect, mask = _defect()
    image, out_mask = cut_paste(_noisy(np.random.default_rng(4), 24), defect, mask,
                                np.random.default_rng(0))
    assert out_mask.shape == (24, 24) and out_mask.any()
    with pytest.raises(ValueError):
        cut_paste(image, defect, np.zeros_like(mask), np.random.default_rng(0))


def test_perlin_mask_and_blend():
    noise = perlin_noise((40, 56), (4, 7), np.random.default_rng(0))
    assert noise.shape == (40, 56) and np.abs(noise).max() <= 1.0 + 1e-6
    for seed in range(5):
        mask = perlin_mask((SIZE, SIZE), np.random.default_rng(seed))
        assert mask.dtype == bool and mask.any() and not mask.all()
    normal = _noisy(np.random.default_rng(5))
    image, mask = perlin_blend(normal, np.random.default_rng(7))
    assert image.dtype == np.uint8 and mask.dtype == bool and mask.any()
    np.testing.assert_array_equal(image[~mask], normal[~mask])
    again, mask2 = perlin_blend(normal, np.random.default_rng(7))
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask2)
    texture = np.full((10, 10, 3), 255, np.uint8)
    textured, tmask = perlin_blend(normal, np.random.default_rng(8), texture=texture)
    np.testing.assert_array_equal(textured[~tmask], normal[~tmask])


# ---------------------------------------------------------------- protocol


def test_paths_and_masks_are_loaded(tmp_path, data):
    real, _, _, _ = data
    image, mask = real[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    grey = np.where(mask, 200, 100).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a_mask.png")
    np.testing.assert_array_equal(as_mask(tmp_path / "a_mask.png", mask.shape), mask)
    np.testing.assert_array_equal(as_mask(mask.astype(np.float32), mask.shape), mask)
    np.testing.assert_array_equal(as_mask(mask.astype(np.int64), mask.shape), mask)
    upsampled = mask[::2, ::2].repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(as_mask(grey[::2, ::2], mask.shape), upsampled)
    assert as_mask(None, (3, 4)).shape == (3, 4)
    pairs = make_cut_paste_set([(str(tmp_path / "a.png"), tmp_path / "a_mask.png")],
                               [image], n=3, seed=0)
    assert len(pairs) == 3 and all(m.any() for _, m in pairs)


def test_protocol_end_to_end_bisenet(data):
    real, normals, generated, test = data
    rows = [{"kind": "square", "image": image, "mask": mask} for image, mask in generated]
    sets, _ = build_train_sets(real, normals, rows, EvalConfig(seed=0))
    assert set(sets) == {"real_only", "real+generated", "cut_paste", "perlin"}
    assert len(sets["real+generated"]) == len(sets["cut_paste"]) == 6 + 6 + 8
    cfg = _cfg(segmenter="bisenetv2", steps=30, batch_size=4)
    results = {name: evaluate(train_segmenter(pairs, cfg), test, cfg) for name, pairs in sets.items()}
    assert set(results) == set(sets)
    for metrics in results.values():
        assert set(metrics) >= METRIC_KEYS
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["pixel_auroc"] > 0.8  # every set holds the real squares


def test_training_learns_and_is_deterministic(data):
    real, normals, _, test = data
    sets = {"real_only": real + [(n, None) for n in normals]}
    first = {name: evaluate(train_segmenter(pairs, _cfg()), test, _cfg()) for name, pairs in sets.items()}
    second = {name: evaluate(train_segmenter(pairs, _cfg()), test, _cfg()) for name, pairs in sets.items()}
    assert first == second
    assert first["real_only"]["pixel_auroc"] > 0.9
    assert first["real_only"]["image_auroc"] > 0.8


def test_seed_changes_model_and_predict_resizes_back(data):
    real, _, _, test = data
    a = train_segmenter(real, _cfg(steps=1, seed=0))
    b = train_segmenter(real, _cfg(steps=1, seed=1))
    images = [_noisy(np.random.default_rng(9), 48)[:, :40] for _ in range(3)]
    pa, pb = predict(a, images, SIZE), predict(b, images, SIZE)
    assert pa.shape == (3, 48, 40) and pa.dtype == np.float32
    assert (pa >= 0).all() and (pa <= 1).all()
    assert not np.allclose(pa, pb)
    assert predict(a, [test[0][0]], SIZE, resize_back=False).shape == (1, SIZE, SIZE)
    with pytest.raises(ValueError):
        predict(a, [images[0], test[0][0]], SIZE)


@pytest.mark.parametrize("name", ["unet", "bisenetv2"])
def test_every_classifier_starts_at_the_prior(name):
    """``prior``: each classifier's logits start at 0 (normal) and log(p / (1 - p)) (anomaly)
    biases, so that an all-black input is scored p; ``None`` keeps PyTorch's initialisation."""
    cfg = DownstreamConfig(segmenter=name, width=0.25, prior=0.01)
    torch.manual_seed(0)
    model = build_untrained(cfg)
    heads = [m for n, m in model.named_modules() if n.split(".")[-1] == "cls"]
    assert len(heads) == (1 if name == "unet" else 5)  # BiSeNet V2: the main head and four boosters
    for head in heads:
        assert torch.allclose(head.bias, torch.tensor([0.0, math.log(0.01 / 0.99)]))
        zero_input = torch.zeros(1, head.in_channels, 2, 2)
        assert torch.allclose(torch.softmax(head(zero_input), dim=1)[:, 1], torch.tensor(0.01))
    torch.manual_seed(0)
    plain = build_untrained(DownstreamConfig(segmenter=name, width=0.25, prior=None))
    assert not any(torch.allclose(m.bias, heads[0].bias) for n, m in plain.named_modules()
                   if n.split(".")[-1] == "cls")
    assert EvalConfig(prior=0.05).downstream().prior == 0.05
