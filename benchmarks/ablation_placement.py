"""Ablation: placement (free vs real-masks) and quality control (off vs filter), against real-only,
cut-paste and Perlin, over several seeds, on the demo's product or a dataset (docs/ABLATION.md).

For each seed, the default ``seas demo`` runs (data, both stages from the shipped base,
generation with ``free`` placement and no QC, the full evaluation with the baselines); then the
same run generates the three other variants into their own folders (and, when asked for,
``free+stats`` and ``free+sampled``: free placement with and without ``--reference-stats``,
whatever the demo's default), each evaluated without the
baselines (real-only is the demo's model, read back from ``<run>/segmenters``). Every number
comes from the variant's ``metrics.json``; the table gives the mean, the sample standard
deviation and the 95 % confidence interval of the mean (Student's t) over the seeds.

    OMP_NUM_THREADS=1 python -m benchmarks.ablation_placement --out /tmp/ablation --seeds 0 1 2
    OMP_NUM_THREADS=1 python -m benchmarks.ablation_placement --out /tmp/ablation-mt --seeds 0 1 2 \
        --data examples/magnetic-tile.yaml

(The tiny model's numbers depend on the thread count; docs/ABLATION.md used one thread.)

A seed folder whose demo finished is reused (delete it to redo it); ``--set num_per_kind=N``,
``--guidance G`` or another segmenter there generates or evaluates again into folders of their own
(:func:`variant_folders`). Progress goes to stderr; the
table (Markdown) to stdout and ``<out>/ablation.md``, the numbers to ``<out>/ablation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from benchmarks.common import with_settings
from seas.cli.demo import DemoConfig, demo_kinds, run_demo
from seas.config import GenerationConfig
from seas.evaluation.config import EvalConfig
from seas.evaluation.evaluate import evaluate_run
from seas.errors import RunError
from seas.files.atomic import read_json, write_json
from seas.generation.folder import generate_to_folder
from seas.run import Run

VARIANTS = {  # name -> (placement, qc, reference_stats; None: the demo's own setting)
    "free": ("free", "off", None),
    "free+qc": ("free", "filter", None),
    "real-masks": ("real-masks", "off", None),
    "real-masks+qc": ("real-masks", "filter", None),
    "free+stats": ("free", "off", True),  # --reference-stats whatever the demo's default
    "free+sampled": ("free", "off", False),  # the sampler's latents decoded as they are (the reference)
}
EVIDENCE = ("attention_pixel_auroc", "mask_head_pixel_auroc", "mask_head_pixel_ap")  # demo.json, per seed
DOWNSTREAM = ("pixel_auroc", "pixel_ap", "iou", "aupro_0.3", "image_auroc", "image_ap")


def seed_folder(out: Path, seed: int, cfg: DemoConfig, data_cfg, compute: bool = True) -> Path | None:
    """The finished demo of ``seed`` in ``out/seed<seed>`` (run now unless already finished;
    ``None`` when it is not finished and ``compute`` is off)."""
    folder = out / f"seed{seed}"
    marker = folder / "demo.json"
    if not (marker.is_file() and read_json(marker).get("status") == "finished"):
        if not compute:
            return None
        run_demo(folder, dataclasses.replace(cfg, seed=seed), data_cfg)
    return folder


SEGMENTER = ("segmenter", "seg_size", "seg_steps", "seg_width")  # the downstream segmenter's settings


def variant_generation(name: str, cfg: DemoConfig, seed: int, guidance: float | None = None) -> GenerationConfig:
    """How variant ``name`` of ``seed``'s demo generates: the demo's settings with the variant's
    placement, quality control and (where the variant names one) ``reference_stats``; ``guidance``
    replaces the run's dataset preset (8 for the synthetic product)."""
    placement, qc, reference_stats = VARIANTS[name]
    return GenerationConfig(num=cfg.num_per_kind, seed=seed, steps=cfg.sample_steps, guidance=guidance,
                            placement=placement, qc=qc,
                            reference_stats=cfg.reference_stats if reference_stats is None else reference_stats)


