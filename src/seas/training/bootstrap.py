"""Bootstrap a tiny backbone on a product's normal images: the stand-in for SD pretraining.

Where no Stable Diffusion weights can be had (air-gapped machines, CI, the CPU demo), SeaS
still needs a base that can draw the product. This trains, from the random tiny model:

1. the VAE on the normal training images, whole (crops would teach GroupNorm the statistics
   of a crop, not of an image; L1 + MSE reconstruction, a small KL term), then sets
   ``scaling_factor`` so the latents have unit variance, as SD's 0.18215 does;
2. the U-Net as a text-conditioned denoiser of those latents (epsilon MSE, the SD schedule),
   with rotation/flip augmentation; a share ``empty_captions`` of the images is captioned with
   the empty prompt, as SD's pretraining drops captions, so that generation's classifier-free
   guidance (``eps("") + g * (eps(prompt) - eps(""))``) steers away from a learned
   unconditional prediction rather than from the U-Net's answer to a context it never saw.

Captions: a normal image is ``a photo of a {product}``. With ``generic_defects > 0`` that share
of the training images (VAE and U-Net) are drawn instead from a pool of normal images carrying
a generic, procedurally drawn defect (:mod:`seas.data.generic_defects`: coloured spots and lines,
textured, pasted and blurred patches), captioned ``a photo of a {product} with a red spot``
and so on. This teaches the base what Stable Diffusion knows from pretraining and SeaS relies
on: words of the prompt change local appearance, in one place. The product's anomaly images
are never read (they are SeaS's few shots).

With ``base`` set (e.g. ``seas-tiny``, the pretrained base shipped with the package), the same
training starts from that model's weights instead of random ones: a short adaptation of a
pretrained base to a product's normal images (its VAE and latent scale are kept unless
``vae_steps`` > 0). What ``seas demo --data`` does before stage 1.

The result is an ordinary diffusers folder that ``--base`` accepts. From random weights it is a
small model trained for minutes, not Stable Diffusion: it knows one product and a few generic
defects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seas.data.config import DataConfig
from seas.data.generic_defects import defect_caption, draw_generic_defect, normal_caption
from seas.data.readers import read_dataset
from seas.data.transforms import apply_augmentation, draw_augmentation, image_to_tensor
from seas.errors import ConfigError
from seas.files.images import read_rgb
from seas.model.backbone import (
    COMPONENTS,
    build_tiny_components,
    load_backbone,
    quiet_log_variance,
    save_components,
)
from seas.model.prompts import tokenize
from seas.seeds import step_generator
from seas.training.configs import BootstrapConfig
from seas.training.loop import progress


def caption(product: str) -> str:
    return normal_caption(product)


def _augmented_batch(images: torch.Tensor, seed: int, step: int, batch_size: int,
                     weights: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(batch, C, H, W) drawn from ``images`` (N, C, H, W) (uniformly, or with probabilities
    ``weights (N,)``), each rotated/flipped at random; and the indices drawn."""
    rng = np.random.default_rng([seed, step])
    picks = rng.integers(len(images), size=batch_size) if weights is None else rng.choice(
        len(images), size=batch_size, p=weights)
    return torch.stack([apply_augmentation(images[i], *draw_augmentation(rng)) for i in picks]), picks


