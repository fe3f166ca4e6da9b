"""Settings of the evaluation: one downstream segmenter's training (:class:`DownstreamConfig`) and
``seas evaluate`` as a whole (:class:`EvalConfig`, whose fields are the command's options).

Plain configs, no torch: ``seas --help`` and the other configs read them without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from seas.errors import ConfigError
from seas.fields import Config, option

SEGMENTERS = ("bisenetv2", "unet")  # the networks seas.evaluation.segmenters builds
LOSSES = ("ce_dice", "focal_dice")


@dataclass
class DownstreamConfig(Config):
    """One downstream training run: a segmenter trained from scratch on a set of pairs, then
    tested (:mod:`seas.evaluation.downstream`)."""

    section = "downstream"

    segmenter: str = option("bisenetv2", help="segmentation network", choices=SEGMENTERS)
    size: int = option(256, help="square training and test resolution (paper: 256)", minimum=16)
    steps: int = option(2000, help="optimiser steps", minimum=1)
    batch_size: int = option(8, help="images per step (drawn epoch-wise without replacement)", minimum=1)
    lr: float = option(1e-3, help="AdamW peak learning rate, decayed polynomially (power 0.9) to 0", minimum=0.0)
    weight_decay: float = option(1e-2, help="AdamW weight decay", minimum=0.0)
    loss: str = option("ce_dice", help="cross-entropy or focal loss (gamma 2), each plus the soft Dice loss of the "
                       "anomaly class", choices=LOSSES)
    aux_weight: float = option(0.4, help="weight of BiSeNet V2's auxiliary heads (0 disables them)", minimum=0.0)
    width: float = option(1.0, help="channel multiplier of the segmenter (positive)")
    seed: int = option(0, help="seeds the weights, the batch order and the augmentation")
    prior: float | None = option(0.01, help="anomaly probability the untrained classifier predicts (its anomaly "
                                 "logit's bias log(p / (1 - p)), RetinaNet's prior); None: PyTorch's default "
                                 "initialisation, which let some seeds settle on all-normal", minimum=1e-6,
                                 maximum=0.5)
    device: str = option("auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    eval_batch_size: int = option(16, help="images per forward pass at prediction", minimum=1)
    progress: bool = option(True, help="a tqdm bar with the loss", cli=False)

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"--width {self.width}: must be positive")


@dataclass
class EvalConfig(Config):
    """Settings of ``seas evaluate`` (section ``evaluate``); the command's options are generated
    from these fields (:meth:`seas.fields.Config.add_arguments`)."""

    section = "evaluate"

    segmenter: str = option("bisenetv2", help="downstream segmenter network", choices=SEGMENTERS)
    size: int = option(256, help="training and test resolution of the segmenters (paper: 256)", minimum=16)
    steps: int = option(2000, help="optimizer updates of each segmenter (one per training set)", minimum=1)
    batch_size: int = option(8, help="images per optimizer update", minimum=1)
    # --width names a model's channel count elsewhere (seas backbone, bootstrap, pretrain); this is a
    # multiplier of the segmenter's, named as in seas demo (seas evaluate --width: a deprecated alias)
    width: float = option(1.0, help="channel multiplier of the segmenter (positive)", flag="--seg-width")
    seed: int = option(0, help="seed of the segmenters, their batches and the baseline synthesis")
    prior: float | None = option(0.01, help="anomaly probability each untrained segmenter predicts (the bias "
                                 "of its classifier; RetinaNet's prior): without it (None, in a config file) "
                                 "a narrow segmenter settled on all-normal on some seeds", minimum=1e-6, maximum=0.5,
                                 flag="--seg-prior")
    device: str = option("auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    baselines: bool = option(True, help="also train on the cut-paste and Perlin training sets "
                             "(--no-baselines skips them)")
    quality: bool | None = option(None, help="require (--quality) or skip (--no-quality) the quality scores; "
                                  "default: IC-LPIPS when the LPIPS weights are found, IS and KID when the "
                                  "Inception-v3 weights are found, and metrics.json says why a score is missing")
    weights_dir: str | None = option(None, help="first folder searched for the quality networks' weight files")
    quality_size: int = option(256, help="resolution of the quality scores (protocol: 256)", minimum=16)
    max_generated: int | None = option(None, help="use at most this many generated images per kind "
                                       "(default: all)", minimum=1)
    generated_normals: bool = option(False, help="also add the generated normal images to real+generated "
                                     "(protocol, spec section 7: generated anomaly pairs + the real training "
                                     "third + the real normal images, so the default leaves them out)")
    reuse_segmenter: bool = option(True, help="keep the real-only segmenter in <run>/segmenters and reuse it when "
                                   "the same run is evaluated again with the same settings and real data (it does "
                                   "not depend on the generated folder); --no-reuse-segmenter trains it afresh")
    judge_steps: int = option(300, help="updates of the type classifier that judges the generated pairs "
                              "(trained on the real training anomalies; seeded with --seed)", minimum=1)
    progress: bool = option(True, help="tqdm bars while training", cli=False)

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"--seg-width {self.width}: must be positive")

    def downstream(self) -> DownstreamConfig:
        return DownstreamConfig(segmenter=self.segmenter, size=self.size, steps=self.steps,
                                batch_size=self.batch_size, width=self.width, seed=self.seed, prior=self.prior,
                                device=self.device, progress=self.progress)
