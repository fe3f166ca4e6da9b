"""Downstream supervised anomaly segmentation, the SeaS paper's protocol.

A segmentation network is trained from scratch on a set of image-mask pairs
(e.g. the real training third of the anomalies plus normal images, optionally
extended with generated or classically synthesised pairs) and evaluated on a
common test set with :func:`seas.evaluation.metrics.all_metrics`.  Comparing
training sets shows what generated data adds.

Data are lists of pairs ``(image, mask)``: ``image`` is an ``(H, W, 3)`` uint8
RGB array or a path, ``mask`` an ``(H, W)`` array, a path, or ``None`` for a
normal image.  Images and masks are read by :mod:`seas.files.images` (``as_rgb``,
``as_mask``: masks binarised at half their range, 0/1 masks included), like everywhere
in the package.

Resolution: training and :func:`evaluate` both happen at
``cfg.size x cfg.size`` (images resized bilinearly/area, masks by nearest
neighbour), which keeps images of different sizes comparable and the metrics
cheap.  :func:`predict` can instead resize its maps back to the input size.

Loss: cross-entropy (``cfg.loss == "ce_dice"``) or focal loss with gamma 2
(``"focal_dice"``), plus the soft Dice loss of the anomaly class over the
batch, which counters the heavy normal/anomaly pixel imbalance.  BiSeNet V2's
auxiliary heads add the same loss weighted by ``cfg.aux_weight``.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from torch.nn import functional as F

from seas.evaluation.baselines import cut_paste, perlin_blend
from seas.evaluation.config import DownstreamConfig
from seas.evaluation.segmenters import Segmenter, build_segmenter
from seas.files.images import as_mask, as_rgb, resize_image, resize_mask
from seas.progress import bar as progress_bar

ImageLike = Union[np.ndarray, str, os.PathLike]
Pair = tuple[ImageLike, Union[ImageLike, None]]

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def prepare_pairs(pairs: Sequence[Pair], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and resize pairs -> images ``(N, 3, S, S)`` uint8 and masks ``(N, S, S)`` bool."""
    images, masks = [], []
    for image, mask in pairs:
        rgb = as_rgb(image)
        images.append(resize_image(rgb, size))
        masks.append(resize_mask(as_mask(mask, rgb.shape[:2]), size))
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.stack(masks)))


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float, ImageNet mean/std normalised."""
    x = images.float() / 255.0
    return (x - _MEAN.to(x.device)) / _STD.to(x.device)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce_dice") -> torch.Tensor:
    """Pixel loss + soft Dice of the anomaly class.

    Args:
        logits: ``(B, 2, H, W)``.
        target: ``(B, H, W)`` bool, True on anomalies.
        kind: ``"ce_dice"`` (cross-entropy) or ``"focal_dice"`` (focal, gamma 2).
    """
    labels = target.long()
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, labels[:, None])[:, 0]
    if kind == "ce_dice":
        pixel = -log_pt.mean()
    elif kind == "focal_dice":
        pixel = -((1 - log_pt.exp()) ** 2 * log_pt).mean()
    else:
        raise ValueError(f"unknown loss {kind!r}; expected 'ce_dice' or 'focal_dice'")
    prob = log_p[:, 1].exp()
    t = target.float()
    dice = 1 - (2 * (prob * t).sum() + 1) / (prob.sum() + t.sum() + 1)
    return pixel + dice


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full batches of indices, each epoch a fresh permutation of ``range(n)``."""
    pool = torch.empty(0, dtype=torch.long)
    while True:
        while len(pool) < batch_size:
            pool = torch.cat([pool, torch.randperm(n, generator=gen)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


def _flip(images: torch.Tensor, masks: torch.Tensor,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-sample horizontal and vertical flips of ``(B, 3, H, W)`` / ``(B, H, W)``."""
    for dim, coin in zip((-1, -2), torch.rand(2, len(images), generator=gen) < 0.5):
        images = torch.where(coin[:, None, None, None], images.flip(dim), images)
        masks = torch.where(coin[:, None, None], masks.flip(dim), masks)
    return images, masks


def build_untrained(cfg: DownstreamConfig) -> Segmenter:
    """The segmenter ``cfg`` names, with fresh (unseeded) weights; with ``cfg.prior`` every
    classifier (the main head's and the auxiliary heads') starts predicting that anomaly
    probability everywhere: its logits' biases are 0 (normal) and ``log(p / (1 - p))`` (anomaly).
    Measured reason (docs/EVALUATION.md): with PyTorch's default biases, one seed in three of the
    demo's narrow U-Net settled on predicting all-normal (pixel AP 0.04) whatever the learning
    rate or the batch balance."""
    extra = {"aux_heads": cfg.aux_weight > 0} if cfg.segmenter == "bisenetv2" else {}
    model = build_segmenter(cfg.segmenter, width=cfg.width, **extra)
    if cfg.prior is not None:
        for name, module in model.named_modules():
            if name.split(".")[-1] == "cls" and isinstance(module, torch.nn.Conv2d):
                with torch.no_grad():
                    module.bias.copy_(torch.tensor([0.0, math.log(cfg.prior / (1 - cfg.prior))]))
    return model


def train_segmenter(pairs: Sequence[Pair], cfg: DownstreamConfig, desc: str = "train") -> Segmenter:
    """Train a segmenter from scratch on ``pairs``; returns it in eval mode on ``cfg.device``.

    Deterministic given ``cfg.seed`` on CPU (the global torch RNG is restored
    afterwards).  Each step draws ``cfg.batch_size`` pairs resized to
    ``cfg.size``, flips them at random and minimises :func:`segmentation_loss`.
    """
    if not pairs:
        raise ValueError("no training pairs")
    device = resolve_device(cfg.device)
    images, masks = prepare_pairs(pairs, cfg.size)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        model = build_untrained(cfg).to(device).train()
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / max(cfg.steps, 1)) ** 0.9)
        batches = _batches(len(pairs), cfg.batch_size, gen)
        bar = progress_bar(iterable=range(cfg.steps), desc=desc, disable=not cfg.progress, leave=False)
        for _ in bar:
            idx = next(batches)
            x, y = _flip(images[idx], masks[idx], gen)
            logits, aux = model.forward_train(_normalise(x.to(device)))
            y = y.to(device)
            loss = segmentation_loss(logits, y, cfg.loss)
            loss = loss + sum(cfg.aux_weight * segmentation_loss(a, y, cfg.loss) for a in aux)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval()


# ----------------------------------------------------------------------------
# Prediction and protocol
# ----------------------------------------------------------------------------


@torch.inference_mode()
def _predict_tensor(model: Segmenter, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` -> anomaly probabilities ``(N, S, S)`` float32 on CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = [F.softmax(model(_normalise(images[i:i + batch_size].to(device))), dim=1)[:, 1].float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def predict(model: Segmenter, images: Sequence[ImageLike], size: int, *,
            resize_back: bool = True, batch_size: int = 16) -> np.ndarray:
    """Anomaly probability maps of ``images`` (arrays or paths).

    The network sees each image resized to ``size x size``.  With
    ``resize_back`` the maps are resized bilinearly to the input size and the
    result is ``(N, H, W)`` float32 (all images must then share one size);
    otherwise it is ``(N, size, size)``.
    """
    rgbs = [as_rgb(im) for im in images]
    batch = torch.from_numpy(np.stack([resize_image(im, size) for im in rgbs])).permute(0, 3, 1, 2)
    probs = _predict_tensor(model, batch, batch_size)
    if not resize_back:
        return probs.numpy()
    shapes = {im.shape[:2] for im in rgbs}
    if len(shapes) > 1:
        raise ValueError(f"images have several sizes {sorted(shapes)}; use resize_back=False")
    return F.interpolate(probs[:, None], size=shapes.pop(), mode="bilinear",
                         align_corners=False)[:, 0].clamp(0, 1).numpy()


def _metrics(model: Segmenter, images: torch.Tensor, masks: torch.Tensor,
             cfg: DownstreamConfig) -> dict[str, float]:
    """``all_metrics`` of the model's maps on prepared ``(N, 3, S, S)`` images / ``(N, S, S)`` masks."""
    from seas.evaluation.metrics import all_metrics

    scores = _predict_tensor(model, images, cfg.eval_batch_size).numpy()
    return {k: float(v) for k, v in all_metrics(scores, masks.numpy()).items()}


def evaluate(model: Segmenter, test_pairs: Sequence[Pair], cfg: DownstreamConfig) -> dict[str, float]:
    """:func:`~seas.evaluation.metrics.all_metrics` of ``model`` on ``test_pairs`` at ``cfg.size``."""
    return _metrics(model, *prepare_pairs(test_pairs, cfg.size), cfg)


# ----------------------------------------------------------------------------
# Training-set helpers
# ----------------------------------------------------------------------------


def make_cut_paste_set(real_anomaly_pairs: Sequence[Pair], normal_images: Sequence[ImageLike],
                       n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` cut-paste pairs: a random real defect pasted on a random normal image."""
    rng = np.random.default_rng(seed)
    defects = [(as_rgb(im), m) for im, m in real_anomaly_pairs]
    defects = [(im, as_mask(m, im.shape[:2])) for im, m in defects]
    defects = [(im, m) for im, m in defects if m.any()]
    if not defects or not normal_images:
        raise ValueError("need at least one non-empty real defect and one normal image")
    normals = [as_rgb(im) for im in normal_images]
    out = []
    for _ in range(n):
        defect_rgb, defect_mask = defects[rng.integers(len(defects))]
        out.append(cut_paste(normals[rng.integers(len(normals))], defect_rgb, defect_mask, rng))
    return out


def make_perlin_set(normal_images: Sequence[ImageLike], n: int,
                    seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` DRAEM-style pairs from random normal images (:func:`perlin_blend`)."""
    if not normal_images:
        raise ValueError("need at least one normal image")
    rng = np.random.default_rng(seed)
    normals = [as_rgb(im) for im in normal_images]
    return [perlin_blend(normals[rng.integers(len(normals))], rng) for _ in range(n)]
