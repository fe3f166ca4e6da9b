"""Tests for feature capture (seas.model.features) and the mask head on real tiny-backbone features."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from seas.model.backbone import build_tiny_components
from seas.model.features import (
    FeatureRecorder,
    conditional_half,
    unet_feature_channels,
    vae_feature_channels,
)
from seas.model.losses import soft_focal_loss
from seas.model.rmp import ReferenceMaskHead, head_config_for, reference_focal_loss, reference_targets

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


# ----------------------------------------------------------------------------- the head on real features


def tiny_head(tiny, seed=0):
    torch.manual_seed(seed)
    return ReferenceMaskHead(**head_config_for(unet_feature_channels(tiny["unet"]), vae_feature_channels(tiny["vae"])))


def test_head_on_tiny_backbone_features(tiny, tiny_features):
    head = tiny_head(tiny).eval()
    with torch.no_grad():
        refined, coarse = head(*tiny_features, with_coarse=True)
        proba = head.predict_proba(*tiny_features)
    assert refined.shape == (BATCH, 2, 8 * LATENT, 8 * LATENT)
    assert coarse.shape == (BATCH, 2, LATENT, LATENT)
    assert torch.allclose(proba, refined[:, 1])
    assert torch.allclose(refined.sum(dim=1), torch.ones(()), atol=1e-6)  # softmax over the 2 classes


def test_save_load_round_trip(tiny, tiny_features, tmp_path):
    head = tiny_head(tiny)
    with torch.no_grad():
        head(*tiny_features)  # a training-mode pass moves the BatchNorm running statistics
    head.eval().save_pretrained(tmp_path / "rmp")
    loaded = ReferenceMaskHead.from_pretrained(tmp_path / "rmp").eval()
    assert loaded.config.low_channels == head.config.low_channels
    with torch.no_grad():
        for a, b in zip(head(*tiny_features, with_coarse=True), loaded(*tiny_features, with_coarse=True)):
            assert torch.equal(a, b)


def test_gradients_reach_every_head_parameter_but_the_unused_convs(tiny, tiny_features):
    """Training forward (anomaly half refined, normal half coarse): every parameter but the
    reference's never-called conv6 gets a gradient."""
    head = tiny_head(tiny).train()
    unet_feats, vae_feats = tiny_features
    n = 1  # anomaly samples: the first; the other BATCH - 1 are the normal half
    refined, coarse = head(unet_feats, [f[:n] for f in vae_feats], n_anomaly=n)
    mask = torch.zeros(n, 8 * LATENT, 8 * LATENT)
    mask[0, 10:30, 20:40] = 1
    full, small = reference_targets(mask, BATCH - n, tuple(coarse.shape[-2:]), normalize_max=False)
    (reference_focal_loss(refined, full) + reference_focal_loss(coarse, small)).backward()
    missing = sorted(name for name, p in head.named_parameters() if p.grad is None or not p.grad.any())
    assert missing and all(".conv6." in name for name in missing)
    assert len(missing) == 3 * 3  # conv6's weight, BatchNorm weight and bias in each of the 3 MRMs


def test_soft_focal_loss_hand_computed():
    probs = torch.zeros(1, 2, 1, 2)
    probs[0, 1] = torch.tensor([[0.75, 0.5]])
    probs[0, 0] = 1 - probs[0, 1]
    target = torch.tensor([[[1.0, 0.6]]])  # a defect pixel and a soft border pixel
    first = 0.25**2 * -math.log(0.75)
    second = 0.4 * 0.5**2 * -math.log(0.5) + 0.6 * 0.5**2 * -math.log(0.5)
    assert soft_focal_loss(probs, target).item() == pytest.approx((first + second) / 2, rel=1e-6)
