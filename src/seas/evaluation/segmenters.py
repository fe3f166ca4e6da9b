"""Segmentation networks for the downstream anomaly-segmentation protocol.

Both networks are trained from scratch and map a normalised RGB batch
``(B, 3, H, W)`` to two-class logits ``(B, 2, H, W)`` (channel 0: normal,
channel 1: anomaly) at the input resolution.

* :class:`BiSeNetV2` follows Yu et al., "BiSeNet V2: Bilateral Network with
  Guided Aggregation for Real-time Semantic Segmentation" (IJCV 2021): a wide
  and shallow detail branch (1/8 resolution), a narrow and deep semantic
  branch (stem, gather-and-expand layers, context embedding, 1/32 resolution),
  bilateral guided aggregation and a segmentation head, plus optional
  auxiliary heads on the semantic stages used only during training.  A
  ``width`` multiplier scales every channel count (1.0 is the paper's model).
* :class:`SmallUNet` is a light encoder-decoder U-Net.

Every segmenter implements ``forward(x) -> logits`` and
``forward_train(x) -> (logits, [aux_logits, ...])``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from seas.evaluation.config import SEGMENTERS

NUM_CLASSES = 2


def _channels(base: int, width: float) -> int:
    """Scale a paper channel count by ``width``; at least 4, rounded to even."""
    return max(4, 2 * round(base * width / 2))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``(B, C, h, w)`` to ``(B, C, *size)``."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """``k x k`` convolution, batch norm and (optionally) ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1,
                 groups: int = 1, relu: bool = True):
        layers = [
            nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Segmenter(nn.Module):
    """Base class: segmenters without auxiliary heads return no aux logits."""

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, 3, H, W)`` -> main logits ``(B, 2, H, W)`` and aux logits."""
        return self(x), []


# ----------------------------------------------------------------------------
# BiSeNet V2
# ----------------------------------------------------------------------------


class DetailBranch(nn.Sequential):
    """Three stages of plain 3x3 convolutions: ``(B, 3, H, W) -> (B, c2, H/8, W/8)``."""

    def __init__(self, c1: int, c2: int):
        super().__init__(
            ConvBNReLU(3, c1, stride=2), ConvBNReLU(c1, c1),
            ConvBNReLU(c1, c1, stride=2), ConvBNReLU(c1, c1), ConvBNReLU(c1, c1),
            ConvBNReLU(c1, c2, stride=2), ConvBNReLU(c2, c2), ConvBNReLU(c2, c2),
        )


class StemBlock(nn.Module):
    """Fast 4x downsampling: ``(B, 3, H, W) -> (B, c, H/4, W/4)``.

    A strided convolution, then a conv branch and a max-pool branch whose
    outputs are concatenated and fused.
    """

    def __init__(self, c: int):
        super().__init__()
        self.conv = ConvBNReLU(3, c, stride=2)
        self.left = nn.Sequential(ConvBNReLU(c, c // 2, k=1), ConvBNReLU(c // 2, c, stride=2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpand(nn.Module):
    """Gather-and-expand layer: ``(B, c_in, H, W) -> (B, c_out, H/s, W/s)``.

    3x3 conv gathers features, depth-wise conv(s) expand them by ``expansion``
    (one of them strided when ``stride == 2``), a 1x1 conv projects back; the
    shortcut is the identity, or a strided depth-wise + 1x1 conv when the
    shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        mid = c_in * expansion
        self.gather = ConvBNReLU(c_in, c_in)
        expand = [ConvBNReLU(c_in, mid, stride=stride, groups=c_in, relu=False)]
        if stride == 2:
            expand.append(ConvBNReLU(mid, mid, groups=mid, relu=False))
        self.expand = nn.Sequential(*expand)
        self.project = ConvBNReLU(mid, c_out, k=1, relu=False)
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
                ConvBNReLU(c_in, c_in, stride=stride, groups=c_in, relu=False),
                ConvBNReLU(c_in, c_out, k=1, relu=False),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.expand(self.gather(x)))
        return F.relu(y + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global-average-pooled context added back to every position: ``(B, c, h, w)`` -> same."""

    def __init__(self, c: int):
        super().__init__()
        self.pool_bn = nn.BatchNorm2d(c)
        self.gap_conv = ConvBNReLU(c, c, k=1)
        self.out = ConvBNReLU(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.gap_conv(self.pool_bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out(x + context)


class SemanticBranch(nn.Module):
    """Stem, GE stages 3-5 and context embedding.

    ``(B, 3, H, W)`` -> list of features at 1/4, 1/8, 1/16, 1/32 (before the
    context embedding, for the auxiliary heads) and the final ``(B, c5, H/32, W/32)``.
    """

    def __init__(self, c_stem: int, c3: int, c4: int, c5: int, expansion: int):
        super().__init__()
        self.stem = StemBlock(c_stem)
        self.s3 = nn.Sequential(GatherExpand(c_stem, c3, 2, expansion), GatherExpand(c3, c3, 1, expansion))
        self.s4 = nn.Sequential(GatherExpand(c3, c4, 2, expansion), GatherExpand(c4, c4, 1, expansion))
        self.s5 = nn.Sequential(
            GatherExpand(c4, c5, 2, expansion),
            *[GatherExpand(c5, c5, 1, expansion) for _ in range(3)],
        )
        self.context = ContextEmbedding(c5)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        f2 = self.stem(x)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        return [f2, f3, f4, f5], self.context(f5)


class BilateralGuidedAggregation(nn.Module):
    """Fuse detail ``(B, c, H/8, W/8)`` and semantic ``(B, c, H/32, W/32)`` features.

    Each branch is gated by a sigmoid attention computed from the other one at
    its own resolution; the two results are summed at 1/8 resolution and fused
    by a 3x3 conv.  Returns ``(B, c, H/8, W/8)``.
    """

    def __init__(self, c: int):
        super().__init__()
        self.detail_keep = nn.Sequential(ConvBNReLU(c, c, groups=c, relu=False), nn.Conv2d(c, c, 1))
        self.detail_down = nn.Sequential(
            ConvBNReLU(c, c, stride=2, relu=False), nn.AvgPool2d(3, stride=2, padding=1)
        )
        self.semantic_keep = nn.Sequential(ConvBNReLU(c, c, groups=c, relu=False), nn.Conv2d(c, c, 1))
        self.semantic_up = ConvBNReLU(c, c, relu=False)
        self.fuse = ConvBNReLU(c, c)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        high, low = detail.shape[-2:], semantic.shape[-2:]
        at_high = self.detail_keep(detail) * torch.sigmoid(_resize(self.semantic_up(semantic), high))
        at_low = _resize(self.detail_down(detail), low) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(at_high + _resize(at_low, high))


class SegHead(nn.Module):
    """3x3 conv, dropout and 1x1 classifier: ``(B, c, h, w) -> (B, 2, h, w)``."""

    def __init__(self, c_in: int, c_mid: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_mid)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(c_mid, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.conv(x)))


class BiSeNetV2(Segmenter):
    """BiSeNet V2 for 2-class anomaly segmentation, trained from scratch.

    Args:
        width: channel multiplier (1.0: detail 64/128, semantic 16/32/64/128
            channels, head 1024, as in the paper).
        expansion: gather-and-expand expansion ratio (paper: 6).
        aux_heads: build the four booster heads on the semantic stages; they
            are used by :meth:`forward_train` only.

    ``forward``: ``(B, 3, H, W)`` -> logits ``(B, 2, H, W)``.
    """

    def __init__(self, width: float = 1.0, expansion: int = 6, aux_heads: bool = True):
        super().__init__()
        c = {k: _channels(v, width) for k, v in
             dict(d1=64, d2=128, stem=16, s3=32, s4=64, s5=128, head=1024, aux=128).items()}
        self.detail = DetailBranch(c["d1"], c["d2"])
        self.semantic = SemanticBranch(c["stem"], c["s3"], c["s4"], c["s5"], expansion)
        self.aggregate = BilateralGuidedAggregation(c["d2"])
        self.head = SegHead(c["d2"], c["head"])
        self.aux = nn.ModuleList(
            SegHead(ch, c["aux"]) for ch in (c["stem"], c["s3"], c["s4"], c["s5"])
        ) if aux_heads else None

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages, semantic = self.semantic(x)
        logits = _resize(self.head(self.aggregate(self.detail(x), semantic)), x.shape[-2:])
        return logits, stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits ``(B, 2, H, W)`` and one ``(B, 2, H, W)`` per aux head."""
        logits, stages = self._features(x)
        if self.aux is None:
            return logits, []
        return logits, [_resize(head(f), x.shape[-2:]) for head, f in zip(self.aux, stages)]


# ----------------------------------------------------------------------------
# U-Net
# ----------------------------------------------------------------------------


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(ConvBNReLU(c_in, c_out), ConvBNReLU(c_out, c_out))


class SmallUNet(Segmenter):
    """Light U-Net: ``levels`` resolutions, channels ``base * 2**i``.

    ``forward``: ``(B, 3, H, W)`` -> logits ``(B, 2, H, W)``; any ``H, W``
    works (decoder features are resized to the skip connection's size).
    """

    def __init__(self, base: int = 16, levels: int = 4):
        super().__init__()
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList(
            _DoubleConv(c_in, c_out) for c_in, c_out in zip([3] + widths[:-1], widths)
        )
        self.up = nn.ModuleList(
            _DoubleConv(c_deep + c_skip, c_skip)
            for c_deep, c_skip in zip(widths[:0:-1], widths[-2::-1])
        )
        self.cls = nn.Conv2d(base, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, skips[-2::-1]):
            x = block(torch.cat([_resize(x, skip.shape[-2:]), skip], dim=1))
        return self.cls(x)


def build_segmenter(name: str, width: float = 1.0, **kw) -> Segmenter:
    """Build a segmenter by name.

    ``"bisenetv2"``: :class:`BiSeNetV2` (``width`` is its channel multiplier;
    extra kwargs ``expansion``, ``aux_heads``).  ``"unet"``: :class:`SmallUNet`
    with ``base = round(32 * width)`` unless ``base`` is given (extra kwarg
    ``levels``).
    """
    if name == "bisenetv2":
        return BiSeNetV2(width=width, **kw)
    if name == "unet":
        kw.setdefault("base", max(4, round(32 * width)))
        return SmallUNet(**kw)
    raise ValueError(f"unknown segmenter {name!r}; expected 'bisenetv2' or 'unet'")
