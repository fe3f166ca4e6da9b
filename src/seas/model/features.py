"""Capture the generator's intermediate features that the Refined Mask Predictor reads.

The mask head (:mod:`seas.mask_head`) sees two kinds of features, taken with forward hooks on
unmodified diffusers modules:

* U-Net decoder features: outputs of ``unet.up_blocks[i]`` for ``i`` in ``UNET_BLOCKS``
  (SD 1.x at 512 px: 1280 ch at 32x32 and 640 ch at 64x64);
* VAE decoder features: outputs of ``vae.decoder.up_blocks[i]`` for ``i`` in ``VAE_BLOCKS``
  (SD 1.x at 512 px: 512 ch at 128, 512 ch at 256, 256 ch at 512).

Usage::

    with FeatureRecorder(unet, vae) as rec:
        unet(latents, t, text).sample           # fills rec.unet_features
        vae.decode(latents / scale).sample      # fills rec.vae_features
        unet_feats = [conditional_half(f) for f in rec.unet_features]
        probs = head.predict_proba(unet_feats, rec.vae_features)

Each hook keeps the latest output of its block, so inside a denoising loop the features always
belong to the most recent forward pass. VAE tiling must be off (a tiled decode would leave the
last tile's features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The blocks SeaS reads (spec section 5).
UNET_BLOCKS = (1, 2)
VAE_BLOCKS = (0, 1, 2)


def _checked(blocks: Sequence[int], count: int, where: str) -> tuple[int, ...]:
    """``blocks`` as a tuple, after checking every index names one of ``count`` blocks."""
    blocks = tuple(int(i) for i in blocks)
    bad = [i for i in blocks if not 0 <= i < count]
    if bad:
        raise ValueError(f"{where} has {count} blocks; no block index {bad}")
    return blocks


def unet_feature_channels(unet: nn.Module, blocks: Sequence[int] = UNET_BLOCKS) -> tuple[int, ...]:
    """Channels of ``unet.up_blocks[i]``'s output for each ``i`` in ``blocks``, from the config.

    Up block ``i`` ends at the ``i``-th entry of the reversed ``block_out_channels``
    (SD 1.x: ``(1280, 1280, 640, 320)``, so the defaults give ``(1280, 640)``).
    """
    reversed_channels = tuple(reversed(unet.config.block_out_channels))
    blocks = _checked(blocks, len(reversed_channels), "unet.up_blocks")
    return tuple(reversed_channels[i] for i in blocks)


def vae_feature_channels(vae: nn.Module, blocks: Sequence[int] = VAE_BLOCKS) -> tuple[int, ...]:
    """Channels of ``vae.decoder.up_blocks[i]``'s output for each ``i`` in ``blocks``.

    Decoder up block ``i`` ends at the ``i``-th entry of the reversed ``block_out_channels``
    (SD 1.x VAE: ``(512, 512, 256, 128)``, so the defaults give ``(512, 512, 256)``).
    """
    reversed_channels = tuple(reversed(vae.config.block_out_channels))
    blocks = _checked(blocks, len(reversed_channels), "vae.decoder.up_blocks")
    return tuple(reversed_channels[i] for i in blocks)


def conditional_half(batch: torch.Tensor, conditional_first: bool = False) -> torch.Tensor:
    """The conditional half of a classifier-free-guidance batch: ``(2N, ...) -> (N, ...)``.

    Diffusers pipelines stack ``[unconditional, conditional]``, hence the default second half.
    """
    if batch.shape[0] % 2:
        raise ValueError(f"a guidance batch has an even size, got {batch.shape[0]}")
    unconditional, conditional = batch.chunk(2)
    return unconditional if conditional_first else conditional


class FeatureRecorder:
    """Context manager that records the outputs of chosen U-Net and VAE decoder up blocks.

    Args:
        unet: a ``UNet2DConditionModel``, or ``None`` to record no U-Net features.
        vae: an ``AutoencoderKL``, or ``None`` to record no VAE features.
        unet_blocks: indices into ``unet.up_blocks`` (default ``(1, 2)``).
        vae_blocks: indices into ``vae.decoder.up_blocks`` (default ``(0, 1, 2)``).
        keep_graph: keep the autograd graph of the recorded outputs; by default they are
            detached, since the generator is frozen while the mask head trains and runs.

    Hooks exist only inside the ``with`` block; recorded features stay readable after it
    until :meth:`clear`.
    """

    def __init__(
        self,
        unet: nn.Module | None = None,
        vae: nn.Module | None = None,
        unet_blocks: Sequence[int] = UNET_BLOCKS,
        vae_blocks: Sequence[int] = VAE_BLOCKS,
        keep_graph: bool = False,
    ):
        self.keep_graph = keep_graph
        self._targets: dict[str, nn.Module] = {}
        if unet is not None:
            for i in _checked(unet_blocks, len(unet.up_blocks), "unet.up_blocks"):
                self._targets[f"unet.up_blocks[{i}]"] = unet.up_blocks[i]
        if vae is not None:
            decoder_blocks = vae.decoder.up_blocks
            for i in _checked(vae_blocks, len(decoder_blocks), "vae.decoder.up_blocks"):
                self._targets[f"vae.decoder.up_blocks[{i}]"] = decoder_blocks[i]
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> FeatureRecorder:
        if self._handles:
            raise RuntimeError("FeatureRecorder is already recording")
        for name, module in self._targets.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def store(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._outputs[name] = output if self.keep_graph else output.detach()

        return store

    def clear(self) -> None:
        """Forget every recorded output (hooks stay as they are)."""
        self._outputs.clear()

    @property
    def recorded(self) -> dict[str, torch.Tensor]:
        """Recorded outputs so far, by module name such as ``"unet.up_blocks[1]"``."""
        return dict(self._outputs)

    def _features(self, prefix: str) -> list[torch.Tensor]:
        names = [name for name in self._targets if name.startswith(prefix)]
        missing = [name for name in names if name not in self._outputs]
        if missing:
            raise RuntimeError(f"nothing recorded from {missing}; run a forward pass inside `with`")
        return [self._outputs[name] for name in names]

    @property
    def unet_features(self) -> list[torch.Tensor]:
        """Latest U-Net block outputs, in the order given: ``[(B, C_i, H_i, W_i)]``."""
        return self._features("unet.")

    @property
    def vae_features(self) -> list[torch.Tensor]:
        """Latest VAE block outputs, in the order given: ``[(B, C_i, H_i, W_i)]``."""
        return self._features("vae.")
