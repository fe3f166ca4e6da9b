"""The embedded default: a shortened demo end to end, and the bootstrap it starts from."""

from __future__ import annotations

import dataclasses
import html
import json
import math

import numpy as np
import pytest
import torch

from seas.cli import main
from seas.config import GenerationConfig
from seas.data.config import DataConfig
from seas.errors import ConfigError
from seas.model.backbone import load_backbone
from seas.training.bootstrap import BootstrapConfig, bootstrap_backbone


def _numbers(tree, path=""):
    """Every (path, value) leaf of a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{path}/{i}")
    else:
        yield path, tree


def test_quick_demo_writes_every_artifact_with_finite_numbers(tmp_path, capsys, monkeypatch):
    for name in ("HOME", "TORCH_HOME", "SEAS_HOME"):  # no quality weights anywhere
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("SEAS_WEIGHTS", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--guidance", "3"]) == 0  # a dataset option, without --data
    for path in ["data/tile/train/good", "run/seas_run.json", "run/mask_head.json",
                 "run/generated/manifest.jsonl", "evaluation/metrics.json", "evaluation/report.html", "demo.json"]:
        assert (out / path).exists(), path
    rows = [json.loads(line) for line in (out / "run/generated/manifest.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"hole", "scratch", "stain", "good", "hole+scratch"}
    generation = json.loads((out / "run/generated/generation.json").read_text())
    assert generation["reference_stats"] is True and generation["guidance"] == 3.0  # the preset's 8 replaced
    metrics = json.loads((out / "evaluation/metrics.json").read_text())
    scored = [(p, v) for p, v in _numbers(metrics["downstream"]) if not isinstance(v, str)]
    scored += [(p, v) for p, v in _numbers(metrics["extra"]) if isinstance(v, float)]
    assert scored and all(v is not None and math.isfinite(v) for _, v in scored), [p for p, v in scored if v is None]
    # quality scores: computed when available; without LPIPS weights, one line says how to get them
    assert metrics["config"]["quality"] is None and metrics["config"]["quality_size"] == 64
    hint = metrics["quality"]["lpips"]["skipped"]
    assert "run `seas weights fetch lpips`" in hint and "\n" not in hint
    assert "IC-LPIPS skipped: " + hint in html.unescape((out / "evaluation/report.html").read_text())
    demo = json.loads((out / "demo.json").read_text())
    assert set(demo["stage_seconds"]) >= {"stage 1: SeaS fine-tuning", "generation"}
    assert demo["product_options"] == {"guidance": 3.0}
    assert not (out / "base").exists()  # the synthetic product starts from the shipped base, unadapted
    assert json.loads((out / "run/seas_run.json").read_text())["train"]["base"] == "seas-tiny"
    printed = capsys.readouterr().out
    assert "attention-map pixel AUROC" in printed and str(out / "evaluation" / "report.html") in printed
    # a second demo into the same folder replaces the first; a foreign folder is refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_bootstrap_learns_the_product(tmp_path):
    from seas.data.synthetic import write_synthetic_product

    root = write_synthetic_product(tmp_path / "data", size=64, n_train_good=6, n_test_good=1, n_per_type=1)
    cfg = BootstrapConfig(resolution=64, width=16, vae_width=16, vae_steps=40, unet_steps=2, batch_size=4)
    folder = bootstrap_backbone(DataConfig(root=str(root), layout="mvtec"), cfg, tmp_path / "base")
    trained = load_backbone(str(folder))
    from seas.data.transforms import image_to_tensor
    from seas.files.images import read_rgb
    from seas.model.backbone import build_tiny_components

    fresh = build_tiny_components(seed=cfg.seed, width=16)["vae"].eval()
    images = torch.stack([image_to_tensor(read_rgb(p), 64) for p in sorted((root / "train/good").glob("*.png"))])
    with torch.no_grad():
        errors = [(vae.decode(vae.encode(images).latent_dist.mean).sample - images).abs().mean().item()
                  for vae in (fresh, trained.vae)]
        latents = trained.vae.encode(images).latent_dist.mean * trained.vae.config.scaling_factor
    assert errors[1] < 0.7 * errors[0]  # reconstruction learned
    assert latents.std().item() == pytest.approx(1.0, rel=1e-3)  # scaling factor as SD's: unit latents
    with pytest.raises(ConfigError, match="not empty"):
        bootstrap_backbone(DataConfig(root=str(root), layout="mvtec"), cfg, tmp_path / "base")
    with pytest.raises(ConfigError, match="multiple of 64"):
        BootstrapConfig(resolution=100)


def test_bootstrap_latent_channels_reach_the_vae_and_the_unet(tmp_path):
    from seas.data.synthetic import write_synthetic_product
    from seas.data.transforms import image_to_tensor
    from seas.files.images import read_rgb
    from seas.model.backbone import build_tiny_components

    default, four = (build_tiny_components(seed=0, width=16, **kw) for kw in ({}, {"latent_channels": 4}))
    for part in ("vae", "unet"):  # SD's 4 unless asked: the default model is the one it always was
        a, b = default[part].state_dict(), four[part].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    root = write_synthetic_product(tmp_path / "data", size=64, n_train_good=4, n_test_good=1, n_per_type=1)
    cfg = BootstrapConfig(resolution=64, width=16, vae_width=8, latent_channels=8, vae_steps=2, unet_steps=2,
                          batch_size=2)
    trained = load_backbone(str(bootstrap_backbone(DataConfig(root=str(root), layout="mvtec"), cfg, tmp_path / "b")))
    assert trained.vae.config.latent_channels == 8
    assert trained.unet.config.in_channels == trained.unet.config.out_channels == 8
    image = image_to_tensor(read_rgb(next((root / "train/good").glob("*.png"))), 64)[None]
    with torch.no_grad():
        z = trained.vae.encode(image).latent_dist.mean  # (1, 8, 8, 8)
        context = torch.zeros(1, 77, trained.unet.config.cross_attention_dim)
        eps = trained.unet(z, 10, encoder_hidden_states=context).sample
    assert z.shape == eps.shape == (1, 8, 8, 8)


def test_a_factor_4_vae_base_runs_both_stages_and_generation(tmp_path):
    """``vae_factor=4``: a 16 x 16 latent for 64 px; stage 1, the mask head (its MRM chain ends
    at the last VAE feature, here the image's own size) and generation follow the base."""
    from PIL import Image

    from seas.config import MaskConfig, TrainConfig
    from seas.data.synthetic import write_synthetic_product
    from seas.generation.folder import generate_to_folder
    from seas.model.backbone import build_tiny_components
    from seas.training.stage1 import train_generator
    from seas.training.stage2 import train_mask_head

    default = build_tiny_components(seed=0, width=16)["vae"]
    assert len(default.config.block_out_channels) == 4  # SD 1.x's factor 8 unless asked
    with pytest.raises(ValueError, match=r"must be one of \(2, 4, 8\)"):
        build_tiny_components(seed=0, width=16, vae_factor=16)
    root = write_synthetic_product(tmp_path / "data", size=64, n_train_good=4, n_test_good=1, n_per_type=2)
    data = DataConfig(root=str(root), layout="mvtec")
    cfg = BootstrapConfig(resolution=64, width=16, vae_width=8, vae_factor=4, vae_steps=2, unet_steps=2, batch_size=2)
    base = bootstrap_backbone(data, cfg, tmp_path / "base")
    backbone = load_backbone(str(base))
    assert backbone.vae_factor == 4
    with torch.no_grad():
        z = backbone.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)
    run = train_generator(data, TrainConfig(base=str(base), resolution=64, batch_size=1, grad_accum=1, steps=1),
                          tmp_path / "run")
    train_mask_head(run, MaskConfig(steps=1, batch_size=1))
    out = generate_to_folder(run, tmp_path / "gen", ["hole"], GenerationConfig(num=1, steps=2), progress=False)
    image = np.asarray(Image.open(out / "hole" / "image" / "000.png"))
    mask = np.asarray(Image.open(out / "hole" / "mask" / "000.png"))
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)


