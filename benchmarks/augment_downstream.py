"""Defects on real normal images: ``seas augment`` (direct) and ``SeaSAugmenter`` (bank mode)
against ``seas generate`` pairs and cut-paste, downstream, on the demo's product (docs/RESULTS.md).

For each seed folder of ``benchmarks.ablation_placement`` (its finished demo: the run, the
``free`` generated pairs and their evaluation with real-only and cut-paste):

1. ``seas augment`` draws a defect of every type (``--type`` all types, ``--placement
   real-masks``, so three non-overlapping regions per image) onto the first ``--images`` real
   normal training images: ``<seed>/augmented`` (time per image and per defect measured);
2. bank mode: ``SeaSAugmenter(run, bank=<seed>/augmented, probability=1)`` pastes one drawn defect
   onto each of as many real normal training images as the demo generated anomaly pairs, written
   as a generated folder ``<seed>/bank-pairs`` (time per image measured; direct mode's too, on
   four images with one type each);
3. both folders are evaluated with the demo's downstream segmenter settings (real-only is the
   demo's own, reused from ``<run>/segmenters``), without the baselines; generate's row and the
   baselines come from the demo's own ``evaluation/metrics.json``.

    OMP_NUM_THREADS=1 python -m benchmarks.augment_downstream --ablation /tmp/ablation --seeds 0 1 2

The table (Markdown) goes to stdout and ``<ablation>/augment.md``, the numbers to
``<ablation>/augment.json``. Finished steps are reused (delete a folder to redo it).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.ablation_placement import cell, mean_spread
from seas.config import AugmentConfig, GenerationConfig
from seas.evaluation.config import EvalConfig
from seas.evaluation.evaluate import evaluate_run
from seas.files.atomic import read_json, write_json
from seas.files.images import read_rgb
from seas.generation.augment import augment_to_folder
from seas.generation.generated import FORMAT, GeneratedFolder, name_width
from seas.run import Run

ROWS = ("real_only", "real+generated", "cut_paste", "augment (direct)", "augment (bank)")
COLUMNS = ("pixel_ap", "pixel_auroc", "iou", "image_auroc")


def normal_folder(run: Run, out: Path, count: int) -> Path:
    """A folder of links to the first ``count`` normal training images of ``run``."""
    out.mkdir(parents=True, exist_ok=True)
    for sample in run.split.normal_train[:count]:
        link = out / Path(sample.image).name
        if not link.exists():
            link.symlink_to(Path(sample.image).resolve())
    return out


def bank_pairs(run: Run, bank: Path, out: Path, count: int, seed: int) -> float:
    """Write ``count`` bank-mode augmented real normal images as a generated folder; seconds per image."""
    from seas.generation.augmenter import SeaSAugmenter

    augmenter = SeaSAugmenter(run, bank=bank, probability=1.0, seed=seed)
    normals = run.split.normal_train[:count]
    images = torch.stack([torch.from_numpy(read_rgb(s.image).copy()).permute(2, 0, 1).float() / 255 for s in normals])
    start = time.perf_counter()
    augmented, masks = augmenter(images)
    seconds = (time.perf_counter() - start) / count
    folder = GeneratedFolder(out)
    width, rows = name_width(count), []
    for i, (image, mask, kind, sample) in enumerate(zip(augmented, masks, augmenter.last_kinds, normals)):
        paths = {part: f"{kind}/{part}/{i:0{width}d}.png" for part in ("image", "mask")}
        for part, array in (("image", (image.permute(1, 2, 0) * 255).round().byte().numpy()),
                            ("mask", (mask[0] * 255).byte().numpy())):
            folder.file(paths[part]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder.file(paths[part]))
        rows.append({"kind": kind, "index": i, **paths, "reference": str(sample.image),
                     "mask_area": float(mask.mean()), "placement": "bank"})
    rows.sort(key=lambda r: (r["kind"], r["index"]))
    folder.write_settings({"format": FORMAT, "mode": "bank", "run": str(run.path), "product": run.product,
                           "kinds": sorted({r["kind"] for r in rows})})
    folder.write_rows(folder.manifest, rows)
    return seconds


def direct_seconds(run: Run, seed: int, steps: int, count: int = 4) -> float:
    """Seconds per image of ``SeaSAugmenter`` in direct mode (one drawn type per image), the
    models' loading left out (a first call of one image loads them)."""
    from seas.generation.augmenter import SeaSAugmenter

    augmenter = SeaSAugmenter(run, probability=1.0, seed=seed, sampling=GenerationConfig(seed=seed, steps=steps,
                                                                                          batch_size=count))
    images = torch.stack([torch.from_numpy(read_rgb(s.image).copy()).permute(2, 0, 1).float() / 255
                          for s in run.split.normal_train[:count]])
    augmenter(images[:1])
    start = time.perf_counter()
    augmenter(images)
    return (time.perf_counter() - start) / count


