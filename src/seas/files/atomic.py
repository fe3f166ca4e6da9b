"""Crash-safe file and folder writes: the one place that writes anything under a final name.

Every file is written under a temporary name beside its target (``.<name><tag>.tmp``) and
renamed; every folder is built as ``.tmp-<name>`` and renamed; either gets the usual file modes
before the rename (:func:`usual_modes`). A stopped writer therefore never
leaves a partial file under a final name, only temporaries that :func:`remove_temporaries`
deletes. A failed write raises ``OSError`` naming the final path, with its temporary removed
(torch and safetensors report a full disk as ``RuntimeError`` / ``SafetensorError``: those
become ``OSError(EIO, ...)`` too).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from seas.errors import RunError


@contextlib.contextmanager
def write_errors(target: Path, temporary: Path | None = None):
    """Turn a failed write into ``OSError`` naming ``target``; remove the partial ``temporary``."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            error = OSError(err.errno, err.strerror, str(target))
        else:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            error = OSError(errno.EIO, f"{message} ({free_space(target) / 2**20:.1f} MiB free on that disk)",
                            str(target))
        if temporary is not None:
            remove_path(temporary)
        raise error from err


def free_space(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def remove_path(path: Path) -> None:
    """Delete a file or folder; a folder is first renamed to a temporary name, so that a
    stopped deletion never leaves a partial folder under its final name."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        if not path.name.startswith(".tmp-"):
            doomed = path.with_name(f".tmp-old-{path.name}")
            remove_path(doomed)
            os.replace(path, doomed)
            path = doomed
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_modes(path: Path) -> None:
    """Give every file at or under ``path`` at least the mode a plain ``open()`` gives (0666 less
    the umask: 0644 usually), as a finished output should have: safetensors writes its files
    owner-only (0600), so a run shared with a group or served read-only was unreadable to others.
    Hard-linked files are left alone (the VAE linked from the base is the base's file)."""
    path = Path(path)
    wanted = 0o666 & ~_umask()
    for file in [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()):
        info = file.lstat()
        if not file.is_symlink() and info.st_nlink == 1 and (info.st_mode & wanted) != wanted:
            os.chmod(file, (info.st_mode & 0o7777) | wanted)


def write_file(path: Path, write: Callable[[Path], None], tag: str = "") -> Path:
    """``write(tmp)`` into ``.<name><tag>.tmp`` beside ``path``, then rename it to ``path``.

    ``tag`` keeps the temporaries of several writers apart (``.rank1`` for process 1).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{tag}.tmp")
    with write_errors(path, tmp):
        write(tmp)
        usual_modes(tmp)
        os.replace(tmp, path)
    return path


def write_bytes(path: Path, data: bytes, tag: str = "") -> Path:
    return write_file(path, lambda tmp: tmp.write_bytes(data), tag)


def write_text(path: Path, text: str, tag: str = "") -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), tag)


def write_json(path: Path, payload, tag: str = "") -> Path:
    return write_text(path, json.dumps(payload, indent=1), tag)


def read_json(path: Path) -> dict:
    """A JSON file the package wrote; a RunError naming it when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot be read ({err}); the folder is damaged, start a new run") from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name, replacing an older one.

    The older folder is renamed away first: ``final`` is always absent or whole.
    """
    old = final.with_name(f".tmp-old-{final.name}")
    remove_path(old)
    usual_modes(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


def write_dir(final: Path, save: Callable[[Path], None]) -> Path:
    """Write a folder atomically: ``save(tmp)`` into ``.tmp-<name>`` beside it, then rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    remove_path(tmp)
    with write_errors(final, tmp):
        save(tmp)
    replace_dir(tmp, final)
    return final


def is_temporary(name: str) -> bool:
    return name.startswith(".tmp-") or (name.startswith(".") and name.endswith(".tmp"))


def remove_temporaries(*folders: Path) -> None:
    """Delete what a stopped or failed writer left directly inside ``folders``."""
    for folder in folders:
        if Path(folder).is_dir():
            for path in Path(folder).iterdir():
                if is_temporary(path.name):
                    remove_path(path)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    """SHA-256 of bytes in memory: what :func:`file_digest` gives for a file holding them."""
    return hashlib.sha256(data).hexdigest()


def file_table(folder: Path) -> dict[str, list]:
    """``[size, sha256]`` of every file under ``folder``, by relative POSIX path."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): [p.stat().st_size, file_digest(p)]
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_file_table(folder: Path, table: dict[str, list]) -> str | None:
    """The first problem of ``folder`` against a :func:`file_table` (missing, truncated or
    altered file, named relative to ``folder``), or ``None`` when every file matches."""
    for name, (size, digest) in table.items():
        file = Path(folder) / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
        if file_digest(file) != digest:
            return f"{name} altered: checksum differs"
    return None
