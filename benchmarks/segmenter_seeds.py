"""How much the downstream judge depends on its own seed: the real-only segmenter of each demo
product trained with several segmenter seeds, with and without the anomaly prior of its
classifier (docs/EVALUATION.md, docs/RESULTS.md).

    OMP_NUM_THREADS=1 python -m benchmarks.segmenter_seeds --ablation ABL --seeds 0 1 2 --segmenter-seeds 0 1 2
    OMP_NUM_THREADS=1 python -m benchmarks.segmenter_seeds --ablation ABL --prior none

``ABL``: the ``--out`` of ``benchmarks.ablation_placement`` (its finished demos). The settings are
each demo's own downstream settings (``seg_size``, ``seg_steps``, ``seg_width``); only the
segmenter seed and the prior change. Prints one line per (product, segmenter seed) and the
spread; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import predict, train_segmenter
from seas.evaluation.inputs import load_real, real_only_set
from seas.evaluation.metrics import all_metrics
from seas.files.atomic import read_json
from seas.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="demo seeds (products)")
    parser.add_argument("--segmenter-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prior", default="0.01", help="the classifier's anomaly prior, or 'none'")
    args = parser.parse_args()
    prior = None if args.prior == "none" else float(args.prior)
    aps = []
    for seed in args.seeds:
        folder = args.ablation / f"seed{seed}"
        demo = read_json(folder / "demo.json")["config"]
        run = Run.load(folder / "run", verify=False)
        size, split = demo["seg_size"], run.split
        train = real_only_set([p for t in split.types for p in load_real(split.train[t], size, run)],
                              [image for image, _ in load_real(split.normal_train, size, run)])
        test = load_real(split.test, size, run)
        masks = np.stack([np.zeros((size, size), bool) if m is None else m for _, m in test])
        for segmenter_seed in args.segmenter_seeds:
            cfg = EvalConfig(segmenter=demo["segmenter"], size=size, steps=demo["seg_steps"], width=demo["seg_width"],
                             seed=segmenter_seed, prior=prior, device="cpu", progress=False)
            model = train_segmenter(train, cfg.downstream())
            metrics = all_metrics(predict(model, [image for image, _ in test], size, resize_back=False), masks)
            aps.append(metrics["pixel_ap"])
            print(f"product {seed} segmenter seed {segmenter_seed} prior {prior}: pixel AP {metrics['pixel_ap']:.3f} "
                  f"AUROC {metrics['pixel_auroc']:.3f}", flush=True)
    print(f"pixel AP over {len(aps)}: min {min(aps):.3f} max {max(aps):.3f} mean {statistics.mean(aps):.3f} "
          f"sd {statistics.stdev(aps) if len(aps) > 1 else float('nan'):.3f}")


if __name__ == "__main__":
    main()
