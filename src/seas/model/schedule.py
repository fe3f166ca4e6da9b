"""Noise-schedule steps the package takes outside diffusers' samplers.

``ddpm_step`` is one DDPM reverse step for a batch whose samples each have their own timestep
(stage 2 and the localisation evidence); ``low_noise_limit`` is the largest timestep of the
last few steps of a DPM-Solver++ run (stage 2's low-noise option).
"""

from __future__ import annotations

import torch

from seas.errors import ConfigError


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
