"""Where weights live and how they are checked before use.

* shipped bases: model folders installed with the package (``seas/shipped/<name>``), each with
  a model card whose ``files`` table holds every weight file's size and SHA-256;
* ``$SEAS_HOME`` (default ``~/.cache/seas``): what seas builds or fetches on first use.

A shipped base is verified every time it is resolved (a few milliseconds for tens of MB); a
missing or altered file is a one-line :class:`WeightsError` saying to reinstall the package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from seas.errors import SeasError
from seas.files.atomic import check_file_table

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_BASES = ("seas-tiny",)  # names --base accepts for a base shipped with the package
CARD_FILE = "card.json"  # the model card's figures, with the table of files it vouches for


class WeightsError(SeasError):
    """Weights that are missing, damaged, or cannot be fetched; the message says what to do."""


def seas_home() -> Path:
    """``$SEAS_HOME``, or ``~/.cache/seas``: where seas keeps what it builds or fetches."""
    return Path(os.environ.get("SEAS_HOME") or Path.home() / ".cache" / "seas")


def shipped_base(name: str) -> Path:
    """The folder of shipped base ``name`` once every file its card lists has its size and SHA-256."""
    folder = SHIPPED_DIR / name
    card = folder / CARD_FILE
    if name not in SHIPPED_BASES or not card.is_file():
        raise WeightsError(f"--base {name}: this installation of seas has no shipped base of that name "
                           f"(shipped: {', '.join(SHIPPED_BASES)}); reinstall the package")
    try:
        table = json.loads(card.read_text())["files"]
    except (OSError, ValueError, KeyError) as err:
        raise WeightsError(f"{card}: unreadable model card ({type(err).__name__}); reinstall the package") from None
    problem = check_file_table(folder, table)
    if problem:
        raise WeightsError(f"--base {name}: {folder}/{problem}; reinstall the package "
                           "(pip install --force-reinstall seas)")
    return folder