def defect_pool(images: torch.Tensor, cfg: BootstrapConfig, product: str
                ) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
    """The bootstrap's training images: the normal ``images (N, 3, R, R)`` followed by
    ``defect_pool x N`` copies carrying a generic defect; their captions; and the draw
    probabilities (``None``: uniform over the normal images alone)."""
    if cfg.generic_defects == 0:
        return images, [caption(product)] * len(images), None
    rng = np.random.default_rng([cfg.seed, 7])
    plain = [((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for x in images]
    drawn, captions = [], [caption(product)] * len(images)
    for k in range(cfg.defect_pool * len(images)):
        image, _, what = draw_generic_defect(plain[k % len(plain)], plain, rng)
        drawn.append(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
        captions.append(defect_caption(product, what))
    n, m = len(images), len(drawn)
    weights = np.r_[np.full(n, (1 - cfg.generic_defects) / n), np.full(m, cfg.generic_defects / m)]
    return torch.cat([images, torch.stack(drawn)]), captions, weights


def train_vae(vae, images: torch.Tensor, cfg: BootstrapConfig, weights: np.ndarray | None = None,
              after_update=None, fresh: bool = True) -> None:
    """Reconstruction training of the VAE on (N, 3, R, R) images in [-1, 1], drawn with
    probabilities ``weights`` (default uniform); ``after_update`` as in :func:`_fit`. A
    ``fresh`` (random) VAE first gets :func:`quiet_log_variance`."""
    if fresh:
        quiet_log_variance(vae)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr_vae, weight_decay=0.0)

    def step_loss(step: int) -> torch.Tensor:
        x, _ = _augmented_batch(images, cfg.seed, step, cfg.batch_size, weights)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=step_generator(cfg.seed, 1, step))
        recon = vae.decode(z).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        if cfg.vae_gradient_weight > 0:
            loss = loss + cfg.vae_gradient_weight * gradient_l1(recon, x)
        return loss

    _fit(vae, optimizer, cfg.vae_steps, step_loss, "bootstrap: VAE", after_update)


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical finite differences of two
    ``(B, C, H, W)`` images: zero when they differ by a constant, large when one is a blurred
    copy of the other."""
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731  (B, C, H - 1, W)
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731  (B, C, H, W - 1)
    return F.l1_loss(dy(a), dy(b)) + F.l1_loss(dx(a), dx(b))


def train_unet(unet, text_embeddings: torch.Tensor, latents: torch.Tensor, scheduler, cfg: BootstrapConfig,
               caption_of: np.ndarray | None = None, weights: np.ndarray | None = None,
               empty: torch.Tensor | None = None) -> None:
    """Epsilon-prediction training on (N, 4, h, w) scaled latents; latent i is captioned
    ``text_embeddings[caption_of[i]]`` (embeddings (C, L, D); default: all the first one) and
    drawn with probabilities ``weights`` (default uniform). With ``empty`` ((L, D), the empty
    prompt's embedding), each drawn image takes it instead with probability ``cfg.empty_captions``."""
    caption_of = np.zeros(len(latents), dtype=int) if caption_of is None else caption_of
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr_unet, weight_decay=0.01)

    def step_loss(step: int) -> torch.Tensor:
        g = step_generator(cfg.seed, 2, step)
        z, picks = _augmented_batch(latents, cfg.seed + 1, step, cfg.batch_size, weights)
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z),), generator=g)
        context = text_embeddings[caption_of[picks]]  # (B, L, D)
        if empty is not None and cfg.empty_captions > 0:
            dropped = np.random.default_rng([cfg.seed, 3, step]).random(len(picks)) < cfg.empty_captions
            context = torch.where(torch.from_numpy(dropped)[:, None, None], empty, context)
        pred = unet(scheduler.add_noise(z, noise, t), t, context).sample
        return F.mse_loss(pred, noise)

    _fit(unet, optimizer, cfg.unet_steps, step_loss, "bootstrap: U-Net")


def _fit(module, optimizer, steps: int, step_loss, desc: str, after_update=None) -> None:
    """``steps`` updates of ``module`` minimising ``step_loss(step)``, with a progress bar;
    ``after_update(n)`` (optional) is called after the ``n``-th update, with ``module`` in eval
    mode (benchmarks measure the model along its training)."""
    module.train()
    bar = progress(steps, 0, desc, disable=False)
    for step in range(steps):
        loss = step_loss(step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if after_update is not None:
            module.eval()
            after_update(step + 1)
            module.train()
    bar.close()
    module.eval()


def normal_training_images(data_cfg: DataConfig, cfg: BootstrapConfig) -> torch.Tensor:
    """The product's first ``cfg.max_images`` normal training images (by file name) at
    ``cfg.resolution``: ``(N, 3, R, R)`` in [-1, 1]."""
    samples = read_dataset(data_cfg)
    normals = sorted((s for s in samples if s.is_normal and s.partition == "train"), key=lambda s: Path(s.image).name)
    return torch.stack([image_to_tensor(read_rgb(s.image), cfg.resolution) for s in normals[: cfg.max_images]])


def bootstrap_backbone(data_cfg: DataConfig, cfg: BootstrapConfig, out: str | Path) -> Path:
    """Train a tiny backbone on the product's normal training images; write it to ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty; choose a new folder for the bootstrapped model")
    images = normal_training_images(data_cfg, cfg)  # (N, 3, R, R)
    n_normals = len(images)
    torch.manual_seed(cfg.seed)
    parts = starting_parts(cfg)
    vae, unet, scheduler = parts["vae"], parts["unet"], parts["scheduler"]
    parts["text_encoder"].requires_grad_(False)
    images, captions, weights = defect_pool(images, cfg, data_cfg.product_name)  # (N + M, 3, R, R)
    if cfg.vae_steps:
        train_vae(vae, images, cfg, weights, fresh=cfg.base is None)
    vae.requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(16)])
        if cfg.base is None:  # the scale of SD's latents: unit variance over the normal images (the product)
            vae.register_to_config(scaling_factor=float(1.0 / latents[:n_normals].std()))
        latents = latents * vae.config.scaling_factor
        unique = sorted(set(captions))
        text_embeddings = parts["text_encoder"](tokenize(parts["tokenizer"], [*unique, ""]))[0]  # (C + 1, L, D)
        caption_of = np.array([unique.index(c) for c in captions])
    train_unet(unet, text_embeddings[:-1], latents, scheduler, cfg, caption_of, weights, empty=text_embeddings[-1])
    return save_components(parts, out)


def starting_parts(cfg: BootstrapConfig) -> dict:
    """The five parts training starts from: ``cfg.base``'s weights, or a random tiny model."""
    if cfg.base is not None:
        backbone = load_backbone(cfg.base)
        backbone.check_resolution(cfg.resolution)
        return {name: getattr(backbone, name) for name in COMPONENTS}
    return build_tiny_components(seed=cfg.seed, width=cfg.width, vae_width=cfg.vae_width,
                                 latent_channels=cfg.latent_channels, vae_factor=cfg.vae_factor)
