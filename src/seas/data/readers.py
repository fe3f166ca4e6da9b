"""Layout readers: a dataset on disk -> one table of samples, with no conversion step.

Every reader returns a list of :class:`Sample` for one product. ``partition`` is where the
dataset itself puts the image ("train" for the normal training pool, "test" otherwise); the
few-shot split (``split.py``) decides what SeaS trains on.

Problems are collected, not raised one by one: every missing mask, empty type and unmatched
pattern of a dataset is reported in one list (:class:`seas.files.checks.ProblemList`).
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from seas.data.config import DataConfig
from seas.errors import DataError
from seas.files.checks import ProblemList

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


def read_dataset(cfg: DataConfig, problems: ProblemList | None = None) -> list[Sample]:
    """The table of samples of ``cfg``'s product, checked for the errors a reader can see.

    Without ``problems``, every problem found is raised at once (one error listing them all);
    with it, they are added there and the usable samples are returned (an image without its
    mask is left out), so that a caller can go on checking and report everything together.
    """
    own = problems is None
    problems = ProblemList() if own else problems
    samples = _read(cfg, problems)
    if own:
        problems.raise_any()
    return samples


def _read(cfg: DataConfig, problems: ProblemList) -> list[Sample]:
    root = Path(cfg.root)
    if root.is_file():
        problems.add(f"--data {root}: is a file, not a dataset folder; give the folder that holds the dataset (or a "
                     ".yaml/.yml dataset description)")
        return []
    if not root.is_dir():
        problems.add(f"{root}: dataset folder not found; pass an existing folder to --data")
        return []
    reader = {
        "mvtec": read_mvtec_ad,
        "visa-mvtec": read_mvtec_ad,
        "mvtec3d": read_mvtec_3d,
        "visa": read_visa,
        "folder": read_folder,
    }[cfg.layout]
    before = len(problems)
    samples: list[Sample] = []
    with problems.collect():  # a product or annotation file missing: nothing more to read
        samples = reader(cfg, problems)
        where = _product_dir(cfg) if cfg.layout != "folder" else root
        if len(problems) == before:  # otherwise the problems above already say why
            if not any(s.is_normal for s in samples):
                problems.add(f"{where}: no normal images found; a product needs normal images "
                             "(train/good or --normal)")
            if not any(not s.is_normal for s in samples):
                problems.add(f"{where}: no anomaly images found; a product needs at least one anomaly type")
    return samples


def dataset_folder(cfg: DataConfig) -> Path:
    """The folder holding the product's files: the product folder, or the root of a ``folder``
    layout (whose globs may reach anywhere under it). Outputs must stay out of it."""
    root = Path(cfg.root)
    return root / cfg.product if cfg.product and cfg.layout != "folder" else root


def _is_product(folder: Path, layout: str) -> bool:
    """Whether ``folder`` looks like one product of ``layout`` (the folder ``--data`` names, or
    ``--data``/``--product``)."""
    if layout == "visa":
        return (folder / "image_anno.csv").is_file()
    return (folder / "test").is_dir() or (folder / "train").is_dir()


def _product_dir(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    products = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _is_product(p, cfg.layout))
    if cfg.product is None:
        # The root itself may be the product folder; a folder of products needs --product.
        if products and not _is_product(root, cfg.layout):
            raise DataError(f"--data {root}: holds products ({', '.join(products[:8])}"
                            f"{', ...' if len(products) > 8 else ''}), not one product; choose one with "
                            f"--product {products[0]}")
        return root
    folder = root / cfg.product
    if not folder.is_dir():
        if _is_product(root, cfg.layout) and not products:
            raise DataError(f"--product {cfg.product}: --data {root} is itself a product folder (it holds "
                            f"{'image_anno.csv' if cfg.layout == 'visa' else 'train/ and test/'}); leave out --product")
        raise DataError(
            f"{folder}: product not found; choose --product from: {', '.join(products) or '(no product folders)'}"
        )
    return folder


def _images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _add_anomaly(samples: list[Sample], problems: ProblemList, image: Path, mask: Path, hint: str,
                 product: str, kind: str) -> None:
    """Append the anomaly sample of ``image``, or record its missing mask."""
    if not mask.is_file():
        problems.add(f"{image}: missing mask {mask}; {hint}")
        return
    samples.append(Sample(str(image), str(mask), product, kind, "test"))


def _type_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name != GOOD and not p.name.startswith("."))


def _empty_type(folder: Path) -> str:
    return f"{folder}: anomaly type has no images; add its images or remove the empty folder"


def read_mvtec_ad(cfg: DataConfig, problems: ProblemList) -> list[Sample]:
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
            problems.add(_empty_type(type_dir))
        for image in images:
            mask = product_dir / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
            hint = "add it (0 = normal, 255 = defect) or remove the image"
            _add_anomaly(samples, problems, image, mask, hint, product, type_dir.name)
    return samples


def read_mvtec_3d(cfg: DataConfig, problems: ProblemList) -> list[Sample]:
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
            problems.add(_empty_type(type_dir / "rgb"))
        for image in images:
            mask = type_dir / "gt" / f"{image.stem}.png"
            hint = "MVTec 3D AD keeps masks in test/<type>/gt/<stem>.png"
            _add_anomaly(samples, problems, image, mask, hint, product, type_dir.name)
    return samples


def type_name(label: str) -> str:
    """A VisA defect label as a folder-safe type name: 'chunk of wax missing' -> 'chunk_of_wax_missing'."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", label.strip()).strip("_").lower()


