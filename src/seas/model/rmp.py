"""The reference Refined Mask Prediction (RMP) head, layer by layer (spec section 5).

Built from upstream parts only: diffusers' ``Transformer2DModel`` for the coarse transformer and
``torch.nn`` for everything else. Module names equal the reference's checkpoint keys, so the
authors' ``rmp`` state dict maps onto ours by renaming BatchNorm parameters only
(``gain, bias, stored_mean, stored_var`` <-> ``weight, bias, running_mean, running_var``) and
dropping BatchNorm's ``num_batches_tracked`` (absent from the reference layout).

Data flow with SD 1.x sizes (N samples; every spatial size follows the inputs):

* coarse path: ``low = low_feature_conv(U-Net 1280 ch @ 32)`` -> 128 ch, bilinearly resized x2
  (``align_corners=False``); ``mid = mid_feature_conv(U-Net 640 ch @ 64)`` -> 64 ch;
  ``h = mid_attn_block(cat(low, mid))``: 192 ch @ 64;
* refinement: ``r = MRM3(MRM2(MRM1(h, vae0), vae1), vae2)``: 192 ch @ 512;
* ``out_layer`` (BatchNorm -> ReLU -> conv3x3 to 2 -> softmax), shared by ``r`` and ``h``:
  called on ``r`` first, then (training only) on ``h``, the authors' order (its BatchNorm's
  running statistics depend on it).

BatchNorm: a head in training mode normalises with the statistics of the batch it is given, so
one sample's mask depends on the others. :func:`set_batchnorm_mode` picks ``"eval"`` (running
statistics; our default) or ``"batch"`` (the reference's behaviour at generation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from seas.errors import RunError

BATCHNORM_MODES = ("eval", "batch")
# BatchNorm parameter/buffer names: ours (torch) -> the reference checkpoint's.
_BN_TO_REFERENCE = {
    "weight": "gain",
    "bias": "bias",
    "running_mean": "stored_mean",
    "running_var": "stored_var",
}
_MRM_CONVS = tuple(f"conv{i}" for i in range(1, 10))
_MRM_KERNELS = {"conv3": 3, "conv6": 3, "conv8": 3}  # the others are 1x1


def _conv_bn(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """``Sequential(conv kxk no bias, padding k//2; BatchNorm2d(eps 1e-5, momentum 0.1))``;
    the ReLU that follows is applied functionally (it has no parameters)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1),
    )


