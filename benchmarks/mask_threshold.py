"""Which generated-mask threshold serves the downstream segmenter? Re-thresholds the generated
masks of finished ablation seeds (``benchmarks.ablation_placement``'s ``free`` variant) from the
probability maps generation saved, and evaluates each threshold's real + generated segmenter.

SeaS binarises the mask head's mean anomaly probability at 0.2 (spec section 5, the reference's
value, ``--mask-threshold``). On the tiny base the generated masks cover more of the image than
the real ones do, so a higher threshold, or one matched to the real masks' area, might label the
generated defects better. This measures it instead of guessing. Modes:

- a number ``t``: mask = probability > t;
- ``area``: per kind, the threshold (0.02 to 0.98 in steps of 0.01) whose mean mask area over
  that kind's generated pairs is nearest the mean area of the kind's real training masks (a
  mixture ``A+B``: the sum of its types' areas).

Only the masks change: the images, the downstream segmenter's settings and seed are the
ablation's. The probability maps are 8-bit (``<kind>/prob/*.png``), so ``t`` is applied to
``value / 255``. Each mode writes ``<seed>/generated-t<mode>`` and ``<seed>/evaluation-t<mode>``
(reused when finished).

    OMP_NUM_THREADS=1 python -m benchmarks.mask_threshold --out ABL --seeds 0 1 2 --modes 0.1 0.3 area

Table (Markdown) to stdout and ``<out>/mask-threshold.md``; numbers in ``<out>/mask-threshold.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.ablation_placement import cell, mean_spread
from seas.evaluation.config import EvalConfig
from seas.evaluation.evaluate import evaluate_run
from seas.files.atomic import read_json, write_json
from seas.files.images import read_mask
from seas.generation.generated import MANIFEST
from seas.run import Run

STEPS = np.round(np.arange(0.02, 0.985, 0.01), 2)  # thresholds the area mode chooses from


def real_areas(run: Run) -> dict[str, float]:
    """Mean share of the image a real training mask covers, by type (each mask's own share, so
    photographs of different sizes count alike)."""
    return {t: float(np.mean([read_mask(s.mask, run.mask_rule).mean() for s in run.split.train[t]]))
            for t in run.split.types}


def kind_threshold(mode: str, kind: str, probs: np.ndarray, areas: dict[str, float]) -> float:
    """The threshold of ``mode`` for one kind's probability maps ``probs (N, R, R)`` in [0, 1]."""
    if mode != "area":
        return float(mode)
    target = sum(areas[t] for t in kind.split("+"))
    covered = np.array([(probs > t).mean() for t in STEPS])
    return float(STEPS[np.argmin(np.abs(covered - target))])