def read_visa(cfg: DataConfig, problems: ProblemList) -> list[Sample]:
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
                problems.add(f"{anno}: {row['image']} has an empty label; write its defect type(s) or 'normal'")
                continue
            if labels == ["normal"]:
                normals.append(image)
                continue
            kind = labels[0] if len(set(labels)) == 1 else COMBINED
            mask = root / row["mask"] if row.get("mask") else image.with_suffix(".png")
            hint = "VisA keeps masks in <product>/Data/Masks/Anomaly/"
            _add_anomaly(samples, problems, image, mask, hint, product, kind)
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


def read_folder(cfg: DataConfig, problems: ProblemList) -> list[Sample]:
    """Any layout described by globs: normal images, anomaly images per type, a mask pattern.

    A pattern that also matches mask files of the dataset (``MT_Crack/Imgs/*`` where the masks
    lie beside the images), or anomaly images whose mask by ``--mask`` is the image itself, is
    refused with one line naming the pattern.
    """
    root = Path(cfg.root)
    product = cfg.product_name
    groups = [("--normal ", GOOD, p, m) for p, m in _glob(root, cfg.normal, "--normal ", problems).items()]
    if cfg.normal_test:
        groups += [("--normal-test ", GOOD, p, m)
                   for p, m in _glob(root, cfg.normal_test, "--normal-test ", problems).items()]
    for kind in sorted(cfg.anomalies):
        option = f"--anomaly {kind}="
        groups += [(option, kind, p, m) for p, m in _glob(root, cfg.anomalies[kind], option, problems).items()]
    groups = _refuse_mask_matches(cfg, root, groups, problems)

    def found(option: str) -> list[Path]:
        return sorted({f for o, _, _, files in groups if o == option for f in files}, key=lambda p: (p.name, str(p)))

    normals = found("--normal ")
    samples = []
    if cfg.normal_test:
        samples += [Sample(str(p), None, product, GOOD, "train") for p in normals]
        samples += [Sample(str(p), None, product, GOOD, "test") for p in found("--normal-test ")]
    else:
        part = _holdout_partitions(len(normals), cfg.normal_test_fraction)
        samples += [Sample(str(p), None, product, GOOD, k) for p, k in zip(normals, part)]
    for kind in sorted(cfg.anomalies):
        for image in found(f"--anomaly {kind}="):
            mask = _mask_path(cfg.mask, root, image, kind)
            hint = f"check the mask pattern --mask {cfg.mask!r} or add the mask"
            _add_anomaly(samples, problems, image, mask, hint, product, kind)
    return samples


def _glob(root: Path, patterns: list[str], option: str, problems: ProblemList) -> dict[str, list[Path]]:
    """The image files each pattern matches; a problem when none matches any."""
    found = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        paths = {Path(p) for p in glob.glob(full, recursive=True)}
        found[pattern] = sorted((p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                                key=lambda p: (p.name, str(p)))
    if not any(found.values()):
        shown = ", ".join(patterns)
        problems.add(f"{root}: no images match {option}{shown}; fix the pattern (relative to the dataset root)")
    return found


def _refuse_mask_matches(cfg: DataConfig, root: Path, groups: list, problems: ProblemList) -> list:
    """Drop the files of patterns that also match the dataset's masks, with one problem per pattern.

    A matched file is a mask when it is the mask (by ``cfg.mask``) of another matched file, or,
    for an anomaly pattern, when its own mask is itself. ``groups``: (option, type, pattern,
    files); returns them with every pattern that matched masks emptied.
    """
    def key(path: Path) -> str:
        return os.path.normcase(os.path.normpath(str(path)))

    mask_of = {}  # a matched file's would-be mask -> that file
    for _, kind, _, files in groups:
        for image in files:
            mask = _mask_path(cfg.mask, root, image, kind)
            if key(mask) != key(image):
                mask_of.setdefault(key(mask), image)
    kept = []
    for option, kind, pattern, files in groups:
        owners = {f: mask_of.get(key(f)) for f in files}
        if kind != GOOD:  # an anomaly image whose mask is itself
            owners = {f: owner or (f if key(_mask_path(cfg.mask, root, f, kind)) == key(f) else None)
                      for f, owner in owners.items()}
        masks = [f for f, owner in owners.items() if owner is not None]
        if not masks:
            kept.append((option, kind, pattern, files))
            continue
        example, owner = masks[0], owners[masks[0]]
        why = "whose mask is itself" if owner == example else f"the mask of {owner.name}"
        images = [f for f in files if owners[f] is None]
        suffix = Counter(f.suffix for f in images).most_common(1)
        fix = (f"end the pattern with the images' suffix, e.g. '{pattern}{suffix[0][0]}'"
               if pattern.endswith("*") and suffix else "make the pattern match the image files only")
        problems.add(f"{option}{pattern}: matches mask files of the dataset too ({len(masks)} files, e.g. "
                     f"{example}, {why} by --mask {cfg.mask!r}); {fix}, or fix --mask")
        kept.append((option, kind, pattern, []))
    return kept


def _mask_path(pattern: str, root: Path, image: Path, kind: str) -> Path:
    path = Path(pattern.format(root=root, parent=image.parent, stem=image.stem, name=image.name, type=kind))
    return path if path.is_absolute() else root / path