def evaluated(run_dir: Path, generated: Path, out: Path, demo: dict, seed: int) -> dict:
    if (out / "metrics.json").is_file():
        return read_json(out / "metrics.json")
    cfg = demo["config"]
    eval_cfg = EvalConfig(segmenter=cfg["segmenter"], size=cfg["seg_size"], steps=cfg["seg_steps"],
                          width=cfg["seg_width"], seed=seed, device="cpu", quality=False, quality_size=cfg["seg_size"],
                          baselines=False)
    return evaluate_run(run_dir, generated, out, eval_cfg)


def seed_rows(folder: Path, seed: int, images: int) -> tuple[dict, dict]:
    """The five training sets' downstream numbers for one seed, and the timings."""
    demo = read_json(folder / "demo.json")
    run = Run.load(folder / "run")
    timing_file = folder / "augment-timing.json"
    timing = read_json(timing_file) if timing_file.is_file() else {}
    augmented = folder / "augmented"
    if not (augmented / "manifest.jsonl").is_file():
        aug = AugmentConfig(type=",".join(run.types), placement="real-masks")
        sampling = GenerationConfig(seed=seed, steps=demo["config"]["sample_steps"])
        start = time.perf_counter()
        augment_to_folder(run, normal_folder(run, folder / "augment-inputs", images), augmented, aug, sampling,
                          device="cpu")
        timing["augment_seconds_per_image"] = (time.perf_counter() - start) / images
        timing["augment_seconds_per_defect"] = timing["augment_seconds_per_image"] / len(run.types)
    own = read_json(folder / "evaluation" / "metrics.json")
    count = own["train_sets"]["real+generated"]["generated_anomalies"]
    if not (folder / "bank-pairs" / "manifest.jsonl").is_file():
        timing["bank_seconds_per_image"] = bank_pairs(run, augmented, folder / "bank-pairs", count, seed)
    if "direct_seconds_per_image" not in timing:
        timing["direct_seconds_per_image"] = direct_seconds(run, seed, demo["config"]["sample_steps"])
    write_json(timing_file, timing)
    direct = evaluated(folder / "run", augmented, folder / "evaluation-augment", demo, seed)
    bank = evaluated(folder / "run", folder / "bank-pairs", folder / "evaluation-bank", demo, seed)
    sources = {"real_only": own, "real+generated": own, "cut_paste": own, "augment (direct)": direct,
               "augment (bank)": bank}
    rows = {}
    for name, metrics in sources.items():
        train_set = name if name in own["downstream"] and metrics is own else "real+generated"
        rows[name] = {c: metrics["downstream"].get(train_set, {}).get(c, math.nan) for c in COLUMNS}
        rows[name]["pairs"] = metrics["train_sets"].get(train_set, {}).get(
            "generated_anomalies", metrics["train_sets"].get(train_set, {}).get("synthetic_anomalies", 0))
    return rows, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", required=True, type=Path, help="the --out of benchmarks.ablation_placement")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=16, help="real normal images seas augment draws on")
    args = parser.parse_args()
    per_seed, timings = {}, []
    for seed in args.seeds:
        folder = args.ablation / f"seed{seed}"
        if not (folder / "demo.json").is_file():
            parser.error(f"{folder}: no finished demo; run benchmarks.ablation_placement --seeds {seed} first")
        rows, timing = seed_rows(folder, seed, args.images)
        per_seed[seed] = rows
        timings.append(timing)
    lines = [f"| training set ({len(args.seeds)} seeds: mean ± sd [95 % CI]) | added pairs | "
             + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 2) + "|"]
    for name in ROWS:
        values = [per_seed[s][name] for s in args.seeds]
        pairs = sorted({v["pairs"] for v in values})
        cells = [cell(*mean_spread([v[c] for v in values]), len(args.seeds)) for c in COLUMNS]
        lines.append(f"| {name} | {'/'.join(map(str, pairs))} | " + " | ".join(cells) + " |")
    gains = {name: [per_seed[s][name]["pixel_ap"] - per_seed[s]["real_only"]["pixel_ap"] for s in args.seeds]
             for name in ROWS[1:]}
    lines += ["", "pixel AP gain over real-only, per seed: " + "; ".join(
        f"{name} {', '.join(f'{g:+.3f}' for g in values)}" for name, values in gains.items())]
    mean_timing = {key: float(np.mean([t[key] for t in timings if key in t])) for key in timings[0]}
    lines += ["", "seconds per image (mean over seeds, one thread): " + ", ".join(
        f"{key} {value:.4g}" for key, value in mean_timing.items())]
    write_json(args.ablation / "augment.json", {"seeds": args.seeds, "images": args.images, "rows": per_seed,
                                                "timing": timings, "gains": gains})
    (args.ablation / "augment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
