"""Generation speed with masks versus without the mask head, measured in one run.

Both rates come from the same pipeline modules on the same device, timed alternately, so the
printed overhead ratio compares like with like. Target: masks cost at most 10 % more time.
``--parts`` also times each part per batch. ``--flops`` instead counts the floating-point operations of one image at SD 1.x shape (512 px,
25 steps, guidance, 3 mask steps, the reference head) on the meta device: no weights, no time.

    python -m benchmarks.bench_generation                       # tiny model, width 32, 128 px
    python -m benchmarks.bench_generation --base sd15 --resolution 512 --device cuda
    python -m benchmarks.bench_generation --base /models/sd15 --resolution 512 --device cuda
    python -m benchmarks.bench_generation --run runs/bottle --device cuda   # a finished run
    python -m benchmarks.bench_generation --flops                            # SD 1.x shape, FLOPs

Without ``--run``, a run is made in a temporary folder: one stage-1 update on a synthetic
product, and a random mask head whose widths follow the backbone (SD 1.x: the paper's head).
``--base sd15`` builds random parts of SD 1.x's sizes; timings do not depend on weight values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import sd15_components
from seas.config import MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.data.synthetic import write_synthetic_product
from seas.generation.pipeline import SeaSPipeline
from seas.model.backbone import build_tiny_components, save_components
from seas.run import Run
from seas.training.stage1 import train_generator
from seas.training.stage2 import build_head


def make_run(folder: Path, base: str, resolution: int) -> Path:
    """A finished run with a random mask head, in ``folder``."""
    product = write_synthetic_product(folder / "data", size=resolution, n_train_good=4, n_test_good=1, n_per_type=3)
    cfg = TrainConfig(base=base, resolution=resolution, batch_size=1, grad_accum=1, steps=1)
    run = train_generator(DataConfig(root=str(product), layout="mvtec"), cfg, folder / "run")
    record = Run.load(run)
    record.save_mask_head(build_head(record.load_backbone()), MaskConfig(), steps=0)  # random weights: timing only
    return run


def flop_table(steps: int = 25, mask_steps: int = 3) -> None:
    """FLOPs of one 512 px image at SD 1.x shape, counted by torch on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from seas.model.features import FeatureRecorder
    from seas.model.rmp import ReferenceMaskHead

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops() / 1e12

    with torch.device("meta"):
        parts = sd15_components()
        unet, vae, head = parts["unet"], parts["vae"], ReferenceMaskHead()
        latent, text = torch.randn(1, 4, 64, 64), torch.randn(2, 77, 768)
    pipe = SeaSPipeline.__new__(SeaSPipeline)  # only its stopped decode is used
    pipe.vae = vae
    with FeatureRecorder(unet, vae) as recorder:
        unet_call = count(lambda: unet(torch.cat([latent] * 2), torch.tensor([500, 500], device="meta"), text))
        decode = count(lambda: vae.decode(latent))
        stopped = count(lambda: pipe._decode_features(latent))
        unet_feats = [f[1:] for f in recorder.unet_features]  # the conditional half
        head_call = count(lambda: head(unet_feats, recorder.vae_features))
    image_only = steps * unet_call + decode
    masks = mask_steps * (stopped + head_call)
    print(f"TFLOPs per 512 px image: U-Net call (guided, 2 x) {unet_call:.3f}, full decode {decode:.3f}, "
          f"mask decode (stopped after up_blocks[2]) {stopped:.3f}, mask head {head_call:.3f}")
    print(f"image only ({steps} steps + decode)   {image_only:8.2f} TFLOPs")
    print(f"masks ({mask_steps} x (mask decode + head))  {masks:8.2f} TFLOPs")
    print(f"overhead                         {masks / image_only:8.1%}  (target <= 10%)")


def base_folder(base: str | None, tmp: Path) -> str:
    """``--base`` as a diffusers folder: tiny (width 32) and ``sd15`` are written to ``tmp``."""
    if base is None:
        return str(save_components(build_tiny_components(seed=0, width=32), tmp / "tiny32"))
    if base == "sd15":
        return str(save_components(sd15_components(), tmp / "sd15"))
    return base


