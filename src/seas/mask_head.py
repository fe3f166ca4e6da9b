"""Refined Mask Predictor (RMP): anomaly masks from the frozen generator's features.

Architecture (spec section 5; sizes for SD 1.x at 512 px, every size follows the inputs):

* coarse path: a 1x1 conv per U-Net feature (1280 -> 128 at 32x32, 640 -> 64 at 64x64), each
  bilinearly resized to the last U-Net feature's size and concatenated (192 ch at 64x64);
  2-D sinusoidal positions are added and a 4-layer, 8-head pre-norm transformer (GELU MLP of
  4x width, no dropout, final LayerNorm) runs over the 64x64 spatial tokens, giving the coarse
  feature ``h``;
* refinement: one :class:`GatedFusion` per VAE decoder feature (512 @ 128, 512 @ 256,
  256 @ 512), each resizing the running feature to the VAE feature's size (x2 here) and fusing;
* a :class:`MaskHead` (BN, ReLU, 3x3 conv to 2 classes) shared by the coarse and refined
  features, so ``h`` and every fusion output keep the same width (192).

Positional information: fixed 2-D sine/cosine encodings (half the channels encode the row,
half the column, frequencies ``10000 ** (-k / (C/4))``), computed for whatever grid the
features have, so the head has no size-bound parameters and runs at any resolution.

BatchNorm makes a training-mode prediction depend on the other images of its batch; call
``.eval()`` before predicting masks (the reference release did not, spec section 8.6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

NUM_CLASSES = 2  # 0: normal, 1: anomaly


def sinusoidal_positions_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine position codes, shape ``(height * width, channels)``, row-major.

    The first half of the channels encodes the row, the second half the column; each half is
    ``[sin(pos * f_k), cos(pos * f_k)]`` with ``f_k = 10000 ** (-k / (channels / 4))``.
    """
    quarter = channels // 4
    frequencies = 10000.0 ** (-torch.arange(quarter, dtype=torch.float32) / quarter)

    def encode(length: int) -> torch.Tensor:  # (length, channels / 2)
        angles = torch.arange(length, dtype=torch.float32)[:, None] * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows = encode(height)[:, None, :].expand(height, width, 2 * quarter)
    cols = encode(width)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([rows, cols], dim=2).reshape(height * width, channels)


def conv_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A bias-free 3x3 conv followed by BatchNorm."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels)]


class GatedFusion(nn.Module):
    """Upsample the running mask feature and fuse it with one VAE decoder feature.

    ``x = resize(feature)``; ``body = conv-BN-ReLU-conv-BN(x)``; ``gate = conv-BN-ReLU(vae)``;
    output ``x + body + gate * body``: the VAE feature gates the refinement, and the two
    residuals keep the upsampled feature and the ungated refinement flowing.

    Shapes: ``feature (N, C, h, w)``, ``vae_feature (N, C_vae, H, W)`` -> ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, vae_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(channels, channels), nn.ReLU(inplace=True), *conv_bn(channels, channels)
        )
        self.gate = nn.Sequential(*conv_bn(vae_channels, channels), nn.ReLU(inplace=True))

    def forward(self, feature: torch.Tensor, vae_feature: torch.Tensor) -> torch.Tensor:
        size = vae_feature.shape[-2:]
        x = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        body = self.body(x)
        return x + body + self.gate(vae_feature) * body


class MaskHead(nn.Module):
    """BN, ReLU, 3x3 conv: ``(N, C, H, W)`` feature -> ``(N, 2, H, W)`` class logits."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, NUM_CLASSES, 3, padding=1)
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.layers(feature)


