"""``seas evaluate``: what the generated data adds to a downstream segmenter, and its quality.

Protocol for one product (spec section 7, docs/EVALUATION.md):

* **test set**: the split's test samples, i.e. the held-out anomalies of every type plus the
  normal test images;
* **training sets**, each training the same segmenter from scratch with the same seed:
  ``real_only`` (the real few-shot training anomalies with masks + the normal training
  images), ``real+generated`` (+ the generated anomaly pairs and generated normals),
  and the classic baselines ``cut_paste`` (real training defects pasted on normal images) and
  ``perlin`` (DRAEM-style noise blends), each with as many synthetic pairs as there are
  generated anomaly pairs; the ``real_only`` model is kept in ``<run>/judges`` and reused when
  the same run is evaluated again with the same settings (:mod:`seas.evaluation.judge_cache`);
* every model is scored with :func:`seas.evaluation.metrics.all_metrics` on the whole test set
  and per anomaly type (that type's test anomalies + all normal test images);
* generation quality per generated kind against every real image of that type (training and
  test, as in the paper), by family: IS and KID when the Inception-v3 weights are found,
  IC-LPIPS and IC-LPIPS in the anomaly region when the LPIPS weights are found (each family
  computed on its own, or skipped with a one-line reason); plus, per type, IC-LPIPS of the
  generated images, the real test anomalies and cut-paste and Perlin pairs, all clustered
  around the type's real training anomalies, so that the generated images' number can be read
  against real variety and against the classic baselines;
* **the answer** (:mod:`seas.evaluation.verdict`): whether the generated pairs helped, judged on
  every downstream metric together, against ``real_only`` and against ``cut_paste``;
* **are the generated pairs right?** (:mod:`seas.evaluation.generated_measures`): type fidelity
  (a type classifier trained on the real training anomalies, seeded with ``seed``), mask
  agreement (the ``real_only`` segmenter above, not another), anomaly evidence against each
  row's reference normal image, and mask area and position, per generated kind;
* the pairs quality control rejected (``rejected.jsonl``), counted and shown in the report only:
  training and the measures use ``manifest.jsonl`` alone.

Everything happens at ``size x size``: real images and masks are first cut to the run's
``fit`` (docs/DATA.md, Geometry; the same frame training used), then images are resized (area
when shrinking, else bilinear) and masks, binarised with the dataset's rule (``mask_rule``),
by nearest neighbour. Outputs: ``<out>/metrics.json`` (NaN written as null) and
``<out>/report.html``, each written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seas.data.readers import GOOD
from seas.data.split import Split, summary_rows
from seas.errors import ConfigError, RunError
from seas.evaluation.downstream import (
    DownstreamConfig,
    make_cut_paste_set,
    make_perlin_set,
    predict,
    resolve_device,
)
from seas.evaluation.generated_measures import (
    GeneratedPair,
    components,
    kind_order,
    load_pairs,
    measure_generated,
    reference_reader,
)
from seas.evaluation.judge_cache import cached_segmenter
from seas.evaluation.lpips_weights import LpipsWeightsError
from seas.evaluation.metrics import UndefinedMetricError, all_metrics, pr_curve, roc_curve
from seas.evaluation.quality import (
    QUALITY_FAMILIES,
    MissingWeightsError,
    check_family_weights,
    ic_lpips_scores,
    images_to_tensor,
    inception_scores,
    load_family_network,
    masks_to_tensor,
)
from seas.evaluation.rejected import qc_counts, qc_examples, read_rejected
from seas.evaluation.report import write_report
from seas.evaluation.segmenters import SEGMENTERS
from seas.evaluation.verdict import verdict
from seas.fields import Config, option
from seas.files.atomic import write_text
from seas.files.images import read_mask, read_rgb, resize_image, resize_mask
from seas.generation.folder import MANIFEST
from seas.run import Run

EVAL_FORMAT = "seas-evaluation-1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
GRID_GENERATED = 8  # generated images per kind in the report
GRID_REAL = 4  # real training images per kind in the report
CURVE_POINTS = 300  # points kept per curve in metrics.json and the report


@dataclass
class EvalConfig(Config):
    """Settings of ``seas evaluate`` (section ``evaluate``); the command's options are generated
    from these fields (:meth:`seas.fields.Config.add_arguments`)."""

    section = "evaluate"

    segmenter: str = option("bisenetv2", help="downstream segmenter network", choices=SEGMENTERS)
    size: int = option(256, help="training and test resolution of the segmenters (paper: 256)", minimum=16)
    steps: int = option(2000, help="optimiser steps per training set", minimum=1)
    batch_size: int = option(8, help="images per optimiser step", minimum=1)
    width: float = option(1.0, help="channel multiplier of the segmenter (positive)")
    seed: int = option(0, help="seed of the segmenters, their batches and the baseline synthesis")
    device: str = option("auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    baselines: bool = option(True, help="also train on the cut-paste and Perlin training sets "
                             "(--no-baselines skips them)")
    quality: bool | None = option(None, help="require (--quality) or skip (--no-quality) the quality scores; "
                                  "default: IC-LPIPS when the LPIPS weights are found, IS and KID when the "
                                  "Inception-v3 weights are found, and metrics.json says why a score is missing")
    weights_dir: str | None = option(None, help="first folder searched for the quality networks' weight files")
    quality_size: int = option(256, help="resolution of the quality scores (protocol: 256)", minimum=16)
    max_generated: int | None = option(None, help="use at most this many generated images per kind "
                                       "(default: all)", minimum=1)
    generated_normals: bool = option(False, help="also add the generated normal images to real+generated "
                                     "(protocol, spec section 7: generated anomaly pairs + the real training "
                                     "third + the real normal images, so the default leaves them out)")
    reuse_judge: bool = option(True, help="keep the real-only segmenter in <run>/judges and reuse it when the "
                               "same run is evaluated again with the same settings and real data (it does not "
                               "depend on the generated folder); --no-reuse-judge trains it afresh")
    judge_steps: int = option(300, help="updates of the type classifier that judges the generated pairs "
                              "(trained on the real training anomalies; seeded with --seed)", minimum=1)
    progress: bool = option(True, help="tqdm bars while training", cli=False)

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError(f"--width {self.width}: must be positive")

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


# ----------------------------------------------------------------------------- loading at size


def _load_pairs(samples, size: int, run: Run) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Samples -> [(image (S, S, 3) uint8, mask (S, S) bool or None for normals)], cut to the
    run's ``fit`` (the region training used) and grey for a grey product, then resized."""
    from seas.data.training_set import split_channels
    from seas.data.transforms import sample_arrays

    data = run.data
    grey = split_channels(data.channels, run.split) == "grey"
    pairs = [sample_arrays(s.image, s.mask, data.fit, data.mask_rule, grey) for s in samples]
    return [(resize_image(image, size), None if mask is None else resize_mask(mask, size)) for image, mask in pairs]


