"""``seas evaluate``: what the generated data adds to a downstream segmenter, and its quality.

Protocol for one product (spec section 7, docs/EVALUATION.md):

* **test set**: the split's test samples, i.e. the held-out anomalies of every type plus the
  normal test images;
* **training sets**, each training the same segmenter from scratch with the same seed:
  ``real_only`` (the real few-shot training anomalies with masks + the normal training
  images), ``real+generated`` (+ the generated anomaly pairs and generated normals),
  and the classic baselines ``cut_paste`` (real training defects pasted on normal images) and
  ``perlin`` (DRAEM-style noise blends), each with as many synthetic pairs as there are
  generated anomaly pairs; the ``real_only`` model is kept in ``<run>/segmenters`` and reused when
  the same run is evaluated again with the same settings (:mod:`seas.evaluation.segmenter_cache`);
* every model is scored with :func:`seas.evaluation.metrics.all_metrics` on the whole test set
  and per anomaly type (that type's test anomalies + all normal test images);
* generation quality per generated kind against every real image of that type (training and
  test, as in the paper), by family: IS and KID when the Inception-v3 weights are found,
  IC-LPIPS and IC-LPIPS in the anomaly region when the LPIPS weights are found (each family
  computed on its own, or skipped with a one-line reason); plus, per type, IC-LPIPS of the
  generated images, the real test anomalies and cut-paste and Perlin pairs, all clustered
  around the type's real training anomalies, so that the generated images' number can be read
  against real variety and against the classic baselines;
* **the answer** (:mod:`seas.evaluation.verdict`): whether the generated pairs helped, measured on
  every downstream metric together, against ``real_only`` and against ``cut_paste``;
* **are the generated pairs right?** (:mod:`seas.evaluation.generated_measures`): type fidelity
  (a type classifier trained on the real training anomalies, seeded with ``seed``), mask
  agreement (the ``real_only`` segmenter above, not another), anomaly evidence against each
  row's reference normal image, and mask area and position, per generated kind;
* the pairs quality control rejected (``rejected.jsonl``), counted and shown in the report only:
  training and the measures use ``manifest.jsonl`` alone.

Everything happens at ``size x size`` (:mod:`seas.evaluation.inputs`). The jobs live in their
modules: reading (:mod:`~seas.evaluation.inputs`), the training sets compared
(:mod:`~seas.evaluation.comparison`), generation quality (:mod:`~seas.evaluation.generation_quality`);
this one runs them in order. Outputs: ``<out>/metrics.json`` (NaN written as null) and
``<out>/report.html``, each written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from seas.data.readers import GOOD
from seas.data.split import summary_rows
from seas.errors import RunError
from seas.evaluation.comparison import run_downstream
from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import resolve_device
from seas.evaluation.generated_measures import kind_order, measure_generated
from seas.evaluation.generation_quality import check_quality_weights, run_quality
from seas.evaluation.inputs import (
    build_train_sets,
    cap_per_kind,
    load_generated,
    load_real,
    read_generated,
    report_grids,
)
from seas.evaluation.rejected import qc_counts, qc_examples, read_rejected
from seas.evaluation.report import write_report
from seas.evaluation.verdict import verdict
from seas.files.atomic import is_temporary, write_text
from seas.generation.generated import GeneratedFolder
from seas.run import Run

EVAL_FORMAT = "seas-evaluation-1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def _run_summary(run: Run, gen_dir: Path) -> dict:
    return {
        "path": str(run.path), "generated": str(gen_dir), "product": run.product, "layout": run.data.layout,
        "root": run.data.root, "base": run.base, "guidance": run.guidance, "types": run.types,
        "stage1": run.train.to_dict(),
    }


def _json_safe(value):
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def foreign_names(out: Path) -> list[str]:
    """What an evaluation folder holds that no evaluation wrote (sorted; temporaries aside)."""
    if not Path(out).is_dir():
        return []
    return sorted(p.name for p in Path(out).iterdir()
                  if p.name not in (METRICS_FILE, REPORT_FILE) and not is_temporary(p.name))


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file or a non-empty folder other than a previous evaluation."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: exists and is not a folder; choose a new folder")
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    if names and (METRICS_FILE not in names or names - {METRICS_FILE, REPORT_FILE}):
        raise RunError(f"--out {out}: not empty and not a previous evaluation "
                       f"(holds {', '.join(sorted(names)[:3])}); choose a new folder")


# ----------------------------------------------------------------------------- entry point


def evaluate_run(run_dir: str | Path, generated_dir: str | Path | None = None, out_dir: str | Path | None = None,
                 cfg: EvalConfig | None = None, extra: dict | None = None) -> dict:
    """Evaluate a run's generated data; write ``metrics.json`` and ``report.html``; return the metrics.

    ``generated_dir`` defaults to ``<run>/generated``, ``out_dir`` to ``<run>/evaluation``.
    ``extra``: further report sections ``{title: {row: value or {column: value}}}`` (e.g.
    attention-map localisation, stage timings), rendered as tables and stored under ``"extra"``.
    Every check (run, generated folder, out folder, required weights) happens before any
    training, and nothing is written when one fails.
    """
    cfg = cfg or EvalConfig()
    run = Run.load(Path(run_dir).resolve(), verify=False)  # reads the split, not the weights
    gen = GeneratedFolder.existing(generated_dir) if generated_dir else GeneratedFolder.of_run(run.path)
    gen_dir = gen.path
    out = Path(out_dir).resolve() if out_dir else run.folder.evaluation
    all_rows = read_generated(gen)
    _check_out(out)
    quality_reasons = check_quality_weights(cfg)

    split, threshold = run.split, run.mask_rule
    rows = cap_per_kind(all_rows, cfg.max_generated)
    real = {t: load_real(split.train[t], cfg.size, run) for t in split.types}  # {type: [(image, mask)]}
    real_pairs = [pair for t in split.types for pair in real[t]]
    normals = [image for image, _ in load_real(split.normal_train, cfg.size, run)]
    train_sets, composition = build_train_sets(real_pairs, normals, rows, cfg)
    test_pairs = load_real(split.test, cfg.size, run)
    generated = load_generated(rows, cfg.size, run)
    scored = [p for p in generated if p.kind != GOOD and p.mask is not None]
    downstream = run_downstream(train_sets, test_pairs, [s.type for s in split.test], split.types, cfg,
                                scored=[p.image for p in scored], run_dir=run.path)
    for pair, prob in zip(scored, downstream["scored"]):
        pair.prob = prob  # the real_only segmenter's map: mask agreement reuses that model
    test_by_type = {}  # {type or "good": [(image, mask)]}: the held-out real images the type classifier also reads
    for sample, pair in zip(split.test, test_pairs):
        test_by_type.setdefault(sample.type, []).append(pair)
    measures = measure_generated(generated, real, normals, seed=cfg.seed, steps=cfg.judge_steps,
                                 device=str(resolve_device(cfg.device)), test=test_by_type)

    quality_scores = run_quality(rows, run, quality_reasons, cfg)
    kinds = kind_order({r["kind"] for r in all_rows}, split.types)
    rejected, skipped = read_rejected(gen)
    qc = qc_counts(all_rows, rejected, kinds, skipped) if rejected or skipped else None
    total, used = Counter(r["kind"] for r in all_rows), Counter(r["kind"] for r in rows)
    metrics = _json_safe({
        "format": EVAL_FORMAT,
        "run": _run_summary(run, gen_dir),
        "config": cfg.to_dict(),
        "split": [dict(zip(("type", "images", "train", "test"), row)) for row in summary_rows(split)],
        "generated": {k: {"rows": total[k], "used": used[k],
                          # an empty mask is not a mask: counted apart
                          "with_mask": sum(1 for r in rows if r["kind"] == k and r.get("mask") and r.get("mask_area")),
                          "empty_masks": sum(1 for r in rows if r["kind"] == k and r.get("mask")
                                             and not r.get("mask_area"))} for k in kinds},
        "train_sets": {name: dict(composition[name], seconds=downstream["seconds"][name],
                                 reused=downstream["reused"][name]) for name in train_sets},
        "verdict": verdict(downstream["metrics"]),
        "downstream": downstream["metrics"],
        "per_type": downstream["per_type"],
        "generated_measures": measures,
        "quality_control": qc,
        "quality": quality_scores,
        "curves": downstream["curves"],
        "extra": extra or {},
    })
    out.mkdir(parents=True, exist_ok=True)
    report = out / REPORT_FILE
    examples = qc_examples(all_rows, rejected, list(qc["per_kind"])) if qc else None
    write_report(report, metrics, metrics["curves"], report_grids(rows, split, threshold, kinds), metrics["extra"], examples)
    write_text(out / METRICS_FILE, json.dumps(metrics, indent=1, allow_nan=False))
    return metrics
