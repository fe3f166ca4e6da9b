"""Configs of the two training stages and of generation, and the run-configuration file.

Defaults follow the authors' release (spec sections 4-6) except where the spec asks for a fix;
each such field says what the reference does, and ``--reference`` (:data:`REFERENCE`) sets every
one of them back to the release's behaviour at once.

Where a value comes from, last wins: the field's default < ``--profile`` (memory and speed
switches) < ``--reference`` < the run-configuration file (``--config run.yaml``, sections
``train:``, ``mask:``, ``generate:``) < options given on the command line. The resolved values
are written into the run (``seas_run.json``, ``mask_head.json``, ``generation.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seas.errors import ConfigError
from seas.fields import Config, option, read_yaml_mapping

MIXED_PRECISION = ("no", "fp16", "bf16")
PROFILES = ("default", "fast", "low-memory")  # resolved into switches by seas.profiles
OPTIMIZERS = ("adamw", "adamw8bit")
SOFTMAX_AXES = ("spatial", "token")
NORMALIZE_MODES = ("joint", "sample")
TIMESTEP_RANGES = ("all", "low")
MASK_TARGETS = ("reference", "soft")
COARSE_TARGETS = ("bilinear", "maxpool")
NORMAL_PATHS = ("coarse", "refined")
BATCHNORM_MODES = ("eval", "batch")
PLACEMENTS = ("free", "real-masks", "masks")
QC_MODES = ("off", "score", "filter")
BACKGROUNDS = ("reference", "round-trip")
AUGMENT_PLACEMENTS = ("masks", "real-masks")
DTYPES = ("float32", "float16", "bfloat16")
SAVE_DTYPES = ("fp32", "fp16", "bf16")
ADAPTERS = ("full", "lora")


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile}: choose one of {', '.join(PROFILES)}")


@dataclass
class TrainConfig(Config):
    """Stage 1: separation-and-sharing fine-tuning of U-Net and token embeddings."""

    section = "train"

    base: str | None = option(None, help="base SD 1.x model: diffusers folder, .safetensors/.ckpt file, hub id, "
                              "'seas-tiny' (the small pretrained base shipped with seas) or 'tiny' (random, for tests)")
    base_config: str | None = option(None, help="for a single-file --base: a diffusers folder (or hub id) "
                                     "holding its configs")
    # no fixed lower bound: what a size must be a multiple of depends on the base (checked with it)
    resolution: int = option(512, help="training image size, a multiple of the base's size multiple (VAE factor x "
                             "U-Net down-sampling: 64 for SD 1.x; 'seas backbone --base B' prints it)")
    batch_size: int = option(2, help="anomaly samples per micro-batch, plus as many normal ones", minimum=1)
    grad_accum: int = option(2, help="micro-batches per optimizer update", minimum=1)
    steps: int | None = option(None, help="optimizer updates (default: steps_per_type x number of types)", minimum=1)
    steps_per_type: int = option(800, help="optimizer updates per anomaly type when --steps is not given", minimum=1)
    lr_unet: float = option(4e-6, help="U-Net learning rate", minimum=0.0)
    lr_text: float = option(4e-5, help="token-embedding learning rate", minimum=0.0)
    weight_decay: float = option(0.01, help="AdamW weight decay", minimum=0.0)
    profile: str = option("default", help="memory/speed profile the precision switches were resolved from",
                          choices=PROFILES, cli=False)
    optimizer: str = option("adamw", help="adamw, or adamw8bit (the reference's; needs bitsandbytes)",
                            choices=OPTIMIZERS)
    mixed_precision: str = option("no", help="autocast precision; trained weights stay fp32 (reference: no)",
                                  choices=MIXED_PRECISION)
    half_frozen: bool = option(True, help="under mixed precision, store the frozen parts (VAE, text-encoder "
                               "layers) in half precision")
    gradient_checkpointing: bool = option(False, help="recompute U-Net activations in backward: less memory, "
                                          "each block's forward runs twice")
    seed: int = option(0, help="seed of every random draw")
    tokens_per_type: int = option(4, help="anomaly tokens per type (UA prompt)", minimum=1)
    normal_tokens: int = option(1, help="normal tokens (UA prompt)", minimum=1)
    train_new_rows_only: bool = option(False, help="train only the new token rows (reference: the whole "
                                       "token-embedding matrix)")
    weight_an: float = option(1.0, help="weight of L_an", minimum=0.0)
    weight_na: float = option(1.0, help="weight of L_NA", minimum=0.0)
    weight_da: float = option(1.0, help="weight of each resolution's L_DA term", minimum=0.0)
    da_blocks: list[int] = option(help="U-Net down blocks whose cross-attention maps L_DA reads",
                                  factory=lambda: [1, 2])
    da_with_up_blocks: bool = option(False, help="L_DA maps: mean of the down block and the up block at the "
                                     "same size (reference: down blocks only)")
    attention_softmax: str = option("spatial", help="softmax axis of the L_DA maps (reference: spatial)",
                                    choices=SOFTMAX_AXES)
    attention_normalize: str = option("joint", help="min-max of the L_DA maps: jointly over the anomaly half "
                                      "(reference) or per sample", choices=NORMALIZE_MODES)
    attention_eps: float = option(1e-8, help="epsilon of the min-max division (reference: 0, NaN on constant "
                                  "maps)", minimum=0.0)
    binarize_masks: bool = option(False, help="threshold resized masks at 0.5 (reference keeps soft borders)")
    adapter: str = option("full", help="what trains in the U-Net: full (every weight: the paper) or lora "
                          "(low-rank adapters on the attention projections, needs peft; the UA tokens' embedding "
                          "rows train as in full fine-tuning; the run stores the adapter, docs/TRAINING.md)",
                          choices=ADAPTERS)
    lora_rank: int = option(16, help="--adapter lora: rank of the adapters", minimum=1)
    lora_alpha: float | None = option(None, help="--adapter lora: scale numerator, scale = alpha / rank (default: "
                                      "the rank, scale 1)", minimum=0.0)
    lora_targets: list[str] = option(help="--adapter lora: U-Net modules adapted (name endings; the default: every "
                                     "attention projection, as diffusers' LoRA scripts)",
                                     factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    self_contained: bool = option(False, help="--adapter lora: copy the base's weights into the run (default: the "
                                  "run refers to the base by its path and SHA-256, checked on load)")
    save_dtype: str = option("fp32", help="precision of the saved generator's weights: fp32 (the reference), "
                             "fp16 or bf16 (half the size on disk; generation loads them as they are or casts)",
                             choices=SAVE_DTYPES)
    checkpoint_every: int = option(500, help="optimizer updates between checkpoints", minimum=1)
    keep_checkpoints: int = option(2, help="checkpoints kept (oldest removed first)", minimum=1)
    log_every: int = option(10, help="optimizer updates between TensorBoard log entries", minimum=1)

    def validate(self) -> None:
        if self.resolution <= 0:
            raise ConfigError(f"--resolution {self.resolution}: must be a positive multiple of the base's size "
                              "multiple (64 for SD 1.x; 'seas backbone --base B' prints it), e.g. 512")
        if not self.da_blocks:
            raise ConfigError("train.da_blocks: give at least one down-block index (reference: 1 2)")
        if not self.lora_targets:
            raise ConfigError("train.lora_targets: give at least one module name ending (default: to_q to_k to_v "
                              "to_out.0)")
        if self.adapter == "full" and self.self_contained:
            raise ConfigError("--self-contained: only for --adapter lora (a fully fine-tuned run holds every "
                              "weight already)")

    def total_steps(self, n_types: int) -> int:
        return self.steps if self.steps is not None else self.steps_per_type * n_types


@dataclass
class MaskConfig(Config):
    """Stage 2: training the Refined Mask Prediction head with the generator frozen."""

    section = "mask"

    steps: int | None = option(None, help="optimizer updates (default: as many as stage 1, the reference)",
                               minimum=1)
    batch_size: int = option(2, help="anomaly samples per micro-batch, plus as many normal (empty masks)",
                             minimum=1)
    grad_accum: int = option(2, help="micro-batches per optimizer update", minimum=1)
    lr: float = option(5e-4, help="AdamW learning rate", minimum=0.0)
    weight_decay: float = option(0.01, help="AdamW weight decay", minimum=0.0)
    optimizer: str = option("adamw", help="adamw, or adamw8bit (the reference's; needs bitsandbytes)",
                            choices=OPTIMIZERS)
    focal_gamma: float = option(2.0, help="focal-loss gamma", minimum=0.0)
    timesteps: str = option("all", help="training noise levels: all of 0..T-1 (reference) or low: those of the "
                            "last --low-noise-last steps of a --low-noise-of-steps sampler", choices=TIMESTEP_RANGES)
    low_noise_of_steps: int = option(25, help="sampler steps that define the low-noise range", minimum=1)
    low_noise_last: int = option(3, help="last sampler steps of the low-noise range", minimum=1)
    targets: str = option("reference", help="loss targets: reference (class = target truncated to an integer, "
                          "so soft borders count as normal) or soft (soft focal loss on the soft mask)",
                          choices=MASK_TARGETS)
    coarse_target: str = option("bilinear", help="coarse-output target: bilinear resize (reference) or max-pool "
                                "(a defect smaller than a cell still counts)", choices=COARSE_TARGETS)
    normal_path: str = option("coarse", help="normal samples in training: coarse path only, resized (reference), "
                              "or through the refinement chain", choices=NORMAL_PATHS)
    profile: str = option("default", help="memory/speed profile the precision switches were resolved from",
                          choices=PROFILES, cli=False)
    mixed_precision: str = option("no", help="autocast precision (reference: no)", choices=MIXED_PRECISION)
    half_frozen: bool = option(True, help="under mixed precision, store the frozen generator in half precision")
    seed: int = option(0, help="seed of the head's weights and every draw")
    checkpoint_every: int = option(500, help="optimizer updates between checkpoints", minimum=1)
    keep_checkpoints: int = option(2, help="checkpoints kept", minimum=1)
    log_every: int = option(10, help="optimizer updates between TensorBoard log entries", minimum=1)


@dataclass
class GenerationConfig(Config):
    """``seas generate``: what to sample and how (spec section 6)."""

    section = "generate"

    num: int = option(1000, help="outputs per kind", minimum=1)
    seed: int = option(0, help="image i uses seed + i")
    batch_size: int = option(4, help="images per sampler call; outputs do not depend on it", minimum=1)
    # the key stays "steps" (config files, generation.json); the option says what it counts, so that
    # --steps means optimizer updates in every command (seas generate --steps: a deprecated alias)
    steps: int = option(25, help="DPM-Solver++ sampler steps per image", minimum=1, flag="--sample-steps")
    guidance: float | None = option(None, help="classifier-free guidance scale; <= 1 turns it off (default: the "
                                    "run's dataset preset: 8 MVTec AD, 2 VisA, 5 MVTec 3D AD)")
    signal: float = option(0.0979, help="weight of the normal image's latent in the start latent (the reference's "
                           "recipe)")
    noise: float = option(0.99984, help="weight of the noise in the start latent (the reference's recipe)")
    reference_stats: bool = option(False, help="before the image decode, give each output latent the per-channel "
                                   "mean and standard deviation of the latent of the normal image it started from (a "
                                   "fix for a base that loses the product's colour on the way from an almost pure-noise "
                                   "start; the masks do not change; off: the reference)")
    reference_images: int | None = option(None, help="normal training images cycled as start latents (default: "
                                          "all; the reference: the first 10)", minimum=1)
    mask_threshold: float = option(0.2, help="binary mask = mean anomaly probability > this", minimum=0.0,
                                   maximum=1.0)
    mask_steps: int = option(3, help="last denoising steps whose mask probabilities are averaged", minimum=1)
    mask_batchnorm: str = option("eval", help="mask head BatchNorm at generation: eval (running statistics) or "
                                 "batch (the reference: statistics of the generation batch, so a mask depends on "
                                 "the other images of its batch)", choices=BATCHNORM_MODES)
    placement: str = option("free", help="where defects go: free (SeaS as published: the sampler redraws the "
                            "whole image), real-masks (a moved real training mask of the type on the product) or "
                            "masks (the files of --masks); outside the region the reference normal image is kept",
                            choices=PLACEMENTS)
    masks: str | None = option(None, help="--placement masks: folder of mask images (white = defect), image i "
                               "takes file i mod n (sorted by name), resized to the run's resolution")
    region_dilation: int = option(1, help="latent cells the placed region grows by before blending (the defect "
                                  "may spill over its mask a little)", minimum=0)
    background: str = option("reference", help="placed defects: the image kept outside the region, the "
                             "reference normal image itself or its VAE round trip", choices=BACKGROUNDS)
    qc: str = option("off", help="quality control: off, score (write each pair's scores into the manifest) or "
                     "filter (also reject pairs outside thresholds learned from the real training pairs and "
                     "draw new seeds until --num are accepted)", choices=QC_MODES)
    qc_attempts: int = option(4, help="--qc filter: at most this many candidates per wanted output", minimum=1)

    def validate(self) -> None:
        if self.masks is not None and self.placement != "masks":
            raise ConfigError(f"--masks {self.masks}: is read only with --placement masks (the placement is "
                              f"{self.placement}); add --placement masks or leave out --masks")


@dataclass
class AugmentConfig(Config):
    """``seas augment``: which defects go onto the user's images, and where (the sampler's own
    options are :class:`GenerationConfig`'s)."""

    section = "augment"

    type: str = option("", help="the anomaly type to draw, or several joined by commas (scratch,hole): one "
                       "defect of each type per image, each in its own region")
    num_per_image: int = option(1, help="augmented copies of every input image (copy k of image j has index "
                                "j x N + k and seed --seed + index)", minimum=1)
    placement: str = option("masks", help="where the defects go: masks (the files of --masks, one per input "
                            "image and type) or real-masks (a moved real training mask of each type, regions "
                            "of several types never overlapping)", choices=AUGMENT_PLACEMENTS)
    masks: str | None = option(None, help="--placement masks: a folder of masks named like the input images "
                               "(white = defect); with several types, one subfolder per type")

    @property
    def types(self) -> list[str]:
        """The types of ``--type``, in order (``"scratch, hole"`` -> ``["scratch", "hole"]``)."""
        return [name.strip() for name in self.type.split(",") if name.strip()]

    def validate(self) -> None:
        if self.masks is not None and self.placement != "masks":
            raise ConfigError(f"--masks {self.masks}: is read only with --placement masks (the placement is "
                              f"{self.placement}); leave out --masks or --placement real-masks")


