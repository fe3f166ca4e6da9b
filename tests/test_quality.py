"""IS, KID, IC-LPIPS, the Inception-v3 and LPIPS networks, and weight loading.

No published weights exist here: networks are randomly initialised stand-ins, and weight files
are written by the tests themselves.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from conftest import TinyInception
from PIL import Image

from seas.evaluation import quality
from seas.evaluation.inception import InceptionV3
from seas.evaluation.lpips import LPIPS
from seas.evaluation.quality import (
    ic_lpips,
    inception_score,
    kid,
    load_inception,
    load_lpips,
    load_weights,
    prepare_for_is,
    quality_scores,
)
from seas.weights import MissingWeightsError, find_weights

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"


@pytest.fixture(autouse=True)
def isolated_weight_dirs(tmp_path, monkeypatch):
    """Point the default weight folders at empty temporary ones."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SEAS_WEIGHTS", raising=False)
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "seas_home"))  # no fetched LPIPS file


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    torch.manual_seed(0)
    model = LPIPS().eval()
    for head in model.heads:  # published LPIPS weights are non-negative
        torch.nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    return model


# --------------------------------------------------------------------------- IS


def numpy_inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(p)
    scores = []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        py = part.mean(axis=0)
        kl = [np.sum(row * (np.log(row) - np.log(py))) for row in part]
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_matches_numpy():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(53, 12))
    assert inception_score(logits, splits=5) == pytest.approx(numpy_inception_score(logits, 5))
    assert inception_score(torch.from_numpy(logits), splits=1) == pytest.approx(
        numpy_inception_score(logits, 1)
    )


def test_inception_score_of_confident_distinct_classes_is_class_count():
    logits = np.repeat(np.eye(8) * 100.0, 3, axis=0)
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(8.0, rel=1e-6)
    assert std == 0.0


# --------------------------------------------------------------------------- KID


def numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2.0 * xy


def test_kid_whole_sets_match_numpy():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(14, 6)), rng.normal(loc=0.5, size=(11, 6))
    mean, std = kid(real, fake, subsets=4, subset_size=1000)
    assert mean == pytest.approx(numpy_mmd2(real, fake))
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_match_numpy():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(20, 5)), rng.normal(scale=1.5, size=(16, 5))
    draws = np.random.default_rng(7)
    values = []
    for _ in range(6):
        x = real[draws.choice(20, 8, replace=False)]
        y = fake[draws.choice(16, 8, replace=False)]
        values.append(numpy_mmd2(x, y))
    mean, std = kid(torch.from_numpy(real), fake, subsets=6, subset_size=8, seed=7)
    assert (mean, std) == pytest.approx((np.mean(values), np.std(values)))


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    same = kid(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), subsets=10, subset_size=50)
    apart = kid(rng.normal(size=(200, 4)), rng.normal(2, size=(200, 4)), subsets=10, subset_size=50)
    assert abs(same[0]) < 0.1 * apart[0]
    with pytest.raises(ValueError):
        kid(np.zeros((1, 4)), np.zeros((5, 4)))


# --------------------------------------------------------------------------- IC-LPIPS