# ----------------------------------------------------------------------------- training sets


def build_train_sets(real_pairs: list, normals: list[np.ndarray], generated: list[dict],
                     cfg: EvalConfig) -> tuple[dict[str, list], dict[str, dict]]:
    """The training sets and their composition.

    ``real_pairs``: real training anomalies ``(image, mask)``; ``normals``: normal training
    images; ``generated``: manifest rows (anomaly rows without a mask are left out). Generated
    normal images join ``real+generated`` only with ``cfg.generated_normals``: the protocol
    (spec section 7) trains on generated pairs, the real training third and the real normals.
    Returns ``({name: [(image, mask or None)]}, {name: {part: count}})``.
    """
    base = list(real_pairs) + [(image, None) for image in normals]
    parts = {"real_anomalies": len(real_pairs), "real_normals": len(normals)}
    gen_pairs = [(r["image"], r["mask"]) for r in generated if r["kind"] != GOOD and r.get("mask") is not None]
    gen_normals = [(r["image"], None) for r in generated if r["kind"] == GOOD and cfg.generated_normals]
    if not gen_pairs and not gen_normals:
        raise RunError("the generated folder has no usable rows (anomalies need masks: generate with a "
                       "trained mask head; a folder of normal images only needs --generated-normals)")
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
                   types: list[str], cfg: EvalConfig, judged: list[np.ndarray] = (),
                   run_dir: Path | None = None) -> dict:
    """Train and score one segmenter per training set.

    ``judged``: further ``(S, S, 3)`` images (the generated anomalies) the ``real_only`` model
    also maps, so that the mask agreement reuses it instead of training another.
    ``run_dir``: with ``cfg.reuse_judge``, the ``real_only`` model is kept in and read back from
    ``<run_dir>/judges`` (:mod:`seas.evaluation.judge_cache`).
    Returns ``{"metrics": {set: all_metrics}, "per_type": {set: {type: all_metrics}},
    "curves": {set: {"roc": .., "pr": ..}}, "seconds": {set: s}, "reused": {set: bool},
    "judged": (N, S, S) maps}``.
    """
    dcfg = cfg.downstream()
    images = [image for image, _ in test_pairs]
    masks = np.stack([np.zeros((cfg.size, cfg.size), bool) if m is None else m for _, m in test_pairs])
    out = {"metrics": {}, "per_type": {}, "curves": {}, "seconds": {}, "reused": {},
           "judged": np.zeros((0, cfg.size, cfg.size))}
    for name, pairs in train_sets.items():
        start = time.perf_counter()
        keep = run_dir if name == "real_only" and cfg.reuse_judge else None
        model, out["reused"][name] = cached_segmenter(pairs, dcfg, keep, name)
        scores = predict(model, images, cfg.size, resize_back=False, batch_size=dcfg.eval_batch_size)
        out["metrics"][name] = all_metrics(scores, masks)
        out["per_type"][name] = _per_type(scores, masks, test_types, types)
        out["curves"][name] = _pixel_curves(scores, masks)
        out["seconds"][name] = time.perf_counter() - start
        if name == "real_only" and len(judged):
            out["judged"] = predict(model, judged, cfg.size, resize_back=False, batch_size=dcfg.eval_batch_size)
    return out


