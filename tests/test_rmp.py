"""The reference RMP head (spec section 5): layers, sizes, key layout, training forward,
BatchNorm modes, targets and focal loss. Tiny widths and spatial sizes keep it fast on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU

from seas.errors import RunError
from seas.model.rmp import (
    BATCHNORM_MODES,
    MRM,
    ReferenceMaskHead,
    head_config_for,
    load_reference_state_dict,
    reference_focal_loss,
    reference_targets,
    set_batchnorm_mode,
    to_reference_state_dict,
)

TINY = dict(unet=(32, 16), vae=(8, 8, 4))  # head width 48 by the sizing rule
SD = dict(unet=(1280, 640), vae=(512, 512, 256))
BN_REF = ("gain", "bias", "stored_mean", "stored_var")


def randomize_batchnorms(head: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and running statistics, so key maps and eval mode matter."""
    gen = torch.Generator().manual_seed(seed)
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(n, generator=gen)
            m.bias.data = 0.1 * torch.randn(n, generator=gen)
            m.running_mean = 0.1 * torch.randn(n, generator=gen)
            m.running_var = 0.5 + torch.rand(n, generator=gen)


def tiny_head(seed: int = 0) -> ReferenceMaskHead:
    torch.manual_seed(seed)
    head = ReferenceMaskHead(**head_config_for(TINY["unet"], TINY["vae"]))
    randomize_batchnorms(head, seed)
    return head


def features(n: int, unet=TINY["unet"], vae=TINY["vae"], size: int = 2, seed: int = 1):
    """U-Net features at size, 2*size; VAE features at 4, 8, 16 x size."""
    gen = torch.Generator().manual_seed(seed)
    u = [torch.randn(n, unet[0], size, size, generator=gen),
         torch.randn(n, unet[1], 2 * size, 2 * size, generator=gen)]
    v = [torch.randn(n, c, s * size, s * size, generator=gen) for c, s in zip(vae, (4, 8, 16))]
    return u, v


@pytest.fixture(scope="module")
def sd_head():
    torch.manual_seed(0)
    return ReferenceMaskHead()


# ---------------------------------------------------------------- structure and sizes


def test_stage_shapes_tiny():
    head = tiny_head().eval()
    shapes = {}
    names = ["low_feature_conv", "mid_feature_conv", "mid_attn_block",
             "MRM1", "MRM2", "MRM3", "out_layer"]
    for name in names:
        getattr(head, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.setdefault(name, []).append(tuple(o.shape)))
    u, v = features(3)
    refined, coarse = head(u, v, with_coarse=True)
    assert shapes["low_feature_conv"] == [(3, 32, 2, 2)]
    assert shapes["mid_feature_conv"] == [(3, 16, 4, 4)]
    assert shapes["mid_attn_block"] == [(3, 48, 4, 4)]
    assert shapes["MRM1"] == [(3, 48, 8, 8)]
    assert shapes["MRM2"] == [(3, 48, 16, 16)]
    assert shapes["MRM3"] == [(3, 48, 32, 32)]
    assert shapes["out_layer"] == [(3, 2, 32, 32), (3, 2, 4, 4)]  # shared: refined, then coarse
    assert refined.shape == (3, 2, 32, 32) and coarse.shape == (3, 2, 4, 4)
    assert torch.allclose(refined.sum(1), torch.ones(3, 32, 32), atol=1e-5)  # softmax over channels
    assert head.predict_proba(u, v).shape == (3, 32, 32)
    assert torch.equal(head.predict_proba(u, v), refined[:, 1])


def test_output_shapes_sd_channels(sd_head):
    sd_head.eval()
    u, v = features(1, SD["unet"], SD["vae"], size=2)  # U-Net 2/4, VAE 8/16/32
    refined, coarse = sd_head(u, v, with_coarse=True)
    assert refined.shape == (1, 2, 32, 32) and coarse.shape == (1, 2, 4, 4)
    assert torch.isfinite(refined).all()