def variant_folders(folder: Path, name: str, cfg: DemoConfig, guidance: float | None = None) -> tuple[Path, Path]:
    """Where variant ``name`` of the finished demo in ``folder`` generates and is evaluated.

    ``free`` at the demo's own count is the demo's output (``run/generated``, ``evaluation``).
    When ``cfg`` asks for another count of pairs per kind than the demo generated (``--set
    num_per_kind=48`` on finished seeds), every variant, ``free`` included, generates again into
    ``generated-<name>@n<count>``; so it does with a ``guidance`` (``--guidance 3``:
    ``generated-<name>@g3``). When ``cfg``'s downstream segmenter differs from the demo's
    (``--set seg_steps=...``), every variant is evaluated again into a folder named after the
    segmenter's settings. A ``free`` evaluation away from the demo's own trains the baselines again
    (cut-paste and Perlin make as many pairs as the generated set has)."""
    demo = read_json(folder / "demo.json")["config"]
    segmenter = tuple(getattr(cfg, key) for key in SEGMENTER)
    seg_suffix = "" if segmenter == tuple(demo[key] for key in SEGMENTER) else "@" + "-".join(map(str, segmenter))
    count = "" if cfg.num_per_kind == demo["num_per_kind"] else f"@n{cfg.num_per_kind}"
    regenerated = count + ("" if guidance is None else f"@g{guidance:g}")  # "": the demo's own generation settings
    if name == "free" and not regenerated:
        return folder / "run/generated", folder / f"evaluation{seg_suffix}"
    evaluation = "evaluation" if name == "free" else f"evaluation-{name}"
    return folder / f"generated-{name}{regenerated}", folder / f"{evaluation}{regenerated}{seg_suffix}"


def variant_metrics(folder: Path, name: str, cfg: DemoConfig, seed: int, compute: bool = True,
                    guidance: float | None = None) -> dict:
    """``metrics.json`` of one variant of one seed (generated and evaluated unless present, or
    ``{"downstream": {}}`` when absent and ``compute`` is off), with ``accepted``: the share of the
    requested pairs written (below 1 when QC's cap was reached; given whenever the variant's
    generated folder exists, also when its pairs could not be evaluated, e.g. normal images only).

    ``free`` is the demo's own output and evaluation (folders: :func:`variant_folders`)."""
    generated, evaluation = variant_folders(folder, name, cfg, guidance)
    manifest = generated / "manifest.jsonl"
    if not compute and not manifest.is_file():
        return {"downstream": {}}
    run_dir = folder / "run"
    run = Run.load(run_dir)
    kinds = demo_kinds(run.types)
    if not manifest.is_file():
        try:
            generate_to_folder(run, generated, kinds, variant_generation(name, cfg, seed, guidance), device="cpu")
        except RunError as err:  # QC's cap reached: the accepted pairs stay; say so and go on
            print(f"seed {seed} {name}: {err}", file=sys.stderr)
    written = len(manifest.read_text().splitlines()) if manifest.is_file() else 0
    accepted = written / (len(kinds) * cfg.num_per_kind)
    if (evaluation / "metrics.json").is_file():
        return {**read_json(evaluation / "metrics.json"), "accepted": accepted}
    if not written or not compute:  # nothing to evaluate, or a QC run whose pairs could not be evaluated
        return {"downstream": {}, "accepted": accepted}
    eval_cfg = EvalConfig(segmenter=cfg.segmenter, size=cfg.seg_size, steps=cfg.seg_steps, width=cfg.seg_width,
                          seed=seed, device="cpu", quality=False, quality_size=cfg.seg_size, baselines=name == "free")
    try:
        return {**evaluate_run(run_dir, generated, evaluation, eval_cfg), "accepted": accepted}
    except RunError as err:  # e.g. only normal images accepted: nothing to add to real_only
        print(f"seed {seed} {name}: {err}", file=sys.stderr)
        return {"downstream": {}, "accepted": accepted}


def measures(metrics: dict, train_set: str) -> dict:
    """The ablation's numbers for one training set of one variant's metrics."""
    row = {key: metrics["downstream"].get(train_set, {}).get(key, math.nan) for key in DOWNSTREAM}
    fidelity = metrics.get("generated_measures", {}).get("type_fidelity", {})
    if train_set == "real_only":  # the type classifier's reading of the held-out real test images, the scale
        held_out = fidelity.get("real_test", {})
        return {**row, "type_fidelity": held_out.get("accuracy", math.nan),
                "normals_good": held_out.get("good_accuracy", math.nan)}
    if train_set != "real+generated":
        return row
    agreement = metrics.get("generated_measures", {}).get("mask_agreement", {}).get("all", {})
    return {**row, "accepted": metrics.get("accepted", math.nan),
            "type_fidelity": fidelity.get("accuracy", math.nan), "normals_good": fidelity.get("good_accuracy", math.nan),
            "mask_iou": agreement.get("mean_iou", math.nan), "mask_found": agreement.get("found_rate", math.nan)}


