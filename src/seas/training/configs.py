"""Configs of the tiny base's own training: ``seas pretrain`` (the shipped base, on the procedural
corpus) and ``seas bootstrap`` (a product's normal images, from random weights or a base).
Plain configs, no torch: ``seas --help`` reads them without loading it."""

from __future__ import annotations

from dataclasses import dataclass

from seas.errors import ConfigError
from seas.fields import Config, option
from seas.model.shapes import VAE_FACTORS

VAE_TRAIN = ("all", "decoder")  # --vae-train: which VAE parts the VAE updates train


@dataclass
class PretrainConfig(Config):
    """``seas pretrain``: the tiny base trained on the procedural corpus (defaults: the shipped one)."""

    section = "pretrain"

    corpus_seed: int = option(0, help="seed of the procedural corpus")
    corpus_size: int = option(40000, help="corpus samples drawn from (each rendered once, then kept in memory)",
                              minimum=16)
    defect_share: float = option(0.6, help="share of corpus images that carry a defect", minimum=0.0, maximum=1.0)
    resolution: int = option(128, help="image size (a multiple of 8 x the VAE factor)", minimum=32)
    vae_factor: int = option(4, help="pixels per latent cell along a side (SD 1.x: 8; 4 keeps thin defects at "
                             "128 px, the model card says what was measured)", choices=VAE_FACTORS)
    vae_width: int = option(16, help="VAE channels (v, 2v, 2v)", minimum=1)
    latent_channels: int = option(8, help="channels of the latent (SD 1.x: 4)", minimum=1)
    width: int = option(32, help="U-Net channels (w, 2w, 4w, 4w) and text width 2w", minimum=1)
    norm_groups: int = option(8, help="GroupNorm groups of the U-Net (must divide its width; SD: 32 at width "
                              "320, 10 channels a group)", minimum=1)
    vae_norm_groups: int = option(4, help="GroupNorm groups of the VAE (must divide its width; one channel a "
                                  "group removes each channel's mean, and the image's colour with it)", minimum=1)
    top_attention: bool = option(False, help="keep the transformers of the U-Net's outermost blocks (SD 1.x has "
                                 "them; SeaS reads none of them and they cost half an update at 128 px)")
    vae_steps: int = option(5000, help="VAE updates (0: keep the VAE of --init)", minimum=0)
    vae_batch: int = option(8, help="images per VAE update", minimum=1)
    lr_vae: float = option(1e-3, help="VAE learning rate", minimum=0.0)
    kl_weight: float = option(1e-8, help="weight of the VAE's KL term, summed over latent elements (SD's 1e-6 is "
                              "against a reconstruction loss summed over pixels; against our mean it let the encoder "
                              "drown its latents in noise: docs/PRETRAINING.md)", minimum=0.0)
    defect_weight: float = option(4.0, help="extra weight of the VAE's L1 inside defect masks (0: none)", minimum=0.0)
    vae_perceptual: float = option(0.0, help="weight of an LPIPS-VGG perceptual term in the VAE's loss (SD's VAE "
                                   "has one; needs `seas weights fetch lpips`; 0: none, L1 + MSE only)", minimum=0.0)
    vae_train: str = option("all", help="what the VAE updates train: all (encoder and decoder) or decoder (with "
                            "--init: the encoder, so the latents, the scaling factor and the U-Net's footing, stay "
                            "as they are; SD's fine-tuned ft-MSE decoder was made so)", choices=VAE_TRAIN)
    unet_steps: int = option(8000, help="U-Net and text-encoder updates (0: keep those of --init)", minimum=0)
    unet_batch: int = option(16, help="images per U-Net update", minimum=1)
    lr_unet: float = option(4e-4, help="U-Net learning rate", minimum=0.0)
    lr_text: float = option(4e-4, help="text-encoder learning rate", minimum=0.0)
    warmup: int = option(200, help="updates of linear learning-rate warm-up, each phase", minimum=0)
    schedule: str = option("cosine", help="learning rate after the warm-up: cosine (down to a tenth at the phase's "
                           "end) or constant", choices=("cosine", "constant"))
    ema_decay: float = option(0.999, help="decay of the U-Net and text encoder's moving average (what is exported)",
                              minimum=0.0, maximum=1.0)
    empty_captions: float = option(0.1, help="share of U-Net samples captioned with the empty prompt (SD: 0.1)",
                                   minimum=0.0, maximum=1.0)
    precision: str = option("bf16", help="autocast dtype of the forward passes (weights stay fp32)",
                            choices=("bf16", "fp32"))
    probe: bool = option(True, help="read what the VAE keeps of the demo product's defects (seas.judge.vae_probe; "
                         "fits a small classifier once, about 20 s on a CPU)")
    probe_every: int = option(1000, help="VAE updates between readings of what it keeps of the demo product's "
                              "defects (seas.judge.vae_probe; also read at the end of the phase)", minimum=1)
    checkpoint_every: int = option(250, help="updates between checkpoints", minimum=1)
    log_every: int = option(25, help="updates between lines of curves.jsonl", minimum=1)
    snapshots: list[int] = option(help="U-Net updates at which the moving average is also exported "
                                  "(snapshots/unet-NNNNNN), for curves against pretraining",
                                  factory=list)
    seed: int = option(0, help="seed of the weights and every draw")
    init: str | None = option(None, help="continue from a base written by seas pretrain (its model/ folder, or "
                              "seas-tiny) instead of random weights; the architecture options must be the base's")
    unet_defect_weight: float = option(0.0, help="extra weight of the U-Net's noise-prediction error in the latent "
                                       "cells a defect mask touches (0: none, SD's plain loss)", minimum=0.0)

    def validate(self) -> None:
        if self.vae_steps == 0 and self.init is None:
            raise ConfigError("--vae-steps 0: keeps the VAE of --init; give --init, or at least one VAE update")
        if self.unet_steps == 0 and self.init is None:
            raise ConfigError("--unet-steps 0: keeps the U-Net of --init; give --init, or at least one U-Net update")
        if self.vae_train == "decoder" and (self.init is None or self.vae_steps == 0):
            raise ConfigError("--vae-train decoder: fine-tunes the decoder of --init's VAE; give --init and at least "
                              "one --vae-steps update, or use --vae-train all")
        multiple = self.vae_factor * 8  # VAE factor x the U-Net's three down-samplings
        if self.resolution % multiple:
            raise ConfigError(f"--resolution {self.resolution}: must be a multiple of {multiple}")
        if self.width % self.norm_groups or self.vae_width % self.vae_norm_groups:
            raise ConfigError(f"--norm-groups {self.norm_groups} / --vae-norm-groups {self.vae_norm_groups}: must divide "
                              f"--width {self.width} / --vae-width {self.vae_width}")
        if any(not 0 < s < self.unet_steps for s in self.snapshots):
            raise ConfigError(f"--snapshots {self.snapshots}: each must lie between 0 and --unet-steps")


