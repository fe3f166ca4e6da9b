"""Training step and generation, per memory profile, against the reference's way of training.

On one SD-1.x-shaped model with random weights (U-Net 860 M parameters, CLIP-L-sized text
encoder, SD VAE), in one run:

* training: one stage-1 optimizer step (B anomaly + B normal images) of
    reference   the authors' release: fp32, 8-bit AdamW (AdamW without bitsandbytes), no
                gradient checkpointing, every cross-attention map materialised and kept on
                the CPU (benchmarks.common.ReferenceLosses)
    default / fast / low-memory   seas's stage 1 under each --profile (seas.profiles)
    default+foreach-adamw   the default profile with torch's default AdamW kernel instead of
                the fused one seas uses (the before/after of that change)
  seconds per step, peak memory, and the speed ratio reference / profile;
* generation: images per second with masks and peak memory under each profile.

Each measurement runs in a fresh process, so one's memory never counts in another's. Peak
memory is the most the process held while the timed work ran, weights included: on a GPU
``torch.cuda.max_memory_allocated``; on the CPU the resident set size (psutil, sampled every
5 ms). CPU default: 128 px and short generation; on a GPU use the 512 px figures of the issue:

    python -m benchmarks.bench_profiles                                     # CPU, 128 px
    python -m benchmarks.bench_profiles --resolution 512 --gen-batch 10 --gen-num 20 --gen-steps 25   # GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import gib, peak_probe

# "default+foreach-adamw": the default profile with torch's default multi-tensor AdamW kernel,
# as seas ran before it switched to the fused kernel (the before/after of that change).
TRAIN_VARIANTS = ("reference", "default", "fast", "low-memory", "default+foreach-adamw")
# Generation: each profile, and low-memory with attention slicing added (an option, off in
# every profile: with fused SDPA it costs memory and time, which this row shows).
GEN_VARIANTS = ("default", "fast", "low-memory", "low-memory+attention-slicing")


# ----------------------------------------------------------------------------- workers


def _print_profile(fn, device: torch.device, rows: int = 15) -> None:
    """torch.profiler's table of the most expensive operators of one ``fn()``, to stderr."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), file=sys.stderr)


def _use_foreach_adamw() -> None:
    """Make ``torch.optim.AdamW`` ignore ``fused=True`` in this worker process."""
    base = torch.optim.AdamW

    class ForeachAdamW(base):
        def __init__(self, *a, fused=None, **kw):
            super().__init__(*a, foreach=True, **kw)

    torch.optim.AdamW = ForeachAdamW