def test_bootstrap_vae_can_be_measured_along_its_training():
    from seas.model.backbone import build_tiny_components
    from seas.training.bootstrap import train_vae

    vae = build_tiny_components(seed=0, width=16, vae_width=8)["vae"]
    seen = []

    def after_update(n):  # what a benchmark sees: the update count, the model in eval mode
        seen.append((n, vae.training, vae.encoder.conv_in.weight.detach().clone()))

    train_vae(vae, torch.rand(4, 3, 64, 64) * 2 - 1, BootstrapConfig(vae_steps=3, batch_size=2), after_update=after_update)
    assert [(n, training) for n, training, _ in seen] == [(1, False), (2, False), (3, False)]
    assert not torch.equal(seen[0][2], seen[2][2])  # called after each update, on the updated weights
    assert not vae.training


def test_gradient_l1_is_zero_for_an_offset_and_counts_lost_edges():
    from seas.training.bootstrap import gradient_l1

    image = torch.rand(2, 3, 8, 8)
    assert gradient_l1(image + 0.3, image).item() == pytest.approx(0.0, abs=1e-6)
    stripes = torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None, None]  # (1, 1, 2, 2): one vertical edge
    # horizontal differences: [[1], [1]] against [[0], [0]] -> 1; vertical ones all 0 -> 0
    assert gradient_l1(stripes, torch.zeros_like(stripes)).item() == pytest.approx(1.0)


