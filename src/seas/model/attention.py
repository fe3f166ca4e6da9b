"""Cross-attention maps of chosen tokens in chosen layers, without forking the U-Net.

:class:`CaptureProcessor` subclasses diffusers' ``AttnProcessor2_0`` and calls it unchanged,
so every layer's output is exactly what the fused scaled-dot-product path returns. Forward
hooks on the layer's own ``to_q`` / ``to_k`` hand it the projected queries and keys (tensors
that autograd keeps anyway), from which it computes, for the requested samples and token
columns only, the attention maps the DA loss reads:

    S = Q K[:, cols]^T / sqrt(d_head)              (n, heads, HW, c)
    spatial softmax (reference): softmax over HW   -> each token's map sums to 1 over pixels
    token softmax (option):      softmax over all tokens, then the columns are taken
    mean over heads                                -> (n, HW, c)

Only the cross-attention layers of the DA blocks get this processor; all others stay on the
fused path. Maps stay on the model's device with gradients.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from seas.errors import ConfigError

SOFTMAX_MODES = ("spatial", "token")


class AttentionStore:
    """What to record (samples, token columns) and what was recorded, per block."""

    def __init__(self, softmax: str = "spatial"):
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"attention softmax {softmax!r}: choose one of {SOFTMAX_MODES}")
        self.softmax = softmax
        self.rows: torch.Tensor | None = None  # (n,) batch indices to record
        self.columns: torch.Tensor | None = None  # (n, c) token positions per recorded sample
        self.maps: dict[str, list[torch.Tensor]] = defaultdict(list)  # block -> [(n, HW, c)]

    def target(self, rows: torch.Tensor, columns: torch.Tensor) -> None:
        """Record, for batch rows ``rows``, the maps of token positions ``columns`` (n, c)."""
        self.rows, self.columns = rows, columns
        self.maps.clear()

    def clear(self) -> None:
        self.rows, self.columns = None, None
        self.maps.clear()

    def block_mean(self, block: str) -> torch.Tensor:
        """Mean over the block's recorded layers: (n, HW, c)."""
        if not self.maps.get(block):
            raise RuntimeError(f"no attention maps recorded for {block}; was a forward pass run with a target?")
        return torch.stack(self.maps[block]).mean(dim=0)


class CaptureProcessor(AttnProcessor2_0):
    """The fused SDPA processor, plus a record of selected cross-attention maps."""

    def __init__(self, store: AttentionStore, block: str):
        super().__init__()
        self.store, self.block = store, block
        self.query: torch.Tensor | None = None
        self.key: torch.Tensor | None = None

    def hook(self, attn) -> list:
        """Hooks on the layer's q/k projections; returns their handles."""

        def keep_query(module, args, output):
            self.query = output

        def keep_key(module, args, output):
            self.key = output

        return [attn.to_q.register_forward_hook(keep_query), attn.to_k.register_forward_hook(keep_key)]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        if self.store.rows is not None and encoder_hidden_states is not None:
            self.store.maps[self.block].append(self._maps(attn))
        self.query = self.key = None
        return out

    def _maps(self, attn) -> torch.Tensor:
        rows, cols = self.store.rows, self.store.columns
        heads = attn.heads
        q, k = self.query[rows], self.key[rows]  # (n, HW, inner), (n, L, inner)
        n, hw, inner = q.shape
        d = inner // heads
        q = q.view(n, hw, heads, d).transpose(1, 2)  # (n, heads, HW, d)
        k = k.view(n, -1, heads, d).transpose(1, 2)  # (n, heads, L, d)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        scale = 1.0 / math.sqrt(d)
        if self.store.softmax == "spatial":
            index = cols[:, None, :, None].expand(n, heads, cols.shape[1], d)
            k_cols = torch.gather(k, 2, index)  # (n, heads, c, d)
            scores = (q @ k_cols.transpose(-1, -2)).float() * scale  # (n, heads, HW, c)
            probs = scores.softmax(dim=2)
        else:
            scores = (q @ k.transpose(-1, -2)).float() * scale  # (n, heads, HW, L)
            index = cols[:, None, None, :].expand(n, heads, hw, cols.shape[1])
            probs = torch.gather(scores.softmax(dim=-1), 3, index)  # (n, heads, HW, c)
        return probs.mean(dim=1)  # (n, HW, c)


