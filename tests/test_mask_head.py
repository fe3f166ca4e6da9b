"""Tests for feature capture (seas.features) and the Refined Mask Predictor (seas.mask_head)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from seas.backbone import build_tiny_components
from seas.features import (
    FeatureRecorder,
    conditional_half,
    unet_feature_channels,
    vae_feature_channels,
)
from seas.mask_head import RefinedMaskPredictor, coarse_target, focal_loss, mask_loss

WIDTH = 16  # tiny backbone width: U-Net (16, 32, 64, 64), VAE (16, 32, 32, 32)
LATENT = 8  # 64 px images
BATCH = 3
UNET_NAMES = ["unet.up_blocks[1]", "unet.up_blocks[2]"]
VAE_NAMES = ["vae.decoder.up_blocks[0]", "vae.decoder.up_blocks[1]", "vae.decoder.up_blocks[2]"]


@pytest.fixture(scope="module")
def tiny():
    parts = build_tiny_components(seed=0, width=WIDTH)
    parts["unet"].eval()
    parts["vae"].eval()
    return parts


@pytest.fixture(scope="module")
def recorded(tiny):
    """A recorder after one guided U-Net pass (batch 2 x BATCH) and one VAE decode (BATCH)."""
    torch.manual_seed(0)
    latents = torch.randn(BATCH, 4, LATENT, LATENT)
    text = torch.randn(2 * BATCH, 5, 2 * WIDTH)
    with torch.no_grad(), FeatureRecorder(tiny["unet"], tiny["vae"]) as recorder:
        tiny["unet"](torch.cat([latents, latents]), 500, encoder_hidden_states=text)
        tiny["vae"].decode(latents)
    return recorder


@pytest.fixture(scope="module")
def tiny_features(recorded):
    """(U-Net features of the conditional half, VAE features), each batch BATCH."""
    return [conditional_half(f) for f in recorded.unet_features], recorded.vae_features


def tiny_head(tiny, seed=0):
    torch.manual_seed(seed)
    return RefinedMaskPredictor(
        unet_channels=unet_feature_channels(tiny["unet"]),
        vae_channels=vae_feature_channels(tiny["vae"]),
        coarse_channels=(16, 16),
        num_layers=2,
        num_heads=4,
    )


# ----------------------------------------------------------------------------- features


def test_recorder_captures_the_intended_blocks(recorded):
    shapes = {name: tuple(t.shape) for name, t in recorded.recorded.items()}
    assert shapes == {
        "unet.up_blocks[1]": (2 * BATCH, 4 * WIDTH, LATENT // 2, LATENT // 2),
        "unet.up_blocks[2]": (2 * BATCH, 2 * WIDTH, LATENT, LATENT),
        "vae.decoder.up_blocks[0]": (BATCH, 2 * WIDTH, 2 * LATENT, 2 * LATENT),
        "vae.decoder.up_blocks[1]": (BATCH, 2 * WIDTH, 4 * LATENT, 4 * LATENT),
        "vae.decoder.up_blocks[2]": (BATCH, 2 * WIDTH, 8 * LATENT, 8 * LATENT),
    }
    assert [t.shape[2] for t in recorded.unet_features] == [LATENT // 2, LATENT]
    assert [t.shape[2] for t in recorded.vae_features] == [2 * LATENT, 4 * LATENT, 8 * LATENT]


def test_hooks_are_removed_on_exit(tiny):
    recorder = FeatureRecorder(tiny["unet"], tiny["vae"])
    modules = [tiny["unet"].up_blocks[i] for i in (1, 2)]
    modules += [tiny["vae"].decoder.up_blocks[i] for i in (0, 1, 2)]
    latents = torch.randn(1, 4, LATENT, LATENT)
    with torch.no_grad():
        with recorder:
            assert all(len(m._forward_hooks) == 1 for m in modules)
            tiny["vae"].decode(latents)
        assert all(len(m._forward_hooks) == 0 for m in modules)
        assert sorted(recorder.recorded) == VAE_NAMES  # still readable after exit
        recorder.clear()
        tiny["vae"].decode(latents)
    assert recorder.recorded == {}
    with pytest.raises(RuntimeError, match="nothing recorded"):
        recorder.vae_features


def test_recorder_detaches_unless_asked(tiny):
    latents = torch.randn(1, 4, LATENT, LATENT)
    for keep_graph in (False, True):
        with FeatureRecorder(vae=tiny["vae"], vae_blocks=[2], keep_graph=keep_graph) as recorder:
            tiny["vae"].decode(latents)
        (feature,) = recorder.vae_features
        assert feature.requires_grad is keep_graph


def test_recorder_block_selection(tiny):
    with torch.no_grad(), FeatureRecorder(vae=tiny["vae"], vae_blocks=[1, 0]) as recorder:
        tiny["vae"].decode(torch.randn(1, 4, LATENT, LATENT))
    assert [f.shape[-1] for f in recorder.vae_features] == [4 * LATENT, 2 * LATENT]
    assert recorder.unet_features == []  # no U-Net given, none asked for
    with pytest.raises(ValueError, match="no block index"):
        FeatureRecorder(vae=tiny["vae"], vae_blocks=[4])


def test_feature_channels_from_configs(tiny):
    assert unet_feature_channels(tiny["unet"]) == (4 * WIDTH, 2 * WIDTH)
    assert vae_feature_channels(tiny["vae"]) == (2 * WIDTH,) * 3
    sd_unet = SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280, 1280)))
    sd_vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=(128, 256, 512, 512)))
    assert unet_feature_channels(sd_unet) == (1280, 640)
    assert vae_feature_channels(sd_vae) == (512, 512, 256)


def test_conditional_half():
    batch = torch.arange(4)
    assert conditional_half(batch).tolist() == [2, 3]
    assert conditional_half(batch, conditional_first=True).tolist() == [0, 1]
    with pytest.raises(ValueError, match="even"):
        conditional_half(torch.arange(3))


# ----------------------------------------------------------------------------- mask head


def test_head_shapes_on_tiny_backbone(tiny, tiny_features):
    head = tiny_head(tiny).eval()
    with torch.no_grad():
        refined, coarse = head(*tiny_features)
        proba = head.predict_proba(*tiny_features)
    assert refined.shape == (BATCH, 2, 8 * LATENT, 8 * LATENT)
    assert coarse.shape == (BATCH, 2, LATENT, LATENT)
    assert proba.shape == (BATCH, 8 * LATENT, 8 * LATENT)
    assert torch.allclose(proba, refined.softmax(1)[:, 1])
    assert 0 <= proba.min() and proba.max() <= 1


def test_head_at_sd_scale():
    torch.manual_seed(0)
    head = RefinedMaskPredictor().eval()
    n_params = sum(p.numel() for p in head.parameters())
    assert 6_000_000 < n_params < 7_000_000
    unet_feats = [torch.randn(1, 1280, 2, 2), torch.randn(1, 640, 4, 4)]  # as for 32 px images
    vae_feats = [torch.randn(1, c, s, s) for c, s in ((512, 8), (512, 16), (256, 32))]
    with torch.no_grad():
        refined, coarse = head(unet_feats, vae_feats)
    assert refined.shape == (1, 2, 32, 32)
    assert coarse.shape == (1, 2, 4, 4)


def test_save_load_round_trip(tiny, tiny_features, tmp_path):
    head = tiny_head(tiny)
    with torch.no_grad():
        head(*tiny_features)  # a training-mode pass moves the BatchNorm running statistics
    head.eval().save_pretrained(tmp_path / "rmp")
    loaded = RefinedMaskPredictor.from_pretrained(tmp_path / "rmp").eval()
    assert loaded.config.coarse_channels == [16, 16]
    with torch.no_grad():
        for a, b in zip(head(*tiny_features), loaded(*tiny_features)):
            assert torch.equal(a, b)


def _first_image(features):
    return [f[:1] for f in features]


def test_eval_mask_does_not_depend_on_batch(tiny, tiny_features):
    head = tiny_head(tiny).eval()
    unet_feats, vae_feats = tiny_features
    with torch.no_grad():
        alone = head.predict_proba(_first_image(unet_feats), _first_image(vae_feats))
        in_batch = head.predict_proba(unet_feats, vae_feats)[:1]
    assert torch.allclose(alone, in_batch, atol=1e-5)


def test_train_mode_mask_depends_on_batch(tiny, tiny_features):
    """BatchNorm in training mode normalises with batch statistics: the reason to call eval()."""
    head = tiny_head(tiny).train()
    unet_feats, vae_feats = tiny_features
    with torch.no_grad():
        alone = head.predict_proba(_first_image(unet_feats), _first_image(vae_feats))
        in_batch = head.predict_proba(unet_feats, vae_feats)[:1]
    assert (alone - in_batch).abs().max() > 1e-3


# ----------------------------------------------------------------------------- losses


def test_focal_loss_hand_computed():
    log3 = math.log(3.0)
    # Anomaly probabilities sigmoid(logit difference): [[0.75, 0.75], [0.5, 0.25]].
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[log3, log3], [0.0, -log3]])
    target = torch.tensor([[[True, False], [False, True]]])
    # p_t per pixel: 0.75, 0.25, 0.5, 0.25; loss = (1 - p_t)^2 * -log p_t.
    terms = [
        0.25**2 * -math.log(0.75),
        0.75**2 * -math.log(0.25),
        0.5**2 * -math.log(0.5),
        0.75**2 * -math.log(0.25),
    ]
    assert focal_loss(logits, target).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    weights = [0.25, 0.75, 0.75, 0.25]  # alpha for anomalous pixels, 1 - alpha for normal ones
    expected = sum(w * t for w, t in zip(weights, terms)) / 4
    assert focal_loss(logits, target, alpha=0.25).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_is_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 7)
    target = torch.rand(2, 5, 7) > 0.5
    expected = F.cross_entropy(logits, target.long())
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), expected)
    with pytest.raises(ValueError, match="does not fit"):
        focal_loss(logits, target[:1])


def test_coarse_target_keeps_small_defects():
    mask = torch.zeros(1, 64, 64)
    mask[0, 13, 50] = 1
    coarse = coarse_target(mask, (8, 8))
    assert coarse.shape == (1, 8, 8)
    assert coarse.sum() == 1 and coarse[0, 1, 6] == 1


def test_gradients_reach_every_head_parameter(tiny, tiny_features):
    head = tiny_head(tiny).train()
    mask = torch.zeros(BATCH, 8 * LATENT, 8 * LATENT)
    mask[0, 10:30, 20:40] = 1
    mask_loss(*head(*tiny_features), mask).backward()
    missing = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
