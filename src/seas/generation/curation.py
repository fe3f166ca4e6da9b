"""Curation decisions of a generated folder: which pairs a person accepted or rejected.

``seas gallery`` writes them next to the manifest; the export and the evaluation read them::

    curation.json   {"format": "seas-curation-1", "decisions": {"<kind>/<index>": "accepted" | "rejected"}}

A pair absent from the decisions is undecided.
"""

from __future__ import annotations

import json
from pathlib import Path

from seas.errors import RunError

CURATION = "curation.json"
CURATION_FORMAT = "seas-curation-1"
DECISIONS = ("accepted", "rejected")


def key_text(kind: str, index: int) -> str:
    """The curation key of one output: ``"<kind>/<index>"``."""
    return f"{kind}/{int(index)}"


def parse_key(text: str) -> tuple[str, int]:
    """``"scratch/3"`` -> ``("scratch", 3)``; ValueError for anything else."""
    kind, sep, index = str(text).rpartition("/")
    if not sep or not kind or not index.isdigit():
        raise ValueError(f"{text!r} is not '<kind>/<index>'")
    return kind, int(index)


def curation_path(generated_dir: str | Path) -> Path:
    return Path(generated_dir) / CURATION


def read_decisions(path: Path) -> dict[str, str]:
    """The decisions of a curation file by key text; {} when there is none; RunError when damaged."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RunError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    fix = "repair it, or delete it to start the curation over"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != CURATION_FORMAT or not isinstance(data.get("decisions"), dict):
        raise RunError(f"{path}: not a '{CURATION_FORMAT}' curation file; {fix}")
    decisions = data["decisions"]
    for key, value in decisions.items():
        if value not in DECISIONS:
            raise RunError(f"{path}: decision {value!r} of {key!r} is neither 'accepted' nor 'rejected'; {fix}")
        try:
            parse_key(key)
        except ValueError as err:
            raise RunError(f"{path}: key {err}; {fix}") from None
    return dict(decisions)


def read_curation(generated_dir: str | Path) -> dict[tuple[str, int], str]:
    """The decisions saved by ``seas gallery`` for a generated folder: (kind, index) -> decision.

    ``decision`` is ``"accepted"`` or ``"rejected"``; an output absent from the dict is
    undecided. {} when the folder has no ``curation.json``; RunError when the file is damaged.
    """
    return {parse_key(key): value for key, value in read_decisions(curation_path(generated_dir)).items()}


def accepted_keys(generated_dir: str | Path) -> set[tuple[str, int]] | None:
    """The (kind, index) of the outputs a person accepted; None when nothing was curated
    (no ``curation.json``), so that a caller can tell "keep everything" from "keep none"."""
    if not curation_path(generated_dir).is_file():
        return None
    return {key for key, value in read_curation(generated_dir).items() if value == "accepted"}
