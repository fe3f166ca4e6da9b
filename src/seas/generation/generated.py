"""A generated folder: what ``seas generate`` writes and what the evaluation, the gallery and the
export read. :class:`GeneratedFolder` is its only owner: the names in it, the manifest (read,
written, merged from the per-process journals) and the settings file, with the values that
folders written by earlier versions behaved with.

Layout of a generated folder::

    generation.json                 the run and every parameter that changes the outputs
    manifest.jsonl                  one JSON row per finished output, sorted by (kind, index)
    <kind>/image/<NNNN>.png         RGB images
    <kind>/mask/<NNNN>.png          0/255 masks (none for "good")
    <kind>/prob/<NNNN>.png          the mean anomaly probability as 8-bit grey (none for "good")
    <kind>/region/<NNNN>.png        --placement real-masks|masks: the placed region (0/255)
    <kind>/classes/<NNNN>.png       seas augment, several types: class-index mask (0 normal, k the k-th type)
    <kind>/type-mask/<type>/<NNNN>.png   seas augment, several types: each type's mask (0/255)
    qc/judge.pt, qc/thresholds.json --qc score|filter: the judge learned from the real training pairs
    rejected.jsonl, rejected/...    --qc filter: the rejected pairs, same layout, with their reasons
    curation.json                   seas gallery's decisions (seas.generation.curation)

``<kind>`` is a type name, ``good``, or a mixture ``A+B``; ``NNNN`` is the index zero-padded to
the width of ``num - 1`` (at least 3 digits), so file names sort in index order.

A manifest row: ``kind``, ``index``, ``image`` and (anomalies) ``mask``, ``prob``, ``region`` as
paths relative to the folder, ``prompt``, ``seed``, ``reference``, ``mask_area``, ``steps``,
``guidance``, ``signal``, ``placement``, optionally ``mask_source`` and ``qc``. ``seas augment``
(``mode: augment`` in the settings, :mod:`seas.generation.augment`) adds ``input``, ``copy``,
``size``, ``types`` and, with several types, ``classes``, ``type_masks`` and ``mask_sources``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from seas.errors import RunError
from seas.files.atomic import is_temporary, write_file, write_json
from seas.generation.curation import CURATION
from seas.run import GENERATED

MANIFEST = "manifest.jsonl"
SETTINGS = "generation.json"
FORMAT = "seas-generation-1"
REJECTED = "rejected.jsonl"
JUDGE = "qc/judge.pt"
THRESHOLDS = "qc/thresholds.json"
PARTS = ("image", "mask", "prob", "region", "classes")  # the files a row may name (and type_masks)

# Settings keys that change the outputs, and the option a user sets each with. The memory
# switches change float rounding, hence bytes; the profile only chooses them, so it is not here.
OPTIONS = {
    "run": "--run", "kinds": "--type/--good/--mix", "num": "--num", "seed": "--seed",
    "steps": "--sample-steps", "guidance": "--guidance", "signal": "--signal", "noise": "--noise",
    "reference_stats": "--reference-stats",
    "mask_threshold": "--mask-threshold", "mask_steps": "--mask-steps", "mask_batchnorm": "--mask-batchnorm",
    "reference_images": "--reference-images", "placement": "--placement", "masks": "--masks",
    "region_dilation": "--region-dilation", "background": "--background", "qc": "--qc",
    "dtype": "--dtype", "vae_slicing": "--vae-slicing", "vae_tiling": "--vae-tiling",
    "attention_slicing": "--attention-slicing", "mode": "command (seas generate or seas augment)",
    "images": "--images", "inputs": "--images (its files)", "types": "--type", "num_per_image": "--num-per-image",
}
# What folders written before a setting was recorded behaved with: fp32, nothing sliced or
# tiled, and the defaults of options added later.
EARLIER_DEFAULTS = {"dtype": "float32", "vae_slicing": False, "vae_tiling": False, "attention_slicing": False,
                    "mask_batchnorm": "eval", "reference_images": None, "placement": "free", "masks": None,
                    "region_dilation": 1, "background": "reference", "qc": "off", "mode": "generate",
                    "images": None, "inputs": None, "types": None, "num_per_image": None,
                    "reference_stats": False}


def name_width(num: int) -> int:
    """Digits of the file names of ``num`` outputs: those of ``num - 1``, at least 3."""
    return max(3, len(str(num - 1)))


def output_paths(label: str, normal: bool, index: int, width: int, placed: bool = False,
                 rejected: bool = False) -> dict[str, str]:
    """Relative paths of one output of kind ``label``: ``image``, for anomalies ``mask`` and
    ``prob``, for placed anomalies ``region``; under ``rejected/`` for a pair quality control
    rejected."""
    name = f"{index:0{width}d}.png"
    folder = f"rejected/{label}" if rejected else label
    parts = ("image",) if normal else ("image", "mask", "prob", *(("region",) if placed else ()))
    return {part: f"{folder}/{part}/{name}" for part in parts}


def read_rows(path: Path) -> list[dict]:
    """The JSON-object lines of a manifest or journal file, in order: a torn last line (from a
    process still writing) or any other line that is not a JSON object is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def png_complete(path: Path) -> bool:
    """Whether ``path`` is a whole, readable PNG (a truncated file fails the chunk checks)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


class GeneratedFolder:
    """A ``seas generate`` folder by its path (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of_run(cls, run_path: str | Path) -> "GeneratedFolder":
        """The default output of ``seas generate --run RUN``: ``<run>/generated``."""
        return cls(Path(run_path) / GENERATED)

    @classmethod
    def existing(cls, path: str | Path, option: str = "--generated") -> "GeneratedFolder":
        """The finished generated folder at ``path``; a one-line RunError when there is none
        (naming ``<path>/generated`` when ``path`` is a run folder that holds one)."""
        folder = cls(Path(path).expanduser())
        if not folder.path.is_dir():
            raise RunError(f"{option} {folder.path}: no such folder; give the --out folder of a 'seas generate' run")
        if not folder.manifest.is_file():
            inside = cls.of_run(folder.path)
            if inside.manifest.is_file():
                raise RunError(f"{option} {folder.path}: no {MANIFEST} here, but {inside.path} has one; pass that "
                               "folder")
            raise RunError(f"{option} {folder.path}: no {MANIFEST}, so not a finished 'seas generate' folder; pass "
                           f"the folder that holds {MANIFEST} (or let 'seas generate' finish first)")
        return cls(folder.path.resolve())

    # ------------------------------------------------------------------ names

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS

    @property
    def rejected_file(self) -> Path:
        return self.path / REJECTED

    @property
    def judge_file(self) -> Path:
        return self.path / JUDGE

    @property
    def thresholds_file(self) -> Path:
        return self.path / THRESHOLDS

    def journal(self, rank: int) -> Path:
        """Process ``rank``'s journal: the rows it finished, appended as it goes."""
        return self.path / f"manifest.rank{rank}.jsonl"

    def journals(self) -> list[Path]:
        return sorted(self.path.glob("manifest.rank*.jsonl"))

    def file(self, relative: str) -> Path:
        """A path a row names, on disk."""
        return self.path / relative

    def remove_temporaries(self, rank: int) -> None:
        """The files process ``rank`` left half-written when it was stopped (``.<name>.rank<R>.tmp``
        beside their targets: the folder itself, ``<kind>/<part>/``, ``rejected/<kind>/<part>/``, ``qc/``)."""
        pattern = f".*.rank{rank}.tmp"
        for tmp in [*self.path.glob(pattern), *self.path.glob(f"*/*/{pattern}"), *self.path.glob(f"*/*/*/{pattern}"),
                    *self.path.glob(f"qc/{pattern}")]:
            tmp.unlink()

    def foreign_files(self) -> list[str]:
        """Files under the folder that ``seas generate`` (and the gallery) never write, relative,
        sorted: anything but the settings, manifests and journals, ``rejected.jsonl``, the
        gallery's ``curation.json``, ``qc/``, temporaries and ``[rejected/]<kind>/<part>/<digits>.png``.
        A command that replaces the folder refuses to while these are there."""
        if not self.path.is_dir():
            return []
        known = {MANIFEST, SETTINGS, REJECTED, CURATION}
        output = re.compile(rf"^(rejected/)?[^/]+/({'|'.join(PARTS)}|type-mask/[^/]+)/[0-9]+\.png$")
        foreign = []
        for path in sorted(self.path.rglob("*")):
            relative = path.relative_to(self.path).as_posix()
            if path.is_dir() or is_temporary(path.name) or relative.startswith("qc/"):
                continue
            if relative in known or re.fullmatch(r"manifest\.rank[0-9]+\.jsonl", relative) or output.match(relative):
                continue
            foreign.append(relative)
        return foreign

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict:
        """``generation.json`` with the values earlier versions behaved with filled in; ``{}``
        when there is none; RunError when it cannot be read."""
        if not self.settings_file.is_file():
            return {}
        try:
            recorded = json.loads(self.settings_file.read_text())
        except (OSError, ValueError) as err:
            raise RunError(f"{self.settings_file}: cannot be read ({type(err).__name__}); choose a new --out") from None
        if not isinstance(recorded, dict):
            raise RunError(f"{self.settings_file}: not a settings object; choose a new --out")
        return EARLIER_DEFAULTS | recorded

    @property
    def product(self) -> str:
        product = self.settings().get("product")
        if not isinstance(product, str) or not product:
            raise RunError(f"{self.settings_file}: names no product; pass the product explicitly")
        return product

    def check_settings(self, settings: dict) -> None:
        """Refuse a folder that holds outputs of other ``settings`` (or is not a generated folder)."""
        if not self.settings_file.is_file():
            if self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir()):
                raise RunError(f"--out {self.path}: not empty and not a 'seas generate' folder; choose a new --out")
            return
        previous = self.settings()
        # With the reference's batch-statistics BatchNorm a mask depends on its batch: then the
        # batch size is a setting too.
        keys = [*OPTIONS, *(["batch_size"] if settings.get("mask_batchnorm") == "batch" else [])]
        current = EARLIER_DEFAULTS | settings
        if current["mode"] == "augment":  # its num follows from --images and --num-per-image
            keys.remove("num")
        changed = [key for key in keys if previous.get(key) != current.get(key)]
        if previous.get("format") != FORMAT or changed:
            what = ", ".join(OPTIONS.get(key, "--" + key.replace("_", "-")) for key in changed) or "the format"
            raise RunError(f"--out {self.path}: holds outputs generated with a different {what} (see "
                           f"{self.settings_file}); choose a new --out or repeat the original options")

    def write_settings(self, settings: dict, rank: int = 0) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.settings_file, settings, f".rank{rank}")

    # ------------------------------------------------------------------ the manifest, read

    def rows(self) -> list[dict]:
        """The rows of ``manifest.jsonl`` in file order, checked: a line that is not a JSON object
        with a string ``kind``, an integer ``index``, a string ``image`` and a string or null
        ``mask``, or a row naming a file that is missing, is a one-line RunError naming the line.
        Paths stay relative (:meth:`file` resolves them)."""
        if not self.manifest.is_file():
            raise RunError(f"--generated {self.path}: no {MANIFEST}; run 'seas generate' into this folder first")
        try:
            lines = self.manifest.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise RunError(f"{self.manifest}: cannot be read ({err}); generate again") from None
        rows = [self._checked(line, f"{self.manifest} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
        if not rows:
            raise RunError(f"{self.manifest}: holds no rows; generate images first")
        return rows

    def _checked(self, line: str, where: str) -> dict:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunError(f"{where}: not valid JSON ({err.msg}); the file is damaged, generate again") from None
        if (not isinstance(row, dict) or not isinstance(row.get("kind"), str) or not isinstance(row.get("image"), str)
                or not isinstance(row.get("index"), int) or isinstance(row.get("index"), bool)):
            raise RunError(f"{where}: each row must be a JSON object with string 'kind' and 'image' and an integer "
                           "'index'")
        if not isinstance(row.get("mask"), (str, type(None))):
            raise RunError(f"{where}: 'mask' must be a relative path or null")
        for part in ("image", "mask"):
            if row.get(part) is not None and not self.file(row[part]).is_file():
                raise RunError(f"{self.file(row[part])}: listed in {where} but missing; generate again or fix the "
                               "manifest")
        return row

    def lenient_rows(self) -> tuple[list[dict], int]:
        """``(rows, skipped)`` for a reader that shows what it can (the gallery, the report's
        rejected pairs): the JSON-object lines of the manifest, and how many lines were not."""
        if not self.manifest.is_file():
            return [], 0
        lines = [line for line in self.manifest.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        rows = read_rows(self.manifest)
        return rows, len(lines) - len(rows)

    # ------------------------------------------------------------------ the manifest, written

    def row_complete(self, row: dict, verify: bool = True) -> bool:
        """Whether the files a manifest row names exist (and, with ``verify``, are whole PNGs)."""
        paths = [row.get(part) for part in PARTS if part == "image" or row.get(part)]
        type_masks = row.get("type_masks") or {}
        paths += list(type_masks.values()) if isinstance(type_masks, dict) else [None]
        check = png_complete if verify else Path.is_file
        return all(isinstance(p, str) and check(self.file(p)) for p in paths)

    def valid_rows(self, verify: bool = True, files: list[Path] | None = None) -> dict[tuple[str, int], dict]:
        """Rows of the manifest and of every journal (or of ``files``) whose files are complete,
        by (kind, index); a later row for the same output replaces an earlier one."""
        rows = {}
        for path in files if files is not None else [self.manifest, *self.journals()]:
            for row in read_rows(path):
                if self.row_complete(row, verify):
                    rows[(row["kind"], int(row["index"]))] = row
        return rows

    def write_rows(self, path: Path, rows: list[dict], rank: int = 0) -> None:
        """Write a manifest or journal atomically (temporary file, then rename)."""
        write_file(path, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)), f".rank{rank}")

    def start_journal(self, done: dict[tuple[str, int], dict], rank: int, world: int, batch_size: int) -> Path:
        """Rewrite process ``rank``'s journal with the valid rows of the batches it owns."""
        path = self.journal(rank)
        self.write_rows(path, [done[key] for key in sorted(done) if (key[1] // batch_size) % world == rank], rank)
        return path

    def merge_journals(self) -> Path:
        """Fold the journals into ``manifest.jsonl``, sorted by (kind, index). Rows whose files
        are gone (dropped by a process on start) are left out; the files themselves were verified
        on start or written by this run."""
        rows = self.valid_rows(verify=False)
        self.write_rows(self.manifest, [rows[key] for key in sorted(rows)])
        for part in self.journals():
            part.unlink()
        return self.manifest

    def sort_rejected(self, rank: int = 0) -> None:
        """Rewrite ``rejected.jsonl`` with its complete rows sorted by (kind, index)."""
        rows = self.valid_rows(verify=False, files=[self.rejected_file])
        self.write_rows(self.rejected_file, [rows[key] for key in sorted(rows)], rank)