def test_the_vae_gradient_term_changes_the_update_only_when_weighted():
    from seas.model.backbone import build_tiny_components
    from seas.training.bootstrap import train_vae

    images = torch.rand(4, 3, 64, 64) * 2 - 1
    weights = []
    for gradient_weight in (0.0, 0.0, 1.0):
        vae = build_tiny_components(seed=0, width=16, vae_width=8)["vae"]
        train_vae(vae, images, BootstrapConfig(vae_steps=1, batch_size=2, vae_gradient_weight=gradient_weight))
        weights.append(vae.decoder.conv_out.weight.detach().clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


class _ContextRecorder(torch.nn.Module):
    """A stand-in U-Net: predicts zeros plus a bias, records the text context of every call."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.contexts = []

    def forward(self, x, t, context):
        self.contexts.append(context.detach().clone())
        return type("Out", (), {"sample": x * 0 + self.bias})()


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_bootstrap_captions_a_share_of_unet_images_with_the_empty_prompt(share):
    from diffusers import DDPMScheduler

    from seas.training.bootstrap import train_unet

    captions = torch.randn(2, 5, 3)  # (C, L, D): two captions
    empty = torch.full((5, 3), 7.0)  # (L, D): the empty prompt's embedding
    caption_of = [0] * 6 + [1] * 6
    cfg = BootstrapConfig(unet_steps=50, batch_size=4, empty_captions=share, seed=1)
    runs = []
    for _ in range(2):
        unet = _ContextRecorder()
        train_unet(unet, captions, torch.randn(12, 4, 8, 8), DDPMScheduler(), cfg, np.array(caption_of), None, empty)
        runs.append(torch.cat(unet.contexts))  # (steps * B, L, D)
    contexts = runs[0]
    is_empty = (contexts == empty).all(dim=(1, 2))
    is_caption = torch.stack([(contexts == c).all(dim=(1, 2)) for c in captions]).any(0)
    assert bool((is_empty ^ is_caption).all())  # every image has its caption or the empty one
    assert torch.equal(runs[0], runs[1])  # the drops are seeded
    if share == 0:
        assert not is_empty.any()
    else:
        assert 0.35 < is_empty.float().mean().item() < 0.65  # 200 draws of p = 0.5


def test_demo_options_reach_its_settings(capsys):
    from seas.cli import build_parser
    from seas.cli.demo import DemoConfig, demo_config

    parser = build_parser()
    args = parser.parse_args(["demo", "--resolution", "192", "--seg-steps", "400", "--seg-size", "128",
                              "--segmenter", "bisenetv2", "--placement", "real-masks", "--qc", "filter",
                              "--base", "some/folder", "--adapt-steps", "7", "--train-steps", "9", "--seed", "3"])
    cfg = demo_config(args)
    assert (cfg.resolution, cfg.seg_steps, cfg.seg_size, cfg.segmenter, cfg.placement, cfg.qc, cfg.base,
            cfg.adapt_steps, cfg.train_steps, cfg.seed) == (
        192, 400, 128, "bisenetv2", "real-masks", "filter", "some/folder", 7, 9, 3)
    assert demo_config(parser.parse_args(["demo"])) == DemoConfig()
    assert DemoConfig().base == "seas-tiny" and DemoConfig().adapt_steps == 0
    photo = demo_config(parser.parse_args(["demo", "--data", "some.yaml"]))  # photographs: adapted, a stronger judge
    assert photo == dataclasses.replace(DemoConfig(), seg_size=192, adapt_steps=DemoConfig.photographs().adapt_steps,
                                        train_steps=800, reference_stats=False)
    assert DemoConfig().reference_stats and not demo_config(parser.parse_args(["demo", "--no-reference-stats"])).reference_stats
    assert photo.adapt_steps > 0 and DemoConfig().train_steps == 1600
    assert demo_config(parser.parse_args(["demo", "--data", "some.yaml", "--seg-size", "64"])).seg_size == 64
    quick = demo_config(parser.parse_args(["demo", "--quick", "--seg-steps", "9"]))
    assert quick == DemoConfig(**{**DemoConfig.quick().to_dict(), "seg_steps": 9})
    with pytest.raises(ConfigError, match="--train-steps 0: must be at least 1"):
        demo_config(parser.parse_args(["demo", "--train-steps", "0"]))
    with pytest.raises(ConfigError, match="--adapt-steps -1: must be at least 0"):
        demo_config(parser.parse_args(["demo", "--adapt-steps", "-1"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--placement", "masks"])  # the demo has no --masks folder


def test_dataset_options_without_data_reach_the_synthetic_product(tmp_path):
    from seas.cli import build_parser
    from seas.cli.demo import DemoConfig, demo_problems, product_options, write_demo_product

    parser = build_parser()
    options = product_options(parser.parse_args(["demo", "--guidance", "3", "--no-augment", "--mask-rule", "nonzero"]))
    assert options == {"guidance": 3.0, "augment": False, "mask_rule": "nonzero"}
    data = write_demo_product(tmp_path / "data", DemoConfig(n_train_good=2, n_test_good=1, n_per_type=3), options)
    assert (data.guidance, data.augment, data.mask_rule, data.train_per_type) == (3.0, False, "nonzero", 4)
    plain = write_demo_product(tmp_path / "plain", DemoConfig(n_train_good=2, n_test_good=1, n_per_type=3))
    assert (plain.guidance, plain.augment, plain.mask_rule) == (8.0, True, "half")  # the MVTec AD preset
    fraction = write_demo_product(tmp_path / "fraction", DemoConfig(n_train_good=2, n_test_good=1, n_per_type=3),
                                  {"train_fraction": 0.5})
    assert (fraction.train_per_type, fraction.train_fraction) == (None, 0.5)  # the fraction rule, not the demo's 4
    for flags, named in ((["--layout", "visa"], "--layout locates"),
                         (["--anomaly", "hole=*.png", "--product", "x"], "--product, --anomaly locate")):
        with pytest.raises(ConfigError, match=f"seas demo: {named} a dataset's files; give --data"):
            product_options(parser.parse_args(["demo", *flags]))
    with pytest.raises(ConfigError, match="--train-fraction 2.0: must be between 0 and 1"):
        product_options(parser.parse_args(["demo", "--train-fraction", "2"]))
    assert main(["demo", "--out", str(tmp_path / "refused"), "--layout", "visa"]) == 2
    assert not (tmp_path / "refused").exists()
    # a few-shot count that holds no anomaly out for testing stops the demo before it writes anything
    quick = DemoConfig.quick()
    assert main(["demo", "--quick", "--out", str(tmp_path / "all-train"), "--train-per-type", str(quick.n_per_type)]) == 2
    assert not (tmp_path / "all-train").exists()
    held_out = demo_problems(tmp_path / "fine", quick, None, product={"train_per_type": quick.n_per_type - 1})
    assert not [p for p in held_out if "held out" in p]
    too_many = demo_problems(tmp_path / "fine", dataclasses.replace(quick, train_per_type=quick.n_per_type), None)
    assert [p for p in too_many if p.startswith(f"--train-per-type {quick.n_per_type}: ")]
    fraction_rule = demo_problems(tmp_path / "fine", dataclasses.replace(quick, train_per_type=99), None,
                                  product={"train_fraction": 0.5})  # the fraction replaces the demo's count
    assert not [p for p in fraction_rule if "held out" in p]


@pytest.mark.parametrize("photographs", [False, True])
def test_the_demo_adapts_the_base_to_photographs_only(tmp_path, monkeypatch, product64, photographs):
    """The synthetic product meets the shipped base as it is (SD meets a factory's product so);
    a user's --data gets a short adaptation to its normal images first."""
    import seas.cli.demo as demo
    import seas.training.bootstrap as bootstrap
    import seas.training.stage1 as stage1

    seen = []

    def adapt(data_cfg, cfg, out):
        seen.append(cfg)
        raise KeyboardInterrupt  # stop before any training

    def stage_one(*args, **kwargs):
        seen.append("stage 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(bootstrap, "bootstrap_backbone", adapt)
    monkeypatch.setattr(stage1, "train_generator", stage_one)
    data = DataConfig(root=str(product64), layout="mvtec") if photographs else None
    cfg = demo.DemoConfig.photographs() if photographs else demo.DemoConfig.quick()
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", dataclasses.replace(cfg, resolution=64), data)
    if photographs:
        (adapt,) = seen
        assert (adapt.base, adapt.unet_steps, adapt.vae_steps, adapt.generic_defects) == ("seas-tiny", cfg.adapt_steps,
                                                                                         0, 0.0)
    else:
        assert seen == ["stage 1"]
