"""The pairs quality control rejected (``seas generate --qc filter``), read for the report only.

``<generated>/rejected.jsonl`` has the manifest's row format plus ``"qc": {"accepted": false,
"reasons": [str], "scores": {name: float}}``; its paths (``rejected/<kind>/image|mask|prob/NNNN.png``)
are relative to the generated folder. Nothing here feeds training or the measures: those use
``manifest.jsonl`` only. The file is read defensively: a line that is not a JSON object with a
string ``kind`` and an existing ``image`` is skipped and counted, never an error.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from seas.errors import SeasError
from seas.files.images import read_mask, read_rgb
from seas.generation.generated import GeneratedFolder, read_rows

EXAMPLES = 4  # accepted and rejected examples per kind in the report


def _row(row: dict, folder: GeneratedFolder) -> dict | None:
    """One rejected row with absolute paths and its reasons, or ``None`` when unusable."""
    if not isinstance(row.get("kind"), str) or not isinstance(row.get("image"), str):
        return None
    image = folder.file(row["image"])
    if not image.is_file():
        return None
    mask = folder.file(row["mask"]) if isinstance(row.get("mask"), str) else None
    qc = row.get("qc") if isinstance(row.get("qc"), dict) else {}
    reasons = qc.get("reasons") if isinstance(qc.get("reasons"), list) else []
    return {"kind": row["kind"], "image": str(image), "mask": str(mask) if mask and mask.is_file() else None,
            "reasons": [str(r) for r in reasons]}


def read_rejected(folder: GeneratedFolder) -> tuple[list[dict], int]:
    """``(rows, skipped)``: the usable rows of ``rejected.jsonl`` in file order (``kind``,
    absolute ``image`` and ``mask`` or ``None``, ``reasons``) and the number of lines skipped.
    No file, or one that cannot be read, gives ``([], 0)``."""
    path = folder.rejected_file
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return [], 0
    rows = [_row(row, folder) for row in read_rows(path)]
    kept = [r for r in rows if r is not None]
    return kept, len(lines) - len(kept)


def qc_counts(accepted: list[dict], rejected: list[dict], kinds: list[str], skipped: int) -> dict:
    """``metrics.json["quality_control"]``: per kind ``accepted`` (manifest rows), ``rejected``
    and ``acceptance_rate`` (accepted / both; NaN without either), and ``skipped_lines``."""
    n_acc, n_rej = Counter(r["kind"] for r in accepted), Counter(r["kind"] for r in rejected)
    order = kinds + sorted(set(n_rej) - set(kinds))
    per_kind = {k: {"accepted": n_acc[k], "rejected": n_rej[k],
                    "acceptance_rate": n_acc[k] / (n_acc[k] + n_rej[k]) if n_acc[k] + n_rej[k] else float("nan")}
                for k in order}
    return {"per_kind": per_kind, "skipped_lines": skipped}


def _read_pair(row: dict) -> tuple[np.ndarray, np.ndarray | None] | None:
    try:
        return read_rgb(row["image"]), read_mask(row["mask"]) if row.get("mask") else None
    except (SeasError, OSError, ValueError):
        return None


def qc_examples(accepted: list[dict], rejected: list[dict], kinds: list[str]) -> dict:
    """Per kind up to :data:`EXAMPLES` accepted and rejected pairs at full size for the report:
    ``{kind: {"accepted": [(rgb, mask)], "rejected": [((rgb, mask), reasons)]}}``; an unreadable
    file is left out."""
    out = {}
    for kind in kinds:
        acc = [_read_pair(r) for r in [r for r in accepted if r["kind"] == kind][:EXAMPLES]]
        rej = [(_read_pair(r), r["reasons"]) for r in [r for r in rejected if r["kind"] == kind][:EXAMPLES]]
        out[kind] = {"accepted": [p for p in acc if p is not None],
                     "rejected": [(p, reasons) for p, reasons in rej if p is not None]}
    return out
