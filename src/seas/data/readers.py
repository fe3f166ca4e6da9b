"""Layout readers: a dataset on disk -> one table of samples, with no conversion step.

Every reader returns a list of :class:`Sample` for one product. ``partition`` is where the
dataset itself puts the image ("train" for the normal training pool, "test" otherwise); the
few-shot split (``split.py``) decides what SeaS trains on.
"""

from __future__ import annotations

import csv
import glob
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from seas.errors import DataError
from seas.data.config import DataConfig

GOOD = "good"
COMBINED = "combined"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    image: str  # path of the image file
    mask: str | None  # path of its mask, None for normal images
    product: str
    type: str  # anomaly type, or "good"
    partition: str  # "train" or "test", as the dataset on disk has it

    @property
    def is_normal(self) -> bool:
        return self.type == GOOD

    def to_dict(self) -> dict:
        return asdict(self)


def read_dataset(cfg: DataConfig) -> list[Sample]:
    """The table of samples of ``cfg``'s product, checked for the errors a reader can see."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; pass an existing folder to --data")
    reader = {
        "mvtec": read_mvtec_ad,
        "visa-mvtec": read_mvtec_ad,
        "mvtec3d": read_mvtec_3d,
        "visa": read_visa,
        "folder": read_folder,
    }[cfg.layout]
    samples = reader(cfg)
    where = _product_dir(cfg) if cfg.layout != "folder" else root
    if not any(s.is_normal for s in samples):
        raise DataError(f"{where}: no normal images found; a product needs normal images (train/good or --normal)")
    if not any(not s.is_normal for s in samples):
        raise DataError(f"{where}: no anomaly images found; a product needs at least one anomaly type")
    return samples


def _product_dir(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    if cfg.product is None:
        # The root itself may be the product folder.
        return root
    folder = root / cfg.product
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(
            f"{folder}: product not found; choose --product from: {', '.join(found) or '(no folders)'}"
        )
    return folder


def _images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_mask(image: Path, mask: Path, hint: str) -> str:
    if not mask.is_file():
        raise DataError(f"{image}: missing mask {mask}; {hint}")
    return str(mask)


def _type_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name != GOOD and not p.name.startswith("."))


def _empty_type(folder: Path) -> DataError:
    return DataError(f"{folder}: anomaly type has no images; add its images or remove the empty folder")


def read_mvtec_ad(cfg: DataConfig) -> list[Sample]:
    """MVTec AD: train/good, test/<type>, ground_truth/<type>/<stem>_mask.png."""
    product_dir = _product_dir(cfg)
    product = cfg.product_name
    samples = [Sample(str(p), None, product, GOOD, "train") for p in _images(product_dir / "train" / GOOD)]
    samples += [Sample(str(p), None, product, GOOD, "test") for p in _images(product_dir / "test" / GOOD)]
    test_dir = product_dir / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: missing; an MVTec AD product holds train/good, test/<type> and ground_truth/")
    for type_dir in _type_folders(test_dir):
        images = _images(type_dir)
        if not images:
            raise _empty_type(type_dir)
        for image in images:
            mask = product_dir / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
            hint = "add it (0 = normal, 255 = defect) or remove the image"
            samples.append(Sample(str(image), _require_mask(image, mask, hint), product, type_dir.name, "test"))
    return samples


def read_mvtec_3d(cfg: DataConfig) -> list[Sample]:
    """MVTec 3D AD, RGB part: train/good/rgb, test/<type>/rgb with masks in test/<type>/gt."""
    product_dir = _product_dir(cfg)
    product = cfg.product_name
    samples = [Sample(str(p), None, product, GOOD, "train") for p in _images(product_dir / "train" / GOOD / "rgb")]
    samples += [Sample(str(p), None, product, GOOD, "test") for p in _images(product_dir / "test" / GOOD / "rgb")]
    test_dir = product_dir / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: missing; an MVTec 3D AD product holds train/good/rgb and test/<type>/rgb, gt")
    for type_dir in _type_folders(test_dir):
        images = _images(type_dir / "rgb")
        if not images:
            raise _empty_type(type_dir / "rgb")
        for image in images:
            mask = type_dir / "gt" / f"{image.stem}.png"
            hint = "MVTec 3D AD keeps masks in test/<type>/gt/<stem>.png"
            samples.append(Sample(str(image), _require_mask(image, mask, hint), product, type_dir.name, "test"))
    return samples


def type_name(label: str) -> str:
    """A VisA defect label as a folder-safe type name: 'chunk of wax missing' -> 'chunk_of_wax_missing'."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", label.strip()).strip("_").lower()