class MRM(nn.Module):
    """Refinement module ``MRM(c, f)`` of the reference (spec section 5).

    ``c`` is the running mask feature ``(N, C, h, w)``; ``f`` a VAE decoder feature
    ``(N, C_f, H, W)``, ``H, W = 2h, 2w`` in the reference. With ``cbr(x) = relu(conv_bn(x))``::

        c  = upsample(c) to (H, W), bilinear, align_corners=True
        s1 = cbr5(c);  s2 = c
        u  = cbr4(cbr3(cbr2(c)))                # 1x1, 3x3, 1x1
        s3 = cbr9(cbr8(cbr7(u)))                # 1x1, 3x3, 1x1
        u  = u + s1 + s3
        g  = cbr1(f)                            # C_f -> C, the VAE gate
        return g * u + s2                       # (N, C, H, W)

    ``conv6`` (3x3) exists only so that the reference checkpoint loads; it is never called.
    """

    def __init__(self, channels: int, vae_channels: int):
        super().__init__()
        for name in _MRM_CONVS:
            in_channels = vae_channels if name == "conv1" else channels
            setattr(self, name, _conv_bn(in_channels, channels, _MRM_KERNELS.get(name, 1)))

    def forward(self, c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        c = F.interpolate(c, size=f.shape[-2:], mode="bilinear", align_corners=True)
        s1 = F.relu(self.conv5(c))
        u = F.relu(self.conv4(F.relu(self.conv3(F.relu(self.conv2(c))))))
        s3 = F.relu(self.conv9(F.relu(self.conv8(F.relu(self.conv7(u))))))
        u = u + s1 + s3
        g = F.relu(self.conv1(f))
        return g * u + c


class CoarseTransformer(nn.Module):
    """Holder named like the reference (``mid_attn_block.attentions.0.*``) for one upstream
    ``Transformer2DModel``: GroupNorm -> proj_in (1x1) -> blocks of [LayerNorm, self-attention,
    LayerNorm, GEGLU feed-forward] -> proj_out (1x1) -> + input. ``(N, C, h, w) -> same``."""

    def __init__(self, channels: int, heads: int, head_dim: int, layers: int, groups: int):
        super().__init__()
        self.attentions = nn.ModuleList([
            Transformer2DModel(
                num_attention_heads=heads,
                attention_head_dim=head_dim,
                in_channels=channels,
                num_layers=layers,
                cross_attention_dim=None,
                norm_num_groups=groups,
                use_linear_projection=False,
            )
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attentions[0](x, return_dict=False)[0]


class ReferenceMaskHead(ModelMixin, ConfigMixin):
    """The authors' RMP head (spec section 5); SD 1.x widths by default.

    ``unet_channels`` = channels of the U-Net decoder features (``up_blocks[1]``, ``[2]``);
    ``vae_channels`` = channels of the three VAE decoder features, coarsest first.
    """

    @register_to_config
    def __init__(
        self,
        unet_channels: Sequence[int] = (1280, 640),
        vae_channels: Sequence[int] = (512, 512, 256),
        low_channels: int = 128,
        mid_channels: int = 64,
        num_attention_heads: int = 8,
        attention_head_dim: int = 24,
        num_layers: int = 4,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        width = low_channels + mid_channels
        if len(unet_channels) != 2 or len(vae_channels) != 3:
            raise ValueError(
                f"ReferenceMaskHead needs 2 U-Net and 3 VAE feature widths, got "
                f"unet_channels={tuple(unet_channels)}, vae_channels={tuple(vae_channels)}"
            )
        if num_attention_heads * attention_head_dim != width:
            raise ValueError(
                f"num_attention_heads * attention_head_dim = {num_attention_heads} * "
                f"{attention_head_dim} must equal low_channels + mid_channels = {width}"
            )
        if norm_num_groups <= 0 or width % norm_num_groups:
            raise ValueError(
                f"norm_num_groups={norm_num_groups} must divide "
                f"low_channels + mid_channels = {width}"
            )
        self.low_feature_conv = nn.Sequential(
            nn.Conv2d(unet_channels[0], low_channels, 1, bias=False)
        )
        self.mid_feature_conv = nn.Sequential(
            nn.Conv2d(unet_channels[1], mid_channels, 1, bias=False)
        )
        self.mid_attn_block = CoarseTransformer(
            width, num_attention_heads, attention_head_dim, num_layers, norm_num_groups
        )
        self.out_layer = nn.Sequential(
            nn.BatchNorm2d(width, eps=1e-5, momentum=0.1),
            nn.ReLU(),
            nn.Conv2d(width, 2, 3, padding=1, bias=True),
        )
        self.MRM1 = MRM(width, vae_channels[0])
        self.MRM2 = MRM(width, vae_channels[1])
        self.MRM3 = MRM(width, vae_channels[2])

    def coarse_features(self, unet_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(N, C0, h/2, w/2), (N, C1, h, w)] -> h (N, low + mid, h, w)``."""
        low_in, mid_in = (f.to(self.dtype) for f in unet_feats)
        low = self.low_feature_conv(low_in)
        low = F.interpolate(low, size=mid_in.shape[-2:], mode="bilinear", align_corners=False)
        return self.mid_attn_block(torch.cat([low, self.mid_feature_conv(mid_in)], dim=1))

    def refine(self, h: torch.Tensor, vae_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The MRM chain: ``h (N, C, h, w)`` -> ``(N, C, H, W)`` at the last VAE feature's size."""
        vae0, vae1, vae2 = (f.to(self.dtype) for f in vae_feats)
        return self.MRM3(self.MRM2(self.MRM1(h, vae0), vae1), vae2)

    def out(self, features: torch.Tensor) -> torch.Tensor:
        """Shared output layer: ``(N, C, H, W) -> (N, 2, H, W)`` probabilities (1 = anomaly)."""
        return self.out_layer(features).softmax(dim=1)

    def forward(
        self,
        unet_feats: Sequence[torch.Tensor],
        vae_feats: Sequence[torch.Tensor],
        n_anomaly: int | None = None,
        with_coarse: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(refined_probs (N, 2, H, W), coarse_probs (N, 2, h, w) or None)``.

        Inference (``n_anomaly=None``): every sample goes through the MRM chain; ``vae_feats``
        hold all N samples. Training (``n_anomaly=B``): ``unet_feats`` hold the B anomaly
        samples first, then the normal ones; ``vae_feats`` hold the B anomaly samples only.
        The normal samples skip the chain: their ``h`` is bilinearly resized
        (``align_corners=False``) to the refined size, and both halves are concatenated,
        anomaly first, *before* ``out_layer`` so that its BatchNorm sees them together, as in
        the reference.

        The coarse output ``out(h)`` on all N samples is computed when ``with_coarse`` (default:
        in the training forward only) and always *after* the refined one: the shared
        ``out_layer``'s BatchNorm updates its running statistics on every call in training
        mode, so the authors' call order (refined, then coarse; at inference the coarse output
        is never computed) decides the statistics a trained head keeps.
        """
        with_coarse = n_anomaly is not None if with_coarse is None else with_coarse
        h = self.coarse_features(unet_feats)
        if n_anomaly is None:
            refined = self.out(self.refine(h, vae_feats))
        else:
            if not 0 < n_anomaly <= h.shape[0] or vae_feats[0].shape[0] != n_anomaly:
                raise ValueError(
                    f"training forward: n_anomaly={n_anomaly} must be in 1..{h.shape[0]} and equal "
                    f"the VAE features' batch ({vae_feats[0].shape[0]})"
                )
            chain = self.refine(h[:n_anomaly], vae_feats)
            normal = F.interpolate(
                h[n_anomaly:], size=chain.shape[-2:], mode="bilinear", align_corners=False
            )
            refined = self.out(torch.cat([chain, normal], dim=0))
        return refined, (self.out(h) if with_coarse else None)

    @torch.no_grad()
    def predict_proba(
        self, unet_feats: Sequence[torch.Tensor], vae_feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Anomaly probability ``(N, H, W)`` (channel 1 of the refined output)."""
        return self(unet_feats, vae_feats)[0][:, 1]


def head_config_for(unet_channels: Sequence[int], vae_channels: Sequence[int]) -> dict:
    """Head config for a backbone's feature widths: the reference's structure at proportional
    widths.

    Rule: total width ``W = max(48, 16 * round((C0 + C1) / 160))`` (a tenth of the U-Net
    widths, rounded to a multiple of 16 so that 8 heads get an even head size);
    ``low = round(W * C0 / (C0 + C1))`` clamped to ``[8, W - 8]``, ``mid = W - low``;
    8 heads of ``W / 8``; GroupNorm groups ``gcd(W, 32)``; 4 layers.
    SD 1.x ``(1280, 640)`` gives exactly the reference: ``W = 192``, low 128, mid 64, heads
    8 x 24, 32 groups. The tiny backbone ``(128, 64)`` and ``(256, 128)`` give ``W = 48``
    (low 32, mid 16, heads 8 x 6, 16 groups). ``vae_channels`` are passed through.
    """
    c0, c1 = (int(c) for c in unet_channels)
    width = max(48, 16 * round((c0 + c1) / 160))
    low = min(max(round(width * c0 / (c0 + c1)), 8), width - 8)
    return {
        "unet_channels": (c0, c1),
        "vae_channels": tuple(int(c) for c in vae_channels),
        "low_channels": low,
        "mid_channels": width - low,
        "num_attention_heads": 8,
        "attention_head_dim": width // 8,
        "num_layers": 4,
        "norm_num_groups": math.gcd(width, 32),
    }


def set_batchnorm_mode(head: nn.Module, mode: str) -> nn.Module:
    """``"eval"``: BatchNorm uses its running statistics, masks are per sample (our default).
    ``"batch"``: training-mode BatchNorm normalises with the current batch's statistics (the
    reference at generation; it also updates the running statistics as a side effect). The
    head has no dropout, so this is ``head.train()``. Returns ``head``."""
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"BatchNorm mode {mode!r}: choose one of {', '.join(BATCHNORM_MODES)}")
    return head.train(mode == "batch")


def reference_targets(
    anomaly_masks: torch.Tensor,
    n_normal: int,
    coarse_size: int | tuple[int, int],
    normalize_max: bool,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stage-2 targets of the reference: ``(m_full (B + n_normal, H, W), m_coarse (.., h, w))``.

    ``m_full`` stacks the anomaly masks ``(B, H, W)`` (floats in [0, 1]) over ``n_normal``
    zero masks; ``m_coarse`` is its bilinear resize (``align_corners=False``) to
    ``coarse_size``. With ``normalize_max`` (VisA, MVTec 3D AD in the reference) each is
    divided by its own maximum over the micro-batch; returns None when ``m_full``'s maximum is
    0 (the step is skipped). When only ``m_coarse``'s maximum is 0 (a defect so small that the
    point-sampling resize misses it) ``m_coarse`` stays all zero: the reference would divide
    0 by 0 and train on NaN.
    """
    masks = anomaly_masks.float()
    zeros = masks.new_zeros((n_normal, *masks.shape[1:]))
    m_full = torch.cat([masks, zeros], dim=0)
    size = (coarse_size, coarse_size) if isinstance(coarse_size, int) else tuple(coarse_size)
    m_coarse = F.interpolate(m_full[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if normalize_max:
        full_max = m_full.max()
        if full_max <= 0:
            return None
        m_full = m_full / full_max
        coarse_max = m_coarse.max()
        if coarse_max > 0:
            m_coarse = m_coarse / coarse_max
    return m_full, m_coarse


def reference_focal_loss(
    probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss of the reference (alpha 1): ``probs (N, 2, H, W)``, ``target (N, H, W)``.

    The class of a pixel is its target truncated to an integer (``target.long()``: only exactly
    1.0 is anomalous, a soft border 0.6 counts as normal); the one-hot target is clamped to
    [1e-5, 1 - 1e-5]; ``p_t = sum(onehot * probs) + 1e-5``; the loss is the mean over all
    pixels of ``-(1 - p_t) ** gamma * log(p_t)``. Computed in at least float32.
    """
    if target.numel() and (target.min() < 0 or target.max() >= 2):
        raise ValueError("reference_focal_loss: targets must lie in [0, 1]")
    dtype = torch.promote_types(probs.dtype, torch.float32)
    onehot = F.one_hot(target.long(), num_classes=2).permute(0, 3, 1, 2).to(dtype)
    onehot = onehot.clamp(1e-5, 1.0 - 1e-5)
    p_t = (onehot * probs.to(dtype)).sum(dim=1) + 1e-5
    return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


def reference_key_map(head: nn.Module) -> dict[str, str]:
    """``{our state_dict key: reference key}`` for every key except BatchNorm's
    ``num_batches_tracked`` (not in the reference layout). Our module names equal the
    reference's; only BatchNorm parameters are renamed (``weight -> gain``,
    ``running_mean -> stored_mean``, ``running_var -> stored_var``; ``bias`` stays)."""
    batchnorms = {name for name, m in head.named_modules() if isinstance(m, nn.BatchNorm2d)}
    mapping = {}
    for key in head.state_dict():
        prefix, _, leaf = key.rpartition(".")
        if prefix in batchnorms:
            if leaf == "num_batches_tracked":
                continue
            leaf = _BN_TO_REFERENCE[leaf]
        mapping[key] = f"{prefix}.{leaf}"
    return mapping


def to_reference_state_dict(head: nn.Module) -> dict[str, torch.Tensor]:
    """The head's weights under the reference's key names (unused conv6 included), cloned."""
    state = head.state_dict()
    return {ref: state[ours].detach().clone() for ours, ref in reference_key_map(head).items()}


def load_reference_state_dict(
    head: nn.Module, state: Mapping[str, torch.Tensor], source: str = "reference RMP state dict"
) -> nn.Module:
    """Load a reference-layout state dict into ``head`` (values cast to the head's dtype).

    Key sets and shapes are compared first; the first offending key (missing, then unexpected,
    then mis-shaped) raises :class:`RunError` with a one-line message naming ``source`` and the
    key. ``num_batches_tracked`` keeps the head's own value. Returns ``head``.
    """
    mapping = reference_key_map(head)
    ours = head.state_dict()
    not_ours = "it is not a checkpoint of this RMP head"
    for ref_key in mapping.values():
        if ref_key not in state:
            raise RunError(f"{source}: missing key {ref_key!r}; {not_ours}")
    expected = set(mapping.values())
    for key in state:
        if key not in expected:
            raise RunError(f"{source}: unexpected key {key!r}; {not_ours}")
    for our_key, ref_key in mapping.items():
        value = state[ref_key]
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if found != tuple(ours[our_key].shape):
            raise RunError(
                f"{source}: key {ref_key!r} has shape {found}, expected "
                f"{tuple(ours[our_key].shape)}; the head was built for other feature widths"
            )
    new_state = {our_key: state[ref_key] for our_key, ref_key in mapping.items()}
    new_state.update({k: v for k, v in ours.items() if k not in mapping})  # num_batches_tracked
    head.load_state_dict(new_state, strict=True)
    return head
