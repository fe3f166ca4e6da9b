"""Stage 1: losses against hand computations, the capture processor, gradients, runs and resume."""

from __future__ import annotations

import math

import pytest
import torch

from seas.config import TrainConfig
from seas.data.config import DataConfig
from seas.errors import ConfigError, RunError
from seas.model.attention import AttentionCapture, install_reference_maps
from seas.model.losses import da_loss, mask_pyramid, minmax
from seas.model.prompts import PromptSpec, add_placeholder_tokens, token_positions, tokenize
from seas.seeds import step_generator
from seas.training.setup import make_optimizer
from seas.training.stage1 import PromptTables, compute_losses, prepare_backbone, train_generator
from tests.conftest import stop_after_first_checkpoint

# ----------------------------------------------------------------------------- losses by hand


def test_minmax_joint_and_per_sample():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 4.0], [5.0, 6.0]]])
    joint = minmax(maps, "joint", eps=0.0)
    assert torch.allclose(joint, maps / 6.0)
    per = minmax(maps, "sample", eps=0.0)
    assert torch.allclose(per[0], maps[0] / 3.0)
    assert torch.allclose(per[1], (maps[1] - 4.0) / 2.0)


def test_minmax_constant_map_is_finite():
    maps = torch.full((2, 3, 3), 0.25)
    for mode in ("joint", "sample"):
        out = minmax(maps, mode, eps=1e-8)
        assert torch.isfinite(out).all() and torch.all(out == 0)


def _da_by_hand(an_maps, ob_map, mask, rule):
    """Direct transcription of the formula with Python loops (joint normalisation, eps 0)."""
    n, big_n, h, w = an_maps.shape
    a_an = [[sum(an_maps[i, k, y, x] for k in range(big_n)) / big_n for y in range(h) for x in range(w)] for i in range(n)]
    a_ob = [[ob_map[i, y, x] for y in range(h) for x in range(w)] for i in range(n)]
    m = [[mask[i, y, x] for y in range(h) for x in range(w)] for i in range(n)]

    def norm(rows):
        lo = min(min(r) for r in rows)
        hi = max(max(r) for r in rows)
        return [[(v - lo) / (hi - lo) for v in r] for r in rows]

    a_an, a_ob = norm(a_an), norm(a_ob)
    first = sum((a_an[i][p] - m[i][p]) ** 2 for i in range(n) for p in range(h * w)) / (n * h * w)
    inside = [(i, p) for i in range(n) for p in range(h * w) if (m[i][p] == 1.0 if rule == "eq1" else m[i][p] > 0)]
    second = sum((a_ob[i][p] - (1 - m[i][p])) ** 2 for i, p in inside) / len(inside) if inside else 0.0
    return float(first + second)


@pytest.mark.parametrize("tokens", [1, 2, 4])
@pytest.mark.parametrize("rule", ["eq1", "gt0"])
def test_da_loss_matches_hand_computation(tokens, rule):
    g = torch.Generator().manual_seed(tokens)
    an = torch.rand(2, tokens, 3, 3, generator=g, dtype=torch.float64)
    ob = torch.rand(2, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 3, 3, dtype=torch.float64)
    mask[0, 1, 1] = 1.0
    mask[0, 1, 2] = 0.5  # soft border: inside for gt0 only
    mask[1, 0, 0] = 1.0
    got = da_loss(an, ob, mask, rule, "joint", eps=0.0)
    assert got.item() == pytest.approx(_da_by_hand(an, ob, mask, rule), rel=1e-10)


def test_da_loss_empty_mask_is_finite_and_keeps_gradient():
    an = torch.rand(2, 4, 4, 4, requires_grad=True)
    ob = torch.rand(2, 4, 4, requires_grad=True)
    mask = torch.zeros(2, 4, 4)
    loss = da_loss(an, ob, mask, "eq1")
    a_an = minmax(an.mean(dim=1))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx((a_an**2).mean().item(), rel=1e-6)  # ob1 term is 0, not NaN
    loss.backward()
    assert torch.isfinite(an.grad).all() and torch.isfinite(ob.grad).all()


def test_da_loss_constant_attention_map():
    an = torch.full((1, 4, 2, 2), 0.3)
    ob = torch.full((1, 2, 2), 0.7)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # normalised constant maps are 0: first term = mean(M^2) = 1/4, second = (0 - 0)^2 inside
    assert da_loss(an, ob, mask, "eq1").item() == pytest.approx(0.25, abs=1e-6)