def test_parameter_count_sd(sd_head):
    def conv(cin, cout, k, bias=False):
        return cin * cout * k * k + (cout if bias else 0)

    w, bn = 192, 2 * 192
    block = (2 * w                      # norm1
             + 3 * w * w                # to_q, to_k, to_v (no bias)
             + conv(w, w, 1, True)      # to_out.0
             + 2 * w                    # norm3
             + w * 8 * w + 8 * w        # GEGLU proj 192 -> 2 x 768
             + 4 * w * w + w)           # 768 -> 192
    transformer = 2 * w + conv(w, w, 1, True) + 4 * block + conv(w, w, 1, True)

    def mrm(cf):
        return conv(cf, w, 1) + bn + 5 * (conv(w, w, 1) + bn) + 3 * (conv(w, w, 3) + bn)

    expected = (conv(1280, 128, 1) + conv(640, 64, 1) + transformer
                + bn + conv(w, 2, 3, True) + 2 * mrm(512) + mrm(256))
    expected_conv6 = 3 * (conv(w, w, 3) + bn)
    total = sum(p.numel() for p in sd_head.parameters())
    conv6 = sum(p.numel() for n, p in sd_head.named_parameters() if ".conv6." in n)
    assert total == expected == 6_448_258
    assert conv6 == expected_conv6 == 996_480
    assert abs(total / 1e6 - 6.45) < 0.01 and abs(conv6 / 1e6 - 1.0) < 0.01


def test_head_config_for():
    assert head_config_for((1280, 640), (512, 512, 256)) == dict(
        unet_channels=(1280, 640), vae_channels=(512, 512, 256), low_channels=128,
        mid_channels=64, num_attention_heads=8, attention_head_dim=24, num_layers=4,
        norm_num_groups=32)
    config = {k: tuple(v) if isinstance(v, list) else v
              for k, v in ReferenceMaskHead().config.items() if not k.startswith("_")}
    assert config == head_config_for((1280, 640), (512, 512, 256))  # the defaults
    small = [((128, 64), (64, 64, 64)), ((256, 128), (128, 128, 128)), ((320, 160), (8, 8, 8))]
    for unet, vae in small:
        cfg = head_config_for(unet, vae)
        width = cfg["low_channels"] + cfg["mid_channels"]
        assert width >= 48 and width % 16 == 0 and width % cfg["norm_num_groups"] == 0
        assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == width
        assert cfg["low_channels"] > cfg["mid_channels"]  # proportional to C0 : C1 = 2 : 1
        ReferenceMaskHead(**cfg)  # valid
    assert head_config_for((128, 64), (64, 64, 64))["low_channels"] == 32


def test_config_validation():
    with pytest.raises(ValueError, match="attention_head_dim"):
        ReferenceMaskHead(unet_channels=(32, 16), vae_channels=(8, 8, 8), low_channels=32,
                          mid_channels=16, attention_head_dim=5, norm_num_groups=16)
    with pytest.raises(ValueError, match="norm_num_groups"):
        ReferenceMaskHead(unet_channels=(32, 16), vae_channels=(8, 8, 8), low_channels=32,
                          mid_channels=16, attention_head_dim=6, norm_num_groups=32)


