"""Bootstrap a tiny backbone on a product's normal images: the stand-in for SD pretraining.

Where no Stable Diffusion weights can be had (air-gapped machines, CI, the CPU demo), SeaS
still needs a base that can draw the product. This trains, from the random tiny model:

1. the VAE on the normal training images, whole (crops would teach GroupNorm the statistics
   of a crop, not of an image; L1 + MSE reconstruction, a small KL term), then sets
   ``scaling_factor`` so the latents have unit variance, as SD's 0.18215 does;
2. the U-Net as a text-conditioned denoiser of those latents (epsilon MSE, the SD schedule),
   with one caption for every image (``a photo of a {product}``) and rotation/flip
   augmentation.

The result is an ordinary diffusers folder that ``--base`` accepts. It is a small model
trained for minutes, not Stable Diffusion: it knows one product and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seas.data.config import DataConfig
from seas.data.readers import read_dataset
from seas.data.transforms import apply_augmentation, draw_augmentation, image_to_tensor
from seas.errors import ConfigError
from seas.fields import Config, option
from seas.files.images import read_rgb
from seas.model.backbone import build_tiny_components, save_components
from seas.model.prompts import tokenize
from seas.seeds import step_generator
from seas.training.loop import progress


@dataclass
class BootstrapConfig(Config):
    """``seas bootstrap``: the tiny base model trained on a product's normal images."""

    section = "bootstrap"

    resolution: int = option(128, help="image size (a multiple of 64, the tiny model's factor)", minimum=64)
    width: int = option(32, help="tiny U-Net and text-encoder width (U-Net channels w, 2w, 4w, 4w)", minimum=1)
    vae_width: int = option(16, help="tiny VAE width (channels v, 2v, 2v, 2v): 16 costs a quarter of 32 on a CPU",
                            minimum=1)
    vae_steps: int = option(300, help="VAE updates", minimum=1)
    unet_steps: int = option(400, help="U-Net updates", minimum=1)
    batch_size: int = option(8, help="images per update", minimum=1)
    lr_vae: float = option(1e-3, help="VAE learning rate", minimum=0.0)
    lr_unet: float = option(5e-4, help="U-Net learning rate", minimum=0.0)
    kl_weight: float = option(1e-6, help="weight of the VAE's KL term", minimum=0.0)
    max_images: int = option(200, help="normal training images used", minimum=1)
    seed: int = option(0, help="seed of the weights and every draw")

    def validate(self) -> None:
        if self.resolution % 64:
            raise ConfigError(f"--resolution {self.resolution}: must be a multiple of 64 (tiny model factor)")


def caption(product: str) -> str:
    return f"a photo of a {product}"


def _augmented_batch(images: torch.Tensor, seed: int, step: int, batch_size: int) -> torch.Tensor:
    """(batch, C, H, W) drawn from ``images`` (N, C, H, W), each rotated/flipped at random."""
    rng = np.random.default_rng([seed, step])
    picks = rng.integers(len(images), size=batch_size)
    return torch.stack([apply_augmentation(images[i], *draw_augmentation(rng)) for i in picks])


def train_vae(vae, images: torch.Tensor, cfg: BootstrapConfig) -> None:
    """Reconstruction training of the VAE on (N, 3, R, R) images in [-1, 1].

    The log-variance half of ``quant_conv`` starts at -10 (std 0.007): a random encoder's
    variance of 1 would drown the latents in noise and leave the decoder nothing to learn
    from for hundreds of steps; trained SD VAEs have small variances too.
    """
    with torch.no_grad():
        latent = vae.config.latent_channels
        vae.quant_conv.weight[latent:] = 0.0
        vae.quant_conv.bias[latent:] = -10.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr_vae, weight_decay=0.0)

    def step_loss(step: int) -> torch.Tensor:
        x = _augmented_batch(images, cfg.seed, step, cfg.batch_size)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=step_generator(cfg.seed, 1, step))
        recon = vae.decode(z).sample
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()

    _fit(vae, optimizer, cfg.vae_steps, step_loss, "bootstrap: VAE")


def train_unet(unet, text_embedding: torch.Tensor, latents: torch.Tensor, scheduler, cfg: BootstrapConfig) -> None:
    """Epsilon-prediction training on (N, 4, h, w) scaled latents with one caption (1, L, D)."""
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr_unet, weight_decay=0.01)

    def step_loss(step: int) -> torch.Tensor:
        g = step_generator(cfg.seed, 2, step)
        z = _augmented_batch(latents, cfg.seed + 1, step, cfg.batch_size)
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z),), generator=g)
        pred = unet(scheduler.add_noise(z, noise, t), t, text_embedding.expand(len(z), -1, -1)).sample
        return F.mse_loss(pred, noise)

    _fit(unet, optimizer, cfg.unet_steps, step_loss, "bootstrap: U-Net")


def _fit(module, optimizer, steps: int, step_loss, desc: str) -> None:
    """``steps`` updates of ``module`` minimising ``step_loss(step)``, with a progress bar."""
    module.train()
    bar = progress(steps, 0, desc, disable=False)
    for step in range(steps):
        loss = step_loss(step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    module.eval()


def bootstrap_backbone(data_cfg: DataConfig, cfg: BootstrapConfig, out: str | Path) -> Path:
    """Train a tiny backbone on the product's normal training images; write it to ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty; choose a new folder for the bootstrapped model")
    samples = read_dataset(data_cfg)
    normals = sorted((s for s in samples if s.is_normal and s.partition == "train"), key=lambda s: Path(s.image).name)
    normals = normals[: cfg.max_images]
    images = torch.stack([image_to_tensor(read_rgb(s.image), cfg.resolution) for s in normals])  # (N, 3, R, R)

    torch.manual_seed(cfg.seed)
    parts = build_tiny_components(seed=cfg.seed, width=cfg.width, vae_width=cfg.vae_width)
    vae, unet, scheduler = parts["vae"], parts["unet"], parts["scheduler"]
    parts["text_encoder"].requires_grad_(False)
    train_vae(vae, images, cfg)
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(16)])
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
        latents = latents * vae.config.scaling_factor
        ids = tokenize(parts["tokenizer"], [caption(data_cfg.product_name)])
        text_embedding = parts["text_encoder"](ids)[0]  # (1, L, D)
    train_unet(unet, text_embedding, latents, scheduler, cfg)
    return save_components(parts, out)