def train_worker(variant: str, args) -> dict:
    """Build the model, run ``args.warmup`` steps, then time ``args.repeats`` steps."""
    from accelerate import Accelerator

    from benchmarks.bench_train_step import make_batch
    from benchmarks.common import ReferenceLosses, sd15_components
    from seas.config import TrainConfig
    from seas.model.attention import AttentionCapture, da_levels
    from seas.model.backbone import Backbone
    from seas.model.prompts import PromptSpec, add_placeholder_tokens
    from seas.profiles import has_bitsandbytes, train_switches
    from seas.seeds import step_generator
    from seas.training.stage1 import PromptTables, compute_losses, prepare_training, set_trainable

    device = torch.device(args.device)
    variant, _, extra = variant.partition("+")
    if extra == "foreach-adamw":
        _use_foreach_adamw()
    if variant == "reference":
        switches = {"optimizer": "adamw8bit" if has_bitsandbytes() else "adamw", "mixed_precision": "no", "half_frozen": False}
    else:
        switches = {"profile": variant, **train_switches(variant, device=device)}
    cfg = TrainConfig(resolution=args.resolution, batch_size=args.batch_size, **switches)
    types = ["a", "b", "c"]
    parts = sd15_components()
    spec = PromptSpec(types)
    new_ids = add_placeholder_tokens(parts["tokenizer"], parts["text_encoder"], spec)
    bb = Backbone(source="sd15-shaped random", **parts)
    set_trainable(bb, cfg, new_ids)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)
    unet, text_encoder, optimizer = prepare_training(bb, cfg, accelerator)
    unet.train()
    prompts = PromptTables.build(bb.tokenizer, spec)
    batch = make_batch(args.batch_size, args.resolution, len(types))
    if variant == "reference":
        reference = ReferenceLosses(bb.unet)

        def losses(step: int) -> dict:
            return reference(bb, unet, text_encoder, prompts, batch, step_generator(0, step))
    else:
        levels = da_levels(bb.unet, cfg.da_blocks, cfg.da_with_up_blocks)
        capture = AttentionCapture(bb.unet, sorted({b for v in levels.values() for b in v}))

        def losses(step: int) -> dict:
            return compute_losses(bb, unet, text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, step))

    def step(index: int) -> None:
        accelerator.backward(losses(index)["total"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    if args.trace:
        _print_profile(lambda: step(args.warmup), device)
    start, stop = peak_probe(device)
    start()
    began = time.perf_counter()
    for i in range(args.repeats):
        step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / args.repeats
    return {"seconds": seconds, "peak": stop(), "config": {k: getattr(cfg, k) for k in (
        "mixed_precision", "half_frozen", "gradient_checkpointing", "optimizer")}}


def generation_worker(profile: str, args) -> dict:
    """Load the benchmark run under ``profile``, warm up one batch, time ``args.gen_num`` images."""
    from seas.generation.pipeline import SeaSPipeline
    from seas.profiles import generation_switches

    profile, _, extra = profile.partition("+")
    switches = generation_switches(profile, args.device)
    if extra == "attention-slicing":
        switches = dataclasses.replace(switches, attention_slicing=True)
    pipe = SeaSPipeline.from_run(args.run, device=args.device, switches=switches)
    kind = pipe.types[0]

    def generate(n: int) -> None:
        pipe.generate(kind, range(n), steps=args.gen_steps, batch_size=args.gen_batch)

    generate(args.gen_batch)
    start, stop = peak_probe(torch.device(args.device))
    start()
    began = time.perf_counter()
    generate(args.gen_num)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return {"images_per_second": args.gen_num / seconds, "peak": stop(), "switches": switches.to_dict()}


# ----------------------------------------------------------------------------- the parent


def _run_worker(kind: str, name: str, args, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_profiles", "--worker", kind, "--variant", name,
               "--device", args.device, "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--gen-batch", str(args.gen_batch),
               "--gen-num", str(args.gen_num), "--gen-steps", str(args.gen_steps), *extra]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.trace:
        command.append("--trace")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(f"{kind} worker {name} failed:\n{done.stderr[-3000:]}")
    if args.trace:
        print(f"--- {kind} {name}: top operators of one step\n{_table(done.stderr)}", file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_table(columns: list[str], rows: dict[str, list]) -> None:
    """One line per variant: its name, the ``columns`` values, then its switches (a dict)."""
    width = max(len(name) for name in rows) + 2
    print(f"{'variant':<{width}}" + "".join(f"{c:>14}" for c in columns) + "  switches")
    for name, values in rows.items():
        *cells, switches = values
        print(f"{name:<{width}}" + "".join(f"{c:>14}" for c in cells) + "  "
              + ", ".join(f"{k}={v}" for k, v in switches.items()))


def _table(stderr: str) -> str:
    """The profiler table within a worker's stderr (it starts at a line of dashes)."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("----")]
    return "\n".join(lines[starts[0]:]) if starts else "(no profile in the worker's output)"


def _make_run(args, folder: Path) -> str:
    """A finished run on the benchmark's model shape with a random mask head (timing only)."""
    from benchmarks.bench_generation import base_folder, make_run

    return str(make_run(folder, base_folder(None if args.gen_base == "tiny" else "sd15", folder), args.resolution))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolution", type=int, default=128, help="image size (default 128; 512 on a GPU)")
    parser.add_argument("--batch-size", type=int, default=2, help="training: B anomaly + B normal (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="training steps before timing (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed training steps (default 2)")
    parser.add_argument("--gen-batch", type=int, default=2, help="images per sampler call (default 2; 10 on a GPU)")
    parser.add_argument("--gen-num", type=int, default=4, help="timed images per profile (default 4)")
    parser.add_argument("--gen-steps", type=int, default=5, help="sampling steps (default 5; 25 on a GPU)")
    parser.add_argument("--gen-base", choices=["sd15", "tiny"], default="sd15",
                        help="model shape for generation (default sd15; tiny for a quick check)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in every worker")
    parser.add_argument("--trace", action="store_true",
                        help="print torch.profiler's top operators of one training step per variant (stderr)")
    parser.add_argument("--worker", choices=["train", "generation"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker == "train":
        print(json.dumps(train_worker(args.variant, args)))
        return
    if args.worker == "generation":
        print(json.dumps(generation_worker(args.variant, args)))
        return

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    print(f"device {args.device} ({device_name})  torch {torch.__version__}  resolution {args.resolution}")
    if not args.skip_train:
        train = {}
        for variant in TRAIN_VARIANTS:
            train[variant] = _run_worker("train", variant, args, [])
            print(f"  measured training: {variant}", file=sys.stderr, flush=True)
        reference = train["reference"]["seconds"]
        print(f"\ntraining: one stage-1 update, batch {args.batch_size}+{args.batch_size}, "
              f"mean of {args.repeats} timed steps after {args.warmup} warm-up")
        _print_table(["s/step", "peak memory", "vs reference"], {
            variant: [f"{m['seconds']:.3f}", gib(m["peak"]), f"{reference / m['seconds']:.2f}x", m["config"]]
            for variant, m in train.items()})
    if not args.skip_generation:
        with tempfile.TemporaryDirectory() as tmp:
            run = _make_run(args, Path(tmp))
            gen = {v: _run_worker("generation", v, args, ["--run", run]) for v in GEN_VARIANTS}
        print(f"\ngeneration with masks: {args.gen_base} shape, batch {args.gen_batch}, {args.gen_steps} steps, "
              f"{args.gen_num} timed images")
        _print_table(["images/s", "peak memory"], {
            variant: [f"{m['images_per_second']:.3f}", gib(m["peak"]), m["switches"]] for variant, m in gen.items()})


if __name__ == "__main__":
    main()