def test_upstream_transformer_and_layers(sd_head):
    t = sd_head.mid_attn_block.attentions[0]
    assert type(t).__module__.startswith("diffusers.")
    assert t.norm.num_groups == 32 and t.norm.eps == 1e-6
    assert t.proj_in.kernel_size == (1, 1) and len(t.transformer_blocks) == 4
    for block in t.transformer_blocks:
        assert block.attn2 is None and block.norm_type == "layer_norm"
        assert block.attn1.to_q.bias is None and block.attn1.to_out[0].bias is not None
        assert isinstance(block.ff.net[0], GEGLU) and block.ff.net[0].proj.out_features == 2 * 768
    bn, conv = sd_head.out_layer[0], sd_head.out_layer[2]
    assert (bn.eps, bn.momentum, bn.affine) == (1e-5, 0.1, True)
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is not None
    for m in (sd_head.MRM1, sd_head.MRM2, sd_head.MRM3):
        for i in range(1, 10):
            c, b = getattr(m, f"conv{i}")
            k = 3 if i in (3, 6, 8) else 1
            assert c.kernel_size == (k, k) and c.padding == (k // 2, k // 2) and c.bias is None
            assert (b.eps, b.momentum) == (1e-5, 0.1)
    assert sd_head.MRM3.conv1[0].in_channels == 256 and sd_head.MRM1.conv1[0].in_channels == 512


def test_inputs_cast_to_head_dtype():
    head = tiny_head().double().eval()
    u, v = features(1)  # float32
    refined, coarse = head(u, v, with_coarse=True)
    assert refined.dtype == coarse.dtype == torch.float64


# ---------------------------------------------------------------- checkpoint key layout


def expected_reference_keys(layers: int = 4) -> set[str]:
    keys = {"low_feature_conv.0.weight", "mid_feature_conv.0.weight",
            "out_layer.2.weight", "out_layer.2.bias"} | {f"out_layer.0.{p}" for p in BN_REF}
    for m in (1, 2, 3):
        for c in range(1, 10):
            keys.add(f"MRM{m}.conv{c}.0.weight")
            keys |= {f"MRM{m}.conv{c}.1.{p}" for p in BN_REF}
    t = "mid_attn_block.attentions.0."
    keys |= {t + k for k in ("norm.weight", "norm.bias", "proj_in.weight", "proj_in.bias",
                             "proj_out.weight", "proj_out.bias")}
    for i in range(layers):
        b = f"{t}transformer_blocks.{i}."
        keys |= {b + k for k in (
            "norm1.weight", "norm1.bias", "attn1.to_q.weight", "attn1.to_k.weight",
            "attn1.to_v.weight", "attn1.to_out.0.weight", "attn1.to_out.0.bias", "norm3.weight",
            "norm3.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight",
            "ff.net.2.bias")}
    return keys


def test_reference_key_layout(sd_head):
    state = to_reference_state_dict(sd_head)
    assert set(state) == expected_reference_keys()
    assert state["MRM3.conv1.0.weight"].shape == (192, 256, 1, 1)
    assert state["MRM2.conv6.0.weight"].shape == (192, 192, 3, 3)
    assert state["low_feature_conv.0.weight"].shape == (128, 1280, 1, 1)
    assert state["out_layer.2.weight"].shape == (2, 192, 3, 3)
    t = "mid_attn_block.attentions.0.transformer_blocks.3."
    assert state[t + "ff.net.0.proj.weight"].shape == (1536, 192)
    assert state[t + "ff.net.2.weight"].shape == (192, 768)
    assert torch.equal(state["out_layer.0.stored_var"], sd_head.out_layer[0].running_var)
    assert torch.equal(state["MRM1.conv4.1.gain"], sd_head.MRM1.conv4[1].weight)


def test_reference_round_trip_through_file(tmp_path):
    head = tiny_head(seed=0).eval()
    u, v = features(2)
    before = head(u, v, with_coarse=True)
    path = tmp_path / "rmp"
    torch.save(to_reference_state_dict(head), path)
    fresh = tiny_head(seed=7).eval()
    assert not torch.allclose(fresh(u, v)[0], before[0])
    load_reference_state_dict(fresh, torch.load(path, weights_only=True))
    after = fresh(u, v, with_coarse=True)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    missing, unexpected = fresh.load_state_dict(head.state_dict(), strict=False)
    assert not missing and not unexpected


@pytest.mark.parametrize("fault", ["missing", "extra", "shape"])
def test_load_reference_errors_name_the_key(fault):
    head = tiny_head()
    state = to_reference_state_dict(head)
    key = "MRM2.conv3.1.stored_var"
    if fault == "missing":
        del state[key]
    elif fault == "extra":
        key = "MRM2.conv10.0.weight"
        state[key] = torch.zeros(1)
    else:
        key = "out_layer.2.weight"
        state[key] = torch.zeros(2, 48, 1, 1)
    with pytest.raises(RunError) as err:
        load_reference_state_dict(head, state, source="runs/x/rmp")
    message = str(err.value)
    assert key in message and "runs/x/rmp" in message and "\n" not in message
    assert {"missing": "missing", "extra": "unexpected", "shape": "shape"}[fault] in message
    if fault == "shape":
        assert "(2, 48, 1, 1)" in message and "(2, 48, 3, 3)" in message


# ---------------------------------------------------------------- forward semantics


def test_training_forward_anomaly_first_with_joint_batchnorm():
    head = tiny_head().train()
    b = 2
    u, _ = features(2 * b, seed=1)
    _, v = features(b, seed=2)
    refined, coarse = head(u, v, n_anomaly=b)
    assert refined.shape == (4, 2, 32, 32) and coarse.shape == (4, 2, 4, 4)
    with torch.no_grad():  # by hand; train-mode outputs do not depend on running statistics
        h = head.coarse_features(u)
        chain = head.refine(h[:b], v)
        normal = F.interpolate(h[b:], size=(32, 32), mode="bilinear", align_corners=False)
        joint = head.out(torch.cat([chain, normal]))
        separate = head.out(normal)
        assert torch.allclose(coarse, head.out(h), atol=1e-6)
    assert torch.allclose(refined, joint, atol=1e-6)
    assert not torch.allclose(refined[b:], separate, atol=1e-3)  # BatchNorm saw both halves

    # Only the normal half's inputs change: the anomaly half moves in train mode only.
    u2 = [x.clone() for x in u]
    for x in u2:
        x[b:] += torch.randn_like(x[b:])
    assert not torch.allclose(head(u2, v, n_anomaly=b)[0][:b], refined[:b], atol=1e-4)
    head.eval()
    with torch.no_grad():
        r1, c1 = head(u, v, n_anomaly=b)
        r2, c2 = head(u2, v, n_anomaly=b)
    assert torch.allclose(r1[:b], r2[:b], atol=1e-6) and torch.allclose(c1[:b], c2[:b], atol=1e-6)
    with pytest.raises(ValueError, match="n_anomaly"):
        head(u, v, n_anomaly=3)


def out_layer_order(head: ReferenceMaskHead, calls: list) -> None:
    """Record the spatial size of every input of the shared out layer, in call order."""
    head.out_layer.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[-2:])))


