"""Checks made before any work: every problem collected into one list, and the output folder.

A command checks all its inputs and its output folder before its first expensive step (model
load, bootstrap, training) and reports every problem it found at once: one line per problem,
each naming the file or option and the fix. :class:`ProblemList` collects them;
:class:`Problems` is the error it raises (``seas`` prints ``error: N problems:`` and one
indented line per problem, or the one line of a single problem, and exits 2).

:func:`check_output_folder` refuses an output folder that cannot be written or whose disk has
less free space than the command's rough estimate of its outputs; it writes nothing (the test
is ``os.access`` on the folder, or on its nearest existing parent when it does not exist yet).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from seas.errors import SeasError

MAX_SHOWN = 20  # problems printed; the rest are counted


class Problems(SeasError):
    """Several problems found at once; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems: list[str]) -> str:
    """One problem as its own line; several as ``N problems:`` and one indented line each."""
    if len(problems) == 1:
        return problems[0]
    lines = [f"{len(problems)} problems:", *(f"  {p}" for p in problems[:MAX_SHOWN])]
    if len(problems) > MAX_SHOWN:
        lines.append(f"  ... and {len(problems) - MAX_SHOWN} more; fix these and run the command again")
    return "\n".join(lines)


class ProblemList:
    """Problems collected before a command starts its work."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._errors: list[SeasError] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def extend(self, messages) -> None:
        for message in messages:
            self.add(message)

    @contextlib.contextmanager
    def collect(self):
        """Run the block; a :class:`SeasError` it raises is recorded, not propagated."""
        try:
            yield
        except Problems as err:
            self.extend(err.problems)
        except SeasError as err:
            self._errors.append(err)
            self.add(str(err))

    def raise_any(self) -> None:
        """Raise the problems found, if any: one error of its own kind, or :class:`Problems`."""
        if not self.items:
            return
        if len(self.items) == 1 and len(self._errors) == 1 and str(self._errors[0]) == self.items[0]:
            raise self._errors[0]
        raise Problems(self.items)


# ----------------------------------------------------------------------------- paths


def nearest_existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def path_size(path: str | Path) -> int:
    """Bytes of a file, or of every file under a folder; 0 when absent."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return 0


def is_within(inner: str | Path, outer: str | Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (both resolved, links followed)."""
    inner, outer = Path(inner).resolve(), Path(outer).resolve()
    return inner == outer or outer in inner.parents


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def output_folder_problems(path: str | Path, needed_bytes: int = 0, option: str = "--out") -> list[str]:
    """What stops ``path`` from receiving about ``needed_bytes`` of outputs (nothing is written).

    * ``path`` exists and is not a folder;
    * ``path`` (or, when absent, its nearest existing parent, where it will be created) is not
      writable: a read-only file system or folder permissions;
    * the disk holding it has less free space than ``needed_bytes``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return [f"{option} {path}: exists and is not a folder; choose a folder"]
    where = nearest_existing(path)
    if not where.is_dir():
        return [f"{option} {path}: {where} is a file, so the folder cannot be created; choose another {option}"]
    if not os.access(where, os.W_OK | os.X_OK):
        what = "is not writable" if where == path.absolute() else f"cannot be created ({where} is not writable)"
        return [f"{option} {path}: {what}; choose a writable {option} or fix the folder's permissions"]
    free = shutil.disk_usage(where).free
    if needed_bytes > free:
        return [f"{option} {path}: needs about {_mib(needed_bytes)} for its outputs, {_mib(free)} free on that "
                f"disk; free space or choose another {option}"]
    return []


def check_output_folder(path: str | Path, needed_bytes: int = 0, option: str = "--out") -> None:
    """Raise (one line) when ``path`` cannot receive about ``needed_bytes`` (see :func:`output_folder_problems`)."""
    problems = output_folder_problems(path, needed_bytes, option)
    if problems:
        raise Problems(problems)


def nested_problems(out: str | Path, data: str | Path, option: str = "--out", data_option: str = "--data",
                    dataset: str | None = None, kind: str = "dataset") -> list[str]:
    """An output folder (or file) that equals, contains or lies inside a dataset is refused:
    writing there would mix outputs into the data, and clearing it would delete the data.
    ``dataset`` names the data in the message (default ``--data <data>``), ``kind`` says what it
    is ("dataset", or "run" for a run folder an export reads)."""
    out, data = Path(out), Path(data)
    if not data.exists():
        return []
    label = dataset or f"{data_option} {data}"
    if is_within(data, out):
        what = "is" if Path(out).resolve() == data.resolve() else "contains"
        return [f"{option} {out}: {what} the {kind} {label}; choose an {option} outside the {kind}"]
    if data.is_dir() and is_within(out, data):
        return [f"{option} {out}: lies inside the {kind} {label}; choose an {option} outside the {kind}"]
    return []