def test_mask_pyramid_is_bilinear_then_max_pooled():
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 4:6, 4:6] = 1.0
    pyr = mask_pyramid(mask, (8, 8), [1, 2])
    at_latent = torch.nn.functional.interpolate(mask, size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    level1 = torch.tensor([[at_latent[2 * y : 2 * y + 2, 2 * x : 2 * x + 2].max() for x in range(4)] for y in range(4)])
    level2 = torch.tensor([[level1[2 * y : 2 * y + 2, 2 * x : 2 * x + 2].max() for x in range(2)] for y in range(2)])
    assert torch.allclose(pyr[1][0], level1) and torch.allclose(pyr[2][0], level2)


# ----------------------------------------------------------------------------- prompts


def test_prompts_and_token_positions(tiny16):
    from seas.model.backbone import load_backbone

    bb = load_backbone(str(tiny16))
    spec = PromptSpec(["crack", "hole"], tokens_per_type=3, normal_tokens=2)
    ids = add_placeholder_tokens(bb.tokenizer, bb.text_encoder, spec)
    assert spec.anomaly_prompt("hole") == "a ob1 ob2 with sks4 sks5 sks6"
    assert spec.anomaly_prompt(["hole", "crack"]) == "a ob1 ob2 with sks4 sks5 sks6 sks1 sks2 sks3"
    table = bb.text_encoder.get_input_embeddings().weight
    init = bb.tokenizer("defect", add_special_tokens=False).input_ids
    assert torch.allclose(table[ids[-1]], table[init].mean(dim=0))
    # positions come from the tokenised prompt: "a" is several bytes? no: one token + start
    input_ids = tokenize(bb.tokenizer, [spec.anomaly_prompt("hole")])
    names = spec.normal_token_names + spec.type_token_names("hole")
    pos = token_positions(input_ids, bb.tokenizer.convert_tokens_to_ids(names))[0].tolist()
    words = bb.tokenizer.convert_ids_to_tokens(input_ids[0])
    assert [words[p] for p in pos] == names
    with pytest.raises(ConfigError, match="unknown anomaly type"):
        spec.anomaly_prompt("scratch")


# ----------------------------------------------------------------------------- attention capture


def _unet_inputs(unet, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = 8
    x = torch.randn(batch, 4, size, size, generator=g)
    t = torch.tensor([10, 500, 900][:batch])
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    return x, t, text


def test_capture_output_equals_sdpa_and_maps_equal_reference(tiny16):
    from seas.model.backbone import load_backbone

    unet = load_backbone(str(tiny16)).unet.eval()
    x, t, text = _unet_inputs(unet)
    with torch.no_grad():
        plain = unet(x, t, text).sample
        sink = install_reference_maps(unet)
        unet(x, t, text)
        reference = sink[:]
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
        capture = AttentionCapture(unet, ["down_blocks.1", "down_blocks.2"])
        cols = torch.tensor([[2, 4, 5], [3, 1, 7]])
        capture.store.target(torch.tensor([0, 2]), cols)
        captured = unet(x, t, text).sample
    assert torch.equal(plain, captured)
    # reference sink order: down0 (2 layers), down1 (2), down2 (2), up1..3, mid; pick down1 and down2
    names = [n for n in unet.attn_processors if ".attn2." in n]
    index = {n: i for i, n in enumerate(names)}
    for block in ("down_blocks.1", "down_blocks.2"):
        layers = [index[n] for n in names if n.startswith(block + ".")]
        ref = torch.stack([reference[i] for i in layers]).mean(dim=0)  # (3, HW, 77)
        expected = torch.stack([ref[0][:, cols[0]], ref[2][:, cols[1]]])
        assert torch.allclose(capture.store.block_mean(block), expected, atol=1e-6)
    capture.remove()
    assert not any(type(p).__name__ == "CaptureProcessor" for p in unet.attn_processors.values())


def test_token_softmax_option_sums_to_one_over_all_tokens(tiny16):
    from seas.model.backbone import load_backbone

    unet = load_backbone(str(tiny16)).unet.eval()
    x, t, text = _unet_inputs(unet, batch=1)
    capture = AttentionCapture(unet, ["down_blocks.1"], softmax="token")
    capture.store.target(torch.tensor([0]), torch.arange(77)[None])
    with torch.no_grad():
        unet(x, t, text)
    maps = capture.store.block_mean("down_blocks.1")  # (1, HW, 77)
    assert torch.allclose(maps.sum(dim=-1), torch.ones(1, maps.shape[1]), atol=1e-5)


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_unet_and_token_rows_only(tiny16, product64):
    from seas.data.readers import read_dataset
    from seas.data.split import few_shot_split
    from seas.data.training_set import TrainingSet, draw_batch

    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=2)
    dcfg = DataConfig(root=str(product64), layout="mvtec")
    split = few_shot_split(read_dataset(dcfg), dcfg)
    bb, spec, new_ids = prepare_backbone(cfg, split.types)
    prompts = PromptTables.build(bb.tokenizer, spec)
    data = TrainingSet.from_split(split, 64, "half", False)
    capture = AttentionCapture(bb.unet, ["down_blocks.1", "down_blocks.2"])
    batch = draw_batch(data, 0, 0, 2, augment=True)
    losses = compute_losses(bb, bb.unet, bb.text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, 0))
    assert {"an", "na", "total"} <= set(losses) and len([k for k in losses if k.startswith("da")]) == 2
    losses["total"].backward()
    assert all(p.grad is not None for p in bb.unet.parameters())
    assert all(p.grad is None for p in bb.vae.parameters())
    emb = bb.text_encoder.get_input_embeddings().weight
    grads = [n for n, p in bb.text_encoder.named_parameters() if p.grad is not None]
    assert len(grads) == 1 and grads[0].endswith("embeddings.token_embedding.weight")
    used = set(torch.cat([prompts.anomaly_ids[batch.anomaly_types].flatten(), prompts.normal_ids]).tolist())
    touched = set(emb.grad.abs().sum(dim=1).nonzero().flatten().tolist())
    assert touched <= used and set(new_ids) & touched