def test_out_layer_call_order_is_the_authors():
    """Inference: the out layer runs once, on the refined features (the authors never compute
    the coarse output there); training: refined first, then coarse."""
    head = tiny_head()
    calls = []
    out_layer_order(head, calls)
    u, v = features(2)
    refined, coarse = head.eval()(u, v)
    assert coarse is None and calls == [(32, 32)]
    calls.clear()
    head.predict_proba(u, v)
    assert calls == [(32, 32)]
    calls.clear()
    head.train()(u, [x[:1] for x in v], n_anomaly=1)
    assert calls == [(32, 32), (4, 4)]


def hand_ordered_step(head: ReferenceMaskHead, u, v, b: int, mask: torch.Tensor) -> None:
    """One training step of the authors' code on ``head``, its pieces called by hand in their
    order: coarse features, MRM chain on the anomaly half, the normal half resized, the out
    layer's BatchNorm -> ReLU -> conv -> softmax on the refined batch, then on ``h``."""

    def out(x):
        bn, relu, conv = head.out_layer
        return conv(relu(bn(x))).softmax(dim=1)

    low = head.low_feature_conv(u[0])
    low = F.interpolate(low, size=u[1].shape[-2:], mode="bilinear", align_corners=False)
    h = head.mid_attn_block(torch.cat([low, head.mid_feature_conv(u[1])], dim=1))
    c = h[:b]
    for mrm, f in zip((head.MRM1, head.MRM2, head.MRM3), v):
        c = mrm(c, f)
    normal = F.interpolate(h[b:], size=c.shape[-2:], mode="bilinear", align_corners=False)
    refined = out(torch.cat([c, normal]))
    coarse = out(h)
    full, small = reference_targets(mask, h.shape[0] - b, tuple(coarse.shape[-2:]), normalize_max=False)
    (reference_focal_loss(refined, full) + reference_focal_loss(coarse, small)).backward()


