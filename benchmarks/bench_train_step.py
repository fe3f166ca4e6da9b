"""One stage-1 optimizer step, three ways, on the same SD-1.x-shaped model and batch.

    (a) plain diffusion fine-tuning: MSE on all 2B samples, fused attention everywhere
    (b) SeaS: L_an + L_DA^r + L_NA, maps of the needed token columns from the capture processor
    (c) the reference's way of getting the maps: every cross-attention layer materialises its
        full (batch, heads, HW, 77) probability matrix and keeps the head-mean on the CPU;
        L_DA is computed from the down-block maps taken from there

Each variant is timed as loss + backward (what differs between them); the optimizer update,
identical for all three, is timed once on its own and added to give seconds per step. Prints
both, peak memory, and the ratios b/a (target <= 1.10) and c/b, all from one run. Random
weights (no download). CPU default: 128 px; on a GPU use --resolution 512.

    python -m benchmarks.bench_train_step [--resolution 128] [--batch-size 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util

import torch

from benchmarks.common import ReferenceLosses, gib, measure, sd15_components
from seas.config import TrainConfig
from seas.data.training_set import Batch
from seas.model.attention import AttentionCapture, da_levels
from seas.model.backbone import Backbone
from seas.model.losses import diffusion_loss
from seas.model.prompts import PromptSpec, add_placeholder_tokens
from seas.seeds import step_generator
from seas.training.setup import make_optimizer
from seas.training.stage1 import PromptTables, compute_losses


def make_batch(batch_size: int, resolution: int, n_types: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(batch_size, 1, resolution, resolution)
    masks[:, :, resolution // 4 : resolution // 2, resolution // 3 : resolution // 2] = 1.0
    return Batch(
        anomaly_images=torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1,
        anomaly_masks=masks,
        anomaly_types=torch.arange(batch_size) % n_types,
        normal_images=torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2, help="B anomaly + B normal samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    parser.add_argument("--optimizer", default="adamw8bit" if has_bnb else "adamw", choices=["adamw", "adamw8bit"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)

    types = ["a", "b", "c"]
    parts = sd15_components()
    spec = PromptSpec(types)
    add_placeholder_tokens(parts["tokenizer"], parts["text_encoder"], spec)
    bb = Backbone(source="sd15-shaped random", **parts)
    bb.vae.requires_grad_(False).to(device)
    bb.text_encoder.requires_grad_(False).to(device)
    embeddings = bb.text_encoder.get_input_embeddings().weight.requires_grad_(True)
    bb.unet.to(device).train()
    if args.gradient_checkpointing:
        bb.unet.enable_gradient_checkpointing()
    cfg = TrainConfig(resolution=args.resolution, batch_size=args.batch_size)
    prompts = PromptTables.build(bb.tokenizer, spec)
    optimizer = make_optimizer(args.optimizer, [
        {"params": list(bb.unet.parameters()), "lr": cfg.lr_unet},
        {"params": [embeddings], "lr": cfg.lr_text},
    ], cfg.weight_decay)
    batch = make_batch(args.batch_size, args.resolution, len(types))
    B = args.batch_size

    def update(loss: torch.Tensor) -> None:
        loss.backward()
        optimizer.zero_grad(set_to_none=True)

    def optimizer_step() -> None:
        for p in optimizer.param_groups[0]["params"] + optimizer.param_groups[1]["params"]:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def predict_noise() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One U-Net call on the 2B noised latents: (prediction, true noise, latents)."""
        with torch.no_grad():
            pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(device)
            latents = bb.vae.encode(pixels).latent_dist.sample(step_generator(0, 0)) * bb.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (2 * B,), device=device)
        ids = torch.cat([prompts.anomaly_ids[batch.anomaly_types], prompts.normal_ids.expand(B, -1)]).to(device)
        return bb.unet(bb.scheduler.add_noise(latents, noise, t), t, bb.text_encoder(ids)[0]).sample, noise, latents

    def plain() -> None:
        capture.store.clear()  # a capture installed but recording nothing = the fused path only
        pred, noise, _ = predict_noise()
        update(diffusion_loss(pred, noise))

    def seas() -> None:
        losses = compute_losses(bb, bb.unet, bb.text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, 0))
        update(losses["total"])

    def reference() -> None:
        update(reference_losses(bb, bb.unet, bb.text_encoder, prompts, batch, step_generator(0, 0))["total"])

    results = {}
    levels = da_levels(bb.unet, cfg.da_blocks, cfg.da_with_up_blocks)
    capture = AttentionCapture(bb.unet, sorted({b for v in levels.values() for b in v}))
    results["a"] = measure(plain, device, args.repeats)
    results["b"] = measure(seas, device, args.repeats)
    capture.remove()
    reference_losses = ReferenceLosses(bb.unet)
    results["c"] = measure(reference, device, args.repeats)
    step = measure(optimizer_step, device, args.repeats)

    labels = {"a": "plain fine-tuning", "b": "SeaS (capture processor)", "c": "reference maps (all layers, CPU)"}
    print(f"device {device}  resolution {args.resolution}  batch {B}+{B}  optimizer {args.optimizer}  "
          f"U-Net {sum(p.numel() for p in bb.unet.parameters()) / 1e6:.0f} M params")
    print(f"optimizer update alone: {step.seconds:.3f} s, peak {gib(step.peak_bytes)}")
    print(f"{'variant':<36}{'loss+backward s':>16}{'s/step':>10}{'peak mem':>12}")
    for key, label in labels.items():
        m = results[key]
        print(f"({key}) {label:<32}{m.seconds:>16.3f}{m.seconds + step.seconds:>10.3f}{gib(m.peak_bytes):>12}")
    a, b, c = (results[k].seconds for k in "abc")
    print(f"b/a = {b / a:.3f} loss+backward, {(b + step.seconds) / (a + step.seconds):.3f} per step   (target <= 1.10)")
    print(f"c/b = {c / b:.3f} loss+backward, {(c + step.seconds) / (b + step.seconds):.3f} per step")


if __name__ == "__main__":
    main()