@dataclass
class BootstrapConfig(Config):
    """``seas bootstrap``: the tiny base model trained on a product's normal images."""

    section = "bootstrap"

    base: str | None = option(None, help="start from this model's weights (e.g. seas-tiny) instead of a random tiny "
                              "model; the width, VAE and latent options are then the base's")
    resolution: int = option(128, help="image size (a multiple of 64, the tiny model's factor)", minimum=64)
    width: int = option(32, help="tiny U-Net and text-encoder width (U-Net channels w, 2w, 4w, 4w)", minimum=1)
    vae_width: int = option(16, help="tiny VAE width (channels v, 2v, 2v, 2v): 16 costs a quarter of 32 on a CPU",
                            minimum=1)
    latent_channels: int = option(4, help="channels of the VAE's latent, the U-Net's input and output (SD 1.x: 4; "
                                  "16 measured no better within 480 VAE updates, docs/TRAINING.md)", minimum=1)
    vae_factor: int = option(8, help="pixels per latent cell along a side (SD 1.x: 8); 4 gives the VAE a latent "
                             "four times larger, for thin defects, and the U-Net four times the work", choices=VAE_FACTORS)
    vae_steps: int = option(300, help="VAE updates (0: keep the base's VAE; needs --base)", minimum=0)
    unet_steps: int = option(400, help="U-Net updates", minimum=1)
    batch_size: int = option(8, help="images per update", minimum=1)
    lr_vae: float = option(1e-3, help="VAE learning rate", minimum=0.0)
    lr_unet: float = option(5e-4, help="U-Net learning rate", minimum=0.0)
    kl_weight: float = option(1e-6, help="weight of the VAE's KL term", minimum=0.0)
    vae_gradient_weight: float = option(0.0, help="weight of an L1 term on the reconstruction's image gradients, "
                                        "which penalises the blur L1 + MSE allow (0: off; measured in docs/TRAINING.md)",
                                        minimum=0.0)
    max_images: int = option(200, help="normal training images used", minimum=1)
    generic_defects: float = option(0.5, help="share of the training images that carry a generic drawn defect "
                                    "with a caption naming it (0: normal images and one caption only)",
                                    minimum=0.0, maximum=1.0)
    defect_pool: int = option(3, help="generic-defect images drawn per normal image", minimum=1)
    empty_captions: float = option(0.0, help="share of the U-Net's training images captioned with the empty prompt, "
                                   "as SD's pretraining drops 10% of captions to give classifier-free guidance its "
                                   "unconditional branch (0: never; 0.1 measured no better on the demo, "
                                   "docs/TRAINING.md)", minimum=0.0, maximum=1.0)
    seed: int = option(0, help="seed of the weights and every draw")

    def validate(self) -> None:
        if self.resolution % 64:
            raise ConfigError(f"--resolution {self.resolution}: must be a multiple of 64 (tiny model factor)")
        if self.vae_steps == 0 and self.base is None:
            raise ConfigError("--vae-steps 0 keeps a base's VAE: give --base too (a random VAE cannot be kept)")
