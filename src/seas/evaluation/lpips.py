"""LPIPS (v0.1, VGG16 variant) in plain PyTorch.

Value range: **inputs are float images in [-1, 1]**, shape ``(N, 3, H, W)``. (The SeaS
reference code fed LPIPS a mix of ``[0, 255]`` and ``[-1, 1]`` images; in this package
:mod:`seas.evaluation.quality` converts every image to ``[-1, 1]`` in one place before
calling this module.) Distances are ``>= 0``; for natural images they mostly lie in
``[0, 1]``.

Layout: ``features.<i>`` are torchvision's ``vgg16().features`` layers with the same
indices, so the ``features.*`` keys of ``vgg16-397923af.pth`` load unchanged; ``lin0`` ...
``lin4`` hold the learned 1 x 1 channel weights (keys ``lin<k>.model.1.weight``, shape
``(1, C_k, 1, 1)``) of the official LPIPS ``weights/v0.1/vgg.pth``. The input scaling
constants are fixed non-persistent buffers, so they are not part of the state dict.

Distance: for VGG activations ``f^k`` at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3,
each unit-normalised over channels,
``d(x, y) = sum_k mean_{h,w} sum_c w^k_c (f^k_c(x)[h,w] - f^k_c(y)[h,w])^2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

# Output channels of the VGG16 convolutions, "M" for a 2 x 2 max pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in ``features`` of the ReLUs LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
TAP_INDICES = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS input scaling: (x - shift) / scale maps [-1, 1] images to ImageNet-normalised ones.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


def _conv_indices() -> tuple[int, ...]:
    """Indices in ``features`` of the 13 convolutions (each is followed by its ReLU)."""
    indices, index = [], 0
    for item in VGG16_LAYOUT:
        if item == "M":
            index += 1
        else:
            indices.append(index)
            index += 2
    return tuple(indices)


# Indices in ``features`` of the convolutions: 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28.
CONV_INDICES = _conv_indices()


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` up to relu5_3 (indices 0 ... 29)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = item
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """LPIPS ``NetLinLayer``: dropout then a bias-free 1 x 1 conv to one channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    @property
    def channel_weights(self) -> torch.Tensor:
        """The per-channel weights, shape (C,)."""
        return self.model[1].weight.flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalise(x: torch.Tensor) -> torch.Tensor:
    """Divide each pixel's channel vector by its L2 norm: (N, C, H, W) -> same."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS distance with a VGG16 trunk; call ``.eval()`` before use.

    ``forward(x, y)``: images ``(N, 3, H, W)`` in ``[-1, 1]`` -> distances ``(N,)``.
    ``pairwise(x, y)``: ``(N, 3, H, W)`` and ``(M, 3, H, W)`` -> all distances ``(N, M)``,
    also as ``feature_distances(normalised_features(x), normalised_features(y))``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = _vgg16_features()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (
            LinearHead(c) for c in TAP_CHANNELS
        )

    @property
    def heads(self) -> tuple[LinearHead, ...]:
        return (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)

    def normalised_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (N, 3, H, W) in [-1, 1] -> 5 unit-normalised maps (N, C_k, H_k, W_k)."""
        x = (images - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_INDICES:
                taps.append(_unit_normalise(x))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> LPIPS distances (N,)."""
        total = x.new_zeros(x.shape[0])
        layers = zip(self.heads, self.normalised_features(x), self.normalised_features(y))
        for head, fx, fy in layers:
            total = total + head((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total

    def feature_distances(
        self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """All distances between the images behind two ``normalised_features`` outputs.

        ``fx`` and ``fy`` come from N and M images of one size; returns (N, M). Uses
        ``sum_c w_c (a_c - b_c)^2 = sum_c w_c a_c^2 + sum_c w_c b_c^2 - 2 sum_c w_c a_c b_c``, so
        the cross terms are one matrix product per layer. Equal to ``forward`` on every pair
        up to float rounding (clamped at 0).
        """
        total = fx[0].new_zeros(fx[0].shape[0], fy[0].shape[0])
        for head, ax, ay in zip(self.heads, fx, fy):
            weights = head.channel_weights.view(1, -1, 1, 1)
            pixels = ax.shape[-2] * ax.shape[-1]
            weighted = (ax * weights).flatten(1)
            self_x = (weighted * ax.flatten(1)).sum(dim=1)
            self_y = (ay.pow(2) * weights).flatten(1).sum(dim=1)
            cross = weighted @ ay.flatten(1).T
            total = total + (self_x[:, None] + self_y[None, :] - 2.0 * cross) / pixels
        return total.clamp_min(0.0)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """All distances between (N, 3, H, W) and (M, 3, H, W) images in [-1, 1] -> (N, M).

        ``y=None`` compares ``x`` with itself, (N, N), running VGG once.
        """
        fx = self.normalised_features(x)
        return self.feature_distances(fx, fx if y is None else self.normalised_features(y))

    def load_published(
        self, vgg16_state: Mapping[str, torch.Tensor], lin_state: Mapping[str, torch.Tensor]
    ) -> None:
        """Load torchvision VGG16 ``features.*`` weights and LPIPS ``lin<k>.model.1.weight``."""
        state = {k: v for k, v in vgg16_state.items() if k.startswith("features.")}
        state.update(lin_state)
        self.load_state_dict(state, strict=True)
