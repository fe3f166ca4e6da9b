"""The type classifier: a small CNN trained on crops around the real training anomalies of one
product (plus a "good" class of normal crops); it tells which type a generated pair shows."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from seas.data.readers import GOOD
from seas.files.images import as_mask, as_rgb

ImageLike = np.ndarray | str | os.PathLike
MaskLike = np.ndarray | str | os.PathLike | None


def _image(image: ImageLike) -> np.ndarray:
    return as_rgb(image)


def _mask(mask: MaskLike, shape: tuple[int, int]) -> np.ndarray:
    return as_mask(mask, shape)

# ----------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------


def crop_box(mask: np.ndarray | None, shape: tuple[int, int], *, context: float = 2.0,
             min_side: float = 0.125) -> tuple[int, int, int]:
    """The square box ``(y0, x0, side)`` the classifier looks at.

    Rule: the bounding box of ``mask`` (``(H, W)`` bool), a square of side
    ``context * max(box height, box width)`` centred on it, at least
    ``min_side * min(H, W)`` (and 8 px) so that a tiny defect keeps some
    surroundings, at most ``min(H, W)``, moved inside the image when it
    crosses a border.  With ``context = 2`` the defect fills about a quarter of
    the crop: enough context to tell e.g. a stain from the surface it lies on,
    while the defect still dominates the pooled features.  An empty or
    ``None`` mask gives the centre square of side ``min(H, W)`` (the whole
    image of a square picture).
    """
    h, w = shape
    short = min(h, w)
    if mask is None or not mask.any():
        return (h - short) // 2, (w - short) // 2, short
    ys, xs = np.nonzero(mask)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = context * max(y2 - y1, x2 - x1)
    side = int(round(min(max(side, min_side * short, 8), short)))
    cy, cx = (y1 + y2) / 2, (x1 + x2) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, x0, side


def crop(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Cut ``box = (y0, x0, side)`` out of ``(H, W, 3)`` uint8 and resize it to ``(size, size, 3)``."""
    y0, x0, side = box
    patch = image[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def _jitter_box(box: tuple[int, int, int], shape: tuple[int, int], rng: np.random.Generator,
                shift: float, scale: tuple[float, float]) -> tuple[int, int, int]:
    """Random scale (log-uniform in ``scale``) and shift (``+-shift * side``) of a box, kept inside."""
    h, w = shape
    y0, x0, side = box
    cy, cx = y0 + side / 2, x0 + side / 2
    new = side * math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    new = int(round(min(max(new, 8), min(h, w))))
    cy += rng.uniform(-shift, shift) * side
    cx += rng.uniform(-shift, shift) * side
    return (int(np.clip(round(cy - new / 2), 0, h - new)),
            int(np.clip(round(cx - new / 2), 0, w - new)), new)


def _photometric(patch: np.ndarray, rng: np.random.Generator, orientation: bool) -> np.ndarray:
    """Random dihedral transform (when ``orientation``) and brightness of a ``(s, s, 3)`` uint8 crop."""
    if orientation:
        patch = np.rot90(patch, int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-8.0, 8.0)
    return np.clip(patch.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# Type classifier
# ----------------------------------------------------------------------------


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _TypeNet(nn.Module):
    """Conv-BN-ReLU blocks and global pooling: ``(B, 3, S, S)`` -> logits ``(B, C)``.

    A strided first block (S/2), then two blocks each followed by 2x2 max
    pooling (S/8) and a last block; global average and max pooling are
    concatenated (the max keeps small, strong defects visible) before a linear
    layer.
    """

    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        c = width
        self.features = nn.Sequential(
            _Block(3, c, stride=2), _Block(c, 2 * c), nn.MaxPool2d(2),
            _Block(2 * c, 4 * c), nn.MaxPool2d(2), _Block(4 * c, 4 * c),
        )
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8 * c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.fc(self.drop(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)))


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` -> float ``(N, 3, S, S)`` centred at 0.5 with scale 0.25.

    No per-crop normalisation: brightness is part of what tells a dark hole
    from a bright scratch.
    """
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25


class TypeClassifier:
    """Anomaly-type classifier of one product, trained from scratch on the real few-shot data.

    Classes: the anomaly types in the order given to :meth:`fit`, then
    ``"good"``.  Inputs are crops chosen by :func:`crop_box` (a square around
    the mask, ``context`` times its larger side) resized to ``size`` px; the
    ``"good"`` class is random crops of the normal training images at the
    scales the real anomaly crops have, plus whole-image (centre-square)
    views, so the classifier can also say that a generated normal image looks
    normal and that a crop around a mask with no defect under it looks normal.

    Args:
        context: crop side / larger side of the mask's bounding box.
        min_side: smallest crop side, as a fraction of the image's shorter side.
        orientation_invariant: augment with flips and 90-degree rotations and
            average the prediction over the 8 flips/rotations (test-time
            augmentation).  Turn off for orientation-sensitive products.
        device: torch device for training and prediction (default CPU, which
            keeps the results deterministic).
    """

    def __init__(self, *, context: float = 2.0, min_side: float = 0.125,
                 orientation_invariant: bool = True, device: str | torch.device = "cpu"):
        self.context = context
        self.min_side = min_side
        self.orientation_invariant = orientation_invariant
        self.device = torch.device(device)
        self.classes: list[str] = []
        self.size = 64
        self.net: _TypeNet | None = None

    # -- data ---------------------------------------------------------------

    @property
    def types(self) -> list[str]:
        """The anomaly types (all classes but ``"good"``), ``(K,)``."""
        return self.classes[:-1]

    def box(self, mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[int, int, int]:
        """:func:`crop_box` with this classifier's crop settings."""
        return crop_box(mask, shape, context=self.context, min_side=self.min_side)

    def _augmented_crop(self, image: np.ndarray, box: tuple[int, int, int],
                        rng: np.random.Generator) -> np.ndarray:
        """One view of a real anomaly: box shifted by up to 12% of its side, scaled by 0.8-1.25,
        then flipped/rotated (when orientation-invariant) and brightness-jittered (gain
        0.85-1.15, offset +-8 grey levels)."""
        box = _jitter_box(box, image.shape[:2], rng, shift=0.12, scale=(0.8, 1.25))
        return _photometric(crop(image, box, self.size), rng, self.orientation_invariant)

    def _wide_crop(self, image: np.ndarray, bbox: tuple[int, int, int, int],
                   rng: np.random.Generator) -> np.ndarray:
        """A wider view of a real anomaly: a square of side log-uniform between the defect's
        crop side and the image's shorter side, placed at random among the positions that keep
        the defect's bounding box ``(y1, y2, x1, x2)`` inside.  Training on these teaches the
        classifier that a whole image with a defect somewhere is not "good"."""
        h, w = image.shape[:2]
        y1, y2, x1, x2 = bbox
        short = min(h, w)
        lo = max(y2 - y1, x2 - x1, 8)
        side = int(round(min(lo * math.exp(rng.uniform(0, math.log(max(short / lo, 1.0)))), short)))
        y0 = int(rng.integers(max(0, y2 - side), min(y1, h - side) + 1))
        x0 = int(rng.integers(max(0, x2 - side), min(x1, w - side) + 1))
        return _photometric(crop(image, (y0, x0, side), self.size), rng, self.orientation_invariant)

    def _good_crop(self, image: np.ndarray, side_range: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
        """A random normal crop: a quarter are whole-image views, the rest squares whose side
        (fraction of the shorter image side) is log-uniform in ``side_range``, placed uniformly."""
        h, w = image.shape[:2]
        short = min(h, w)
        if rng.random() < 0.25:
            box = crop_box(None, (h, w))
            box = _jitter_box(box, (h, w), rng, shift=0.05, scale=(0.85, 1.0))
        else:
            lo, hi = side_range
            side = short * math.exp(rng.uniform(math.log(lo), math.log(hi)))
            side = int(round(min(max(side, 8), short)))
            box = (int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1)), side)
        return _photometric(crop(image, box, self.size), rng, self.orientation_invariant)

    # -- training -----------------------------------------------------------

    def fit(self, pairs_by_type: Mapping[str, Sequence[tuple[ImageLike, MaskLike]]],
            normal_images: Sequence[ImageLike], *, seed: int = 0, steps: int = 300,
            size: int = 64, batch_size: int = 32, lr: float = 3e-3, width: int = 16,
            wide: float = 0.25) -> TypeClassifier:
        """Train from scratch; returns ``self`` (in eval mode).

        Args:
            pairs_by_type: ``{type: [(image, mask), ...]}`` real training
                anomalies; ``(H, W, 3)`` uint8 images, ``(H, W)`` masks.  Pairs
                with an empty mask are skipped (an empty mask shows no defect);
                every type needs at least one non-empty one.
            normal_images: real normal training images (at least one).
            seed: seeds the weights, the class/example draws and the augmentation.
            steps: AdamW steps (learning rate decayed by a cosine to 0).
            size: crop resolution in px.
            batch_size: crops per step; each crop's class is drawn uniformly,
                so every class, ``"good"`` included, is balanced whatever its
                number of examples.
            lr: peak learning rate.
            width: channels of the first block (doubled twice).
            wide: fraction of the anomaly views taken wider than the mask's
                crop, up to the whole image (:meth:`_wide_crop`), so that a
                whole (e.g. generated "normal") image showing a defect is not
                read as "good".

        The global torch RNG is left as it was.
        """
        types = list(pairs_by_type)
        if not types:
            raise ValueError("no anomaly types")
        if GOOD in types:
            raise ValueError(f"{GOOD!r} is reserved for the normal class")
        if not normal_images:
            raise ValueError("need at least one normal image for the 'good' class")
        examples: list[list[tuple[np.ndarray, tuple[int, int, int], tuple[int, int, int, int]]]] = []
        fractions = []
        for name in types:
            items = []
            for image, mask in pairs_by_type[name]:
                rgb = _image(image)
                binary = _mask(mask, rgb.shape[:2])
                if binary.any():
                    box = self.box(binary, rgb.shape[:2])
                    ys, xs = np.nonzero(binary)
                    items.append((rgb, box, (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)))
                    fractions.append(box[2] / min(rgb.shape[:2]))
            if not items:
                raise ValueError(f"type {name!r} has no pair with a non-empty mask")
            examples.append(items)
        normals = [_image(im) for im in normal_images]
        side_range = (max(0.8 * min(fractions), 0.05), 1.0)

        self.classes = types + [GOOD]
        self.size = size
        rng = np.random.default_rng(seed)
        n_classes = len(self.classes)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            net = _TypeNet(n_classes, width).to(self.device).train()
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
            for _ in range(steps):
                labels = rng.integers(n_classes, size=batch_size)
                patches = []
                for c in labels:
                    if c == n_classes - 1:
                        patches.append(self._good_crop(normals[rng.integers(len(normals))], side_range, rng))
                    else:
                        rgb, box, bbox = examples[c][rng.integers(len(examples[c]))]
                        if rng.random() < wide:
                            patches.append(self._wide_crop(rgb, bbox, rng))
                        else:
                            patches.append(self._augmented_crop(rgb, box, rng))
                x = _to_tensor(np.stack(patches)).to(self.device)
                loss = F.cross_entropy(net(x), torch.from_numpy(labels).to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        self.net = net.eval()
        return self

    # -- prediction ---------------------------------------------------------

    def _check(self) -> _TypeNet:
        if self.net is None:
            raise RuntimeError("TypeClassifier is not fitted; call fit() first")
        return self.net

    @torch.inference_mode()
    def predict_crops(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities ``(N, C)`` float64 of prepared crops ``(N, size, size, 3)`` uint8.

        When orientation-invariant, the softmax is averaged over the 8
        flips/rotations of each crop (the symmetry the training used).
        """
        net = self._check()
        out = []
        for i in range(0, len(patches), batch_size):
            x = _to_tensor(patches[i:i + batch_size]).to(self.device)
            if self.orientation_invariant:
                views = [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
            else:
                views = [x]
            probs = torch.stack([F.softmax(net(v), dim=1) for v in views]).mean(0)
            out.append(probs.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def crop_of(self, image: ImageLike, mask: MaskLike) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 crop :meth:`predict` classifies."""
        rgb = _image(image)
        binary = _mask(mask, rgb.shape[:2])
        return crop(rgb, self.box(binary, rgb.shape[:2]), self.size)

    def predict(self, image: ImageLike, mask: MaskLike = None) -> np.ndarray:
        """Probabilities ``(C,)`` over :attr:`classes` of the crop around ``mask``.

        ``image`` ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` bool; ``None`` or
        an empty mask classifies the centre square of the image (its whole
        extent when square) -- the view of a generated normal image.
        """
        return self.predict_many([(image, mask)])[0]

    def predict_many(self, pairs: Iterable[tuple[ImageLike, MaskLike]]) -> np.ndarray:
        """:meth:`predict` of each ``(image, mask)``, batched: ``(N, C)``."""
        patches = [self.crop_of(image, mask) for image, mask in pairs]
        if not patches:
            return np.zeros((0, len(self.classes)))
        return self.predict_crops(np.stack(patches))

    # -- persistence --------------------------------------------------------

    def state(self) -> dict:
        """Everything needed to rebuild the classifier (for ``torch.save``)."""
        net = self._check()
        return {"classes": list(self.classes), "size": self.size, "context": self.context,
                "min_side": self.min_side, "orientation_invariant": self.orientation_invariant,
                "width": net.features[0][0].out_channels,
                "weights": {k: v.cpu() for k, v in net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: Mapping, device: str | torch.device = "cpu") -> TypeClassifier:
        """Inverse of :meth:`state`."""
        clf = cls(context=state["context"], min_side=state["min_side"],
                  orientation_invariant=state["orientation_invariant"], device=device)
        clf.classes, clf.size = list(state["classes"]), int(state["size"])
        net = _TypeNet(len(clf.classes), int(state["width"]))
        net.load_state_dict(state["weights"])
        clf.net = net.to(clf.device).eval()
        return clf


