"""A finished stage-1 run folder and how to load it back.

Layout (diffusers format, so standard tools read it too):
    unet/  text_encoder/  tokenizer/  scheduler/      the fine-tuned generator
    seas_run.json    metadata: base model and its VAE location, types in order, the
                     type -> tokens map, prompt template, resolved configs; written last,
                     so its presence means stage 1 finished
    split.json       the few-shot split (every file used for training and testing)
    mask_head/       the RMP head, once stage 2 has finished (``mask_head.json`` marks it)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .backbone import Backbone, load_vae
from .errors import RunError
from .prompts import PromptSpec
from .training.common import read_json

RUN_MARKER = "seas_run.json"
RUN_FORMAT = "seas-run-1"
MASK_DIR = "mask_head"
MASK_MARKER = "mask_head.json"  # written last by stage 2: the mask head is complete


@dataclass
class LoadedRun:
    path: Path
    meta: dict
    backbone: Backbone  # fine-tuned unet, text encoder, tokenizer; base VAE; DDPM scheduler
    prompts: PromptSpec

    @property
    def types(self) -> list[str]:
        return self.prompts.types


def read_run_meta(run: str | Path) -> dict:
    """The metadata of a finished stage-1 run; a clear error for anything else."""
    run = Path(run)
    marker = run / RUN_MARKER
    if not run.is_dir():
        raise RunError(f"--run {run}: no such folder; give the --out folder of a finished 'seas train'")
    if not marker.is_file():
        raise RunError(f"--run {run}: not a finished SeaS run (no {RUN_MARKER}); finish 'seas train --out {run}' first")
    meta = read_json(marker)
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{marker}: unknown run format {meta.get('format')!r}; it was written by another tool or version")
    return meta


def load_run(run: str | Path, torch_dtype: torch.dtype = torch.float32) -> LoadedRun:
    """Load the fine-tuned generator of a finished run (VAE from the recorded base)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    run = Path(run)
    meta = read_run_meta(run)
    backbone = Backbone(
        tokenizer=CLIPTokenizer.from_pretrained(run / "tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(run / "text_encoder", dtype=torch_dtype),
        unet=UNet2DConditionModel.from_pretrained(run / "unet", torch_dtype=torch_dtype),
        vae=load_vae(meta["base"], meta["config"].get("base_config"), torch_dtype),
        scheduler=DDPMScheduler.from_pretrained(run / "scheduler"),
        source=str(run),
    )
    return LoadedRun(run, meta, backbone, PromptSpec(**meta["prompt"]))


def load_mask_head(run: str | Path, torch_dtype: torch.dtype = torch.float32):
    """The RMP head of a run whose stage 2 finished, in eval mode (BatchNorm statistics fixed)."""
    from .mask_head import RefinedMaskPredictor

    run = Path(run)
    if not (run / MASK_MARKER).is_file():
        raise RunError(f"--run {run}: has no trained mask head; run 'seas train-mask --run {run}' first")
    head = RefinedMaskPredictor.from_pretrained(run / MASK_DIR, torch_dtype=torch_dtype)
    return head.eval()
