"""Export a ``seas generate`` folder as one MVTec AD product, for detectors that read that layout.

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

The product folder is built under a temporary name beside it and renamed when complete; an
existing non-empty ``<out>/<product>`` is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from seas.data.readers import GOOD
from seas.errors import RunError
from seas.files.atomic import write_dir
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
    folder = GeneratedFolder.existing(generated_dir, option="seas export")
    generated_dir = folder.path
    rows = folder.rows()
    if curated:
        accepted = accepted_keys(generated_dir)
        if not accepted:
            raise RunError(f"--curated: {generated_dir} has no accepted pairs (no {CURATION}, or nothing accepted); "
                           f"curate it with 'seas gallery {generated_dir}' first")
        rows = [row for row in rows if (row["kind"], int(row["index"])) in accepted]
    product = product or folder.product
    target = Path(out_dir) / product
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RunError(f"{option} {out_dir}: {target} already exists and is not empty; choose another folder")

    def write(tmp: Path) -> None:
        (tmp / "test" / GOOD).mkdir(parents=True)
        exported = [_copy_row(folder, tmp, row) for row in rows]
        (tmp / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exported))

    return write_dir(target, write)


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
