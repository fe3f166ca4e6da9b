"""What saving a run in half precision changes: size on disk, generated pixels and masks.

A finished run (with its mask head) is exported in fp16 and bf16 (``seas export-run
--save-dtype``); the original and each copy generate the same images (same seeds, same
config, fp32 compute, so only the stored weights' rounding differs) and the script prints the
weight files' size ratio, the largest and mean absolute pixel difference (0-255), and the mean
IoU of the masks (a pair whose masks are both empty counts as 1).

    python -m benchmarks.save_dtype --run DEMO/run --num 12        # e.g. a finished seas demo's run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from seas.config import GenerationConfig
from seas.generation.pipeline import SeaSPipeline
from seas.run import Run
from seas.training.export_run import export_run


def weight_bytes(run: Run) -> int:
    return sum(size for table in run.weights.values() for size, _ in table.values())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def outputs(pipe: SeaSPipeline, num: int, steps: int) -> list:
    """``num`` images of every type, the same seeds and config for every pipeline."""
    cfg = GenerationConfig(steps=steps, batch_size=4)
    return [out for kind in pipe.types for out in pipe.generate(kind, range(num), cfg)]


def compare(original: list, copy: list) -> dict:
    diffs, ious = [], []
    for a, b in zip(original, copy):
        diffs.append(np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16)))
        ious.append(iou(a.mask, b.mask))
    pixels = np.stack(diffs)
    return {"max_pixel": int(pixels.max()), "mean_pixel": float(pixels.mean()), "mask_iou": float(np.mean(ious)),
            "min_mask_iou": float(np.min(ious)), "images": len(ious)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run with a mask head")
    parser.add_argument("--num", type=int, default=12, help="images per type (default 12)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default 20, the demo's)")
    args = parser.parse_args()
    original_run = Run.load(args.run)
    original = outputs(SeaSPipeline.from_run(args.run), args.num, args.steps)
    print(f"run {args.run} ({original_run.train.save_dtype}), {args.num} images per type x "
          f"{len(original_run.types)} types, {args.steps} steps")
    print("| saved as | weight files | size vs original | max pixel diff | mean pixel diff | mask IoU (mean) | "
          "mask IoU (min) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp16", "bf16"):
            folder = export_run(args.run, Path(tmp) / dtype, save_dtype=dtype)
            numbers = compare(original, outputs(SeaSPipeline.from_run(folder), args.num, args.steps))
            size = weight_bytes(Run.load(folder))
            print(f"| {dtype} | {size / 2**20:.1f} MiB | {size / weight_bytes(original_run):.3f} | "
                  f"{numbers['max_pixel']} | {numbers['mean_pixel']:.3f} | {numbers['mask_iou']:.4f} | "
                  f"{numbers['min_mask_iou']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