def test_batchnorm_statistics_after_a_training_step_match_the_authors_order():
    """After a training step (forward, loss, backward, optimizer update) every BatchNorm's
    running statistics, and every weight, equal those of the authors' call order computed by
    hand; the shared out layer's differ from the order coarse-then-refined."""
    b = 2
    u, _ = features(2 * b, seed=1)
    _, v = features(b, seed=2)
    mask = torch.zeros(b, 32, 32)
    mask[:, 8:20, 4:16] = 1.0
    ours, theirs = tiny_head(seed=3).train(), tiny_head(seed=3).train()
    for head, step in ((ours, None), (theirs, hand_ordered_step)):
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
        if step is None:
            refined, coarse = head(u, v, n_anomaly=b)
            full, small = reference_targets(mask, b, tuple(coarse.shape[-2:]), normalize_max=False)
            (reference_focal_loss(refined, full) + reference_focal_loss(coarse, small)).backward()
        else:
            step(head, u, v, b, mask)
        optimizer.step()
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs_state[key], rtol=0, atol=1e-6, msg=key)
    # the order is observable: coarse first would move the out layer's running mean elsewhere
    bn = tiny_head(seed=3).train().out_layer[0]
    with torch.no_grad():
        h = ours.coarse_features(u)
        chain = ours.refine(h[:b], v)
        refined_in = torch.cat([chain, F.interpolate(h[b:], size=(32, 32), mode="bilinear")])
        bn(h)
        bn(refined_in)
    assert (bn.running_mean - ours.out_layer[0].running_mean).abs().max() > 1e-4


def test_batchnorm_statistics_after_an_inference_shaped_pass():
    """A head in training mode ('batch' BatchNorm, as the reference generates) updates the out
    layer's statistics with the refined features only, once."""
    u, v = features(2)
    head, by_hand = tiny_head(seed=4).train(), tiny_head(seed=4).train()
    with torch.no_grad():
        head(u, v)
        by_hand.out_layer(by_hand.refine(by_hand.coarse_features(u), v))
    bn, expected = head.out_layer[0], by_hand.out_layer[0]
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, expected.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, expected.running_var, rtol=0, atol=1e-6)


def test_conv6_is_never_called():
    head = tiny_head()
    calls = []
    for m in ("MRM1", "MRM2", "MRM3"):
        for i in range(1, 10):
            getattr(getattr(head, m), f"conv{i}").register_forward_hook(
                lambda *_, name=f"{m}.conv{i}": calls.append(name))
    u, v = features(2)
    head.eval()(u, v)
    head.train()(u, [x[:1] for x in v], n_anomaly=1)
    assert not [c for c in calls if c.endswith("conv6")]
    others = {f"MRM{m}.conv{i}" for m in (1, 2, 3) for i in range(1, 10) if i != 6}
    assert set(calls) == others  # every other CBR runs


def test_batchnorm_modes():
    assert BATCHNORM_MODES == ("eval", "batch")
    head = tiny_head()
    u, v = features(3)
    first = ([x[:1] for x in u], [x[:1] for x in v])
    assert set_batchnorm_mode(head, "batch") is head and head.training
    assert not torch.allclose(head.predict_proba(*first)[0], head.predict_proba(u, v)[0], atol=1e-4)
    assert set_batchnorm_mode(head, "eval") is head and not head.training
    assert torch.allclose(head.predict_proba(*first)[0], head.predict_proba(u, v)[0], atol=1e-6)
    with pytest.raises(ValueError, match="eval, batch"):
        set_batchnorm_mode(head, "train")


def identity_batchnorm(bn: torch.nn.BatchNorm2d) -> None:
    bn.weight.data.fill_(1.0)
    bn.bias.data.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - 1e-5)  # so that sqrt(var + eps) = 1


def test_mrm_by_hand():
    mrm = MRM(1, 1).double().eval()
    weights = dict(conv1=1.0, conv2=2.0, conv3=0.25, conv4=3.0, conv5=-1.0, conv6=float("nan"),
                   conv7=1.0, conv8=0.5, conv9=0.5)
    for name, value in weights.items():
        conv, bn = getattr(mrm, name)
        conv.weight.data.fill_(value)
        identity_batchnorm(bn)
    c = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    f = torch.full((1, 1, 2, 2), 2.0, dtype=torch.float64)
    # c -> 0.5 on 2x2; s1 = relu(-0.5) = 0; u = 3 * (4 taps * 0.25 * relu(2 * 0.5)) = 3;
    # s3 = 0.5 * (4 * 0.5 * 3) = 3; u = 3 + 0 + 3 = 6; g = relu(1 * 2) = 2; out = 2 * 6 + 0.5.
    out = mrm(c, f)
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 12.5, dtype=torch.float64), atol=1e-9)