def seconds(pipe: SeaSPipeline, args) -> float:
    """Wall time of generating ``args.num`` anomaly images of the first type."""
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe.generate(pipe.types[0], range(args.num), steps=args.steps, batch_size=args.batch_size)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def part_seconds(pipe: SeaSPipeline, batch: int, repeats: int) -> dict[str, float]:
    """Best wall time of each part of a masked generation, per batch of ``batch`` images:
    a guided U-Net call, a full decode, a mask decode (stopped after ``up_blocks[2]``) of one
    step's batch and of three steps at once, and one mask-head pass."""
    from seas.model.features import FeatureRecorder

    h = pipe.resolution // 2 ** (len(pipe.vae.config.block_out_channels) - 1)  # latent size
    latents = torch.randn(batch, 4, h, h, device=pipe.device, dtype=pipe.dtype)
    three = torch.cat([latents] * 3)
    text = torch.randn(2 * batch, 77, pipe.unet.config.cross_attention_dim, device=pipe.device, dtype=pipe.dtype)
    t = torch.full((2 * batch,), 500, device=pipe.device)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad(), FeatureRecorder(pipe.unet, pipe.vae) as recorder:
        parts = {"guided U-Net call": best(lambda: pipe.unet(torch.cat([latents] * 2), t, text))}
        unet_feats = [f[batch:] for f in recorder.unet_features]
        parts["full decode"] = best(lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor))
        parts["mask decode, one step"] = best(lambda: pipe._decode_features(latents))
        parts["mask decode, three steps at once"] = best(lambda: pipe._decode_features(three))
        pipe._decode_features(latents)
        vae_feats = recorder.vae_features
        parts["mask head pass"] = best(lambda: pipe.mask_head(unet_feats, vae_feats))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a finished run with a mask head (default: make one)")
    parser.add_argument("--base", default=None,
                        help="diffusers folder of an SD 1.x model, or 'sd15' for random SD 1.x-sized parts "
                        "(default: tiny, width 32)")
    parser.add_argument("--resolution", type=int, default=128, help="image size of a made run (default 128)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--num", type=int, default=8, help="images per timing (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timings of each variant; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs at SD 1.x shape instead of timing")
    parser.add_argument("--parts", action="store_true",
                        help="also time each part (U-Net call, decodes, head pass) per batch")
    args = parser.parse_args()
    if args.flops:
        flop_table(args.steps)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = make_run(Path(tmp), base_folder(args.base, Path(tmp)), args.resolution)
        record = Run.load(run)
        backbone = record.load_backbone(dtype)
        with_masks = SeaSPipeline(record, backbone, record.load_mask_head(dtype), args.device)
        plain = SeaSPipeline(record, backbone, None, args.device)  # the same modules, no mask head
        for pipe in (plain, with_masks):  # warm-up: caches, kernels, reference latents
            seconds(pipe, argparse.Namespace(**{**vars(args), "num": args.batch_size}))
        times = {"plain": [], "masks": []}
        for _ in range(args.repeats):
            times["plain"].append(seconds(plain, args))
            times["masks"].append(seconds(with_masks, args))
        parts = part_seconds(with_masks, args.batch_size, args.repeats) if args.parts else {}

    best = {name: min(values) for name, values in times.items()}
    print(f"device {args.device}  dtype {args.dtype}  resolution {with_masks.resolution}  batch {args.batch_size}  "
          f"steps {args.steps}  images per timing {args.num}  threads {torch.get_num_threads()}")
    print(f"without mask head  {args.num / best['plain']:8.3f} images/s")
    print(f"with masks         {args.num / best['masks']:8.3f} images/s")
    print(f"overhead           {best['masks'] / best['plain'] - 1:8.1%}  (target <= 10%)")
    for name, value in parts.items():
        print(f"{name:<34}{value:8.3f} s per batch of {args.batch_size}")


if __name__ == "__main__":
    main()
