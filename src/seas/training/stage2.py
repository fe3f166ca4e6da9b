"""Stage 2: training the Refined Mask Prediction head (spec section 5), generator frozen.

Per micro-batch (B anomaly samples with their masks + B normal samples with empty masks), as
the reference:
    z_t   = noised latents, one timestep per sample (all of 0..T-1, or the low-noise range)
    U-Net pass with each sample's prompt          -> decoder features (up_blocks[1], [2]), 2B
    one DDPM step z_t -> z_{t-1}, anomaly half     (per-sample timesteps, fresh variance noise)
    VAE-decode z_{t-1} of the anomaly half         -> decoder features (up_blocks[0..2]), B
    head, training forward: anomaly half through the MRM chain, normal half's coarse feature
        resized; one BatchNorm over both halves   -> refined (2B, 2, R, R), coarse (2B, 2, h, w)
    targets: masks over B empty masks, bilinearly resized for the coarse output (divided by
        their maximum for VisA / MVTec 3D AD, the step skipped when that is 0)
    loss = FL(refined, m_R) + FL(coarse, m_h), the reference focal loss (class = target
        truncated to an integer)
Named variants (MaskConfig): ``targets="soft"`` (soft focal loss on the soft mask),
``coarse_target="maxpool"`` (max-pooled coarse target), ``normal_path="refined"`` (normal
samples decoded and refined too), ``timesteps="low"``. The loop, checkpoints and resume are
stage 1's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from seas.config import MaskConfig
from seas.data.training_set import TrainingSet, draw_batch
from seas.model.features import FeatureRecorder, unet_feature_channels, vae_feature_channels
from seas.model.losses import soft_focal_loss
from seas.model.prompts import tokenize
from seas.model.rmp import ReferenceMaskHead, head_config_for, reference_focal_loss, reference_targets
from seas.model.schedule import ddpm_step, low_noise_limit
from seas.run import Run
from seas.seeds import step_generator
from seas.training.checkpoints import check_stage_folder, resume_checkpoint
from seas.training.loop import run_updates
from seas.training.setup import autocast_dtype, make_accelerator, make_optimizer

STAGE = "mask"


def build_head(backbone) -> ReferenceMaskHead:
    """The reference head sized from the backbone's U-Net and VAE channels (SD 1.x: exactly
    the reference's; see :func:`seas.model.rmp.head_config_for`)."""
    return ReferenceMaskHead(**head_config_for(unet_feature_channels(backbone.unet),
                                               vae_feature_channels(backbone.vae)))