def cross_attention_layers(unet, block_kind: str, index: int) -> list[str]:
    """Processor names of the cross-attention layers (attn2) of ``{down,up}_blocks[index]``."""
    prefix = f"{block_kind}_blocks.{index}."
    return [name for name in unet.attn_processors if name.startswith(prefix) and ".attn2." in name]


class AttentionCapture:
    """Install capture processors on some blocks' cross attention; restore SDPA on ``remove``.

    ``blocks``: names like ``"down_blocks.1"``; each layer records under its block's name.
    """

    def __init__(self, unet, blocks: list[str], softmax: str = "spatial"):
        self.unet = unet
        self.store = AttentionStore(softmax)
        self.handles: list = []
        self.names: list[str] = []
        modules = dict(unet.named_modules())
        processors = {}
        for block in blocks:
            kind, index = block.split("_blocks.")
            names = cross_attention_layers(unet, kind, int(index))
            if not names:
                raise ValueError(f"{block} has no cross-attention layers in this U-Net")
            for name in names:
                proc = CaptureProcessor(self.store, block)
                self.handles += proc.hook(modules[name.removesuffix(".processor")])
                processors[name] = proc
        self.names = list(processors)
        unet.set_attn_processor({**unet.attn_processors, **processors})

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        restore = {name: AttnProcessor2_0() for name in self.names}
        self.unet.set_attn_processor({**self.unet.attn_processors, **restore})


class ReferenceMapsProcessor(AttnProcessor2_0):
    """The authors' release's way of getting the maps, kept for tests and benchmarks.

    Every cross-attention layer it is installed on materialises the full probability matrix
    (batch, heads, HW, L) with the spatial softmax and keeps the head-averaged maps of all
    tokens on the CPU; the output itself is unchanged (fused path).
    """

    def __init__(self, sink: list):
        super().__init__()
        self.sink = sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        if encoder_hidden_states is not None:
            b, hw, _ = hidden_states.shape
            q = attn.to_q(hidden_states).view(b, hw, attn.heads, -1).transpose(1, 2)
            k = attn.to_k(encoder_hidden_states).view(b, encoder_hidden_states.shape[1], attn.heads, -1).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (b, heads, HW, L)
            self.sink.append(scores.float().softmax(dim=2).mean(dim=1).cpu())  # (b, HW, L)
        return out


def install_reference_maps(unet) -> list:
    """Put :class:`ReferenceMapsProcessor` on every cross-attention layer; returns the sink."""
    sink: list = []
    processors = {
        name: (ReferenceMapsProcessor(sink) if ".attn2." in name else proc)
        for name, proc in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
    return sink


def da_levels(unet, down_blocks: list[int], with_up_blocks: bool = False) -> dict[int, list[str]]:
    """Latent level -> names of the U-Net blocks whose maps are averaged for L_DA at that level.

    Down block i works at latent size / 2^i; the up block at the same size is n - 1 - i
    (``with_up_blocks``: the mean of both; the reference reads down blocks only).
    """
    n = len(unet.config.down_block_types)
    levels = {}
    for i in down_blocks:
        if not 0 <= i < n or "CrossAttn" not in unet.config.down_block_types[i]:
            raise ConfigError(f"train.da_blocks: down block {i} has no cross attention in this U-Net "
                              f"(its down blocks: {', '.join(unet.config.down_block_types)})")
        levels[i] = [f"down_blocks.{i}"] + ([f"up_blocks.{n - 1 - i}"] if with_up_blocks else [])
    return levels
