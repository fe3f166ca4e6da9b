"""Single-file backbones: an SD 1.x model in the original (LDM / CompVis) key layout, loaded
through diffusers' single-file loader with a local diffusers folder as ``--base-config``.

No such file exists offline, so the tiny model is written in that layout here: the helpers
below are the inverse of diffusers' ``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint`` and ``convert_ldm_clip_checkpoint``.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from seas.model.backbone import BackboneError, build_tiny_components, load_backbone, save_components

# diffusers -> LDM renames inside a U-Net resnet (ResBlock).
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
               "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
# diffusers -> LDM renames inside the VAE's mid-block attention (1x1 convs in LDM).
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key(key: str, layers: int) -> str:
    """One diffusers U-Net key in the LDM layout (``layers``: the config's layers_per_block)."""
    n = layers + 1  # LDM blocks per resolution: the layers plus a down/up-sampler slot

    def rename(rest: str) -> str:
        return ".".join(UNET_RESNET.get(part, part) for part in rest.split("."))

    for old, new in UNET_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"input_blocks.{1 + b * n + i}." + (f"0.{rename(rest)}" if kind == "resnets" else f"1.{rest}")
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * n + layers}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{rename(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{b * n + i}." + (f"0.{rename(rest)}" if kind == "resnets" else f"1.{rest}")
    raise KeyError(key)  # up-samplers: placed by to_ldm, which knows whether the block has attention


def to_ldm(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The three models' weights as one original-layout SD 1.x state dict."""
    out = {}
    layers = unet.config.layers_per_block
    unet_sd = unet.state_dict()
    for key, value in unet_sd.items():
        if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            slot = 2 if f"up_blocks.{b}.attentions.0.norm.weight" in unet_sd else 1
            ldm = f"output_blocks.{b * (layers + 1) + layers}.{slot}.conv.{m[2]}"
        else:
            ldm = _unet_key(key, layers)
        out["model.diffusion_model." + ldm] = value

    ups = len(vae.config.up_block_types)
    for key, value in vae.state_dict().items():
        ldm = key
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            ldm = f"{m[1]}.mid.attn_1.{VAE_ATTN.get(m[2], m[2])}.{m[3]}"
            if value.ndim == 2:  # linear -> 1x1 conv
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            ldm = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", key):
            ldm = f"encoder.down.{m[1]}.block.{m[2]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
            ldm = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)", key):  # LDM numbers up blocks from the bottom
            ldm = f"decoder.up.{ups - 1 - int(m[1])}.block.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
            ldm = f"decoder.up.{ups - 1 - int(m[1])}.upsample.{m[2]}"
        ldm = ldm.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + ldm] = value

    for key, value in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.``); LDM files keep it.
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(parts in memory, their diffusers folder, {suffix: the same weights as one LDM file})."""
    tmp = tmp_path_factory.mktemp("single_file")
    parts = build_tiny_components(seed=0, width=16)
    folder = save_components(parts, tmp / "tiny")
    state = {k: v.contiguous() for k, v in to_ldm(parts["unet"], parts["vae"], parts["text_encoder"]).items()}
    save_file(state, tmp / "tiny.safetensors")
    torch.save({"state_dict": state}, tmp / "tiny.ckpt")
    return parts, folder, {s: tmp / f"tiny{s}" for s in (".safetensors", ".ckpt")}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_converter_matches_diffusers(tiny):
    """The helper is the exact inverse of diffusers' own LDM -> diffusers conversion."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    parts = tiny[0]
    state = to_ldm(parts["unet"], parts["vae"], parts["text_encoder"])
    assert infer_diffusers_model_type(state) == "v1"
    back = dict(
        unet=convert_ldm_unet_checkpoint(state, dict(parts["unet"].config)),
        vae=convert_ldm_vae_checkpoint(state, dict(parts["vae"].config)),
        text_encoder={k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(state).items()},
    )
    assert len(state) == sum(len(sd) for sd in back.values())
    for name, sd in back.items():
        original = parts[name].state_dict()
        assert sd.keys() == original.keys(), name
        assert all(torch.equal(sd[k], v) for k, v in original.items()), name


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_loads_offline(tiny, offline, suffix):
    parts, folder, files = tiny
    backbone = load_backbone(str(files[suffix]), config=str(folder))
    assert backbone.source == str(files[suffix])
    for name in ("unet", "vae", "text_encoder"):
        got, original = getattr(backbone, name).state_dict(), parts[name].state_dict()
        assert got.keys() == original.keys(), name
        for key, value in original.items():
            assert torch.equal(got[key], value), f"{name}: {key}"
    assert backbone.scheduler.config.num_train_timesteps == 1000
    assert backbone.scheduler.config.beta_schedule == "scaled_linear"

    ids = backbone.tokenizer(["a photo of a bottle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, parts["tokenizer"](["a photo of a bottle"], padding="max_length", max_length=77,
                                               return_tensors="pt").input_ids)
    torch.manual_seed(0)
    latents, image = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        outputs = []
        for text_encoder, unet, vae in ((backbone.text_encoder, backbone.unet, backbone.vae),
                                        (parts["text_encoder"], parts["unet"], parts["vae"])):
            text = text_encoder(ids)[0]
            outputs.append((text, unet(latents, 10, encoder_hidden_states=text).sample,
                            vae.decode(latents).sample, vae.encode(image).latent_dist.mean))
    # Same weights bit for bit (above); the outputs may still differ in the last bit, because the
    # loaded tensors lie at another memory alignment and BLAS then sums in another order (a model
    # read back from a diffusers folder does the same).
    for got, expected in zip(*outputs):
        torch.testing.assert_close(got, expected)


def test_single_file_without_config_offline(tiny, offline):
    with pytest.raises(BackboneError) as err:
        load_backbone(str(tiny[2][".safetensors"]))
    message = str(err.value)
    assert "--base-config" in message and "\n" not in message