# ----------------------------------------------------------------------------- quality


TURNED_OFF = "turned off (--no-quality)"
COMPARISON_ROWS = ("generated", "real_test", "cut_paste", "perlin")  # IC-LPIPS rows per type


def check_quality_weights(cfg: EvalConfig) -> dict[str, str | None]:
    """Per quality family (:data:`seas.evaluation.quality.QUALITY_FAMILIES`: ``inception`` for
    IS and KID, ``lpips`` for IC-LPIPS): ``None`` when its scores will be computed, else the
    one-line reason (the missing or damaged file and how to get it).

    Raises, before any work, when ``cfg.quality`` requires the scores and weights are missing
    or damaged: that family's error, or, when both fail, one error naming both (a
    :class:`MissingWeightsError`, or the damaged LPIPS file's error).
    """
    if cfg.quality is False:
        return {family: TURNED_OFF for family in QUALITY_FAMILIES}
    errors: dict[str, Exception] = {}
    for family in QUALITY_FAMILIES:
        try:
            check_family_weights(family, cfg.weights_dir)
        except (MissingWeightsError, LpipsWeightsError) as err:
            errors[family] = err
    if cfg.quality and errors:
        if len(errors) == 1:
            raise next(iter(errors.values()))
        # both families fail: one line naming both, typed as the damaged file's error if there is one
        kind = next((type(e) for e in errors.values() if not isinstance(e, MissingWeightsError)), MissingWeightsError)
        raise kind("; ".join(f"{QUALITY_FAMILIES[f]}: {e}" for f, e in errors.items()))
    return {family: str(errors[family]) if family in errors else None for family in QUALITY_FAMILIES}


def _load_generated(rows: list[dict], size: int, run: Run) -> list[GeneratedPair]:
    """Manifest rows at ``size`` (:func:`seas.evaluation.generated_measures.load_pairs`), each
    row's ``reference`` normal image read as the real images are (:func:`_load_pairs`)."""
    from seas.data.training_set import split_channels
    from seas.data.transforms import sample_arrays

    data = run.data
    grey = split_channels(data.channels, run.split) == "grey"
    return load_pairs(rows, size, reference_reader(
        lambda path: sample_arrays(path, None, data.fit, data.mask_rule, grey)[0], size))


