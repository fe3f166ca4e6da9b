"""``seas evaluate``: what the generated data adds to a downstream segmenter, and its quality.

Protocol for one product (spec section 7, docs/EVALUATION.md):

* **test set**: the split's test samples, i.e. the held-out anomalies of every type plus the
  normal test images;
* **training sets**, each training the same segmenter from scratch with the same seed:
  ``real_only`` (the real few-shot training anomalies with masks + the normal training
  images), ``real+generated`` (+ the generated anomaly pairs and generated normals),
  and the classic baselines ``cut_paste`` (real training defects pasted on normal images) and
  ``perlin`` (DRAEM-style noise blends), each with as many synthetic pairs as there are
  generated anomaly pairs;
* every model is scored with :func:`seas.evaluation.metrics.all_metrics` on the whole test set
  and per anomaly type (that type's test anomalies + all normal test images);
* generation quality (IS, KID, IC-LPIPS, IC-LPIPS in the anomaly region) per generated kind
  against every real image of that type (training and test, as in the paper).

Everything happens at ``size x size``: images are resized (area when shrinking, else
bilinear), masks binarised with the dataset's rule (``mask_rule``) then resized by
nearest neighbour. Outputs: ``<out>/metrics.json`` (NaN written as null) and
``<out>/report.html``, each written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seas.data.split import Split, summary_rows
from seas.errors import ConfigError, RunError
from seas.files.atomic import write_text
from seas.files.images import read_mask, read_rgb, resize_image, resize_mask
from seas.generation.folder import MANIFEST
from seas.model.prompts import GOOD, MIX
from seas.run import Run
from seas.evaluation.downstream import (DownstreamConfig, make_cut_paste_set, make_perlin_set, predict, resolve_device, train_segmenter)
from seas.evaluation.metrics import UndefinedMetricError, all_metrics, pr_curve, roc_curve
from seas.evaluation.quality import MissingWeightsError, check_weights, quality_scores
from seas.evaluation.report import write_report
from seas.evaluation.segmenters import SEGMENTERS

EVAL_FORMAT = "seas-evaluation-1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
GRID_GENERATED = 8  # generated images per kind in the report
GRID_REAL = 4  # real training images per kind in the report
CURVE_POINTS = 300  # points kept per curve in metrics.json and the report


@dataclass
class EvalConfig:
    """Settings of ``seas evaluate``.

    Attributes:
        segmenter: ``"bisenetv2"`` or ``"unet"``.
        size: square resolution of training and evaluation (paper: 256).
        steps: optimiser steps per training set.
        batch_size: images per step.
        width: channel multiplier of the segmenter.
        seed: seeds the segmenters, their batches and the baseline synthesis.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        baselines: also train on the cut-paste and Perlin training sets.
        quality: ``None`` computes quality scores when the weights are found (else records
            why not), ``True`` requires them, ``False`` skips them.
        weights_dir: first folder searched for the quality networks' weight files.
        quality_size: resolution of the quality scores (protocol: 256).
        max_generated: use at most this many generated images per kind (``None``: all).
        progress: tqdm bars while training.
    """

    segmenter: str = "bisenetv2"
    size: int = 256
    steps: int = 2000
    batch_size: int = 8
    width: float = 1.0
    seed: int = 0
    device: str = "auto"
    baselines: bool = True
    quality: bool | None = None
    weights_dir: str | None = None
    quality_size: int = 256
    max_generated: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ConfigError(f"--segmenter {self.segmenter!r}: choose one of {', '.join(SEGMENTERS)}")
        for name, low in (("size", 16), ("steps", 1), ("batch_size", 1), ("quality_size", 16)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least {low}")
        if self.width <= 0:
            raise ConfigError(f"--width {self.width}: must be positive")
        if self.max_generated is not None and self.max_generated < 1:
            raise ConfigError(f"--max-generated {self.max_generated}: must be at least 1")

    def downstream(self) -> DownstreamConfig:
        return DownstreamConfig(segmenter=self.segmenter, size=self.size, steps=self.steps,
                                batch_size=self.batch_size, width=self.width, seed=self.seed,
                                device=self.device, progress=self.progress)


# ----------------------------------------------------------------------------- generated folder


def read_generated(gen_dir: str | Path) -> list[dict]:
    """Rows of ``<gen_dir>/manifest.jsonl`` in file order; ``image``/``mask`` as absolute paths.

    Raises :class:`RunError` (one line, naming the file) for a missing folder or manifest, a
    line that is not a JSON object with ``kind`` and ``image``, or a listed file that is missing.
    """
    gen_dir = Path(gen_dir).resolve()
    manifest = gen_dir / MANIFEST
    if not manifest.is_file():
        raise RunError(f"--generated {gen_dir}: no {MANIFEST}; run 'seas generate' into this folder first")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{manifest}: cannot be read ({err}); generate again") from None
    rows = [_parse_row(line, f"{manifest} line {n}", gen_dir) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise RunError(f"{manifest}: holds no rows; generate images first")
    return rows


def _parse_row(line: str, where: str, gen_dir: Path) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise RunError(f"{where}: not valid JSON ({err.msg}); the file is damaged, generate again") from None
    if not isinstance(row, dict) or not isinstance(row.get("kind"), str) or not isinstance(row.get("image"), str):
        raise RunError(f"{where}: each row must be a JSON object with string 'kind' and 'image'")
    if not isinstance(row.get("mask"), (str, type(None))):
        raise RunError(f"{where}: 'mask' must be a relative path or null")
    row = dict(row, image=_listed_file(gen_dir, row["image"], where))
    if row.get("mask") is not None:
        row["mask"] = _listed_file(gen_dir, row["mask"], where)
    return row


def _listed_file(gen_dir: Path, relative: str, where: str) -> str:
    path = gen_dir / relative
    if not path.is_file():
        raise RunError(f"{path}: listed in {where} but missing; generate again or fix the manifest")
    return str(path)


def _cap_per_kind(rows: list[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` rows of each kind, in manifest order."""
    if limit is None:
        return rows
    seen: Counter = Counter()
    kept = []
    for row in rows:
        if seen[row["kind"]] < limit:
            kept.append(row)
            seen[row["kind"]] += 1
    return kept