def mean_spread(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation and count of the defined values (a QC variant that
    accepted no anomaly on a seed has no downstream numbers there)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, spread, len(values)


T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}  # by count


def cell(mean: float, spread: float, count: int, seeds: int) -> str:
    """``mean ± sd [low, high]``: the 95 % confidence interval of the mean (Student's t, n - 1
    degrees of freedom) when 2 to 10 seeds are defined."""
    if count == 0:
        return "–"
    text = f"{mean:.3f}"
    if count > 1:
        half = T_975.get(count, 1.96) * spread / math.sqrt(count)
        text += f" ± {spread:.3f} [{mean - half:.3f}, {mean + half:.3f}]"
    return text if count == seeds else f"{text} ({count} of {seeds} seeds)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default=None, help="a dataset description (YAML); default: the synthetic product")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS)[:4], choices=list(VARIANTS),
                        help="default: the placement and QC variants (free+stats and free+sampled on request)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="demo settings other than the default (e.g. seg_size=128 seg_steps=400)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="generate every variant again with this classifier-free guidance (default: the run's "
                        "dataset preset, the demo's own pairs)")
    parser.add_argument("--quick", action="store_true", help="the test suite's shortened demo (a smoke test)")
    parser.add_argument("--report-only", action="store_true",
                        help="tabulate what is finished, compute nothing (a missing seed or variant counts as absent)")
    args = parser.parse_args()
    if args.report_only and not args.out.is_dir():
        parser.error(f"--out {args.out}: no such folder, so nothing to report; give the --out of an ablation run")

    data_cfg = None
    if args.data:
        from seas.data.config import DataConfig

        data_cfg = DataConfig.from_yaml(args.data)
    cfg = DemoConfig.quick() if args.quick else DemoConfig.photographs() if args.data else DemoConfig()
    cfg = with_settings(cfg, args.set, parser.error)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        folder = seed_folder(args.out, seed, cfg, data_cfg, compute=not args.report_only)
        for name in args.variants:
            metrics = (variant_metrics(folder, name, cfg, seed, not args.report_only, args.guidance) if folder
                       else {"downstream": {}})
            rows.setdefault(name, []).append(measures(metrics, "real+generated"))
            if name == "free":
                evidence = read_json(folder / "demo.json").get("evidence", {}) if folder else {}
                rows.setdefault("evidence", []).append({key: evidence.get(key, math.nan) for key in EVIDENCE})
                for baseline in ("real_only", "cut_paste", "perlin"):
                    rows.setdefault(baseline, []).append(measures(metrics, baseline))
    evidence_rows = rows.pop("evidence", [])
    evidence = {key: mean_spread([r[key] for r in evidence_rows]) for key in EVIDENCE}
    columns = ["accepted", "type_fidelity", "normals_good", "mask_iou", "mask_found", *DOWNSTREAM]
    table = {name: {c: mean_spread([r.get(c, math.nan) for r in values]) for c in columns}
             for name, values in rows.items()}
    write_json(args.out / "ablation.json", {"seeds": args.seeds, "data": args.data, "config": dataclasses.asdict(cfg),
                                            "rows": rows, "evidence_rows": evidence_rows, "evidence": evidence, "table": {
        name: {c: list(v) for c, v in cols.items()} for name, cols in table.items()}})
    lines = [f"| training set ({len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}: mean ± sd [95 % CI]) | "
             + " | ".join(columns) + " |",
             "| --- " * (len(columns) + 1) + "|"]
    guidance = "" if args.guidance is None else f", guidance {args.guidance:g}"
    for name, cols in table.items():
        baseline = name in ("real_only", "cut_paste", "perlin")
        label = name if baseline else f"real + generated ({name}, {cfg.num_per_kind} a kind{guidance})"
        cells = [cell(*values, len(args.seeds)) for values in cols.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "real_only's type_fidelity and normals_good: the same classifier on the held-out real test "
              "anomalies and normal images (what real images score)"]
    lines += ["", "| evidence on held-out real images (free, from demo.json) | mean ± sd [95 % CI] |", "| --- | --- |"]
    lines += [f"| {key} | {cell(*values, len(args.seeds))} |" for key, values in evidence.items()]
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
