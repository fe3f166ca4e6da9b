"""Are the generated pairs right? :mod:`seas.judge` applied to a generated folder, per kind.

Four measures, all at the evaluation's ``size`` (docs/EVALUATION.md, "Are the generated pairs
right?"):

* **type fidelity**: a :class:`~seas.judge.classifier.TypeClassifier` trained only on the run's
  real *training* anomalies (and normal training images as ``good``) names the class of each
  generated pair (crop around its mask; a generated normal image on its whole view);
* **mask agreement**: the downstream ``real_only`` segmenter's map of each generated anomaly
  image against its generated mask (the caller stores the maps in :attr:`GeneratedPair.prob`);
* **anomaly evidence**: change from the row's reference normal image inside vs outside the mask,
  per kind and per placement (meaningful only for placed defects: free placement re-draws the
  whole image);
* **area and position**: mask areas against the real training masks of the type, and the share
  of mask pixels on the product (:func:`seas.data.foreground.product_foreground`).

Per-pair lists are dropped: ``metrics.json`` keeps summaries per kind and over all kinds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seas.data.foreground import product_foreground
from seas.data.readers import GOOD
from seas.errors import SeasError
from seas.files.images import read_mask, read_rgb, resize_image, resize_mask
from seas.judge.classifier import TypeClassifier
from seas.judge.measures import (
    anomaly_evidence,
    area_position,
    mask_agreement,
    type_fidelity,
)
from seas.model.prompts import MIX

FREE = "free"  # placement of rows without the field: the whole image is sampled
EVIDENCE_KEYS = ("inside", "outside", "ring", "contrast", "ratio")
PER_PAIR_KEYS = ("iou", "found", "areas")  # per-pair lists, not kept in metrics.json


@dataclass
class GeneratedPair:
    """One manifest row at the evaluation size."""

    kind: str
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray | None  # (S, S) bool; None for a normal image or a row without a mask
    reference: np.ndarray | None  # (S, S, 3) uint8 normal image that started the sampler; None if unreadable
    placement: str  # "free", "real-masks" or "masks"
    prob: np.ndarray | None = None  # (S, S) float real_only segmenter's map, set by the caller


def components(kind: str) -> list[str]:
    """The types of a kind: ``["a", "b"]`` for the mixture ``a+b``."""
    return kind.split(MIX)


def kind_order(kinds, types: list[str]) -> list[str]:
    """Run types first (their order), then mixtures and other kinds sorted, then ``good``."""
    kinds = set(kinds)
    rest = sorted(kinds - set(types) - {GOOD})
    return [t for t in types if t in kinds] + rest + ([GOOD] if GOOD in kinds else [])


def load_pairs(rows: list[dict], size: int, read_reference) -> list[GeneratedPair]:
    """Manifest rows (absolute paths) -> pairs at ``size``: images resized as the downstream's
    (area when shrinking, else bilinear), masks by nearest neighbour. ``read_reference(path)``
    gives the reference normal image at ``size`` or ``None``; each path is read once."""
    cache: dict[str, np.ndarray | None] = {}
    pairs = []
    for row in rows:
        ref = row.get("reference")
        if isinstance(ref, str) and ref not in cache:
            cache[ref] = read_reference(ref)
        mask = resize_mask(read_mask(row["mask"]), size) if row.get("mask") else None
        placement = row.get("placement") if isinstance(row.get("placement"), str) else FREE
        pairs.append(GeneratedPair(row["kind"], resize_image(read_rgb(row["image"]), size), mask,
                                   cache.get(ref) if isinstance(ref, str) else None, placement))
    return pairs


def reference_reader(load, size: int):
    """``load(path) -> (h, w, 3) uint8`` wrapped for :func:`load_pairs`: resized to ``size``,
    ``None`` for a reference that is not a readable image file (e.g. an older manifest's
    ``"train/good"``)."""
    def read(path: str) -> np.ndarray | None:
        try:
            return resize_image(load(path), size)
        except (SeasError, OSError, ValueError):
            return None
    return read


def _by_kind(pairs: list[GeneratedPair], types: list[str]) -> dict[str, list[GeneratedPair]]:
    return {k: [p for p in pairs if p.kind == k] for k in kind_order({p.kind for p in pairs}, types)}


def _with_masks(pairs: list[GeneratedPair]) -> list[GeneratedPair]:
    """The anomaly pairs that carry a mask file (an empty mask included: it is a wrong pair)."""
    return [p for p in pairs if p.kind != GOOD and p.mask is not None]


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in PER_PAIR_KEYS}


# ----------------------------------------------------------------------------- type fidelity


def _with_defect(pairs: list) -> list:
    """The ``(image, mask)`` pairs whose mask marks a defect (an empty or missing mask says
    nothing of a type)."""
    return [(image, mask) for image, mask in pairs if mask is not None and mask.any()]


def fidelity(pairs: list[GeneratedPair], real: dict[str, list], normals: list[np.ndarray], *,
             seed: int, steps: int, device: str = "cpu", test: dict[str, list] | None = None) -> dict:
    """:func:`~seas.judge.measures.type_fidelity` of the generated pairs of every plain type and
    ``good``, by a classifier fitted on ``real`` (``{type: [(image, mask)]}``, the real training
    anomalies) and ``normals``; adds ``classifier`` (what it learned from) and ``not_classified``
    (``{kind: reason}``: mixtures, types without a real training mask). ``{"skipped": reason}``
    when no type can be learned.

    ``test`` (``{type or "good": [(image, mask or None)]}``, the held-out real test images) adds
    ``real_test``: the same classifier's reading of them, the same keys as the generated pairs'.
    It is what the judge gives real defects it never saw, the scale the generated pairs' reading
    is read on (a generator whose pairs the judge reads better than real ones draws caricatures)."""
    learnable = {t: _with_defect(pairs_) for t, pairs_ in real.items()}
    learnable = {t: v for t, v in learnable.items() if v}
    if not learnable or not normals:
        return {"skipped": "no real training anomaly with a non-empty mask, or no normal training image, "
                           "to learn the types from"}
    classifier = TypeClassifier(device=device).fit(learnable, normals, seed=seed, steps=steps)
    generated, not_classified = {}, {}
    for kind, group in _by_kind(pairs, list(real)).items():
        if kind in classifier.classes:
            generated[kind] = [(p.image, p.mask) for p in group if kind == GOOD or p.mask is not None]
        elif kind in real:
            not_classified[kind] = "no real training anomaly of this type with a non-empty mask"
        else:
            not_classified[kind] = "a mixture has no class of its own"
    result = type_fidelity(classifier, {k: v for k, v in generated.items() if v})
    held_out = {k: v if k == GOOD else _with_defect(v) for k, v in (test or {}).items() if k in classifier.classes}
    held_out = {k: v for k, v in held_out.items() if v}
    if held_out:
        result["real_test"] = type_fidelity(classifier, held_out)
    result["classifier"] = {"seed": seed, "steps": steps,
                            "trained_on": {**{t: len(v) for t, v in learnable.items()}, GOOD: len(normals)}}
    result["not_classified"] = not_classified
    return result


# ----------------------------------------------------------------------------- mask agreement


def agreement(pairs: list[GeneratedPair], types: list[str]) -> dict:
    """:func:`~seas.judge.measures.mask_agreement` of the ``real_only`` segmenter's maps with the
    generated masks, per anomaly kind and over all of them (``all``); ``{"skipped": reason}``
    without maps or without a generated mask."""
    masked = _with_masks(pairs)
    if not masked:
        return {"skipped": "no generated anomaly with a mask"}
    if any(p.prob is None for p in masked):
        return {"skipped": "the real_only segmenter's maps of the generated images are missing "
                           "(the downstream training did not run)"}
    per_kind = {k: _strip(mask_agreement([p.prob for p in g], [p.mask for p in g]))
                for k, g in _by_kind(masked, types).items()}
    return {"segmenter": "real_only", "per_kind": per_kind,
            "all": _strip(mask_agreement([p.prob for p in masked], [p.mask for p in masked]))}


# ----------------------------------------------------------------------------- anomaly evidence


def _evidence_summary(values: list[dict]) -> dict:
    """Means of :func:`anomaly_evidence` results (NaN entries, e.g. an empty mask's ring, left out)."""
    out = {"n": len(values)}
    for key in EVIDENCE_KEYS:
        finite = [v[key] for v in values if math.isfinite(v[key])]
        out[key] = float(np.mean(finite)) if finite else float("nan")
    return out


def evidence(pairs: list[GeneratedPair], types: list[str]) -> dict:
    """:func:`~seas.judge.measures.anomaly_evidence` of every generated anomaly with a mask and a
    readable reference: ``{"per_kind": {kind: {placement: summary}}, "per_placement": {placement:
    summary}, "without_reference": {kind: n}}``; ``{"skipped": reason}`` when no pair qualifies."""
    masked = _with_masks(pairs)
    scored = [(p, anomaly_evidence(p.image, p.reference, p.mask)) for p in masked if p.reference is not None]
    missing = {k: sum(1 for p in g if p.reference is None) for k, g in _by_kind(masked, types).items()}
    if not scored:
        return {"skipped": "no generated anomaly with a mask has a readable reference image",
                "without_reference": missing}
    placements = sorted({p.placement for p, _ in scored})
    per_kind = {}
    for kind in kind_order({p.kind for p, _ in scored}, types):
        per_kind[kind] = {pl: _evidence_summary([e for p, e in scored if p.kind == kind and p.placement == pl])
                          for pl in placements if any(p.kind == kind and p.placement == pl for p, _ in scored)}
    per_placement = {pl: _evidence_summary([e for p, e in scored if p.placement == pl]) for pl in placements}
    return {"per_kind": per_kind, "per_placement": per_placement,
            "without_reference": {k: n for k, n in missing.items() if n}}


# ----------------------------------------------------------------------------- area and position


def areas(pairs: list[GeneratedPair], real: dict[str, list], normals: list[np.ndarray]) -> dict:
    """:func:`~seas.judge.measures.area_position` per anomaly kind against the real training masks
    of its types (a mixture: of both), with the product foreground of the normal training images;
    ``all``: pooled over kinds, ``n``, ``in_range_rate``, ``empty_rate``, ``area_mean`` (non-empty
    generated masks) and ``real_area_mean`` (every non-empty real training mask), so that e.g.
    whole-image masks show; ``foreground_fraction``: the share of the image the foreground covers
    (1.0: no product region was found, positions are not measured)."""
    foreground = product_foreground(normals) if normals else None
    per_kind, in_range, gen_areas = {}, [], []
    for kind, group in _by_kind(_with_masks(pairs), list(real)).items():
        real_masks = [m for t in components(kind) for _, m in real.get(t, []) if m is not None and m.any()]
        if not real_masks:
            per_kind[kind] = {"n": len(group), "skipped": "no real training mask of its type"}
            continue
        result = area_position([p.mask for p in group], real_masks, foreground)
        lo, hi = result["real_range"]
        in_range += [0 < a and lo <= a <= hi for a in result["areas"]]
        gen_areas += result["areas"]
        per_kind[kind] = _strip(result)
    real_areas = [float(m.mean()) for v in real.values() for _, m in v if m is not None and m.any()]
    return {"per_kind": per_kind,
            "all": {"n": len(gen_areas), "in_range_rate": _mean(in_range),
                    "empty_rate": _mean([a == 0 for a in gen_areas]),
                    "area_mean": _mean([a for a in gen_areas if a > 0]), "real_area_mean": _mean(real_areas)},
            "foreground_fraction": float(foreground.mean()) if foreground is not None else float("nan")}


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------- all four


def measure_generated(pairs: list[GeneratedPair], real: dict[str, list], normals: list[np.ndarray], *,
                      seed: int, steps: int, device: str = "cpu", test: dict[str, list] | None = None) -> dict:
    """The four measures of ``pairs`` (``metrics.json["generated_measures"]``).

    ``real``: ``{type: [(image (S, S, 3) uint8, mask (S, S) bool)]}`` the real training anomalies
    in the run's type order; ``normals``: the normal training images ``(S, S, 3)``; ``seed`` and
    ``steps``: the type classifier's; ``test``: the held-out real test images by type (``good``
    included) that the classifier also reads (:func:`fidelity`).
    """
    types = list(real)
    return {
        "type_fidelity": fidelity(pairs, real, normals, seed=seed, steps=steps, device=device, test=test),
        "mask_agreement": agreement(pairs, types),
        "anomaly_evidence": evidence(pairs, types),
        "area_position": areas(pairs, real, normals),
    }
