"""Stage 1: separation-and-sharing fine-tuning (spec sections 3 and 4), on accelerate.

One micro-batch = B anomaly + B normal samples in ONE U-Net call of 2B (the sharing). Per
sample an independent timestep t ~ U{0..T-1}; epsilon prediction.
    L = w_an L_an + w_da sum_r L_DA^r + w_na L_NA
U-Net (lr 4e-6) and the token-embedding matrix (lr 4e-5) train; VAE, text transformer layers,
final norm and position embeddings stay frozen. With ``--adapter lora`` (seas.model.adapter) LoRA
adapters on the U-Net's attention projections (lr_unet) and the UA tokens' embedding rows
(lr_text) train instead, everything else frozen.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

from seas.config import TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import dataset_folder
from seas.data.split import check_dataset, lost_defect_problems
from seas.data.training_set import Batch, TrainingSet, draw_batch, split_channels
from seas.files.checks import ProblemList, nested_problems, output_folder_problems
from seas.model.adapter import add_lora, adapter_tensors, lora_parameters, require_peft, train_token_rows
from seas.model.attention import AttentionCapture, da_levels
from seas.model.backbone import Backbone, BackboneError, load_backbone
from seas.model.losses import da_loss, diffusion_loss, mask_pyramid
from seas.model.prompts import PromptSpec, PromptTables, add_placeholder_tokens
from seas.run import SAVE_TORCH_DTYPES, Run, RunFolder
from seas.seeds import step_generator
from seas.training.checkpoints import check_stage_folder, resume_checkpoint
from seas.training.estimates import check_base, cpu_duration_note, resolution_problem, training_bytes
from seas.training.loop import run_updates
from seas.training.setup import autocast_dtype, make_accelerator, make_optimizer

STAGE = "generator"


def compute_losses(
    backbone: Backbone,
    unet,
    text_encoder,
    capture: AttentionCapture,
    prompts: PromptTables,
    batch: Batch,
    cfg: TrainConfig,
    inside_rule: str,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Every loss term of one micro-batch; ``total`` is their weighted sum."""
    device = backbone.vae.device
    vae_dtype = backbone.vae.dtype
    B = len(batch.anomaly_images)
    pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(device, vae_dtype)  # (2B, 3, R, R)
    with torch.no_grad():
        moments = backbone.vae.encode(pixels).latent_dist
        noise_for_latent = torch.randn(moments.mean.shape, generator=generator).to(device, vae_dtype)
        latents = (moments.mean + moments.std * noise_for_latent) * backbone.vae.config.scaling_factor
    latents = latents.float()
    noise = torch.randn(latents.shape, generator=generator).to(device)
    steps = backbone.scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (2 * B,), generator=generator).to(device)
    noisy = backbone.scheduler.add_noise(latents, noise, t)

    types = batch.anomaly_types
    input_ids = torch.cat([prompts.anomaly_ids[types], prompts.normal_ids.expand(B, -1)]).to(device)
    encoded = text_encoder(input_ids)[0]  # (2B, L, D)
    capture.store.target(torch.arange(B, device=device), prompts.columns[types].to(device))
    eps_pred = unet(noisy, t, encoded).sample  # (2B, 4, h, w)

    losses = {"an": diffusion_loss(eps_pred[:B], noise[:B]), "na": diffusion_loss(eps_pred[B:], noise[B:])}
    latent_size = tuple(latents.shape[-2:])
    levels = da_levels(backbone.unet, cfg.da_blocks, cfg.da_with_up_blocks)
    masks = mask_pyramid(batch.anomaly_masks.to(device), latent_size, list(levels))
    total = cfg.weight_an * losses["an"] + cfg.weight_na * losses["na"]
    for level, blocks in levels.items():
        maps = torch.stack([capture.store.block_mean(b) for b in blocks]).mean(dim=0)  # (B, hw, M+N)
        h, w = masks[level].shape[-2:]
        maps = maps.view(B, h, w, -1).permute(0, 3, 1, 2)  # (B, M+N, h, w)
        normal_map = maps[:, : prompts.n_normal].mean(dim=1)
        term = da_loss(maps[:, prompts.n_normal :], normal_map, masks[level], inside_rule,
                       cfg.attention_normalize, cfg.attention_eps)
        losses[f"da{h}"] = term
        total = total + cfg.weight_da * term
    losses["total"] = total
    return losses


def prepare_backbone(cfg: TrainConfig, types: list[str]) -> tuple[Backbone, PromptSpec, list[int]]:
    """Load the base, add the UA tokens, and set what trains (U-Net, token-embedding matrix; or
    LoRA adapters and the UA tokens' rows)."""
    backbone = load_backbone(cfg.base, cfg.base_config)
    backbone.check_resolution(cfg.resolution)
    spec = PromptSpec(types, cfg.tokens_per_type, cfg.normal_tokens)
    new_ids = add_placeholder_tokens(backbone.tokenizer, backbone.text_encoder, spec)
    set_trainable(backbone, cfg, new_ids)
    return backbone, spec, new_ids