class MeanAbsDistance(torch.nn.Module):
    """Stand-in for LPIPS: mean absolute pixel difference of every pair."""

    def normalised_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images.flatten(1)]

    def feature_distances(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return (fx[0][:, None] - fy[0][None]).abs().mean(dim=2)


def numpy_ic_lpips(gen: np.ndarray, real: np.ndarray, compared: np.ndarray):
    def dist(a, b):
        return np.abs(a - b).mean()

    assignment = np.array([np.argmin([dist(g, r) for r in real]) for g in gen])
    per_cluster = []
    for cluster in range(len(real)):
        members = np.flatnonzero(assignment == cluster)
        pairs = [dist(compared[i], compared[j]) for i, j in combinations(members, 2)]
        per_cluster.append(np.mean(pairs) if pairs else np.nan)
    return np.nanmean(per_cluster), np.array(per_cluster), assignment


@pytest.fixture
def clustered_images():
    """Real images at grey levels -0.8, 0 and 0.95; 4 + 4 + 1 noisy generated images."""
    rng = np.random.default_rng(4)
    levels = np.array([-0.8, 0.0, 0.95])
    real = np.broadcast_to(levels[:, None, None, None], (3, 3, 6, 6)).copy()
    owner = np.array([0, 1, 0, 1, 0, 1, 0, 1, 2])
    gen = np.clip(levels[owner, None, None, None] + rng.normal(0, 0.1, (9, 3, 6, 6)), -1, 1)
    return gen, real, owner


def test_ic_lpips_matches_numpy(clustered_images):
    gen, real, owner = clustered_images
    gen_t, real_t = torch.from_numpy(gen), torch.from_numpy(real)
    result = ic_lpips(gen_t, real_t, MeanAbsDistance(), batch_size=3)
    score, per_cluster, assignment = numpy_ic_lpips(gen, real, gen)
    np.testing.assert_array_equal(result.assignment, owner)
    np.testing.assert_array_equal(result.assignment, assignment)
    np.testing.assert_allclose(result.per_cluster, per_cluster)
    assert np.isnan(result.per_cluster[2])  # a single member: no pairs, left out of the mean
    assert result.score == pytest.approx(score)


def test_ic_lpips_in_anomaly_region_masks_generated_images(clustered_images):
    gen, real, _ = clustered_images
    masks = (np.random.default_rng(5).random((9, 1, 6, 6)) > 0.5).astype(np.float64)
    result = ic_lpips(
        torch.from_numpy(gen), torch.from_numpy(real), MeanAbsDistance(),
        region_masks=torch.from_numpy(masks), batch_size=2,
    )
    score, per_cluster, assignment = numpy_ic_lpips(gen, real, gen * masks)
    np.testing.assert_array_equal(result.assignment, assignment)
    np.testing.assert_allclose(result.per_cluster, per_cluster)
    assert result.score == pytest.approx(score)


# --------------------------------------------------------------------------- LPIPS network


@torch.no_grad()
def test_lpips_is_zero_for_identical_images_and_symmetric(lpips_model):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 24, 24) * 2 - 1, torch.rand(2, 3, 24, 24) * 2 - 1
    same, xy, yx = lpips_model(x, x), lpips_model(x, y), lpips_model(y, x)
    assert same.shape == (2,)
    assert torch.all(same == 0)
    assert torch.all(xy > 0)
    torch.testing.assert_close(xy, yx)


@torch.no_grad()
def test_lpips_pairwise_matches_forward_on_every_pair(lpips_model):
    torch.manual_seed(2)
    x, y = torch.rand(3, 3, 24, 24) * 2 - 1, torch.rand(2, 3, 24, 24) * 2 - 1
    direct = torch.stack([lpips_model(x, y[j].expand_as(x)) for j in range(2)], dim=1)
    torch.testing.assert_close(lpips_model.pairwise(x, y), direct, rtol=1e-4, atol=1e-6)
    self_matrix = lpips_model.pairwise(x)
    torch.testing.assert_close(self_matrix, self_matrix.T)
    assert torch.all(self_matrix.diagonal() < 1e-5)


def test_lpips_state_dict_has_torchvision_and_lpips_keys(lpips_model):
    state = lpips_model.state_dict()
    conv_indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    expected = {f"features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")}
    expected |= {f"lin{k}.model.1.weight" for k in range(5)}
    assert set(state) == expected
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.28.weight"].shape == (512, 512, 3, 3)
    assert state["lin0.model.1.weight"].shape == (1, 64, 1, 1)
    assert state["lin4.model.1.weight"].shape == (1, 512, 1, 1)
    assert sum(p.numel() for p in lpips_model.features.parameters()) == 14_714_688


# --------------------------------------------------------------------------- Inception network


