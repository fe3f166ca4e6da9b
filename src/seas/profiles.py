"""Memory/speed profiles: one option (``--profile``) that sets several switches at once.

Profiles resolve into the concrete switches a run records (its config, its generation
settings), so a run never depends on the machine that resolves the profile later. An option
given explicitly on the command line wins over the profile's value.

Training (``seas train``, ``seas train-mask``):

=====================  =========  ===============  =======================================
switch                 default    fast             low-memory
=====================  =========  ===============  =======================================
mixed precision        no (fp32)  GPU: bf16 (fp16  bf16 (fp16 on GPUs without bf16)
                                  w/o bf16); CPU:
                                  no (fp32)
frozen parts in half   (inert)    yes              yes
gradient checkpointing no         no               yes (stage 1; stage 2 trains no U-Net)
optimizer (stage 1)    AdamW      AdamW            8-bit AdamW where bitsandbytes is
                                                   installed, else AdamW
=====================  =========  ===============  =======================================

Generation (``seas generate``, :class:`seas.generation.pipeline.SeaSPipeline`; the switches are
:class:`seas.config.GenerationSwitches`):

=====================  =========  ===============  =======================================
switch                 default    fast             low-memory
=====================  =========  ===============  =======================================
weights                fp32       GPU: half;       half
                                  CPU: fp32
VAE slicing            no         no               yes (one image per decode and mask head)
VAE tiling             no         no               yes (mask-free decodes above the tile size)
attention slicing      no         no               no (see docs/PERFORMANCE.md: with fused
                                                   SDPA it costs memory, so it is an option)
=====================  =========  ===============  =======================================

"half" is fp16 on a GPU and bf16 on a CPU (CPUs have no fast fp16 matrix kernels); on a GPU
without bf16 support (before Ampere) bf16 training falls back to fp16. "fast" is the fastest
precision for the device: fp32 on CPUs, where bf16 was measured slower, and half on GPUs
(their tensor cores; not measured yet, no GPU was lent to this project). "frozen
parts in half" only acts under mixed precision. Gradients are always
released with ``zero_grad(set_to_none=True)`` (every profile).
"""

from __future__ import annotations

import importlib.util

import torch

from seas.config import GenerationSwitches, check_profile


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast_precision(device: torch.device | str | None = None) -> str:
    """The mixed-precision mode of the half-precision profiles on ``device``: bf16, or fp16
    on a CUDA GPU without bf16 support."""
    device = _device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def half_dtype(device: torch.device | str) -> torch.dtype:
    """Half-precision weight dtype for inference: fp16 on a GPU, bf16 on a CPU."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _uses_half(profile: str, device: torch.device) -> bool:
    """low-memory: always; fast: on GPUs only. On this project's CPU (avx512_bf16) bf16 was
    measured slower than fp32: 1.23-1.30x per training step, 1.15-1.8x per generated image
    (docs/PERFORMANCE.md), so fast means fp32 there."""
    return profile == "low-memory" or (profile == "fast" and device.type == "cuda")


def train_switches(profile: str, stage: str = "generator", device: torch.device | str | None = None) -> dict:
    """The config values ``profile`` sets for training stage ``stage`` ("generator" or "mask")
    on ``device`` (default: cuda if available). Keys are TrainConfig / MaskConfig field names."""
    check_profile(profile)
    device = _device(device)
    half = _uses_half(profile, device)
    switches = {"mixed_precision": autocast_precision(device) if half else "no", "half_frozen": True}
    if stage == "generator":
        low = profile == "low-memory"
        switches.update(gradient_checkpointing=low, optimizer="adamw8bit" if low and has_bitsandbytes() else "adamw")
    return switches


def generation_switches(profile: str, device: torch.device | str) -> GenerationSwitches:
    """The generation switches of ``profile`` on ``device``."""
    check_profile(profile)
    device = torch.device(device)
    low = profile == "low-memory"
    dtype = half_dtype(device) if _uses_half(profile, device) else torch.float32
    return GenerationSwitches(profile=profile, dtype=str(dtype).removeprefix("torch."), vae_slicing=low,
                              vae_tiling=low)