def _generated_at(rows: list[dict], size: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Generated images and masks resized to ``size`` as the downstream images are (area when
    shrinking, else bilinear; masks by nearest neighbour); masks ``None`` unless every row has one."""
    images = [resize_image(read_rgb(r["image"]), size) for r in rows]
    if not rows or not all(r.get("mask") for r in rows):
        return images, None
    return images, [resize_mask(read_mask(r["mask"]), size) for r in rows]


def _real_at(samples: list, size: int, run: Run) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Real images and masks as the downstream loads them (:func:`_load_pairs`: the run's ``fit``
    region and channels, then ``size``); masks ``None`` unless every sample has one."""
    pairs = _load_pairs(samples, size, run)
    masks = [mask for _, mask in pairs]
    return [image for image, _ in pairs], (masks if masks and all(m is not None for m in masks) else None)


def run_quality(generated: list[dict], run: Run, reasons: dict[str, str | None], cfg: EvalConfig) -> dict:
    """Quality scores per family; ``reasons`` from :func:`check_quality_weights`.

    Returns ``{family: {"skipped": reason}}`` for a family without weights, else
    ``{"per_kind": {kind: scores}, "mean": scores}``: each generated anomaly kind against every
    real anomaly image of its type, training and test (a mixture ``a+b``: of ``a`` and ``b``);
    ``mean`` averages the plain types (not the mixtures) over their finite values; a kind with
    fewer than 2 images on either side gets ``{"skipped": reason}``. ``lpips`` also holds
    ``comparison`` (:func:`ic_lpips_comparison`).
    """
    by_kind: dict[str, list[dict]] = {}
    for row in generated:
        if row["kind"] != GOOD:
            by_kind.setdefault(row["kind"], []).append(row)
    split = run.split
    real_by_type = {t: split.train[t] + [s for s in split.test if s.type == t] for t in split.types}
    device = resolve_device(cfg.device)
    out = {}
    for family in QUALITY_FAMILIES:
        if reasons.get(family):
            out[family] = {"skipped": reasons[family]}
            continue
        model = load_family_network(family, cfg.weights_dir, device)
        per_kind = {}
        for kind in kind_order(by_kind, split.types):
            real = [s for t in components(kind) for s in real_by_type.get(t, [])]
            per_kind[kind] = _kind_quality(family, model, by_kind[kind], real, run, cfg)
        singles = [v for k, v in per_kind.items() if k in real_by_type and "skipped" not in v]
        keys = list(dict.fromkeys(key for v in singles for key in v))
        out[family] = {"per_kind": per_kind, "mean": {key: _nanmean([v.get(key, math.nan) for v in singles])
                                                      for key in keys}}
        if family == "lpips":
            out[family]["comparison"] = ic_lpips_comparison(model, by_kind, run, cfg)
        del model
    return out


def _kind_quality(family: str, model, rows: list[dict], real: list, run: Run, cfg: EvalConfig) -> dict:
    if len(rows) < 2 or len(real) < 2:
        return {"skipped": f"needs at least 2 generated and 2 real images (has {len(rows)} and {len(real)})"}
    size = cfg.quality_size
    gen_images, gen_masks = _generated_at(rows, size)
    gen = images_to_tensor(gen_images, size)
    real_images = images_to_tensor(_real_at(real, size, run)[0], size)
    if family == "inception":
        return inception_scores(model, gen, real_images, seed=cfg.seed)
    return ic_lpips_scores(model, gen, real_images, None if gen_masks is None else masks_to_tensor(gen_masks, size))


def ic_lpips_comparison(model, by_kind: dict[str, list[dict]], run: Run, cfg: EvalConfig) -> dict:
    """IC-LPIPS of four image sets per anomaly type, all clustered around the same centres: the
    type's real training anomalies (the few shots).

    Rows (:data:`COMPARISON_ROWS`): ``generated`` (the type's generated anomalies),
    ``real_test`` (the type's held-out real test anomalies: the variety of real defects),
    ``cut_paste`` and ``perlin`` (as many pairs as generated images of the type, made at
    ``quality_size`` from the type's real training anomalies and the normal training images,
    seeded with ``seed`` + the type's index). Each row: ``{"images": n, "ic_lpips": ..[,
    "ic_lpips_anomaly": ..]}`` (the anomaly variant when every image of the row has a mask), or
    ``{"images": n, "skipped": reason}`` below 2 images. Returns ``{"centres": {type: n},
    "per_type": {type: {row: ...}}, "mean": {row: {key: mean over types of finite values}}}``.
    """
    size, split = cfg.quality_size, run.split
    normals = _real_at(split.normal_train, size, run)[0]
    centres, per_type = {}, {}
    for index, kind in enumerate(split.types):
        train_pairs = _load_pairs(split.train[kind], size, run)
        train_images = [image for image, _ in train_pairs]
        generated = by_kind.get(kind, [])
        test = [s for s in split.test if s.type == kind]
        n, seed = len(generated), cfg.seed + index
        makers = {  # row -> (number of images, a function making (images, masks or None))
            "generated": (n, lambda: _generated_at(generated, size)),
            "real_test": (len(test), lambda: _real_at(test, size, run)),
            "cut_paste": (n, lambda: _unzip(make_cut_paste_set(train_pairs, normals, n, seed))),
            "perlin": (n, lambda: _unzip(make_perlin_set(normals, n, seed))),
        }
        centre_tensor = images_to_tensor(train_images, size)
        centres[kind] = len(train_images)
        per_type[kind] = {name: _comparison_row(model, make, centre_tensor, size, count)
                          for name, (count, make) in makers.items()}
    mean = {}
    for name in COMPARISON_ROWS:
        scored = [v[name] for v in per_type.values() if "skipped" not in v[name]]
        keys = list(dict.fromkeys(k for v in scored for k in v if k != "images"))
        mean[name] = {k: _nanmean([v.get(k, math.nan) for v in scored]) for k in keys}
    return {"centres": centres, "per_type": per_type, "mean": mean}


def _unzip(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [image for image, _ in pairs], [mask for _, mask in pairs]


def _comparison_row(model, make, centres, size: int, count: int) -> dict:
    if count < 2:
        return {"images": count, "skipped": f"needs at least 2 images (has {count})"}
    try:
        images, masks = make()
    except ValueError as err:  # e.g. cut-paste without a non-empty training mask
        return {"images": count, "skipped": str(err)}
    region = None if masks is None else masks_to_tensor(masks, size)
    return {"images": len(images), **ic_lpips_scores(model, images_to_tensor(images, size), centres, region)}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ----------------------------------------------------------------------------- report inputs


def _grids(generated: list[dict], split: Split, threshold: str, kinds: list[str]) -> dict:
    """Per kind: up to 8 generated and 4 real training (image, mask or None) pairs at full size."""
    grids = {}
    for kind in kinds:
        rows = [r for r in generated if r["kind"] == kind]
        real = split.normal_train if kind == GOOD else [s for t in components(kind) for s in split.train.get(t, [])]
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
    quality_reasons = check_quality_weights(cfg)

    split, threshold = run.split, run.mask_rule
    rows = _cap_per_kind(all_rows, cfg.max_generated)
    real = {t: _load_pairs(split.train[t], cfg.size, run) for t in split.types}  # {type: [(image, mask)]}
    real_pairs = [pair for t in split.types for pair in real[t]]
    normals = [image for image, _ in _load_pairs(split.normal_train, cfg.size, run)]
    train_sets, composition = build_train_sets(real_pairs, normals, rows, cfg)
    test_pairs = _load_pairs(split.test, cfg.size, run)
    generated = _load_generated(rows, cfg.size, run)
    judged = [p for p in generated if p.kind != GOOD and p.mask is not None]
    downstream = run_downstream(train_sets, test_pairs, [s.type for s in split.test], split.types, cfg,
                                judged=[p.image for p in judged], run_dir=run.path)
    for pair, prob in zip(judged, downstream["judged"]):
        pair.prob = prob  # the real_only segmenter's map: mask agreement reuses that model
    test_by_type = {}  # {type or "good": [(image, mask)]}: the held-out real images the type classifier also reads
    for sample, pair in zip(split.test, test_pairs):
        test_by_type.setdefault(sample.type, []).append(pair)
    measures = measure_generated(generated, real, normals, seed=cfg.seed, steps=cfg.judge_steps,
                                 device=str(resolve_device(cfg.device)), test=test_by_type)

    quality_scores = run_quality(rows, run, quality_reasons, cfg)
    kinds = kind_order({r["kind"] for r in all_rows}, split.types)
    rejected, skipped = read_rejected(gen_dir)
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
    write_report(report, metrics, metrics["curves"], _grids(rows, split, threshold, kinds), metrics["extra"], examples)
    write_text(out / METRICS_FILE, json.dumps(metrics, indent=1, allow_nan=False))
    return metrics