def test_inception_state_dict_has_torchvision_keys():
    model = InceptionV3()
    state = model.state_dict()
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.bn.weight": (192,),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.bn.running_var": (192,),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for key, shape in shapes.items():
        assert state[key].shape == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    # torchvision's inception_v3 has 27,161,264 parameters, 3,326,696 of them in AuxLogits.
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696


def test_inception_forward_shapes_at_batch_one():
    torch.manual_seed(0)
    model = InceptionV3().eval()
    with torch.no_grad():
        features, logits = model(torch.rand(1, 3, 40, 48))
    assert features.shape == (1, 2048) and logits.shape == (1, 1000)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


def test_inception_preprocess_maps_unit_range_to_symmetric_range_at_299():
    images = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(2, 3, 20, 30)
    out = InceptionV3.preprocess(images)
    assert out.shape == (2, 3, 299, 299)
    torch.testing.assert_close(out[0, :, 100, 100], torch.tensor([-1.0, 0.0, 1.0]))


def test_prepare_for_is_resizes_to_256():
    out = prepare_for_is(torch.rand(3, 3, 300, 200))
    assert out.shape == (3, 3, 256, 256)
    assert out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------- weight files


def test_weights_round_trip_through_weights_dir(tmp_path, lpips_model):
    torch.manual_seed(2)
    inception = InceptionV3()
    state = {k: v for k, v in inception.state_dict().items() if "num_batches" not in k}
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)  # present in the torchvision file
    torch.save(state, tmp_path / INCEPTION_FILE)
    loaded = load_inception(tmp_path)
    assert not loaded.training
    torch.testing.assert_close(loaded.state_dict(), inception.state_dict(), rtol=0, atol=0)

    vgg16 = {k: v for k, v in lpips_model.state_dict().items() if k.startswith("features.")}
    vgg16["classifier.6.bias"] = torch.zeros(1000)  # the rest of torchvision's VGG16
    lin = {k: v for k, v in lpips_model.state_dict().items() if k.startswith("lin")}
    torch.save(vgg16, tmp_path / "vgg16-397923af.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    loaded_lpips = load_lpips(tmp_path)
    torch.testing.assert_close(loaded_lpips.state_dict(), lpips_model.state_dict(), rtol=0, atol=0)


def test_search_order_weights_dir_then_env_then_caches(tmp_path, monkeypatch):
    env_dir, own_dir = tmp_path / "env", tmp_path / "own"
    hub_dir = tmp_path / "torch_home" / "hub" / "checkpoints"
    for folder in (env_dir, own_dir, hub_dir):
        folder.mkdir(parents=True)
    torch.save({"w": torch.ones(1)}, hub_dir / "vgg.pth")
    assert find_weights("lpips_vgg") == hub_dir / "vgg.pth"
    torch.save({"w": torch.ones(2)}, env_dir / "vgg.pth")
    monkeypatch.setenv("SEAS_WEIGHTS", str(env_dir))
    assert load_weights("vgg.pth")["w"].shape == (2,)
    torch.save({"w": torch.ones(3)}, own_dir / "vgg.pth")
    assert load_weights("lpips_vgg", own_dir)["w"].shape == (3,)


def test_missing_weights_name_file_and_folder(tmp_path):
    folder = tmp_path / "weights"
    with pytest.raises(MissingWeightsError) as error:
        load_weights("inception_v3", folder)
    message = str(error.value)
    assert "\n" not in message
    assert f"'{INCEPTION_FILE}': place it in {folder} " in message
    assert "download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth" in message
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        load_lpips(folder)
    with pytest.raises(MissingWeightsError, match=INCEPTION_FILE):
        quality_scores([np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8, 3), np.uint8)] * 2)


# --------------------------------------------------------------------------- all scores


