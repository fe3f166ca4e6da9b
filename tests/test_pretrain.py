"""seas pretrain: determinism, resuming, the exported folder and its model card."""

from __future__ import annotations

import json

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
