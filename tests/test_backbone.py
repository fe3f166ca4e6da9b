"""Tiny backbone: written to a diffusers folder, read back offline, and run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from seas.cli import main
from seas.errors import SeasError
from seas.model.backbone import (
    COMPONENTS,
    TINY_VERSION,
    BackboneError,
    build_tiny_components,
    load_backbone,
    save_components,
)

PROMPT = "a photo of sks bottle"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(parts in memory, the folder they were written to)."""
    parts = build_tiny_components(seed=3, width=16)
    folder = save_components(parts, tmp_path_factory.mktemp("backbones") / "tiny")
    return parts, folder


@pytest.fixture(scope="module")
def loaded(saved):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return load_backbone(str(saved[1]))


def public(config) -> dict:
    """A diffusers config without its bookkeeping entries (``_class_name``, ``_use_default_values``...)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_folder_layout(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted([*COMPONENTS, "model_index.json"])
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("name", ["text_encoder", "unet", "vae"])
def test_weights_are_identical(name, saved, loaded):
    written = saved[0][name].state_dict()
    read = getattr(loaded, name).state_dict()
    assert written.keys() == read.keys()
    for key, value in written.items():
        assert torch.equal(value, read[key]), key


def test_tokenizer_and_scheduler_round_trip(saved, loaded):
    parts, folder = saved
    assert loaded.tokenizer(PROMPT).input_ids == parts["tokenizer"](PROMPT).input_ids
    assert len(loaded.tokenizer) == len(parts["tokenizer"])
    assert public(loaded.scheduler.config) == public(parts["scheduler"].config)
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"
    assert loaded.source == str(folder)


def test_forward_pass_through_loaded_parts(saved, loaded):
    parts, _ = saved
    assert (loaded.vae_factor, loaded.size_multiple) == (8, 64)
    ids = loaded.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    with torch.no_grad():
        outputs = []
        for text_encoder, unet, vae in ((loaded.text_encoder, loaded.unet, loaded.vae),
                                        (parts["text_encoder"], parts["unet"], parts["vae"])):
            hidden = text_encoder(ids)[0]
            latents = vae.encode(pixels).latent_dist.mean
            eps = unet(noise, 500, encoder_hidden_states=hidden).sample
            decoded = vae.decode(latents).sample
            outputs.append((hidden, latents, eps, decoded))
    hidden, latents, eps, decoded = outputs[0]
    assert hidden.shape == (1, 77, 32)
    assert latents.shape == (1, 4, 8, 8) and eps.shape == (1, 4, 8, 8) and decoded.shape == (1, 3, 64, 64)
    assert all(torch.isfinite(t).all() for t in outputs[0])
    for mine, theirs in zip(*outputs):
        torch.testing.assert_close(mine, theirs)


def test_check_resolution(loaded):
    loaded.check_resolution(128)
    with pytest.raises(BackboneError, match="--resolution 100 .* use e.g. 128"):
        loaded.check_resolution(100)


@pytest.mark.parametrize("missing", ["unet", "tokenizer"])
def test_folder_missing_a_part(missing, saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "partial"
    shutil.copytree(saved[1], folder)
    shutil.rmtree(folder / missing)
    with pytest.raises(SeasError) as err:
        load_backbone(str(folder))
    message = str(err.value)
    assert "\n" not in message
    assert str(folder) in message and f"missing sub-folder(s) {missing}" in message


@pytest.mark.parametrize("name, words", [
    ("model.safetensors", "file not found"),
    ("model.ckpt", "file not found"),
    ("no-such-folder", "not a diffusers folder"),
])
def test_missing_file(name, words, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SeasError) as err:
        load_backbone(str(tmp_path / name))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / name) in message and words in message


def test_cli_reports_a_bad_base_on_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["backbone", "--base", str(tmp_path / "model.safetensors")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: --base ") and "file not found" in err


def test_cli_prints_the_parts(saved, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["backbone", "--base", str(saved[1])]) == 0
    out = capsys.readouterr().out
    assert "multiples of 64 (VAE factor 8)" in out
    assert "CrossAttnDownBlock2D" in out and "514 tokens" in out


def test_tiny_base_is_written_once_under_seas_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = load_backbone("tiny")
    index = tmp_path / "home" / "backbones" / TINY_VERSION / "model_index.json"
    assert first.source == str(index.parent)
    stamp = index.stat().st_mtime_ns
    second = load_backbone("tiny")
    assert index.stat().st_mtime_ns == stamp  # read back, not rebuilt
    read_back = second.unet.state_dict()
    for key, value in first.unet.state_dict().items():
        assert torch.equal(value, read_back[key])


def test_any_width_builds_with_groups_that_divide_it():
    """GroupNorm's groups are SD's 32 where the width allows (32, 64) and the largest divisor of
    32 otherwise, so a width of 48 (U-Net) or 24 (VAE) builds and runs instead of failing in
    torch's GroupNorm."""
    import torch

    from seas.model.backbone import build_tiny_components

    sd_like = build_tiny_components(width=32, vae_width=64)
    assert sd_like["unet"].config.norm_num_groups == 32 and sd_like["vae"].config.norm_num_groups == 32
    parts = build_tiny_components(width=48, vae_width=24)
    assert parts["unet"].config.norm_num_groups == 16 and parts["vae"].config.norm_num_groups == 8
    assert parts["unet"].config.block_out_channels == (48, 96, 192, 192)
    with torch.no_grad():
        latents = parts["vae"].encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean  # (1, 4, 8, 8)
        text = torch.zeros(1, 77, parts["unet"].config.cross_attention_dim)
        out = parts["unet"](latents, 10, text).sample
    assert out.shape == latents.shape == (1, 4, 8, 8)