def read_visa(cfg: DataConfig) -> list[Sample]:
    """VisA original layout, grouped by defect type.

    ``<root>/<product>/image_anno.csv`` gives each image's defect labels (several labels joined
    by commas -> type ``combined``) and mask; ``<root>/split_csv/1cls.csv``, when present, gives
    the train/test partition of the normal images (otherwise the folder rule of
    ``normal_test_fraction`` applies).
    """
    product_dir = _product_dir(cfg)
    product = cfg.product_name
    root = product_dir.parent  # the CSV paths are relative to the folder holding the products
    anno = product_dir / "image_anno.csv"
    if not anno.is_file():
        raise DataError(f"{anno}: missing; VisA's original layout has image_anno.csv in each product folder")
    partitions = _visa_partitions(root / "split_csv" / "1cls.csv", product)
    samples, normals = [], []
    with anno.open(newline="") as fh:
        rows = csv.DictReader(fh)
        if not {"image", "label"} <= set(rows.fieldnames or ()):
            raise DataError(f"{anno}: header is {rows.fieldnames}; VisA's image_anno.csv has columns image,label,mask")
        for row in rows:
            image = root / row["image"]
            labels = [type_name(x) for x in (row["label"] or "").split(",") if x.strip()]
            if not labels:
                raise DataError(f"{anno}: {row['image']} has an empty label; write its defect type(s) or 'normal'")
            if labels == ["normal"]:
                normals.append(image)
                continue
            kind = labels[0] if len(set(labels)) == 1 else COMBINED
            mask = root / row["mask"] if row.get("mask") else image.with_suffix(".png")
            hint = "VisA keeps masks in <product>/Data/Masks/Anomaly/"
            samples.append(Sample(str(image), _require_mask(image, mask, hint), product, kind, "test"))
    normals.sort(key=lambda p: p.name)
    if partitions:
        part = [partitions.get(str(p.relative_to(root)), "train") for p in normals]
    else:
        part = _holdout_partitions(len(normals), cfg.normal_test_fraction)
    samples += [Sample(str(p), None, product, GOOD, k) for p, k in zip(normals, part)]
    return samples


def _visa_partitions(split_csv: Path, product: str) -> dict[str, str]:
    """VisA's own 1cls split: relative image path -> "train"/"test" (empty when absent)."""
    if not split_csv.is_file():
        return {}
    with split_csv.open(newline="") as fh:
        return {r["image"]: r["split"] for r in csv.DictReader(fh) if r.get("object") == product}


def _holdout_partitions(n: int, test_fraction: float) -> list[str]:
    """The last round(n * fraction) of n sorted normal images are "test", the rest "train"."""
    n_test = int(round(n * test_fraction))
    return ["train"] * (n - n_test) + ["test"] * n_test


def read_folder(cfg: DataConfig) -> list[Sample]:
    """Any layout described by globs: normal images, anomaly images per type, a mask pattern."""
    root = Path(cfg.root)
    product = cfg.product_name
    normals = _glob(root, cfg.normal, "--normal")
    samples = []
    if cfg.normal_test:
        tests = _glob(root, cfg.normal_test, "--normal-test")
        samples += [Sample(str(p), None, product, GOOD, "train") for p in normals]
        samples += [Sample(str(p), None, product, GOOD, "test") for p in tests]
    else:
        part = _holdout_partitions(len(normals), cfg.normal_test_fraction)
        samples += [Sample(str(p), None, product, GOOD, k) for p, k in zip(normals, part)]
    for kind in sorted(cfg.anomalies):
        images = _glob(root, cfg.anomalies[kind], f"--anomaly {kind}=")
        for image in images:
            mask = _mask_path(cfg.mask, root, image, kind)
            hint = f"check the mask pattern --mask {cfg.mask!r} or add the mask"
            samples.append(Sample(str(image), _require_mask(image, mask, hint), product, kind, "test"))
    return samples


def _glob(root: Path, patterns: list[str], option: str) -> list[Path]:
    found = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        found.update(Path(p) for p in glob.glob(full, recursive=True))
    images = sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: (p.name, str(p)))
    if not images:
        shown = ", ".join(patterns)
        raise DataError(f"{root}: no images match {option}{shown}; fix the pattern (relative to the dataset root)")
    return images


def _mask_path(pattern: str, root: Path, image: Path, kind: str) -> Path:
    path = Path(pattern.format(root=root, parent=image.parent, stem=image.stem, name=image.name, type=kind))
    return path if path.is_absolute() else root / path