class RefinedMaskPredictor(ModelMixin, ConfigMixin):
    """Predict 2-class mask logits from U-Net and VAE decoder features (see module docstring).

    Args:
        unet_channels: channels of the U-Net features, coarsest first (SD 1.x: 1280, 640).
        vae_channels: channels of the VAE decoder features, coarsest first
            (SD 1.x: 512, 512, 256).
        coarse_channels: output channels of the 1x1 conv on each U-Net feature; their sum is the
            width of every mask feature and must be divisible by 4 and by ``num_heads``.
        num_layers: transformer layers over the coarse tokens.
        num_heads: attention heads per layer.
        mlp_ratio: transformer feed-forward width as a multiple of the feature width.
    """

    @register_to_config
    def __init__(
        self,
        unet_channels: Sequence[int] = (1280, 640),
        vae_channels: Sequence[int] = (512, 512, 256),
        coarse_channels: Sequence[int] = (128, 64),
        num_layers: int = 4,
        num_heads: int = 8,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        if len(coarse_channels) != len(unet_channels):
            raise ValueError(f"need one coarse width per U-Net feature, got {coarse_channels}")
        width = sum(coarse_channels)
        if width % 4 or width % num_heads:
            raise ValueError(
                f"sum(coarse_channels)={width} must be divisible by 4 and by num_heads={num_heads}"
            )
        self.projections = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 1) for c_in, c_out in zip(unet_channels, coarse_channels)
        )
        layer = nn.TransformerEncoderLayer(
            width, num_heads, dim_feedforward=mlp_ratio * width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.fusions = nn.ModuleList(GatedFusion(width, c_vae) for c_vae in vae_channels)
        self.head = MaskHead(width)

    def coarse_feature(self, unet_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """U-Net features ``[(N, C_i, h_i, w_i)]`` -> coarse feature ``(N, C, h, w)``.

        ``(h, w)`` is the last U-Net feature's size and ``C = sum(coarse_channels)``.
        """
        size = unet_feats[-1].shape[-2:]
        projected = [
            F.interpolate(conv(f.to(self.dtype)), size=size, mode="bilinear", align_corners=False)
            for conv, f in zip(self.projections, unet_feats, strict=True)
        ]
        x = torch.cat(projected, dim=1)
        n, c, h, w = x.shape
        positions = sinusoidal_positions_2d(c, h, w).to(x)
        tokens = self.transformer(x.flatten(2).transpose(1, 2) + positions)  # (N, h*w, C)
        return tokens.transpose(1, 2).reshape(n, c, h, w)

    def forward(
        self, unet_feats: Sequence[torch.Tensor], vae_feats: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits.

        Args:
            unet_feats: U-Net decoder features ``[(N, C_i, h_i, w_i)]``, coarsest first.
            vae_feats: VAE decoder features ``[(N, C_j, H_j, W_j)]``, coarsest first.

        Returns:
            ``(refined, coarse)``: ``(N, 2, H, W)`` logits at the last VAE feature's size and
            ``(N, 2, h, w)`` logits at the last U-Net feature's size.
        """
        coarse = self.coarse_feature(unet_feats)
        refined = coarse
        for fusion, vae_feat in zip(self.fusions, vae_feats, strict=True):
            refined = fusion(refined, vae_feat.to(self.dtype))
        return self.head(refined), self.head(coarse)

    def predict_proba(
        self, unet_feats: Sequence[torch.Tensor], vae_feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Anomaly probability ``(N, H, W)`` of the refined output (last VAE feature's size)."""
        refined, _ = self(unet_feats, vae_feats)
        return refined.softmax(dim=1)[:, 1]


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Mean focal loss of 2-class logits ``(N, 2, H, W)`` against an anomaly target ``(N, H, W)``.

    Per pixel ``-sum_c w_c y_c (1 - p_c) ** gamma * log p_c`` with ``y = (1 - target, target)``:
    soft targets in [0, 1] work, and a hard target gives ``-w_t (1 - p_t) ** gamma * log p_t``.
    ``alpha`` weights the anomaly class (``w = (1 - alpha, alpha)``); ``None`` weights both by 1.
    With ``gamma = 0`` and ``alpha = None`` it is the cross-entropy.
    """
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    target = target.to(logits.dtype)
    log_p = logits.log_softmax(dim=1)
    y = torch.stack([1 - target, target], dim=1)
    per_class = -y * (1 - log_p.exp()) ** gamma * log_p
    if alpha is not None:
        weights = torch.tensor([1 - alpha, alpha], dtype=logits.dtype, device=logits.device)
        per_class = per_class * weights[:, None, None]
    return per_class.sum(dim=1).mean()


def coarse_target(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Down-size an anomaly mask ``(N, H, W)`` to ``(N, *size)`` by max-pooling.

    A coarse cell is anomalous when any pixel inside it is, so a defect smaller than a cell
    still reaches the coarse loss (bilinear resizing then thresholding would erase it).
    """
    return F.adaptive_max_pool2d(mask.to(torch.float32)[:, None], tuple(size))[:, 0]


def mask_loss(
    refined: torch.Tensor, coarse: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0
) -> torch.Tensor:
    """RMP training loss: focal loss of ``refined (N, 2, H, W)`` against ``mask (N, H, W)`` plus
    focal loss of ``coarse (N, 2, h, w)`` against :func:`coarse_target` of the mask."""
    coarse_mask = coarse_target(mask, coarse.shape[-2:])
    return focal_loss(refined, mask, gamma) + focal_loss(coarse, coarse_mask, gamma)