def test_quality_scores_with_stand_in_networks(monkeypatch, lpips_model):
    torch.manual_seed(3)
    monkeypatch.setattr(quality, "load_inception", lambda *args: TinyInception().eval())
    monkeypatch.setattr(quality, "load_lpips", lambda *args: lpips_model)
    rng = np.random.default_rng(6)
    gen = [rng.integers(0, 256, (24, 20, 3), dtype=np.uint8) for _ in range(5)]
    real = [Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)) for _ in range(2)]
    masks = [rng.random((24, 20)) > 0.5 for _ in range(5)]
    scores = quality_scores(gen, real, masks, batch_size=4, is_splits=2, image_size=16)
    assert set(scores) == {
        "is_mean", "is_std", "kid_mean", "kid_std", "ic_lpips", "ic_lpips_anomaly"
    }
    assert scores["is_mean"] >= 1.0
    assert all(np.isfinite(v) for v in scores.values())  # 5 images in 2 clusters: some pair


# --------------------------------------------------------------------------- one family at a time


def test_ic_lpips_reuses_a_given_assignment(clustered_images):
    gen, real, owner = clustered_images
    gen_t, real_t = torch.from_numpy(gen), torch.from_numpy(real)
    masks = torch.from_numpy((np.random.default_rng(8).random((9, 1, 6, 6)) > 0.5).astype(np.float64))
    fresh = ic_lpips(gen_t, real_t, MeanAbsDistance(), masks, batch_size=4)
    reused = ic_lpips(gen_t, real_t, MeanAbsDistance(), masks, batch_size=4, assignment=owner)
    np.testing.assert_array_equal(reused.assignment, fresh.assignment)
    np.testing.assert_allclose(reused.per_cluster, fresh.per_cluster)
    for bad in (owner[:-1], owner + 1):
        with pytest.raises(ValueError, match="assignment"):
            ic_lpips(gen_t, real_t, MeanAbsDistance(), assignment=bad)


def test_ic_lpips_scores_need_no_inception(monkeypatch, lpips_model):
    def no_inception(*args):
        raise AssertionError("Inception was loaded")

    monkeypatch.setattr(quality, "load_inception", no_inception)
    torch.manual_seed(4)
    gen, real = torch.rand(5, 3, 16, 16), torch.rand(2, 3, 16, 16)
    masks = (torch.rand(5, 1, 16, 16) > 0.5).float()
    scores = quality.ic_lpips_scores(lpips_model, gen, real, masks, batch_size=2)
    whole = ic_lpips(gen * 2 - 1, real * 2 - 1, lpips_model, batch_size=3)
    region = ic_lpips(gen * 2 - 1, real * 2 - 1, lpips_model, masks, batch_size=3)
    assert scores == pytest.approx({"ic_lpips": whole.score, "ic_lpips_anomaly": region.score})
    assert set(quality.ic_lpips_scores(lpips_model, gen, real)) == {"ic_lpips"}


def test_inception_scores_alone():
    torch.manual_seed(5)
    scores = quality.inception_scores(TinyInception().eval(), torch.rand(6, 3, 16, 16), torch.rand(4, 3, 16, 16),
                                      batch_size=4, is_splits=2, kid_subsets=3)
    assert set(scores) == {"is_mean", "is_std", "kid_mean", "kid_std"} and scores["is_mean"] >= 1.0


def test_weight_checks_per_family(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(MissingWeightsError, match=INCEPTION_FILE):
        quality.check_family_weights("inception", folder)
    with pytest.raises(MissingWeightsError, match="`seas weights fetch lpips`") as error:
        quality.check_family_weights("lpips", folder)
    assert "\n" not in str(error.value)
    for name in ("vgg16-397923af.pth", "vgg.pth"):  # the published LPIPS files, no Inception
        (folder / name).write_bytes(b"")
    quality.check_lpips_weights(folder)
    with pytest.raises(MissingWeightsError, match=INCEPTION_FILE):
        quality.check_weights(folder)
    (folder / INCEPTION_FILE).write_bytes(b"")
    quality.check_inception_weights(folder)
    quality.check_weights(folder)
    with pytest.raises(ValueError, match="inception, lpips"):
        quality.load_family_network("fid", folder)