def set_trainable(backbone: Backbone, cfg: TrainConfig, new_ids: list[int]) -> None:
    """Full fine-tuning: the U-Net and the token-embedding matrix train. LoRA: the adapters and
    the rows of ``new_ids`` (the UA tokens) train. VAE and the rest of the text encoder are frozen."""
    backbone.vae.requires_grad_(False)
    if cfg.adapter == "lora":
        add_lora(backbone.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
        train_token_rows(backbone.text_encoder, new_ids)
    else:
        backbone.text_encoder.requires_grad_(False)
        backbone.text_encoder.get_input_embeddings().weight.requires_grad_(True)
        backbone.unet.requires_grad_(True)
    if cfg.gradient_checkpointing:
        backbone.unet.enable_gradient_checkpointing()


def prepare_training(backbone: Backbone, cfg: TrainConfig, accelerator) -> tuple:
    """Precision, optimizer and device placement of a prepared backbone (``prepare_backbone``).

    Under mixed precision the trained weights (U-Net, token-embedding matrix) stay fp32 masters
    and accelerate autocasts the forward passes; with ``half_frozen`` the frozen parts (VAE, and
    the text encoder's layers after its token embedding) are stored in the autocast dtype, which
    halves their memory; with LoRA the whole base, U-Net included, is frozen and stored so, the
    adapters and UA rows keeping fp32 masters. Returns the prepared (unet, text_encoder, optimizer).
    """
    weight_dtype = autocast_dtype(cfg.mixed_precision)
    unet_trained, token_trained = trained_parameters(backbone, cfg)
    if cfg.half_frozen and weight_dtype != torch.float32:
        backbone.vae.to(weight_dtype)
        token_embedding = backbone.text_encoder.get_input_embeddings()
        backbone.text_encoder.to(weight_dtype)
        if cfg.adapter == "lora":  # the whole base is frozen: the U-Net is stored in half too
            backbone.unet.to(weight_dtype)
            for parameter in unet_trained:  # the adapters keep their fp32 masters
                parameter.data = parameter.data.float()
        else:
            # its output joins the half-precision layers in their dtype (CPU autocast leaves
            # layer_norm alone, so fp32 activations would meet half weights there)
            token_embedding.register_forward_hook(lambda module, args, output: output.to(weight_dtype))
        token_trained.data = token_trained.data.float()  # trained: keeps its fp32 master copy
    groups = [{"params": unet_trained, "lr": cfg.lr_unet}, {"params": [token_trained], "lr": cfg.lr_text}]
    backbone.vae.to(accelerator.device)
    optimizer = make_optimizer(cfg.optimizer, groups, cfg.weight_decay)
    return accelerator.prepare(backbone.unet, backbone.text_encoder, optimizer)


def trained_parameters(backbone: Backbone, cfg: TrainConfig) -> tuple[list, torch.nn.Parameter]:
    """What stage 1 updates, as (U-Net part, token-embedding part): the whole U-Net and the
    token-embedding matrix, or (LoRA) the adapters and the UA tokens' rows (TokenRows.rows)."""
    token_embedding = backbone.text_encoder.get_input_embeddings()
    if cfg.adapter == "lora":
        return lora_parameters(backbone.unet), token_embedding.rows
    return list(backbone.unet.parameters()), token_embedding.weight


def train_generator(data_cfg: DataConfig, cfg: TrainConfig, out: str | Path,
                    resume: str | None = None, overwrite: bool = False) -> Path:
    """Run stage 1 into ``out`` and export the generator; returns the run folder.

    Before the base is loaded, every input is checked and every problem reported at once: the
    base (and, when local, the resolution against it), the run folder, the dataset (its training
    images and masks decoded, no defect cut away whole by the fit), ``out`` against the dataset,
    and ``out``'s permissions and free space.
    """
    path = Path(out)
    config = {"train": cfg.to_dict(), "data": data_cfg.to_dict()}
    problems = ProblemList()
    with problems.collect():
        check_base(cfg.base)
    if cfg.adapter == "lora":
        with problems.collect():
            require_peft()
        problems.extend(adapter_base_problems(cfg))
    with problems.collect():
        check_stage_folder(path, STAGE, config, resume, overwrite)
    with problems.collect():  # a local base: the resolution before it is loaded
        problem = resolution_problem(cfg.base, cfg.resolution)
        if problem:
            raise BackboneError(problem)
    split, warnings = check_dataset(data_cfg, problems, decode="train")
    if split is not None:
        problems.extend(lost_defect_problems(split, data_cfg.fit, data_cfg.mask_rule, cfg.resolution))
    problems.extend(nested_problems(path, dataset_folder(data_cfg)))
    problems.extend(output_folder_problems(path, training_bytes(cfg.base)))
    problems.raise_any()
    note = cpu_duration_note(cfg.base, cfg.resolution, cfg.batch_size, cfg.grad_accum,
                             cfg.total_steps(len(split.types)))
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr, flush=True)
    backbone, spec, new_ids = prepare_backbone(cfg, split.types)
    # the record keeps the resolved channels ("auto" -> "grey" or "rgb"): readers need not re-detect
    data_cfg = dataclasses.replace(data_cfg, channels=split_channels(data_cfg.channels, split))
    run = Run(path=path, base=backbone.source, data=data_cfg, train=cfg, prompt=spec, split=split)
    accelerator = make_accelerator(path, cfg.mixed_precision)
    RunFolder(path).start_stage(accelerator, STAGE, config, overwrite)
    if accelerator.is_main_process:
        run.write_split()

    for message in warnings:
        accelerator.print(f"warning: {message}")
    prompts = PromptTables.build(backbone.tokenizer, spec)
    data = TrainingSet.from_split(split, cfg.resolution, data_cfg.mask_rule, cfg.binarize_masks,
                                  fit=data_cfg.fit, channels=data_cfg.channels)
    blocks = sorted({b for group in da_levels(backbone.unet, cfg.da_blocks, cfg.da_with_up_blocks).values()
                     for b in group})
    capture = AttentionCapture(backbone.unet, blocks, cfg.attention_softmax)

    unet, text_encoder, optimizer = prepare_training(backbone, cfg, accelerator)
    frozen_rows = None  # (LoRA: TokenRows trains the new rows only by construction)
    if cfg.train_new_rows_only and cfg.adapter == "full":
        embeddings = backbone.text_encoder.get_input_embeddings().weight
        frozen_rows = _frozen_rows(embeddings, new_ids)

    total_steps = cfg.total_steps(len(split.types))
    start = resume_checkpoint(accelerator, path, STAGE, resume) if resume else 0
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("seas-generator")
    unet.train()
    text_encoder.train()

    def micro_losses(micro: int) -> dict:
        batch = draw_batch(data, cfg.seed, micro, cfg.batch_size, data_cfg.augment,
                           accelerator.process_index, accelerator.num_processes)
        generator = step_generator(cfg.seed, micro, accelerator.process_index)
        return compute_losses(backbone, unet, text_encoder, capture, prompts, batch, cfg, data_cfg.inside_rule, generator)

    run_updates(
        accelerator, run=path, stage=STAGE, models=[unet, text_encoder], optimizer=optimizer,
        start=start, total_steps=total_steps, grad_accum=cfg.grad_accum, micro_losses=micro_losses,
        after_update=(lambda: _restore_rows(embeddings, *frozen_rows)) if frozen_rows else None,
        checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
        log_every=cfg.log_every, desc="stage 1 (generator)",
    )
    capture.remove()
    if accelerator.is_main_process:
        run.save_generator(generator_parts(backbone, accelerator.unwrap_model(unet),
                                           accelerator.unwrap_model(text_encoder), cfg))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it also ends the process group
    return path