@dataclass
class GenerationSwitches(Config):
    """How generation spends memory (docs/GENERATION.md): ``--profile`` chooses them, an option
    given explicitly wins. They change float rounding, hence the bytes of the outputs, so a
    generated folder resumes only with the same switches."""

    section = "memory"

    profile: str = option("default", help="the profile these switches were chosen by (a record)", choices=PROFILES,
                          cli=False)
    dtype: str = option("float32", help="precision of the weights and activations (the profile's: fp32; half "
                        "precision with --profile low-memory, and fast on a GPU)", choices=DTYPES)
    vae_slicing: bool = option(False, help="decode, and run the mask head, one image at a time")
    vae_tiling: bool = option(False, help="decode the output images in tiles when larger than the VAE's tile size; "
                              "decodes the mask head reads are never tiled")
    attention_slicing: bool = option(False, help="U-Net attention computed in slices of heads (off in every profile)")

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


# Every behaviour of the authors' release that differs from our defaults (spec sections 4-8).
# Fields the reference shares with our defaults (spatial softmax, joint normalisation, down
# blocks only, soft masks, all timesteps, reference targets, the start-latent recipe) are
# listed too, so that --reference pins them whatever a profile or file said before it.
REFERENCE = {
    "train": dict(attention_eps=0.0, attention_normalize="joint", attention_softmax="spatial",
                  da_with_up_blocks=False, binarize_masks=False, train_new_rows_only=False,
                  optimizer="adamw8bit", mixed_precision="no"),
    "mask": dict(optimizer="adamw8bit", mixed_precision="no", timesteps="all", targets="reference",
                 coarse_target="bilinear", normal_path="coarse"),
    "generate": dict(mask_batchnorm="batch", signal=0.0979, noise=0.99984, reference_images=10,
                     reference_stats=False),
    # generation's memory switches: the reference ran fp16 on its GPU, a speed choice that
    # --dtype float16 reproduces; nothing of its behaviour depends on them
    "memory": {},
    # the dataset: shorter side resized and centre-cropped, RGB (spec section 2)
    "data": dict(fit="crop", channels="rgb"),
    # seas augment is not in the authors' release
    "augment": {},
}


def section_configs() -> dict:
    """The config class of each section of a run-configuration file."""
    from seas.data.config import DataConfig

    return {"train": TrainConfig, "mask": MaskConfig, "generate": GenerationConfig, "memory": GenerationSwitches,
            "data": DataConfig, "augment": AugmentConfig}


def read_config_file(path: str | Path, section: str) -> dict:
    """The ``section`` mapping (``train``, ``mask``, ``generate``, ``memory``, ``data`` or ``augment``) of a run-configuration
    YAML file. The whole file is checked first, whichever section the command reads: an unknown
    section, an unknown key or a bad value anywhere is refused in one line naming it, so that a
    typo in ``generate:`` stops ``seas train`` at once, and a bad value counts even where an
    option given on the command line overrides it."""
    path = Path(path)
    label = f"--config {path}"
    values = read_yaml_mapping(path, label, "sections train:, mask:, generate:, memory:, data:, augment:")
    unknown = sorted(set(values) - set(REFERENCE))
    if unknown:
        raise ConfigError(f"{label}: unknown section {unknown[0]}; sections: {', '.join(REFERENCE)}")
    for name, cls in section_configs().items():
        if values.get(name) is not None:
            cls.check_values(values[name], label)
    return values.get(section) or {}