def _kind_order(kinds, types: list[str]) -> list[str]:
    """Run types first (their order), then mixtures and other kinds sorted, then ``good``."""
    kinds = set(kinds)
    rest = sorted(kinds - set(types) - {GOOD})
    return [t for t in types if t in kinds] + rest + ([GOOD] if GOOD in kinds else [])


# ----------------------------------------------------------------------------- loading at size


def _load_pairs(samples, size: int, threshold: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Samples -> [(image (S, S, 3) uint8, mask (S, S) bool or None for normals)]."""
    return [(resize_image(read_rgb(s.image), size),
             None if s.mask is None else resize_mask(read_mask(s.mask, threshold), size)) for s in samples]


def _components(kind: str) -> list[str]:
    return kind.split(MIX)


# ----------------------------------------------------------------------------- training sets


def build_train_sets(real_pairs: list, normals: list[np.ndarray], generated: list[dict],
                     cfg: EvalConfig) -> tuple[dict[str, list], dict[str, dict]]:
    """The training sets and their composition.

    ``real_pairs``: real training anomalies ``(image, mask)``; ``normals``: normal training
    images; ``generated``: manifest rows (anomaly rows without a mask are left out).
    Returns ``({name: [(image, mask or None)]}, {name: {part: count}})``.
    """
    base = list(real_pairs) + [(image, None) for image in normals]
    parts = {"real_anomalies": len(real_pairs), "real_normals": len(normals)}
    gen_pairs = [(r["image"], r["mask"]) for r in generated if r["kind"] != GOOD and r.get("mask") is not None]
    gen_normals = [(r["image"], None) for r in generated if r["kind"] == GOOD]
    if not gen_pairs and not gen_normals:
        raise RunError("the generated folder has no usable rows (anomalies need masks: "
                       "generate with a trained mask head)")
    sets = {"real_only": base, "real+generated": base + gen_pairs + gen_normals}
    composition = {"real_only": parts, "real+generated": dict(
        parts, generated_anomalies=len(gen_pairs), generated_normals=len(gen_normals))}
    if cfg.baselines:
        n = len(gen_pairs) or len(normals)
        sets["cut_paste"] = base + make_cut_paste_set(real_pairs, normals, n, cfg.seed)
        sets["perlin"] = base + make_perlin_set(normals, n, cfg.seed)
        composition.update({name: dict(parts, synthetic_anomalies=n) for name in ("cut_paste", "perlin")})
    return sets, composition


# ----------------------------------------------------------------------------- downstream


def _thin(x, y, n: int = CURVE_POINTS) -> tuple[list[float], list[float]]:
    """About ``n`` points of a polyline, evenly spaced along its length, both ends kept."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    keep = np.union1d(np.searchsorted(length, np.linspace(0.0, length[-1], n)), [len(x) - 1])
    return x[keep].tolist(), y[keep].tolist()


def _pixel_curves(scores: np.ndarray, masks: np.ndarray) -> dict:
    """Thinned pixel ROC and PR curves of (N, S, S) scores and masks (empty when undefined)."""
    try:
        fpr, tpr, _ = roc_curve(masks, scores)
        precision, recall, _ = pr_curve(masks, scores)
    except UndefinedMetricError:
        return {}
    fpr, tpr = _thin(fpr, tpr)
    recall, precision = _thin(recall, precision)
    return {"roc": {"fpr": fpr, "tpr": tpr}, "pr": {"recall": recall, "precision": precision}}


def _per_type(scores: np.ndarray, masks: np.ndarray, test_types: list[str], types: list[str]) -> dict:
    """``all_metrics`` of each type's test anomalies together with every normal test image."""
    kinds = np.asarray(test_types)
    return {t: all_metrics(scores[(kinds == t) | (kinds == GOOD)], masks[(kinds == t) | (kinds == GOOD)])
            for t in types if (kinds == t).any()}


def run_downstream(train_sets: dict[str, list], test_pairs: list, test_types: list[str],
                   types: list[str], cfg: EvalConfig) -> dict:
    """Train and score one segmenter per training set.

    Returns ``{"metrics": {set: all_metrics}, "per_type": {set: {type: all_metrics}},
    "curves": {set: {"roc": .., "pr": ..}}, "seconds": {set: s}}``.
    """
    dcfg = cfg.downstream()
    images = [image for image, _ in test_pairs]
    masks = np.stack([np.zeros((cfg.size, cfg.size), bool) if m is None else m for _, m in test_pairs])
    out = {"metrics": {}, "per_type": {}, "curves": {}, "seconds": {}}
    for name, pairs in train_sets.items():
        start = time.perf_counter()
        model = train_segmenter(pairs, dcfg, desc=name)
        scores = predict(model, images, cfg.size, resize_back=False, batch_size=dcfg.eval_batch_size)
        out["metrics"][name] = all_metrics(scores, masks)
        out["per_type"][name] = _per_type(scores, masks, test_types, types)
        out["curves"][name] = _pixel_curves(scores, masks)
        out["seconds"][name] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- quality


def check_quality_weights(cfg: EvalConfig) -> str | None:
    """``None`` when quality scores will be computed, else why not.

    Raises :class:`MissingWeightsError` when ``cfg.quality`` requires the scores and a weight
    file is missing.
    """
    if cfg.quality is False:
        return "turned off (--no-quality)"
    try:
        check_weights(cfg.weights_dir)
    except MissingWeightsError as err:
        if cfg.quality:
            raise
        return str(err)
    return None


def run_quality(generated: list[dict], real_by_type: dict[str, list], cfg: EvalConfig) -> dict:
    """Quality scores per generated anomaly kind vs the real images of its type(s).

    A mixture ``a+b`` is compared with the real images of ``a`` and ``b``. ``mean`` averages the
    plain types (not the mixtures) over their finite values. A kind with fewer than 2 images on
    either side gets ``{"skipped": reason}``.
    """
    by_kind: dict[str, list[dict]] = {}
    for row in generated:
        if row["kind"] != GOOD:
            by_kind.setdefault(row["kind"], []).append(row)
    per_kind = {}
    for kind in _kind_order(by_kind, list(real_by_type)):
        real = [s.image for t in _components(kind) for s in real_by_type.get(t, [])]
        per_kind[kind] = _kind_quality(by_kind[kind], real, cfg)
    singles = [v for k, v in per_kind.items() if k in real_by_type and "skipped" not in v]
    mean = {key: _nanmean([v[key] for v in singles]) for key in (singles[0] if singles else {})}
    return {"per_kind": per_kind, "mean": mean}


def _kind_quality(rows: list[dict], real_paths: list[str], cfg: EvalConfig) -> dict:
    if len(rows) < 2 or len(real_paths) < 2:
        return {"skipped": f"needs at least 2 generated and 2 real images (has {len(rows)} and {len(real_paths)})"}
    masks = [read_mask(r["mask"]) for r in rows] if all(r.get("mask") for r in rows) else None
    return quality_scores([read_rgb(r["image"]) for r in rows], [read_rgb(p) for p in real_paths], masks,
                          weights_dir=cfg.weights_dir, device=resolve_device(cfg.device), seed=cfg.seed,
                          image_size=cfg.quality_size)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ----------------------------------------------------------------------------- report inputs


def _grids(generated: list[dict], split: Split, threshold: str, kinds: list[str]) -> dict:
    """Per kind: up to 8 generated and 4 real training (image, mask or None) pairs at full size."""
    grids = {}
    for kind in kinds:
        rows = [r for r in generated if r["kind"] == kind]
        real = split.normal_train if kind == GOOD else [s for t in _components(kind) for s in split.train.get(t, [])]
        grids[kind] = {
            "count": len(rows),
            "generated": [(read_rgb(r["image"]), read_mask(r["mask"]) if r.get("mask") else None)
                          for r in rows[:GRID_GENERATED]],
            "real": [(read_rgb(s.image), read_mask(s.mask, threshold) if s.mask else None)
                     for s in real[:GRID_REAL]],
        }
    return grids


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
    gen_dir = Path(generated_dir).resolve() if generated_dir else run.path / "generated"
    out = Path(out_dir).resolve() if out_dir else run.path / "evaluation"
    all_rows = read_generated(gen_dir)
    _check_out(out)
    quality_skipped = check_quality_weights(cfg)

    split, threshold = run.split, run.mask_rule
    rows = _cap_per_kind(all_rows, cfg.max_generated)
    real_pairs = _load_pairs([s for t in split.types for s in split.train[t]], cfg.size, threshold)
    normals = [image for image, _ in _load_pairs(split.normal_train, cfg.size, threshold)]
    train_sets, composition = build_train_sets(real_pairs, normals, rows, cfg)
    test_pairs = _load_pairs(split.test, cfg.size, threshold)
    downstream = run_downstream(train_sets, test_pairs, [s.type for s in split.test], split.types, cfg)

    real_by_type = {t: split.train[t] + [s for s in split.test if s.type == t] for t in split.types}
    quality = {"skipped": quality_skipped} if quality_skipped else run_quality(rows, real_by_type, cfg)
    kinds = _kind_order({r["kind"] for r in all_rows}, split.types)
    total, used = Counter(r["kind"] for r in all_rows), Counter(r["kind"] for r in rows)
    metrics = _json_safe({
        "format": EVAL_FORMAT,
        "run": _run_summary(run, gen_dir),
        "config": asdict(cfg),
        "split": [dict(zip(("type", "images", "train", "test"), row)) for row in summary_rows(split)],
        "generated": {k: {"rows": total[k], "used": used[k],
                          # an empty mask is not a mask: counted apart
                          "with_mask": sum(1 for r in rows if r["kind"] == k and r.get("mask") and r.get("mask_area")),
                          "empty_masks": sum(1 for r in rows if r["kind"] == k and r.get("mask")
                                             and not r.get("mask_area"))} for k in kinds},
        "train_sets": {name: dict(composition[name], seconds=downstream["seconds"][name]) for name in train_sets},
        "downstream": downstream["metrics"],
        "per_type": downstream["per_type"],
        "quality": quality,
        "curves": downstream["curves"],
        "extra": extra or {},
    })
    out.mkdir(parents=True, exist_ok=True)
    report = out / REPORT_FILE
    write_report(report, metrics, metrics["curves"], _grids(rows, split, threshold, kinds), metrics["extra"])
    write_text(out / METRICS_FILE, json.dumps(metrics, indent=1, allow_nan=False))
    return metrics