def rethreshold(source: Path, target: Path, mode: str, areas: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Copy the generated folder ``source`` to ``target`` with every anomaly mask re-thresholded;
    return ``{kind: (threshold, mean mask area)}``."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    rows = [json.loads(line) for line in (source / MANIFEST).read_text().splitlines() if line.strip()]
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("prob"):
            by_kind.setdefault(row["kind"], []).append(row)
    chosen = {}
    for kind, members in by_kind.items():
        probs = np.stack([np.asarray(Image.open(source / r["prob"])).astype(np.float32) / 255 for r in members])
        threshold = kind_threshold(mode, kind, probs, areas)
        for row, prob in zip(members, probs):
            mask = prob > threshold
            Image.fromarray(mask.astype(np.uint8) * 255).save(target / row["mask"])
            row["mask_area"] = float(mask.mean())
        chosen[kind] = (threshold, float(np.mean([r["mask_area"] for r in members])))
    (target / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return chosen


def evaluate_mode(folder: Path, seed: int, mode: str) -> dict:
    """Pixel AP / AUROC of the real + generated segmenter with ``mode``'s masks, the chosen
    thresholds and the masks' mean area, for the finished ablation seed in ``folder``."""
    evaluation = folder / f"evaluation-t{mode}"
    if (evaluation / "result.json").is_file():
        return read_json(evaluation / "result.json")
    demo = read_json(folder / "demo.json")["config"]
    run = Run.load(folder / "run", verify=False)
    generated = folder / f"generated-t{mode}"
    chosen = rethreshold(folder / "run/generated", generated, mode, real_areas(run))
    if evaluation.exists():
        shutil.rmtree(evaluation)
    cfg = EvalConfig(segmenter=demo["segmenter"], size=demo["seg_size"], steps=demo["seg_steps"],
                     width=demo["seg_width"], seed=seed, device="cpu", quality=False, quality_size=demo["seg_size"],
                     baselines=False)
    scores = evaluate_run(folder / "run", generated, evaluation, cfg)["downstream"]["real+generated"]
    result = {"pixel_ap": scores["pixel_ap"], "pixel_auroc": scores["pixel_auroc"], "thresholds": chosen}
    write_json(evaluation / "result.json", result)
    return result


def reference(folder: Path) -> dict:
    """The ablation's own numbers: real-only and real + generated at the run's threshold."""
    downstream = read_json(folder / "evaluation" / "metrics.json")["downstream"]
    rows = [json.loads(line) for line in (folder / "run/generated" / MANIFEST).read_text().splitlines() if line.strip()]
    area = float(np.mean([r["mask_area"] for r in rows if r.get("mask_area") is not None]))
    return {"real_only": downstream["real_only"], "generated": downstream["real+generated"], "area": area}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the --out of a finished ablation_placement run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["0.1", "0.3", "area"],
                        help="thresholds (numbers in [0, 1)) and/or 'area'")
    args = parser.parse_args()
    for mode in args.modes:
        if mode != "area" and not (mode.replace(".", "", 1).isdigit() and 0 <= float(mode) < 1):
            parser.error(f"--modes {mode}: give a threshold in [0, 1) or 'area'")
    folders = {seed: args.out / f"seed{seed}" for seed in args.seeds}
    for seed, folder in folders.items():
        if not (folder / "evaluation" / "metrics.json").is_file():
            parser.error(f"{folder}: no finished ablation seed there; run benchmarks.ablation_placement --out "
                         f"{args.out} --seeds {seed} --variants free first")
    refs = {seed: reference(folder) for seed, folder in folders.items()}
    threshold = read_json(folders[args.seeds[0]] / "run/generated/generation.json").get("mask_threshold", 0.2)
    results = {mode: {seed: evaluate_mode(folder, seed, mode) for seed, folder in folders.items()} for mode in args.modes}

    n = len(args.seeds)
    lines = ["| masks | pixel AP (mean ± sd [95 % CI]) | per seed: pixel AP (AUROC), minus real-only | mean mask area |",
             "| --- | --- | --- | --- |"]

    def add(label: str, per_seed: dict[int, dict], areas: dict[int, float]) -> None:
        ap = [per_seed[s]["pixel_ap"] for s in args.seeds]
        seeds = " / ".join(f"{per_seed[s]['pixel_ap']:.3f} ({per_seed[s]['pixel_auroc']:.3f}), "
                           f"{per_seed[s]['pixel_ap'] - refs[s]['real_only']['pixel_ap']:+.3f}" for s in args.seeds)
        area = " / ".join(f"{100 * areas[s]:.1f} %" for s in args.seeds) if areas else "–"
        lines.append(f"| {label} | {cell(*mean_spread(ap), n)} | {seeds} | {area} |")

    add("real only", {s: refs[s]["real_only"] for s in args.seeds}, {})
    add(f"generated, threshold {threshold} (the run's)", {s: refs[s]["generated"] for s in args.seeds},
        {s: refs[s]["area"] for s in args.seeds})
    for mode, per_seed in results.items():
        areas = {s: float(np.mean([a for _, a in per_seed[s]["thresholds"].values()])) for s in args.seeds}
        add("generated, area-matched" if mode == "area" else f"generated, threshold {mode}", per_seed, areas)
    (args.out / "mask-threshold.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "mask-threshold.json", {"seeds": args.seeds, "reference": refs, "modes": results})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