def train_mask_head(run_dir: str | Path, cfg: MaskConfig, resume: str | None = None, overwrite: bool = False) -> Path:
    """Train the RMP head of a finished stage-1 run; writes ``<run>/mask_head/``."""
    run = Run.load(run_dir)
    bb = run.load_backbone()
    total_steps = cfg.steps or run.train.total_steps(len(run.types))  # reference: as many as stage 1
    check_stage_folder(run.path, STAGE, cfg.to_dict(), resume, overwrite, option="--run")
    accelerator = make_accelerator(run.path, cfg.mixed_precision)
    run.folder.start_stage(accelerator, STAGE, cfg.to_dict(), overwrite)

    weight_dtype = autocast_dtype(cfg.mixed_precision) if cfg.half_frozen else torch.float32
    for frozen in (bb.unet, bb.vae, bb.text_encoder):
        frozen.requires_grad_(False).eval().to(accelerator.device, weight_dtype)
    torch.manual_seed(cfg.seed)  # the head's initial weights
    head = build_head(bb)
    optimizer = make_optimizer(cfg.optimizer, [{"params": list(head.parameters()), "lr": cfg.lr}], cfg.weight_decay)
    head, optimizer = accelerator.prepare(head, optimizer)
    start = resume_checkpoint(accelerator, run.path, STAGE, resume) if resume else 0
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("seas-mask")

    data = TrainingSet.from_split(run.split, run.resolution, run.mask_rule, run.train.binarize_masks,
                                  fit=run.data.fit, channels=run.data.channels)
    with torch.no_grad():  # the prompts never change: encode them once
        prompts = [run.prompt.anomaly_prompt(kind) for kind in run.types] + [run.prompt.normal_prompt()]
        text = bb.text_encoder(tokenize(bb.tokenizer, prompts).to(accelerator.device))[0]  # (K + 1, L, D)
    t_max = bb.scheduler.config.num_train_timesteps
    if cfg.timesteps == "low":
        t_max = low_noise_limit(bb.scheduler.config, cfg.low_noise_of_steps, cfg.low_noise_last) + 1
    recorder = FeatureRecorder(bb.unet, bb.vae)
    head.train()

    def micro_losses(micro: int) -> dict | None:
        batch = draw_batch(data, cfg.seed, micro, cfg.batch_size, run.data.augment,
                           accelerator.process_index, accelerator.num_processes)
        generator = step_generator(cfg.seed, micro, accelerator.process_index)
        return mask_step(bb, head, recorder, text, batch, t_max, cfg, run.data.normalize_mask_targets,
                         generator, weight_dtype)

    with recorder:
        run_updates(
            accelerator, run=run.path, stage=STAGE, models=[head], optimizer=optimizer,
            start=start, total_steps=total_steps, grad_accum=cfg.grad_accum, micro_losses=micro_losses,
            checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
            log_every=cfg.log_every, desc="stage 2 (mask head)",
        )
    if accelerator.is_main_process:
        run.save_mask_head(accelerator.unwrap_model(head), cfg, total_steps)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it also ends the process group
    return run.path


def mask_step(bb, head, recorder: FeatureRecorder, text: torch.Tensor, batch, t_max: int, cfg: MaskConfig,
              normalize_max: bool, generator: torch.Generator, dtype: torch.dtype) -> dict | None:
    """The RMP loss of one micro-batch (see module docstring); ``None`` for a skipped step."""
    device = text.device
    B = len(batch.anomaly_images)
    pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(device, dtype)  # (2B, 3, R, R)
    prompt_index = torch.cat([batch.anomaly_types, torch.full((B,), len(text) - 1)])
    refine_all = cfg.normal_path == "refined"
    with torch.no_grad():
        moments = bb.vae.encode(pixels).latent_dist
        sample_noise = torch.randn(moments.mean.shape, generator=generator).to(device, dtype)
        latents = (moments.mean + moments.std * sample_noise) * bb.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
        t = torch.randint(0, t_max, (2 * B,), generator=generator).to(device)
        noisy = bb.scheduler.add_noise(latents, noise, t)
        recorder.clear()
        eps = bb.unet(noisy, t, text[prompt_index.to(device)]).sample
        previous = ddpm_step(bb.scheduler, eps.float(), t, noisy.float(), generator).to(dtype)  # (2B, 4, h, w)
        bb.vae.decode((previous if refine_all else previous[:B]) / bb.vae.config.scaling_factor)
    refined, coarse = head(recorder.unet_features, recorder.vae_features, n_anomaly=None if refine_all else B,
                           with_coarse=True)
    anomaly_masks = batch.anomaly_masks[:, 0].to(device)  # (B, R, R) in [0, 1], soft borders
    targets = reference_targets(anomaly_masks, B, tuple(coarse.shape[-2:]), normalize_max)
    if targets is None:
        return None  # the reference skips a micro-batch whose targets are all zero
    full, small = targets
    if cfg.coarse_target == "maxpool":
        small = F.adaptive_max_pool2d(full[:, None], tuple(coarse.shape[-2:]))[:, 0]
    focal = soft_focal_loss if cfg.targets == "soft" else reference_focal_loss
    loss = focal(refined.float(), full, cfg.focal_gamma) + focal(coarse.float(), small, cfg.focal_gamma)
    return {"focal": loss.detach(), "total": loss}
