"""Which generated pairs help or hurt the downstream segmenter: each finished demo's
``real + generated`` set retrained with its generated part changed, over several segmenter seeds
(docs/RESULTS.md).

    OMP_NUM_THREADS=1 python -m benchmarks.generated_set_probe --ablation ABL --seeds 0 1 2 \\
        --segmenter-seeds demo 10 11 --variants real-only as-is colour without:scratch

``ABL``: the ``--out`` of ``benchmarks.ablation_placement`` (its finished demos). Every segmenter
has its demo's downstream settings (``seg_size``, ``seg_steps``, ``seg_width``, the prior); only
its seed and training set change. ``demo`` among ``--segmenter-seeds`` is the demo's own seed, so
that ``as-is`` and ``real-only`` repeat the demo's ``metrics.json`` numbers. Variants:

* ``real-only``: the real training anomalies and normal images (every other set adds to it);
* ``as-is``: + the generated anomaly pairs, as the demo's evaluation trains them;
* ``colour``: + the same pairs with each generated image's RGB channels shifted and scaled to the
  mean and standard deviation of all real normal training images (``--reference-stats``'s
  ``match_channel_stats`` applied to pixels: a diagnostic of the generated images' colour, not a
  method);
* ``without:TYPE``: + the generated pairs whose kind does not contain TYPE (mixtures with it go too);
* ``eroded``: + the generated pairs with their masks eroded by one pixel (3 x 3) at the segmenter's size.

``--generated NAME``: the generated folder inside each seed folder (default ``run/generated``, the
demo's own; e.g. ``generated-free+qc``). Prints one line per (product, segmenter seed, variant),
then mean ± sd per variant and each variant's mean difference from ``as-is`` over the same
(product, segmenter seed) pairs; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch

from seas.data.readers import GOOD
from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import predict, train_segmenter
from seas.evaluation.inputs import generated_at, load_real, read_generated, real_only_set
from seas.evaluation.metrics import all_metrics
from seas.files.atomic import read_json
from seas.generation.generated import GeneratedFolder
from seas.generation.pipeline import match_channel_stats
from seas.run import Run

FIXED = ("real-only", "as-is", "colour", "eroded")


def variant(name: str) -> str:
    if name in FIXED or (name.startswith("without:") and len(name) > len("without:")):
        return name
    raise argparse.ArgumentTypeError(f"{name}: a variant is one of {', '.join(FIXED)} or without:TYPE")


def colour_matched(image: np.ndarray, reference: torch.Tensor) -> np.ndarray:
    """``image (S, S, 3) uint8`` with each channel given the mean and standard deviation of
    ``reference (1, 3, H, W)``'s: ``--reference-stats``'s correction, in pixels."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    matched = match_channel_stats(pixels, reference)[0].permute(1, 2, 0).numpy()
    return np.clip(matched, 0, 255).round().astype(np.uint8)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def generated_part(name: str, pairs: list[tuple[str, np.ndarray, np.ndarray]], normals: list[np.ndarray]) -> list:
    """The generated ``(image, mask)`` pairs of variant ``name``; ``pairs``: ``(kind, image, mask)``."""
    if name == "real-only":
        return []
    if name.startswith("without:"):
        left_out = name.split(":", 1)[1]
        return [(image, mask) for kind, image, mask in pairs if left_out not in kind.split("+")]
    if name == "colour":  # every normal image's pixels, side by side: (1, 3, S, N * S)
        reference = torch.from_numpy(np.concatenate(normals, axis=1)).permute(2, 0, 1)[None].double()
        return [(colour_matched(image, reference), mask) for _, image, mask in pairs]
    if name == "eroded":
        kernel = np.ones((3, 3), np.uint8)
        return [(image, cv2.erode(mask.astype(np.uint8), kernel).astype(bool)) for _, image, mask in pairs]
    return [(image, mask) for _, image, mask in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="demo seeds (products)")
    parser.add_argument("--segmenter-seeds", nargs="+", default=["demo", "10", "11"],
                        help="segmenter seeds; 'demo': the demo's own")
    parser.add_argument("--variants", type=variant, nargs="+", default=["real-only", "as-is", "colour"])
    parser.add_argument("--generated", default="run/generated", help="generated folder inside each seed folder")
    args = parser.parse_args()
    results: dict[str, dict[tuple[int, int], tuple[float, float]]] = {name: {} for name in args.variants}
    for seed in args.seeds:
        folder = args.ablation / f"seed{seed}"
        demo = read_json(folder / "demo.json")["config"]
        run = Run.load(folder / "run", verify=False)
        size, split = demo["seg_size"], run.split
        real_pairs = [p for t in split.types for p in load_real(split.train[t], size, run)]
        normals = [image for image, _ in load_real(split.normal_train, size, run)]
        rows = [r for r in read_generated(GeneratedFolder.existing(folder / args.generated))
                if r["kind"] != GOOD and r.get("mask") is not None]  # the demo's evaluation drops the rest
        images, masks = generated_at(rows, size)
        pairs = [(r["kind"], image, mask) for r, image, mask in zip(rows, images, masks or [], strict=True)]
        test = load_real(split.test, size, run)
        test_masks = np.stack([np.zeros((size, size), bool) if m is None else m for _, m in test])
        for token in args.segmenter_seeds:
            segmenter_seed = seed if token == "demo" else int(token)
            cfg = EvalConfig(segmenter=demo["segmenter"], size=size, steps=demo["seg_steps"], width=demo["seg_width"],
                             seed=segmenter_seed, device="cpu", progress=False)
            for name in args.variants:
                train = real_only_set(real_pairs, normals) + generated_part(name, pairs, normals)
                model = train_segmenter(train, cfg.downstream())
                scores = predict(model, [image for image, _ in test], size, resize_back=False)
                metrics = all_metrics(scores, test_masks)
                results[name][(seed, segmenter_seed)] = (metrics["pixel_ap"], metrics["pixel_auroc"])
                print(f"product {seed} segmenter seed {segmenter_seed} {name} ({len(train)} pairs): pixel AP "
                      f"{metrics['pixel_ap']:.3f} AUROC {metrics['pixel_auroc']:.3f}", flush=True)
    print("\n| variant | runs | pixel AP | pixel AUROC | AP minus as-is | AUROC minus as-is |\n| --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        ap, auroc = [v[0] for v in runs.values()], [v[1] for v in runs.values()]
        line = f"| {name} | {len(runs)} | {statistics.mean(ap):.3f} ± {spread(ap):.3f} | " \
               f"{statistics.mean(auroc):.3f} ± {spread(auroc):.3f} |"
        same = results.get("as-is", {})
        if name != "as-is" and same:
            delta = [(runs[k][0] - same[k][0], runs[k][1] - same[k][1]) for k in runs if k in same]
            line += f" {statistics.mean(d[0] for d in delta):+.3f} | {statistics.mean(d[1] for d in delta):+.3f} |"
        else:
            line += " – | – |"
        print(line)


if __name__ == "__main__":
    main()