def test_da_gradient_reaches_unet_through_maps(tiny16, product64):
    """With only L_DA weighted, the U-Net still gets gradient (maps keep the graph)."""
    from seas.data.readers import read_dataset
    from seas.data.split import few_shot_split
    from seas.data.training_set import TrainingSet, draw_batch

    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=1, weight_an=0.0, weight_na=0.0)
    dcfg = DataConfig(root=str(product64), layout="mvtec")
    split = few_shot_split(read_dataset(dcfg), dcfg)
    bb, spec, _ = prepare_backbone(cfg, split.types)
    capture = AttentionCapture(bb.unet, ["down_blocks.1", "down_blocks.2"])
    batch = draw_batch(TrainingSet.from_split(split, 64, "half", False), 0, 0, 1, augment=False)
    losses = compute_losses(bb, bb.unet, bb.text_encoder, capture, PromptTables.build(bb.tokenizer, spec),
                            batch, cfg, "gt0", step_generator(0, 0))
    losses["total"].backward()
    q = bb.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_q.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    # the last up block comes after every DA layer: L_DA gives it no gradient
    late = bb.unet.up_blocks[3].resnets[0].conv1.weight.grad
    assert late is None or not late.any()


# ----------------------------------------------------------------------------- runs


def _train(tmp_path, tiny16, product64, name="run", **kw):
    values = dict(base=str(tiny16), resolution=64, batch_size=1, grad_accum=2, steps=4, checkpoint_every=2, keep_checkpoints=3)
    values.update(kw)
    cfg = TrainConfig(**values)
    dcfg = DataConfig(root=str(product64), layout="mvtec")
    return cfg, dcfg, tmp_path / name


def _weights(run):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(run / "unet").state_dict()
    emb = CLIPTextModel.from_pretrained(run / "text_encoder").get_input_embeddings().weight.detach()
    return unet, emb


def test_resumed_run_equals_uninterrupted(tmp_path, tiny16, product64, monkeypatch):
    cfg, dcfg, full = _train(tmp_path, tiny16, product64, "full")
    train_generator(dcfg, cfg, full)

    cut = tmp_path / "cut"
    stop_after_first_checkpoint(monkeypatch, lambda: train_generator(dcfg, cfg, cut))
    assert not (cut / "seas_run.json").exists()
    with pytest.raises(RunError, match="unfinished"):
        train_generator(dcfg, cfg, cut)
    train_generator(dcfg, cfg, cut, resume="latest")

    unet_a, emb_a = _weights(full)
    unet_b, emb_b = _weights(cut)
    assert all(torch.equal(unet_a[k], unet_b[k]) for k in unet_a)
    assert torch.equal(emb_a, emb_b)
    with pytest.raises(RunError, match="finished"):
        train_generator(dcfg, cfg, full)


def test_run_exports_a_loadable_generator(tmp_path, tiny16, product64):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from seas.run import Run

    cfg, dcfg, run = _train(tmp_path, tiny16, product64, steps=3, grad_accum=1, train_new_rows_only=True)
    train_generator(dcfg, cfg, run)
    assert (run / "split.json").is_file() and (run / "checkpoints").is_dir()
    loaded = Run.load(run)
    assert loaded.types == ["hole", "scratch", "stain"]
    assert loaded.prompt.type_to_tokens()["scratch"] == ["sks5", "sks6", "sks7", "sks8"]
    bb = loaded.load_backbone()
    # only the new rows moved (train_new_rows_only)
    from seas.model.backbone import load_backbone

    base_table = load_backbone(str(tiny16)).text_encoder.get_input_embeddings().weight
    table = bb.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[: len(base_table)], base_table)
    pipe = StableDiffusionPipeline(
        vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(bb.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    image = pipe(loaded.prompt.anomaly_prompt("hole"), height=64, width=64, num_inference_steps=2,
                 output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and math.isfinite(float(image.sum()))


def test_bad_training_options_are_clear_errors(tmp_path, tiny16, product64, monkeypatch):
    import importlib.util

    from seas.model.backbone import BackboneError

    with pytest.raises(ConfigError, match="--steps"):
        TrainConfig(steps=0)
    cfg, dcfg, run = _train(tmp_path, tiny16, product64, resolution=72)
    with pytest.raises(BackboneError, match="multiple of 64"):
        train_generator(dcfg, cfg, run)
    assert not run.exists()  # nothing written
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find(name, *a))
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        make_optimizer("adamw8bit", [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}], 0.0)