def test_mrm_recomputed_from_submodules():
    torch.manual_seed(0)
    mrm = MRM(16, 8).eval()
    randomize_batchnorms(mrm, 3)
    c, f = torch.randn(2, 16, 3, 3), torch.randn(2, 8, 6, 6)

    def cbr(name, x):
        return F.relu(getattr(mrm, name)(x))

    with torch.no_grad():
        up = F.interpolate(c, size=(6, 6), mode="bilinear", align_corners=True)
        s1 = cbr("conv5", up)
        u = cbr("conv4", cbr("conv3", cbr("conv2", up)))
        s3 = cbr("conv9", cbr("conv8", cbr("conv7", u)))
        g = cbr("conv1", f)
        expected = g * (u + s1 + s3) + up
        out = mrm(c, f)
        wrong = F.interpolate(c, size=(6, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(up, wrong, atol=1e-3)  # the align_corners choice is observable


# ---------------------------------------------------------------- targets and loss


def test_focal_loss_by_hand():
    p1 = [0.9, 0.2, 0.7, 0.4]
    probs = torch.tensor([[1 - p for p in p1], p1], dtype=torch.float64).reshape(1, 2, 1, 4)
    target = torch.tensor([1.0, 0.0, 0.6, 1.0], dtype=torch.float64).reshape(1, 1, 4)
    e = 1e-5
    p_t = [e * 0.1 + (1 - e) * 0.9 + e,   # class 1
           (1 - e) * 0.8 + e * 0.2 + e,   # class 0
           (1 - e) * 0.3 + e * 0.7 + e,   # 0.6 truncates to class 0 (normal)
           e * 0.6 + (1 - e) * 0.4 + e]   # class 1
    expected = sum(-(1 - p) ** 2 * math.log(p) for p in p_t) / 4
    loss = reference_focal_loss(probs, target)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    naive = [0.9, 0.8, 0.3, 0.4]  # without the 1e-5 terms
    assert abs(expected - sum(-(1 - p) ** 2 * math.log(p) for p in naive) / 4) > 1e-7
    soft_as_anomaly = [p_t[0], p_t[1], e * 0.3 + (1 - e) * 0.7 + e, p_t[3]]
    assert abs(expected - sum(-(1 - p) ** 2 * math.log(p) for p in soft_as_anomaly) / 4) > 1e-2
    gamma0 = reference_focal_loss(probs, target, gamma=0.0).item()
    assert gamma0 == pytest.approx(sum(-math.log(p) for p in p_t) / 4, abs=1e-12)
    with pytest.raises(ValueError):
        reference_focal_loss(probs, target * 3)


def test_reference_targets():
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:6, 2:6] = 0.5
    masks[1, 4:8, 0:3] = 0.25
    m_full, m_coarse = reference_targets(masks, n_normal=2, coarse_size=4, normalize_max=False)
    assert m_full.shape == (4, 8, 8) and m_coarse.shape == (4, 4, 4)
    assert torch.equal(m_full[:2], masks) and not m_full[2:].any()
    resized = F.interpolate(m_full[:, None], size=(4, 4), mode="bilinear", align_corners=False)
    resized = resized[:, 0]
    assert torch.allclose(m_coarse, resized)

    n_full, n_coarse = reference_targets(masks, n_normal=2, coarse_size=(4, 4), normalize_max=True)
    assert torch.allclose(n_full, m_full / 0.5) and n_full.max() == 1.0
    assert torch.allclose(n_coarse, resized / resized.max()) and n_coarse.max() == 1.0
    assert reference_targets(torch.zeros(2, 8, 8), 2, 4, normalize_max=True) is None
    assert reference_targets(torch.zeros(2, 8, 8), 2, 4, normalize_max=False) is not None

    tiny = torch.zeros(1, 8, 8)
    tiny[0, 0, 0] = 1.0  # missed by the point-sampling resize to 2x2: no 0 / 0
    full, coarse = reference_targets(tiny, 1, 2, normalize_max=True)
    assert full.max() == 1.0 and torch.isfinite(coarse).all() and not coarse.any()

