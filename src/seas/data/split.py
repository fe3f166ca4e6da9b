"""The few-shot protocol (spec section 2) and the checks on the images it uses.

Per anomaly type with n images sorted by file name, the first ``k = max(floor(n * f), 1)``
(f = 1/3), or ``train_per_type`` when set, are training images; the rest, plus every normal image of the test partition, form
the downstream test set. The normal training images are the first ``max_normal_train`` (60) of
the sorted train partition (the reference takes an unsorted, shorter list: defect 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from seas.data.config import DataConfig
from seas.data.readers import Sample, read_dataset
from seas.errors import DataError, SeasError
from seas.files.atomic import write_json
from seas.files.checks import ProblemList
from seas.files.images import image_size, read_mask, read_rgb


def _by_name(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (Path(s.image).name, s.image))


@dataclass
class Split:
    types: list[str]  # anomaly types in sorted order: this order fixes each type's tokens
    train: dict[str, list[Sample]]  # type -> its few-shot training images
    normal_train: list[Sample]
    test: list[Sample]  # held-out anomalies of every type + normal test images
    unused_normals: int  # normal train-partition images beyond max_normal_train

    def to_dict(self) -> dict:
        return {
            "types": self.types,
            "train": {t: [s.to_dict() for s in v] for t, v in self.train.items()},
            "normal_train": [s.to_dict() for s in self.normal_train],
            "test": [s.to_dict() for s in self.test],
            "unused_normals": self.unused_normals,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(
            types=list(d["types"]),
            train={t: [Sample(**s) for s in v] for t, v in d["train"].items()},
            normal_train=[Sample(**s) for s in d["normal_train"]],
            test=[Sample(**s) for s in d["test"]],
            unused_normals=int(d["unused_normals"]),
        )


def shots(n: int, fraction: float) -> int:
    """Training images of a type with n images: max(floor(n * fraction), 1)."""
    return max(math.floor(n * fraction + 1e-9), 1)


def few_shot_split(samples: list[Sample], cfg: DataConfig) -> Split:
    """Deterministic split of a product's table (the input order does not matter)."""
    types = sorted({s.type for s in samples if not s.is_normal})
    train, test = {}, []
    for kind in types:
        ordered = _by_name([s for s in samples if s.type == kind])
        k = shots(len(ordered), cfg.train_fraction) if cfg.train_per_type is None else cfg.train_per_type
        train[kind], held_out = ordered[:k], ordered[k:]
        test += held_out
    pool = _by_name([s for s in samples if s.is_normal and s.partition == "train"])
    normal_train = pool[: cfg.max_normal_train]
    test += _by_name([s for s in samples if s.is_normal and s.partition == "test"])
    if not normal_train:
        raise DataError(f"{cfg.root}: no normal training images; the product needs normal images in its train partition")
    return Split(types, train, normal_train, test, unused_normals=len(pool) - len(normal_train))


def check_samples(samples: list[Sample], mask_rule: str, problems: ProblemList | None = None) -> list[str]:
    """Decode every image and mask; return warnings. Every unusable file is reported.

    Problems: unreadable/truncated image or mask, mask size different from its image; raised
    together after the last file (or, given ``problems``, added there).
    Warnings (returned): an anomaly image whose mask is empty.
    """
    own = problems is None
    problems = ProblemList() if own else problems
    warnings = []
    for s in samples:
        with problems.collect():
            warning = _check_sample(s, mask_rule)
            if warning:
                warnings.append(warning)
    if own:
        problems.raise_any()
    return warnings


def _check_sample(s: Sample, mask_rule: str) -> str | None:
    """Decode one sample's image and mask; a DataError for an unusable file, a warning for an empty mask."""
    image = read_rgb(s.image)
    if s.mask is None:
        return None
    mask_w, mask_h = image_size(s.mask)
    if (mask_h, mask_w) != image.shape[:2]:
        raise DataError(
            f"{s.mask}: mask is {mask_w}x{mask_h} but its image {s.image} is "
            f"{image.shape[1]}x{image.shape[0]}; resize the mask to the image size"
        )
    if not read_mask(s.mask, mask_rule).any():
        return f"{s.mask}: mask is empty (no defect pixel) for anomaly image {s.image}"
    return None


