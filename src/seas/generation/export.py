"""Export a ``seas generate`` or ``seas augment`` folder as one product folder: the MVTec AD layout
(binary masks, one folder per kind) for anomaly detectors, or a semantic-segmentation layout
(class-index masks) for multi-class segmenters.

MVTec AD (:func:`export_mvtec`):

``<out>/<product>/``::

    train/good/<NNNN>.png                     generated normal images ("good")
    test/good/                                empty: generated normals are training data only
    test/<kind>/<NNNN>.png                    generated anomaly images, one folder per kind
    ground_truth/<kind>/<NNNN>_mask.png       their masks, 0/255 single-channel PNGs
    export.jsonl                              one row per exported file pair, with its source row

Mixtures keep their folder name ``A+B``. anomalib's MVTec reader (``root=<out>``,
``category=<product>``) and its Folder reader (``normal_dir=train/good``,
``abnormal_dir=test/<kind>``, ``mask_dir=ground_truth/<kind>``) pair an image with the mask
whose name contains the image's stem, after sorting both lists: the zero-padded names keep
the two orders the same. Real normal test images, when a detector needs them, come from the
user's dataset (they are not generated).

Semantic segmentation (:func:`export_semantic`), ``<out>/<product>/``::

    images/<kind>_<NNNN>.png                  every output, normal images included
    masks/<kind>_<NNNN>.png                   class-index PNG (palette :data:`seas.generation.augment.PALETTE`):
                                              0 normal, k the class on line k of classes.txt
    classes.txt                               one class name per line, "normal" first
    export.jsonl                              one row per exported pair, with its source row

The classes are an augment folder's ``--type`` list, in order; otherwise each anomaly kind's
type in order of name, and a mixture of ``seas generate --mix`` (one mask for several types)
a class of its own named ``A+B``.

Either product folder is built under a temporary name beside it and renamed when complete; an
existing non-empty ``<out>/<product>`` is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from seas.data.readers import GOOD
from seas.errors import RunError
from seas.files.atomic import write_dir
from seas.files.images import read_mask
from seas.generation.augment import palette_bytes
from seas.generation.curation import CURATION, accepted_keys
from seas.generation.generated import GeneratedFolder


def export_mvtec(generated_dir: str | Path, out_dir: str | Path, product: str | None = None,
                 curated: bool = False, option: str = "--export-mvtec") -> Path:
    """Write the outputs listed in ``generated_dir``'s manifest as ``out_dir/<product>``.

    ``product`` defaults to the product of the run that generated the folder. ``curated``: only
    the pairs accepted in ``seas gallery`` (refused when nothing was curated). Returns the
    product folder. ``option``: the flag that gave ``out_dir`` (``--out`` of ``seas export``,
    ``--export-mvtec`` of ``seas generate``), named in messages.
    """
    folder, rows, target = _exported(generated_dir, out_dir, product, curated, option)

    def write(tmp: Path) -> None:
        (tmp / "test" / GOOD).mkdir(parents=True)
        exported = [_copy_row(folder, tmp, row) for row in rows]
        (tmp / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exported))

    return write_dir(target, write)


def export_semantic(generated_dir: str | Path, out_dir: str | Path, product: str | None = None,
                    curated: bool = False, option: str = "--out") -> Path:
    """Write the outputs of ``generated_dir`` as ``out_dir/<product>`` in the semantic-segmentation
    layout (module docstring); arguments as :func:`export_mvtec`. Returns the product folder."""
    folder, rows, target = _exported(generated_dir, out_dir, product, curated, option)
    classes = semantic_classes(folder, rows)

    def write(tmp: Path) -> None:
        (tmp / "images").mkdir(parents=True)
        (tmp / "masks").mkdir()
        exported = []
        for row in rows:
            name = f"{row['kind']}_{Path(row['image']).name}"
            _copy(folder.file(row["image"]), tmp / "images" / name)
            index = class_index(folder, row, classes)
            picture = Image.fromarray(index)  # "L", made "P" by its palette
            picture.putpalette(palette_bytes())
            picture.save(tmp / "masks" / name, format="PNG")
            exported.append({"image": f"images/{name}", "mask": f"masks/{name}", "source": row})
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in ["normal", *classes]))
        (tmp / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exported))

    return write_dir(target, write)


def semantic_classes(folder: GeneratedFolder, rows: list[dict]) -> list[str]:
    """The anomaly classes of a folder's rows (module docstring), without ``normal``."""
    settings = folder.settings()
    if settings.get("mode") == "augment":
        return list(settings["types"])
    return sorted({row["kind"] for row in rows if row["kind"] != GOOD})


def class_index(folder: GeneratedFolder, row: dict, classes: list[str]) -> np.ndarray:
    """``(H, W)`` uint8 class-index mask of one row: its ``classes`` file (several types), else
    its binary mask as the kind's class, else (normal images) zeros at the image's size."""
    if row.get("classes"):
        local = np.asarray(Image.open(folder.file(row["classes"])))
        lookup = np.array([0, *(classes.index(t) + 1 for t in row["types"])], np.uint8)
        return lookup[local]
    if row.get("mask"):
        mask = read_mask(folder.file(row["mask"]))
        return mask.astype(np.uint8) * np.uint8(classes.index(row["kind"]) + 1)
    with Image.open(folder.file(row["image"])) as img:
        return np.zeros(img.size[::-1], np.uint8)


def _exported(generated_dir, out_dir, product: str | None, curated: bool, option: str):
    """The folder, the rows to export (only the curated ones with ``curated``) and the target
    ``out_dir/<product>``, refused when it exists and is not empty."""
    folder = GeneratedFolder.existing(generated_dir, option="seas export")
    rows = folder.rows()
    if curated:
        accepted = accepted_keys(folder.path)
        if not accepted:
            raise RunError(f"--curated: {folder.path} has no accepted pairs (no {CURATION}, or nothing accepted); "
                           f"curate it with 'seas gallery {folder.path}' first")
        rows = [row for row in rows if (row["kind"], int(row["index"])) in accepted]
    product = product or folder.product
    target = Path(out_dir) / product
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RunError(f"{option} {out_dir}: {target} already exists and is not empty; choose another folder")
    return folder, rows, target


def _copy_row(source: GeneratedFolder, product_dir: Path, row: dict) -> dict:
    """Copy one output into the MVTec layout; return its export row (paths relative to the product)."""
    name = Path(row["image"]).name
    if row["kind"] == GOOD:
        image, mask = f"train/{GOOD}/{name}", None
    else:
        image, mask = f"test/{row['kind']}/{name}", f"ground_truth/{row['kind']}/{Path(name).stem}_mask.png"
    _copy(source.file(row["image"]), product_dir / image)
    if mask is not None:
        _copy(source.file(row["mask"]), product_dir / mask)
    return {"image": image, "mask": mask, "source": row}


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
