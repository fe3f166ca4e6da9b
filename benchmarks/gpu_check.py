"""The GPU check: one script, one table, the figures docs/PERFORMANCE.md asks of a lent GPU.

At SD 1.x shape with random weights (``--shape sd15``: U-Net 860 M parameters, 512 px, batch
2 anomaly + 2 normal; the default on a GPU), or at a tiny shape (``--shape tiny``: width 16,
64 px; the default on a CPU, which the test suite runs so the script keeps working), it measures
in one run, each row in a fresh process so that one row's memory never counts in another's:

    plain            plain diffusers fine-tuning of the same U-Net (noise MSE, AdamW, fp32)
    seas default     stage 1 under --profile default / fast / low-memory (seas.profiles)
    seas fast
    seas low-memory
    seas lora-16     stage 1 with --adapter lora --lora-rank 16, fast profile's switches
    reference        the authors' configuration: fp32, 8-bit AdamW (AdamW without
                     bitsandbytes), every cross-attention map materialised and kept
    generation       images per second of the default profile with and without the mask head

and prints seconds per update, peak memory (GPU: torch.cuda.max_memory_allocated; CPU: resident
set size), what a run of the row stores (fp32: the U-Net, text encoder and VAE, or the LoRA
adapter alone) and the ratios the targets read: SeaS / plain, reference / SeaS, the mask overhead.

The check has a time budget (``--budget``, default 480 s: it must finish in 8 minutes on one
H100). The shared base is written first and the plain row measured; the rest is projected from
those, and a run whose projection exceeds the budget is refused before it goes on (exit 2);
every later row gets the budget's remainder as a hard limit.

    python -m benchmarks.gpu_check                       # on a GPU: SD 1.x shape
    python -m benchmarks.gpu_check --shape tiny          # anywhere: the tiny shape (about a minute)
    python -m benchmarks.gpu_check --shape demo --rows plain default lora-4 lora-16 lora-64 --skip-generation

``--shape demo`` uses the shipped seas-tiny at the demo's 128 px, ``--shape sd15-128`` SD 1.x's
widths at 128 px (what a CPU can time); ``--rows`` picks training rows (``lora-R``: any rank R,
fast profile's switches).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import peak_probe

TRAIN_ROWS = ("plain", "default", "fast", "low-memory", "lora-16", "reference")
GEN_ROWS = ("with-masks", "without-masks")
SHAPES = {  # resolution, batch (B anomaly + B normal), sampler steps, images timed, images per call
    "sd15": dict(resolution=512, batch=2, steps=25, images=8, gen_batch=4),
    "tiny": dict(resolution=64, batch=2, steps=4, images=4, gen_batch=2),
    "demo": dict(resolution=128, batch=2, steps=20, images=4, gen_batch=4),  # seas-tiny, as seas demo trains it
    "sd15-128": dict(resolution=128, batch=2, steps=5, images=2, gen_batch=1),  # SD 1.x widths at a CPU's size
}
TARGETS = "targets (GPU): SeaS/plain <= 1.05; reference/SeaS >= 2; low-memory <= 12 GB; lora-16 <= 8 GB; masks <= +20 %"


# ----------------------------------------------------------------------------- workers (one row each)


def train_worker(row: str, base: str, shape: dict, device: torch.device, updates: int) -> dict:
    """Seconds per stage-1 update (mean of ``updates`` after one warm-up) and peak memory."""
    from accelerate import Accelerator

    from benchmarks.bench_train_step import make_batch
    from benchmarks.common import ReferenceLosses
    from seas.config import TrainConfig
    from seas.model.attention import AttentionCapture, da_levels
    from seas.model.backbone import load_backbone
    from seas.model.losses import diffusion_loss
    from seas.model.prompts import PromptSpec, add_placeholder_tokens
    from seas.profiles import has_bitsandbytes, train_switches
    from seas.seeds import step_generator
    from seas.training.setup import make_optimizer
    from seas.training.stage1 import PromptTables, compute_losses, prepare_training, set_trainable

    if row in ("plain", "reference"):
        switches = {"mixed_precision": "no", "half_frozen": False,
                    "optimizer": "adamw8bit" if row == "reference" and has_bitsandbytes() else "adamw"}
    elif row.startswith("lora-"):
        switches = {"profile": "fast", **train_switches("fast", device=device), "adapter": "lora",
                    "lora_rank": int(row.removeprefix("lora-"))}
    else:
        switches = {"profile": row, **train_switches(row, device=device)}
    cfg = TrainConfig(resolution=shape["resolution"], batch_size=shape["batch"], **switches)
    bb = load_backbone(base)
    spec = PromptSpec(["a", "b", "c"])
    new_ids = add_placeholder_tokens(bb.tokenizer, bb.text_encoder, spec)
    prompts = PromptTables.build(bb.tokenizer, spec)
    batch = make_batch(shape["batch"], shape["resolution"], 3)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)
    if row == "plain":  # diffusers' train_text_to_image: the U-Net trains on the noise MSE, nothing else
        bb.vae.requires_grad_(False)
        bb.text_encoder.requires_grad_(False)
        bb.vae.to(accelerator.device)
        optimizer = make_optimizer("adamw", [{"params": list(bb.unet.parameters()), "lr": cfg.lr_unet}], 0.01)
        unet, text_encoder, optimizer = accelerator.prepare(bb.unet, bb.text_encoder, optimizer)

        def losses(step: int) -> torch.Tensor:
            generator = step_generator(0, step)
            pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(accelerator.device)
            with torch.no_grad():
                latents = bb.vae.encode(pixels).latent_dist.sample(generator=None) * bb.vae.config.scaling_factor
                text = text_encoder(prompts.normal_ids.expand(len(pixels), -1).to(accelerator.device))[0]
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            t = torch.randint(0, 1000, (len(pixels),), generator=generator).to(latents.device)
            return diffusion_loss(unet(bb.scheduler.add_noise(latents, noise, t), t, text).sample, noise)
    else:
        set_trainable(bb, cfg, new_ids)
        unet, text_encoder, optimizer = prepare_training(bb, cfg, accelerator)
        if row == "reference":
            reference = ReferenceLosses(bb.unet)

            def losses(step: int) -> torch.Tensor:
                return reference(bb, unet, text_encoder, prompts, batch, step_generator(0, step))["total"]
        else:
            levels = da_levels(bb.unet, cfg.da_blocks, cfg.da_with_up_blocks)
            capture = AttentionCapture(bb.unet, sorted({b for group in levels.values() for b in group}))

            def losses(step: int) -> torch.Tensor:
                return compute_losses(bb, unet, text_encoder, capture, prompts, batch, cfg, "eq1",
                                      step_generator(0, step))["total"]
    unet.train()
    stored = run_bytes(bb, cfg)

    def update(step: int) -> None:
        accelerator.backward(losses(step))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    update(0)
    start, stop = peak_probe(device)
    start()
    began = time.perf_counter()
    for step in range(1, updates + 1):
        update(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": (time.perf_counter() - began) / updates, "peak": stop(), "stored": stored}


def run_bytes(bb, cfg) -> int:
    """What a finished run of this row stores in fp32 (--save-dtype fp32): the U-Net, text encoder
    and VAE; for LoRA the adapter file alone (the base is referred to, not copied)."""
    if cfg.adapter == "lora":
        from seas.model.adapter import adapter_tensors

        tensors = adapter_tensors(bb.unet, bb.text_encoder.get_input_embeddings(), torch.float32)
        return sum(t.numel() * 4 for t in tensors.values() if t.is_floating_point())
    return 4 * sum(p.numel() for part in (bb.unet, bb.text_encoder, bb.vae) for p in part.parameters())


def generation_worker(row: str, run: str, shape: dict, device: torch.device) -> dict:
    """Images per second of the default profile, with or without the mask head, and peak memory."""
    from seas.generation.pipeline import SeaSPipeline

    pipe = SeaSPipeline.from_run(run, device=device, with_masks=row == "with-masks")

    def generate(n: int) -> None:
        pipe.generate(pipe.types[0], range(n), steps=shape["steps"], batch_size=shape["gen_batch"])

    generate(shape["gen_batch"])
    start, stop = peak_probe(device)
    start()
    began = time.perf_counter()
    generate(shape["images"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_second": shape["images"] / (time.perf_counter() - began), "peak": stop()}


# ----------------------------------------------------------------------------- the parent


def write_base(shape_name: str, folder: Path) -> Path:
    """The shared base (diffusers folder): random with SD 1.x's widths, the tiny width-16 model,
    or (``demo``) the shipped seas-tiny."""
    from benchmarks.common import sd15_components
    from seas.model.backbone import build_tiny_components, resolve_base, save_components

    if shape_name == "demo":
        return Path(resolve_base("seas-tiny"))
    parts = sd15_components() if shape_name.startswith("sd15") else build_tiny_components(seed=0, width=16)
    return save_components(parts, folder / "base")


def write_run(base: Path, resolution: int, folder: Path) -> Path:
    """A finished run on ``base`` (one stage-1 update) with a random mask head: timing only."""
    from benchmarks.bench_generation import make_run

    return make_run(folder, str(base), resolution)


class Budget:
    """Seconds left of ``--budget``; each worker is killed at the remainder."""

    def __init__(self, seconds: float):
        self.seconds, self.began = seconds, time.perf_counter()

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.began

    @property
    def left(self) -> float:
        return self.seconds - self.spent


def run_worker(args, budget: Budget, kind: str, row: str, path: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--worker", kind, "--row", row, "--path", str(path),
               "--shape", args.shape, "--device", args.device, "--updates", str(args.updates)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(budget.left, 1.0),
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        sys.exit(f"refused: {kind} row {row} ran past the budget of {budget.seconds:.0f} s (--budget); "
                 "lower --updates or raise --budget")
    if done.returncode != 0:
        sys.exit(f"{kind} row {row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="sd15" if cuda else "tiny")
    parser.add_argument("--updates", type=int, default=3, help="timed stage-1 updates per row (after one warm-up)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds the whole check may take (default 480)")
    parser.add_argument("--rows", nargs="+", default=list(TRAIN_ROWS),
                        help=f"training rows (default: {' '.join(TRAIN_ROWS)}; lora-R for any rank R)")
    parser.add_argument("--skip-generation", action="store_true", help="training rows only")
    parser.add_argument("--worker", choices=["train", "generation"], help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape, device = SHAPES[args.shape], torch.device(args.device)
    if args.worker == "train":
        print(json.dumps(train_worker(args.row, args.path, shape, device, args.updates)))
        return
    if args.worker == "generation":
        print(json.dumps(generation_worker(args.row, args.path, shape, device)))
        return

    budget = Budget(args.budget)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    with tempfile.TemporaryDirectory() as tmp:
        base = write_base(args.shape, Path(tmp))
        rows = list(args.rows)
        train = {rows[0]: run_worker(args, budget, "train", rows[0], base)}
        # the rest, projected from what the base and the first row took: the other rows cost about
        # as much each (the reference more), the run and two generation rows about two rows more
        projected = budget.spent + (len(rows) + (0 if args.skip_generation else 2)) * budget.spent / 2
        if projected > budget.seconds:
            sys.exit(f"refused: the check would take about {projected:.0f} s on this machine, over its budget of "
                     f"{budget.seconds:.0f} s (--budget); lower --updates or use --shape tiny")
        for row in rows[1:]:
            train[row] = run_worker(args, budget, "train", row, base)
            print(f"  measured {row}", file=sys.stderr, flush=True)
        gen = {}
        if not args.skip_generation:
            run = write_run(base, shape["resolution"], Path(tmp) / "gen")
            gen = {row: run_worker(args, budget, "generation", row, run) for row in GEN_ROWS}
    print_table(args, name, shape, budget, train, gen)


def print_table(args, name: str, shape: dict, budget: Budget, train: dict, gen: dict) -> None:
    plain, reference = train.get("plain", {}).get("seconds"), train.get("reference", {}).get("seconds")
    print(f"GPU check: {name}, torch {torch.__version__}, shape {args.shape} ({shape['resolution']} px, batch "
          f"{shape['batch']}+{shape['batch']}), {args.updates} timed updates per row, {budget.spent:.0f} s in all")
    print("| row | s/update | peak memory | vs plain | reference / row | run on disk (fp32) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row, m in train.items():
        label = row if row in ("plain", "reference") else f"seas {row}"
        versus = f"{m['seconds'] / plain:.2f}x" if plain else ""
        faster = f"{reference / m['seconds']:.2f}x" if reference else ""
        print(f"| {label} | {m['seconds']:.3f} | {size(m['peak'])} | {versus} | {faster} | "
              f"{m['stored'] / 2**20:.1f} MiB |")
    for row, m in gen.items():
        print(f"| generation {row} ({shape['steps']} steps, batch {shape['gen_batch']}) | "
              f"{m['images_per_second']:.3f} images/s | {size(m['peak'])} | | | |")
    seas = train.get("default", {}).get("seconds")
    ratios = []
    if seas and plain:
        ratios.append(f"SeaS default / plain: {seas / plain:.3f}")
    if seas and reference:
        ratios.append(f"reference / SeaS default: {reference / seas:.2f}x")
    if gen:
        with_masks, without = gen["with-masks"]["images_per_second"], gen["without-masks"]["images_per_second"]
        ratios.append(f"mask overhead: {100 * (without / with_masks - 1):+.1f} %")
    print("\n" + "; ".join(ratios))
    print(TARGETS)


if __name__ == "__main__":
    main()