def train_samples(split: Split) -> list[Sample]:
    """The samples stage 1 trains on: each type's few-shot images, then the normal training images."""
    return [s for v in split.train.values() for s in v] + split.normal_train


def check_dataset(cfg: DataConfig, problems: ProblemList, decode: str = "train") -> tuple[Split | None, list[str]]:
    """Read ``cfg``'s dataset, split it and decode the files a command will use, adding every
    problem to ``problems``; returns the split (``None`` when it could not be made) and the warnings.

    ``decode``: ``"train"`` (the few-shot and normal training images: ``seas train``),
    ``"all"`` (the test split too: ``seas demo``, ``seas evaluate``) or ``"none"`` (the caller
    decodes what it uses, with :func:`check_samples`).
    """
    before = len(problems)
    samples = read_dataset(cfg, problems)
    if not samples:
        return None, []
    split = None
    with problems.collect():
        try:
            split = few_shot_split(samples, cfg)
        except SeasError:
            if len(problems) == before:  # after the reader's own problems, a split error only repeats them
                raise
    if split is None:
        return None, []
    if decode == "none":
        return split, held_out_warnings(split)
    chosen = train_samples(split) if decode == "train" else split_samples_used(split)
    return split, check_samples(chosen, cfg.mask_rule, problems) + held_out_warnings(split)


def held_out_warnings(split: Split) -> list[str]:
    """A type whose images all went to training: nothing of it is held out for testing."""
    return [f"type {kind}: all its {len(split.train[kind])} image(s) are few-shot training images and none is held "
            "out for testing (the evaluation cannot score this type); add images of it, or lower --train-per-type"
            for kind in split.types if not any(s.type == kind for s in split.test)]


def held_out_anomaly_problem(split: Split, label: str, fix: str) -> str | None:
    """Why nothing can be evaluated on ``split``: no anomaly image held out for testing (the
    localisation evidence and every downstream metric need some). ``label`` names the input
    (``--data X``, ``--run R``), ``fix`` says what to do."""
    if any(not s.is_normal for s in split.test):
        return None
    counts = ", ".join(f"{kind} {len(split.train[kind])}" for kind in split.types)
    return (f"{label}: no anomaly image is held out for testing (every image of each type is a few-shot training "
            f"image: {counts}); {fix}")


def lost_defect_problems(split: Split, fit: str, mask_rule: str, resolution: int) -> list[str]:
    """Few-shot training images whose whole defect ``fit`` cuts away at ``resolution``: they would
    train as anomalies with an empty mask (``seas data`` tabulates what each fit keeps)."""
    from seas.data.transforms import kept_defect_share

    problems = []
    for s in (s for v in split.train.values() for s in v):
        try:
            mask = read_mask(s.mask, mask_rule) if s.mask else None
        except DataError:
            continue  # an unreadable mask is reported by check_samples
        if mask is not None and mask.any() and kept_defect_share(mask, resolution, fit, s.image) <= 0.0:
            problems.append(f"{s.image}: --fit {fit} cuts away its whole defect ({s.mask}), so it would train as an "
                            "anomaly with an empty mask; use --fit defect-crop (keeps every defect) or pad, or "
                            "remove the image")
    return problems


def split_samples_used(split: Split) -> list[Sample]:
    """Every sample that training or evaluation will read."""
    return [s for v in split.train.values() for s in v] + split.normal_train + split.test


def write_split(split: Split, cfg: DataConfig, path: str | Path) -> Path:
    """Write ``split.json`` (the protocol, the data config and every file) atomically."""
    return write_json(Path(path), {"data": cfg.to_dict(), **split.to_dict()})


def summary_rows(split: Split) -> list[tuple[str, int, int, int]]:
    """(type, images, train, test) per anomaly type, then the normal images."""
    rows = []
    for kind in split.types:
        n_test = sum(1 for s in split.test if s.type == kind)
        rows.append((kind, len(split.train[kind]) + n_test, len(split.train[kind]), n_test))
    n_normal_test = sum(1 for s in split.test if s.is_normal)
    n_normal = len(split.normal_train) + split.unused_normals + n_normal_test
    rows.append(("good", n_normal, len(split.normal_train), n_normal_test))
    return rows
