"""What an evaluation reads, at its size: the generated folder's rows, the real split's images
and masks cut to the run's ``fit`` and channels, the training sets compared, and the image grids
of the report.

Everything happens at ``size x size``: real images and masks are first cut to the run's ``fit``
(docs/DATA.md, Geometry; the same frame training used), then images are resized (area when
shrinking, else bilinear) and masks, binarised with the dataset's rule (``mask_rule``), by
nearest neighbour.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from seas.data.readers import GOOD
from seas.data.split import Split
from seas.data.training_set import split_channels
from seas.data.transforms import sample_arrays
from seas.errors import RunError
from seas.evaluation.config import EvalConfig
from seas.evaluation.downstream import make_cut_paste_set, make_perlin_set
from seas.evaluation.generated_measures import GeneratedPair, components, load_pairs, reference_reader
from seas.files.images import read_mask, read_rgb, resize_image, resize_mask
from seas.generation.generated import GeneratedFolder
from seas.run import Run

GRID_GENERATED = 8  # generated images per kind in the report
GRID_REAL = 4  # real training images per kind in the report


def read_generated(folder: GeneratedFolder) -> list[dict]:
    """The manifest's rows (:meth:`GeneratedFolder.rows`, checked) with ``image`` and ``mask`` as
    absolute paths, in file order."""
    return [{**row, "image": str(folder.file(row["image"])),
             "mask": None if row.get("mask") is None else str(folder.file(row["mask"]))} for row in folder.rows()]


def cap_per_kind(rows: list[dict], limit: int | None) -> list[dict]:
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


def load_real(samples, size: int, run: Run) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Samples -> [(image (S, S, 3) uint8, mask (S, S) bool or None for normals)], cut to the
    run's ``fit`` (the region training used) and grey for a grey product, then resized."""
    data = run.data
    grey = split_channels(data.channels, run.split) == "grey"
    pairs = [sample_arrays(s.image, s.mask, data.fit, data.mask_rule, grey) for s in samples]
    return [(resize_image(image, size), None if mask is None else resize_mask(mask, size)) for image, mask in pairs]


def load_generated(rows: list[dict], size: int, run: Run) -> list[GeneratedPair]:
    """Manifest rows at ``size`` (:func:`seas.evaluation.generated_measures.load_pairs`), each
    row's ``reference`` normal image read as the real images are (:func:`load_real`)."""
    data = run.data
    grey = split_channels(data.channels, run.split) == "grey"
    return load_pairs(rows, size, reference_reader(
        lambda path: sample_arrays(path, None, data.fit, data.mask_rule, grey)[0], size))


def generated_at(rows: list[dict], size: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Generated images and masks resized to ``size`` as the downstream images are (area when
    shrinking, else bilinear; masks by nearest neighbour); masks ``None`` unless every row has one."""
    images = [resize_image(read_rgb(r["image"]), size) for r in rows]
    if not rows or not all(r.get("mask") for r in rows):
        return images, None
    return images, [resize_mask(read_mask(r["mask"]), size) for r in rows]


def real_at(samples: list, size: int, run: Run) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Real images and masks as the downstream loads them (:func:`load_real`: the run's ``fit``
    region and channels, then ``size``); masks ``None`` unless every sample has one."""
    pairs = load_real(samples, size, run)
    masks = [mask for _, mask in pairs]
    return [image for image, _ in pairs], (masks if masks and all(m is not None for m in masks) else None)


def real_only_set(real_pairs: list, normals: list[np.ndarray]) -> list:
    """The real-only training set: the real training anomalies ``(image, mask)`` and the normal
    training images ``(image, None)``; every other set adds to it."""
    return list(real_pairs) + [(image, None) for image in normals]


def build_train_sets(real_pairs: list, normals: list[np.ndarray], generated: list[dict],
                     cfg: EvalConfig) -> tuple[dict[str, list], dict[str, dict]]:
    """The training sets and their composition.

    ``real_pairs``: real training anomalies ``(image, mask)``; ``normals``: normal training
    images; ``generated``: manifest rows (anomaly rows without a mask are left out). Generated
    normal images join ``real+generated`` only with ``cfg.generated_normals``: the protocol
    (spec section 7) trains on generated pairs, the real training third and the real normals.
    Returns ``({name: [(image, mask or None)]}, {name: {part: count}})``.
    """
    base = real_only_set(real_pairs, normals)
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


def report_grids(generated: list[dict], split: Split, threshold: str, kinds: list[str]) -> dict:
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