def generator_parts(backbone: Backbone, unet, text_encoder, cfg: TrainConfig) -> dict:
    """What :meth:`seas.run.Run.save_generator` writes: the trained U-Net and text encoder (fp32
    like the base, also where half_frozen stored its frozen layers in half), or the adapter."""
    parts = {"tokenizer": backbone.tokenizer, "scheduler": backbone.scheduler}
    if cfg.adapter == "lora":
        return {**parts, "adapter": adapter_tensors(unet, text_encoder.get_input_embeddings(),
                                                    SAVE_TORCH_DTYPES[cfg.save_dtype])}
    return {**parts, "unet": unet, "text_encoder": text_encoder.to(torch.float32)}


def adapter_base_problems(cfg: TrainConfig) -> list[str]:
    """An adapter run refers to its base by path and SHA-256: a hub id has no stable local
    files to refer to, unless the run copies them (--self-contained)."""
    from seas.model.backbone import TINY
    from seas.weights import SHIPPED_BASES

    base = cfg.base
    if cfg.self_contained or base is None or base in SHIPPED_BASES or base == TINY or Path(base).expanduser().exists():
        return []
    return [f"--base {base}: --adapter lora refers to its base by local path and SHA-256; give a local base "
            f"folder or file, or add --self-contained to copy the base's weights into the run"]


def _frozen_rows(embeddings: torch.Tensor, new_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones(len(embeddings), dtype=torch.bool)
    keep[new_ids] = False
    return keep.to(embeddings.device), embeddings.detach()[keep.to(embeddings.device)].clone()


def _restore_rows(embeddings: torch.Tensor, keep: torch.Tensor, values: torch.Tensor) -> None:
    """Put back every row but the new tokens' (option train_new_rows_only)."""
    with torch.no_grad():
        embeddings[keep] = values
