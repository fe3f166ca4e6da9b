"""seas pretrain: determinism, resuming, the exported folder and its model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seas.data import corpus
from seas.errors import ConfigError
from seas.model.backbone import load_backbone
from seas.training import pretrain as pretrain_module
from seas.training.model_card import CARD_MD, read_card
from seas.training.pretrain import PretrainConfig, pretrain

SMALL = dict(corpus_size=24, resolution=64, vae_width=8, width=16, latent_channels=4, norm_groups=4, vae_norm_groups=2,
             vae_steps=4, vae_batch=2,
             unet_steps=4, unet_batch=2, warmup=2, checkpoint_every=2, log_every=1, probe=False)


def weights(folder) -> dict[str, torch.Tensor]:
    return {f"{part}/{k}": v for part, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                                                ("text_encoder", "model"))
            for k, v in load_file(folder / part / f"{name}.safetensors").items()}


def test_an_interrupted_pretraining_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    cfg = PretrainConfig(**SMALL)
    whole = weights(pretrain(cfg, tmp_path / "whole"))

    # Stop in the U-Net phase after its first checkpoint (update 2), then run the same command again.
    real_loss = pretrain_module.Pretraining.unet_loss

    def stop_at_three(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_loss(self, step)

    monkeypatch.setattr(pretrain_module.Pretraining, "unet_loss", stop_at_three)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tmp_path / "resumed")
    assert [p.name for p in pretrain_module.checkpoint_paths(tmp_path / "resumed", "unet")] == ["unet-000002.pt"]
    monkeypatch.setattr(pretrain_module.Pretraining, "unet_loss", real_loss)
    resumed = weights(pretrain(cfg, tmp_path / "resumed"))

    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert all(v.dtype == torch.float16 for v in whole.values())  # shipped as fp16
    # each update is logged once, although updates 3 and 4 ran twice
    rows = pretrain_module.curves(tmp_path / "resumed")
    assert [r["update"] for r in rows if r["phase"] == "unet"] == [1, 2, 3, 4]


def test_another_seed_gives_other_weights_and_a_changed_setting_is_refused(tmp_path):
    cfg = PretrainConfig(**{**SMALL, "unet_steps": 2, "vae_steps": 2})
    first = weights(pretrain(cfg, tmp_path / "a"))
    other = weights(pretrain(PretrainConfig(**{**cfg.to_dict(), "seed": 1}), tmp_path / "b"))
    assert not torch.equal(first["unet/conv_in.weight"], other["unet/conv_in.weight"])
    with pytest.raises(ConfigError, match="other settings \\(lr_vae\\)"):
        pretrain(PretrainConfig(**{**cfg.to_dict(), "lr_vae": 0.5}), tmp_path / "a")


def test_the_exported_model_loads_as_a_base_and_its_card_is_complete(tmp_path):
    cfg = PretrainConfig(**{**SMALL, "snapshots": [2]})
    model = pretrain(cfg, tmp_path / "run", command="seas pretrain --out run")
    backbone = load_backbone(str(model))
    assert backbone.vae_factor == cfg.vae_factor and backbone.unet.config.in_channels == cfg.latent_channels
    assert backbone.unet.down_blocks[0].__class__.__name__ == "DownBlock2D"  # no outermost transformers
    assert backbone.vae.config.scaling_factor != 1.0  # set from the latents' spread
    # every corpus word is one token of the shipped vocabulary
    assert all(len(backbone.tokenizer.tokenize(w)) == 1 for w in corpus.caption_words())
    assert (tmp_path / "run" / "snapshots" / "unet-000002" / "unet").is_dir()

    card = read_card(model)
    assert card["corpus"]["version"] == corpus.CORPUS_VERSION and card["corpus"]["seed"] == cfg.corpus_seed
    assert card["training"]["vae_updates"] == 4 and card["training"]["unet_updates"] == 4
    assert card["training"]["seconds"]["unet"] > 0 and card["machine"] and card["command"] == "seas pretrain --out run"
    assert [r["update"] for r in card["curves"]["unet"]][-1] == 4
    assert card["architecture"]["parameters"]["unet"] == sum(p.numel() for p in backbone.unet.parameters())
    listed = set(card["files"])
    on_disk = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert listed == on_disk - {"card.json", CARD_MD}
    text = (model / CARD_MD).read_text()
    for needle in ("Training data", "Loss curves", "Reproduce with", "seas pretrain --out run", "What the VAE keeps"):
        assert needle in text
    state = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert state["finished"] == ["vae", "unet"]


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        PretrainConfig(resolution=48)
    with pytest.raises(ConfigError, match="snapshots"):
        PretrainConfig(unet_steps=10, snapshots=[10])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("user file")
    with pytest.raises(ConfigError, match="not a pretraining folder"):
        pretrain(PretrainConfig(**SMALL), tmp_path / "x")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["mine.txt"]


def test_a_continued_pretraining_keeps_the_vae_and_its_card_names_the_base_it_continues(tmp_path):
    first = pretrain(PretrainConfig(**SMALL), tmp_path / "a", command="seas pretrain --out a")
    cfg = PretrainConfig(**{**SMALL, "init": str(first), "vae_steps": 0, "unet_defect_weight": 4.0})
    second = pretrain(cfg, tmp_path / "b", command="seas pretrain --init a/model --out b")
    before, after = weights(first), weights(second)
    vae = [k for k in before if k.startswith("vae/")]
    assert vae and all(torch.equal(before[k], after[k]) for k in vae)  # kept bit for bit
    assert not torch.equal(before["unet/conv_in.weight"], after["unet/conv_in.weight"])  # the U-Net trained on
    assert load_backbone(str(second)).vae.config.scaling_factor == load_backbone(str(first)).vae.config.scaling_factor

    card = read_card(second)
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    assert card["init"]["command"] == "seas pretrain --out a"
    assert card["init"]["files"][unet_file] == read_card(first)["files"][unet_file]
    text = (second / CARD_MD).read_text()
    assert text.index("seas pretrain --out a") < text.index("seas pretrain --init a/model --out b")
    assert "VAE: kept" in text and "weighted 5x" in text


def test_a_decoder_fine_tune_keeps_encoder_unet_and_latents_and_its_card_lists_every_command(tmp_path):
    first = pretrain(PretrainConfig(**SMALL), tmp_path / "a", command="seas pretrain --out a")
    second = pretrain(PretrainConfig(**{**SMALL, "init": str(first), "vae_steps": 0, "unet_defect_weight": 4.0}),
                      tmp_path / "b", command="seas pretrain --init a/model --out b --vae-steps 0")
    cfg = PretrainConfig(**{**SMALL, "init": str(second), "vae_train": "decoder", "unet_steps": 0, "defect_weight": 15.0})
    third = pretrain(cfg, tmp_path / "c", command="seas pretrain --init b/model --out c --vae-train decoder")
    before, after = weights(second), weights(third)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # exactly the decoder side of the VAE trained: no encoder, U-Net or text-encoder weight moved
    assert changed and all(k.startswith(("vae/decoder.", "vae/post_quant_conv.")) for k in changed)
    assert any(k.startswith("vae/decoder.") for k in changed) and "vae/post_quant_conv.weight" in changed
    a, b = load_backbone(str(second)).vae, load_backbone(str(third)).vae
    assert a.config.scaling_factor == b.config.scaling_factor  # the same latents, so the same scale
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a.encode(x).latent_dist.mean, b.encode(x).latent_dist.mean)

    text = (third / CARD_MD).read_text()
    commands = ["seas pretrain --out a", "seas pretrain --init a/model --out b --vae-steps 0",
                "seas pretrain --init b/model --out c --vae-train decoder"]
    assert read_card(third)["init"]["commands"] == commands[:2]
    reproduce = text[text.index("Reproduce with, in order:"):].splitlines()[2:5]
    assert [line.strip() for line in reproduce] == commands
    assert "decoder only" in text and "U-Net and text encoder: kept" in text
    assert "named the base shipped" not in text  # continued from folders, not a shipped name


def test_a_card_continuing_the_shipped_base_says_which_version_it_was(monkeypatch):
    import seas
    from seas.training.model_card import init_record, training_lines

    monkeypatch.setattr(seas, "__version__", "9.9.9")
    record = init_record("seas-tiny")
    assert record["shipped_with"] == "9.9.9" and record["commands"] == made_by_shipped()
    assert len(record["shipped_inits"]) == len(record["commands"])
    card = {"training": {"vae_updates": 5, "vae_batch": 8, "unet_updates": 0, "unet_batch": 16, "precision": "bf16",
                         "seconds": {"vae": 60.0, "unet": 0.0}, "config": {"vae_train": "decoder"}},
            "init": record, "machine": "m", "date": "d", "command": "seas pretrain --init seas-tiny --out x"}
    lines = training_lines(card)
    reproduce = lines[lines.index("Reproduce with, in order:") + 2:]
    assert reproduce[len(record["commands"])] == "    seas pretrain --init seas-tiny --out x"
    assert "`--init` in the last command named the base shipped with seas 9.9.9" in lines[-1]


def test_a_chain_through_two_shipped_versions_names_both():
    from seas.training.model_card import shipped_inits, training_lines

    train = {"vae_updates": 0, "vae_batch": 8, "unet_updates": 5, "unet_batch": 16, "precision": "bf16",
             "seconds": {"vae": 0.0, "unet": 60.0}, "config": {}}
    first = {"command": "seas pretrain --out a"}
    second = {"command": "seas pretrain --init a/model --out b",  # continued from a folder
              "init": {"base": "a/model", "command": first["command"], "shipped_with": None}}
    # written before shipped_inits existed: its init lists the commands only
    third = {"command": "seas pretrain --init seas-tiny --out c",
             "init": {"base": "seas-tiny", "commands": [first["command"], second["command"]], "shipped_with": "0.2.0"}}
    assert shipped_inits(first) == [None] and shipped_inits(second) == [None, None]
    assert shipped_inits(third) == [None, None, "0.2.0"]
    fourth = {"training": train, "machine": "m", "date": "d", "command": "seas pretrain --init seas-tiny --out d",
              "init": {"base": "seas-tiny", "files": {}, "command": third["command"], "date": "d0",
                       "commands": [first["command"], second["command"], third["command"]],
                       "shipped_inits": shipped_inits(third), "shipped_with": "0.3.0"}}
    assert shipped_inits(fourth) == [None, None, "0.2.0", "0.3.0"]
    lines = training_lines(fourth)
    notes = [line for line in lines if line.startswith("`--init`")]
    assert notes == ["`--init` in command 3 named the base shipped with seas 0.2.0; reproducing from scratch, give "
                     "the model folder of command 2.",
                     "`--init` in the last command named the base shipped with seas 0.3.0 (its weights above); "
                     "reproducing from scratch, give the model folder of command 3."]


def made_by_shipped() -> list[str]:
    """The commands the shipped card says made it."""
    from seas.training.model_card import made_by
    from seas.weights import shipped_base

    return made_by(read_card(shipped_base("seas-tiny")))


def test_the_defect_weight_counts_the_latent_cells_a_defect_touches(tmp_path):
    pool = pretrain_module.CorpusPool(PretrainConfig(**SMALL))
    pool.captions = ["x"] * len(pool.captions)  # nothing rendered: the masks are ours
    pool.masks[0, 10, 5:30] = True  # a one-pixel line, rows 10, columns 5..29
    cells = pool.latent_masks(np.array([0, 1]), 4)  # (2, 1, 16, 16)
    expected = torch.zeros(2, 1, 16, 16)
    expected[0, 0, 2, 1:8] = 1  # row 10 // 4, columns 5 // 4 .. 29 // 4
    assert torch.equal(cells, expected)

    # the weighted loss is the plain mean plus weight x the defect cells' share of the squared error
    run = pretrain_module.Pretraining(PretrainConfig(**{**SMALL, "unet_defect_weight": 3.0}), tmp_path)
    run.pool.latents = torch.zeros(SMALL["corpus_size"], SMALL["latent_channels"], 16, 16)
    run.pool.encoded[:] = True
    indices, _, _ = pretrain_module.draw(run.cfg, "unet", 0, SMALL["unet_batch"])
    m = run.pool.latent_masks(indices, 4)
    has_defect = m.sum() > 0
    with torch.no_grad():
        losses = run.unet_loss(0)
    numel = SMALL["unet_batch"] * SMALL["latent_channels"] * 16 * 16
    in_defects = losses["defect_mse"] * SMALL["latent_channels"] * m.sum() / numel  # mean over all of sq x m
    assert float(losses["total"]) == pytest.approx(float(losses["mse"] + 3.0 * in_defects), rel=1e-5)
    assert bool(has_defect) == bool(losses["total"] > losses["mse"])


def test_bad_continuations_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--vae-steps 0: keeps the VAE of --init"):
        PretrainConfig(vae_steps=0)
    with pytest.raises(ConfigError, match="--unet-steps 0: keeps the U-Net of --init"):
        PretrainConfig(unet_steps=0)
    with pytest.raises(ConfigError, match="--vae-train decoder: fine-tunes the decoder of --init"):
        PretrainConfig(vae_train="decoder")
    first = pretrain(PretrainConfig(**SMALL), tmp_path / "a")
    with pytest.raises(ConfigError, match="give the options it was pretrained with"):
        pretrain(PretrainConfig(**{**SMALL, "init": str(first), "width": 32, "norm_groups": 8}), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_perceptual_term_adds_its_weight_times_lpips_and_trains_the_vae_not_the_lpips_net(tmp_path):
    from seas.evaluation.lpips import LPIPS

    torch.manual_seed(0)
    lpips = LPIPS()  # random weights: the published ones are fetched, not in CI; the arithmetic is the same
    with torch.no_grad():
        for head in lpips.heads:  # non-negative channel weights, as the published ones, so a distance is >= 0
            head.model[1].weight.abs_()
    before = {k: v.clone() for k, v in lpips.state_dict().items()}
    cfg = PretrainConfig(**{**SMALL, "vae_perceptual": 0.5, "precision": "fp32"})
    plain = pretrain_module.Pretraining(PretrainConfig(**{**SMALL, "precision": "fp32"}), tmp_path)
    with_term = pretrain_module.Pretraining(cfg, tmp_path, perceptual=lpips)
    # the same weights, batch and noise: the totals differ by exactly 0.5 x the logged LPIPS
    without, withit = plain.vae_loss(3), with_term.vae_loss(3)
    assert "lpips" not in without and float(withit["lpips"]) > 0
    assert torch.isclose(withit["total"] - without["total"], 0.5 * withit["lpips"], rtol=1e-5, atol=1e-7)
    # ... and the LPIPS of the image against its reconstruction, recomputed by hand
    vae = with_term.parts["vae"]
    indices, turns, flips = pretrain_module.draw(cfg, "vae", 3, cfg.vae_batch)
    x = pretrain_module.augment(with_term.pool.pixels(indices)[0], turns, flips)
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=pretrain_module.step_generator(cfg.seed, 11, 3))
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        assert torch.isclose(lpips(recon.clamp(-1, 1), x).mean(), withit["lpips"], rtol=1e-4)
    # its gradient reaches the VAE and nothing of the frozen LPIPS network
    withit["total"].backward()
    assert all(p.grad is None for p in lpips.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.decoder.parameters())
    model = pretrain(cfg, tmp_path / "run", perceptual=lpips)
    assert all(torch.equal(before[k], v) for k, v in lpips.state_dict().items())
    rows = [r for r in pretrain_module.curves(tmp_path / "run") if r["phase"] == "vae"]
    assert len(rows) == SMALL["vae_steps"] and all(r["lpips"] > 0 for r in rows)
    card = read_card(model)
    assert card["training"]["config"]["vae_perceptual"] == 0.5 and "lpips" in card["curves"]["vae"][-1]
    assert "LPIPS-VGG term of weight 0.5" in (model / CARD_MD).read_text()


def test_the_perceptual_term_without_its_network_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--vae-perceptual needs the LPIPS network"):
        pretrain(PretrainConfig(**{**SMALL, "vae_perceptual": 1.0}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_seas_pretrain_with_the_perceptual_term_and_no_lpips_weights_says_how_to_fetch_them(tmp_path, monkeypatch,
                                                                                            capsys):
    from seas.cli import main

    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "home"))  # no fetched weights there
    code = main(["pretrain", "--out", str(tmp_path / "out"), "--vae-perceptual", "1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "seas weights fetch lpips" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
