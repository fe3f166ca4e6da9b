"""Stage 2: training the Refined Mask Prediction head (spec section 5), generator frozen.

Per micro-batch (B anomaly samples with their masks + B normal samples with empty masks):
    z_t   = noised latents at a random timestep per sample
    U-Net pass with each sample's prompt          -> decoder features (up_blocks[1], [2])
    one DDPM step z_t -> z_{t-1}                  (per-sample timesteps, diffusers' formula)
    VAE-decode z_{t-1}                             -> decoder features (up_blocks[0..2])
    RMP(features) -> refined (image size) and coarse (latent size) logits
    loss = focal(refined, mask) + focal(coarse, max-pooled mask)      (gamma 2)
Only the head trains (AdamW, lr 5e-4); the loop, checkpoints and resume are stage 1's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import MaskConfig, TrainConfig
from ..data.split import Split
from ..data.training_set import TrainingSet, draw_batch
from ..errors import ConfigError
from ..features import FeatureRecorder, unet_feature_channels, vae_feature_channels
from ..mask_head import RefinedMaskPredictor, mask_loss
from ..prompts import tokenize
from ..run import MASK_DIR, MASK_MARKER, LoadedRun, load_run
from . import common

STAGE = "mask"
MASK_FORMAT = "seas-mask-1"


def ddpm_step(scheduler, eps: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``DDPMScheduler.step`` for a batch whose samples have their own timesteps ``t`` (N,).

    Epsilon prediction, fixed-small variance, previous timestep t - 1 (the training schedule),
    as SD 1.x's scheduler config has them. Returns z_{t-1} (N, C, h, w).
    """
    config = scheduler.config
    if config.prediction_type != "epsilon" or config.variance_type != "fixed_small" or config.thresholding:
        raise ConfigError("the mask stage supports SD 1.x schedulers (epsilon prediction, fixed_small variance)")
    alphas = scheduler.alphas_cumprod.to(x_t.device)
    shape = (-1, 1, 1, 1)
    a_t = alphas[t].view(shape)
    a_prev = torch.where(t > 0, alphas[(t - 1).clamp(min=0)], torch.ones_like(alphas[t])).view(shape)
    alpha_step, beta_step = a_t / a_prev, 1 - a_t / a_prev
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if config.clip_sample:
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    mean = (a_prev.sqrt() * beta_step / (1 - a_t)) * x0 + (alpha_step.sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    variance = ((1 - a_prev) / (1 - a_t) * beta_step).clamp(min=1e-20)
    noise = torch.randn(x_t.shape, generator=generator).to(x_t.device, x_t.dtype)
    return mean + torch.where(t.view(shape) > 0, variance.sqrt() * noise, torch.zeros_like(noise))


def low_noise_limit(scheduler_config, sample_steps: int, mask_steps: int) -> int:
    """Largest timestep among the last ``mask_steps`` of a ``sample_steps`` DPM-Solver++ run."""
    from diffusers import DPMSolverMultistepScheduler

    sampler = DPMSolverMultistepScheduler.from_config(scheduler_config, timestep_spacing="linspace")
    sampler.set_timesteps(sample_steps)
    return int(sampler.timesteps[-min(mask_steps, sample_steps)])


def build_head(run: LoadedRun) -> RefinedMaskPredictor:
    """An RMP head sized from the run's U-Net and VAE channels.

    SD 1.x: U-Net features 1280/640 -> coarse 128 + 64 channels (the spec's sizes), VAE
    512/512/256. Smaller backbones get a tenth of their U-Net channels (at least 32 and 16).
    """
    unet_channels = unet_feature_channels(run.backbone.unet)
    return RefinedMaskPredictor(
        unet_channels=unet_channels,
        vae_channels=vae_feature_channels(run.backbone.vae),
        coarse_channels=(max(unet_channels[0] // 10, 32), max(unet_channels[1] // 10, 16)),
    )


def train_mask_head(run_dir: str | Path, cfg: MaskConfig, resume: str | None = None, overwrite: bool = False) -> Path:
    """Train the RMP head of a finished stage-1 run; writes ``<run>/mask_head/``."""
    run_dir = Path(run_dir)
    loaded = load_run(run_dir)
    meta, bb = loaded.meta, loaded.backbone
    split = Split.from_dict(meta["split"])
    data_cfg, train_cfg = meta["data"], meta["config"]
    total_steps = cfg.steps or TrainConfig.from_dict(train_cfg).total_steps(len(split.types))  # reference: as stage 1
    common.check_run_folder(run_dir, STAGE, MASK_MARKER, cfg.to_dict(), resume, overwrite, option="--run")
    accelerator = common.make_accelerator(run_dir, cfg.mixed_precision)
    common.start_run_folder(accelerator, run_dir, STAGE, MASK_MARKER, cfg.to_dict(), overwrite)

    weight_dtype = common.autocast_dtype(cfg.mixed_precision) if cfg.half_frozen else torch.float32
    for frozen in (bb.unet, bb.vae, bb.text_encoder):
        frozen.requires_grad_(False).eval().to(accelerator.device, weight_dtype)
    torch.manual_seed(cfg.seed)  # the head's initial weights
    head = build_head(loaded)
    optimizer = common.make_optimizer("adamw", [{"params": list(head.parameters()), "lr": cfg.lr}], cfg.weight_decay)
    head, optimizer = accelerator.prepare(head, optimizer)
    start = common.resume_checkpoint(accelerator, run_dir, STAGE, resume) if resume else 0
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("seas-mask")

    data = TrainingSet.from_split(split, train_cfg["resolution"], data_cfg["mask_threshold"], train_cfg["binarize_masks"])
    with torch.no_grad():  # the prompts never change: encode them once
        prompts = [loaded.prompts.anomaly_prompt(kind) for kind in split.types] + [loaded.prompts.normal_prompt()]
        text = bb.text_encoder(tokenize(bb.tokenizer, prompts).to(accelerator.device))[0]  # (K + 1, L, D)
    t_max = bb.scheduler.config.num_train_timesteps
    if cfg.timesteps == "low":
        t_max = low_noise_limit(bb.scheduler.config, cfg.sample_steps, cfg.mask_steps) + 1
    recorder = FeatureRecorder(bb.unet, bb.vae)
    head.train()

    def micro_losses(micro: int) -> dict:
        batch = draw_batch(data, cfg.seed, micro, cfg.batch_size, data_cfg["augment"],
                           accelerator.process_index, accelerator.num_processes)
        generator = common.step_generator(cfg.seed, micro, accelerator.process_index)
        return mask_step(bb, head, recorder, text, batch, t_max, cfg.focal_gamma, generator, weight_dtype)

    with recorder:
        common.run_updates(
            accelerator, run=run_dir, stage=STAGE, models=[head], optimizer=optimizer,
            start=start, total_steps=total_steps, grad_accum=cfg.grad_accum, micro_losses=micro_losses,
            checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
            log_every=cfg.log_every, desc="stage 2 (mask head)",
        )
    if accelerator.is_main_process:
        common.write_dir(run_dir / MASK_DIR, accelerator.unwrap_model(head).save_pretrained)
        common.write_json(run_dir / MASK_MARKER, {"format": MASK_FORMAT, "config": cfg.to_dict(), "steps": total_steps})
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it also ends the process group
    return run_dir


def mask_step(bb, head, recorder: FeatureRecorder, text: torch.Tensor, batch, t_max: int, gamma: float,
              generator: torch.Generator, dtype: torch.dtype) -> dict:
    """The RMP loss of one micro-batch (see module docstring)."""
    device = text.device
    B = len(batch.anomaly_images)
    pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(device, dtype)  # (2B, 3, R, R)
    masks = torch.cat([batch.anomaly_masks, torch.zeros_like(batch.anomaly_masks)])[:, 0].to(device)  # (2B, R, R)
    prompt_index = torch.cat([batch.anomaly_types, torch.full((B,), len(text) - 1)])
    with torch.no_grad():
        moments = bb.vae.encode(pixels).latent_dist
        sample_noise = torch.randn(moments.mean.shape, generator=generator).to(device, dtype)
        latents = (moments.mean + moments.std * sample_noise) * bb.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
        t = torch.randint(0, t_max, (2 * B,), generator=generator).to(device)
        noisy = bb.scheduler.add_noise(latents, noise, t)
        recorder.clear()
        eps = bb.unet(noisy, t, text[prompt_index.to(device)]).sample
        previous = ddpm_step(bb.scheduler, eps.float(), t, noisy.float(), generator).to(dtype)
        bb.vae.decode(previous / bb.vae.config.scaling_factor)
    refined, coarse = head(recorder.unet_features, recorder.vae_features)
    loss = mask_loss(refined.float(), coarse.float(), masks, gamma)
    return {"focal": loss.detach(), "total": loss}
