"""``seas evaluate``: downstream segmentation and quality scores of a generated folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from seas.evaluation.segmenters import SEGMENTERS


def add_parsers(subparsers) -> None:
    from seas.evaluation.evaluate import EvalConfig

    d = EvalConfig()
    p = subparsers.add_parser(
        "evaluate", help="downstream segmentation and quality scores of generated data, with an HTML report",
        description="Train a segmenter on the real few-shot data with and without the generated pairs "
                    "(and on cut-paste and Perlin baselines), test it on the held-out split, score the "
                    "generated images (IS, KID, IC-LPIPS) and write metrics.json and report.html "
                    "(see docs/EVALUATION.md).")
    p.add_argument("--run", required=True, help="folder of a finished 'seas train' run")
    p.add_argument("--generated", default=None, help="folder of 'seas generate' output (default: <run>/generated)")
    p.add_argument("--out", default=None,
                   help="folder for metrics.json and report.html (default: <run>/evaluation); "
                        "a previous evaluation there is replaced, any other content refused")
    p.add_argument("--segmenter", choices=SEGMENTERS, default=d.segmenter, help=f"downstream network (default {d.segmenter})")
    p.add_argument("--size", type=int, default=d.size, help=f"training and test resolution (default {d.size})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps per training set (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    p.add_argument("--width", type=float, default=d.width, help=f"segmenter channel multiplier (default {d.width})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the segmenters and baselines (default {d.seed})")
    p.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--no-baselines", action="store_true", help="skip the cut-paste and Perlin training sets")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None,
                   help="require (--quality) or skip (--no-quality) IS/KID/IC-LPIPS; default: computed "
                        "when the weight files are found, else the report says which file is missing")
    p.add_argument("--weights-dir", default=None, help="first folder searched for the quality weight files")
    p.add_argument("--quality-size", type=int, default=d.quality_size,
                   help=f"resolution of the quality scores (default {d.quality_size})")
    p.add_argument("--max-generated", type=int, default=None, metavar="N", help="use at most N generated images per kind")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from seas.evaluation.evaluate import EvalConfig, evaluate_run

    cfg = EvalConfig(segmenter=args.segmenter, size=args.size, steps=args.steps, batch_size=args.batch_size,
                     width=args.width, seed=args.seed, device=args.device, baselines=not args.no_baselines,
                     quality=args.quality, weights_dir=args.weights_dir, quality_size=args.quality_size,
                     max_generated=args.max_generated)
    out = Path(args.out) if args.out else Path(args.run) / "evaluation"
    metrics = evaluate_run(args.run, args.generated, out, cfg)
    keys = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "iou")
    print(f"{'training set':<16}" + "".join(f"{k:>14}" for k in keys))
    for name, values in metrics["downstream"].items():
        print(f"{name:<16}" + "".join(f"{_percent(values[k]):>14}" for k in keys))
    if "skipped" in metrics["quality"]:
        print(f"quality scores skipped: {metrics['quality']['skipped']}")
    print(f"metrics and report written to {out}")
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
