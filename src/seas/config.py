"""Dataclass configs of the two training stages. Each run writes its resolved config.

Defaults follow the authors' release (spec section 4); every deviation is an option whose
reference value is documented next to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import ConfigError

MIXED_PRECISION = ("no", "fp16", "bf16")
PROFILES = ("default", "fast", "low-memory")  # resolved into switches by seas.profiles
OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class TrainConfig:
    """Stage 1: separation-and-sharing fine-tuning of U-Net and token embeddings."""

    base: str = "tiny"  # --base: diffusers folder, .safetensors/.ckpt file, hub id, or "tiny"
    base_config: str | None = None  # configs for a single-file --base (diffusers folder or hub id)
    resolution: int = 512
    batch_size: int = 2  # B anomaly + B normal samples per micro-batch (one U-Net call of 2B)
    grad_accum: int = 2
    steps: int | None = None  # optimizer updates; None -> 800 x number of types
    steps_per_type: int = 800
    lr_unet: float = 4e-6
    lr_text: float = 4e-5
    weight_decay: float = 0.01
    profile: str = "default"  # memory/speed profile the switches below were resolved from (seas.profiles)
    optimizer: str = "adamw"  # the reference uses 8-bit AdamW ("adamw8bit", needs bitsandbytes)
    mixed_precision: str = "no"  # reference: fp32
    half_frozen: bool = True  # under mixed precision: VAE and frozen text-encoder layers stored in half
    gradient_checkpointing: bool = False
    seed: int = 0
    # UA prompt
    tokens_per_type: int = 4
    normal_tokens: int = 1
    train_new_rows_only: bool = False  # reference: the whole token-embedding matrix trains
    # losses
    weight_an: float = 1.0
    weight_na: float = 1.0
    weight_da: float = 1.0  # applied to each resolution's L_DA term
    da_blocks: list[int] = field(default_factory=lambda: [1, 2])  # down blocks read by L_DA
    da_with_up_blocks: bool = False  # reference: down blocks only (its defect discards up blocks)
    attention_softmax: str = "spatial"  # reference: softmax over pixels; "token" as option
    attention_normalize: str = "joint"  # reference: joint over the anomaly half; "sample" option
    attention_eps: float = 1e-8  # the reference uses none (NaN on constant maps)
    binarize_masks: bool = False  # reference keeps the soft bilinear mask borders
    # checkpoints and logging
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10

    def __post_init__(self) -> None:
        positive = ("resolution", "batch_size", "grad_accum", "steps_per_type", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: must be at least 1")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"--mixed-precision {self.mixed_precision}: choose one of {', '.join(MIXED_PRECISION)}")
        check_profile(self.profile)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer}: choose one of {', '.join(OPTIMIZERS)}")
        if len(self.da_blocks) < 1:
            raise ConfigError("da_blocks: give at least one down-block index (reference: 1 2)")

    def total_steps(self, n_types: int) -> int:
        return self.steps if self.steps is not None else self.steps_per_type * n_types

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


TIMESTEP_RANGES = ("all", "low")


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile}: choose one of {', '.join(PROFILES)}")


@dataclass
class MaskConfig:
    """Stage 2: training the Refined Mask Prediction head with the generator frozen."""

    steps: int | None = None  # optimizer updates; None -> those of stage 1 (reference)
    batch_size: int = 2  # anomaly samples per micro-batch, plus as many normal (empty masks)
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    focal_gamma: float = 2.0
    # "all": t ~ U{0..T-1} (reference, defect 7: the head is used only at the last, low-noise
    # steps); "low": t within the noise levels of the last `mask_steps` of a `sample_steps` run
    timesteps: str = "all"
    sample_steps: int = 25
    mask_steps: int = 3
    profile: str = "default"  # memory/speed profile the precision switches were resolved from
    mixed_precision: str = "no"
    half_frozen: bool = True  # under mixed precision: the frozen generator stored in half
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "sample_steps", "mask_steps", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: must be at least 1")
        check_profile(self.profile)
        if self.timesteps not in TIMESTEP_RANGES:
            raise ConfigError(f"--timesteps {self.timesteps}: choose one of {', '.join(TIMESTEP_RANGES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"--mixed-precision {self.mixed_precision}: choose one of {', '.join(MIXED_PRECISION)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
