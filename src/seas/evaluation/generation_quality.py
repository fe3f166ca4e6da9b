"""The generation-quality section of an evaluation: IS and KID, IC-LPIPS (whole image and anomaly
region) per generated kind against the real images of its type, and IC-LPIPS of the generated,
real test, cut-paste and Perlin images around the same real training anomalies. Each family is
computed on its own or skipped with a one-line reason (:func:`check_quality_weights`)."""

from __future__ import annotations

import math

import numpy as np

from seas.data.readers import GOOD
from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import make_cut_paste_set, make_perlin_set, resolve_device
from seas.evaluation.generated_measures import components, kind_order
from seas.evaluation.inputs import generated_at, load_real, real_at
from seas.evaluation.lpips_weights import LpipsWeightsError
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
from seas.run import Run

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
    gen_images, gen_masks = generated_at(rows, size)
    gen = images_to_tensor(gen_images, size)
    real_images = images_to_tensor(real_at(real, size, run)[0], size)
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
    normals = real_at(split.normal_train, size, run)[0]
    centres, per_type = {}, {}
    for index, kind in enumerate(split.types):
        train_pairs = load_real(split.train[kind], size, run)
        train_images = [image for image, _ in train_pairs]
        generated = by_kind.get(kind, [])
        test = [s for s in split.test if s.type == kind]
        n, seed = len(generated), cfg.seed + index
        makers = {  # row -> (number of images, a function making (images, masks or None))
            "generated": (n, lambda: generated_at(generated, size)),
            "real_test": (len(test), lambda: real_at(test, size, run)),
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
