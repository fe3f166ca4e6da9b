"""Generation of anomaly images with masks, and of normal images (spec section 6).

Image ``i`` of a call with ``seed`` s, prompt P and guidance g:

1. start latent: normal training image number ``i % n_normals`` of the run's split (every
   normal image in turn), VAE-encoded (latent mean x ``vae.config.scaling_factor``) -> ``z``;
   ``eps ~ N(0, I)`` from a CPU generator seeded ``s + i``;
   ``x_init = signal * z + noise * eps`` (defaults 0.0979 and 0.99984, the reference's recipe);
2. DPM-Solver++ (2M, linspace timesteps, final step to sigma_min) from the first timestep,
   with classifier-free guidance against an empty prompt:
   ``eps_hat = eps_u + g (eps_c - eps_u)``; for ``g <= 1`` only the conditional pass runs
   (as in diffusers: guidance below 1 acts as 1);
3. anomaly kinds only: after each of the last ``mask_steps`` steps, the latent is decoded while
   hooks record the VAE decoder features, and the mask head reads them together with the
   conditional half's U-Net features of that step; the anomaly probabilities are averaged
   over those steps and thresholded (``prob > mask_threshold``);
4. the final decode is the output image (it doubles as the last mask step's decode).

At the intermediate mask steps the decoder stops after the last block the mask head reads
(``vae.decoder.up_blocks[2]``): the remaining block and the output convolution would only make
pixels that nobody looks at. A forward hook ends the pass, so the VAE stays upstream code.

Batching: every random draw of image ``i`` comes from its own generator and the mask head is
in eval mode, so image ``i`` is the same whatever batch it shares. Floating-point kernels may
round differently for other batch shapes or thread counts (about 1e-6 on the CPU), which can
move a pixel value by one grey level; with the same batch size, device and thread count,
outputs are bit-identical.

Memory switches (:class:`~seas.profiles.GenerationSwitches`, docs/GENERATION.md): weights in
half precision; VAE slicing decodes, and runs the mask head on, one image at a time (the
outputs equal the batched ones up to float rounding); VAE tiling tiles only the decodes whose
features nobody reads (images without masks), since the recorder's hooks would keep only the
last tile's features; attention slicing computes the U-Net's attention in slices of heads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.images import read_rgb
from .data.transforms import image_to_tensor
from .errors import ConfigError
from .features import VAE_BLOCKS, FeatureRecorder, conditional_half
from .profiles import GenerationSwitches
from .prompts import PromptSpec, tokenize
from .run import LoadedRun, load_mask_head, load_run

GOOD = "good"
MIX = "+"  # separator of the types of a mixture in its label: "hole+scratch"

# Start-latent recipe of the reference (spec section 6).
SIGNAL = 0.0979
NOISE = 0.99984


@dataclass(frozen=True)
class Kind:
    """What to generate: normal images, one anomaly type, or a mixture of types."""

    label: str  # folder name: "good", "scratch", "hole+scratch"
    types: tuple[str, ...]  # anomaly types whose token groups the prompt holds; () for normals
    prompt: str

    @property
    def is_normal(self) -> bool:
        return not self.types


def resolve_kind(kind: str | Sequence[str], spec: PromptSpec) -> Kind:
    """``"good"``, a type name, ``"A+B"`` or a list of type names -> :class:`Kind`.

    A mixture's prompt holds the token groups in the given order. Unknown types raise
    ``ConfigError("unknown anomaly type 'x'; this model knows: a, b, c")``.
    """
    if isinstance(kind, str):
        if kind == GOOD:
            return Kind(GOOD, (), spec.normal_prompt())
        kind = [kind] if kind in spec.types else kind.split(MIX)
    types = tuple(kind)
    if not types or len(set(types)) != len(types):
        raise ConfigError(f"a mixture names distinct anomaly types, got {MIX.join(types)!r}")
    return Kind(MIX.join(types), types, spec.anomaly_prompt(list(types)))


@dataclass
class Generated:
    """One output of :meth:`SeaSPipeline.generate`."""

    image: Image.Image  # RGB, resolution x resolution
    mask: np.ndarray | None  # (H, W) bool; None for normal images or without a mask head
    prob: np.ndarray | None  # (H, W) float32 mean anomaly probability over the mask steps
    kind: str  # the kind's label
    index: int
    seed: int  # seed of this image's generator: call seed + index
    prompt: str
    reference: str  # the normal image whose latent started the sampler


class _DecoderStop(Exception):
    """Raised by a forward hook to end a VAE decode once the wanted features exist."""


def _stop(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    raise _DecoderStop


class SeaSPipeline:
    """A finished run's generator (and mask head) on one device, ready to sample.

    Args:
        run: the loaded run (:func:`seas.run.load_run`).
        mask_head: its :class:`~seas.mask_head.RefinedMaskPredictor`, or ``None`` for images only.
        device: where the models run.
        switches: memory switches; the models are cast to ``switches.dtype``. ``None``: the
            run's precision and no slicing or tiling.
    """

    def __init__(self, run: LoadedRun, mask_head=None, device: str | torch.device = "cpu",
                 switches: GenerationSwitches | None = None):
        self.run = run
        self.device = torch.device(device)
        parts = run.backbone
        self.switches = switches or GenerationSwitches(dtype=parts.unet.dtype)
        self.dtype = self.switches.dtype
        self.tokenizer = parts.tokenizer
        self.text_encoder, self.unet, self.vae = (
            _frozen(m, self.device, self.dtype) for m in (parts.text_encoder, parts.unet, parts.vae)
        )
        self.mask_head = None if mask_head is None else _frozen(mask_head, self.device, self.dtype)
        if self.switches.attention_slicing:
            _slice_attention(self.unet)
        self.resolution = int(run.meta["config"]["resolution"])
        self.references = [s["image"] for s in run.meta["split"]["normal_train"]]
        self._reference_latents: dict[int, torch.Tensor] = {}

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 with_masks: bool = True, switches: GenerationSwitches | None = None) -> SeaSPipeline:
        """Load a finished run in ``switches.dtype`` (or ``dtype``; default fp32); ``with_masks``
        also loads its mask head (stage 2 must have run)."""
        if switches is None:
            switches = GenerationSwitches(dtype=dtype or torch.float32)
        elif dtype is not None and dtype != switches.dtype:
            raise ConfigError(f"dtype {dtype} differs from the switches' {switches.dtype}; give one of them")
        head = load_mask_head(run_dir, switches.dtype) if with_masks else None
        return cls(load_run(run_dir, switches.dtype), head, device, switches)

    @property
    def prompts(self) -> PromptSpec:
        return self.run.prompts

    @property
    def types(self) -> list[str]:
        return self.run.types

    @property
    def default_guidance(self) -> float:
        """The dataset's guidance scale recorded by the run (8 MVTec AD, 2 VisA, 5 MVTec 3D AD)."""
        return float(self.run.meta["guidance"])

    # ------------------------------------------------------------------------- public

    def generate(
        self,
        kind: str | Sequence[str],
        indices: Sequence[int],
        seed: int = 0,
        steps: int = 25,
        guidance: float | None = None,
        signal: float = SIGNAL,
        noise: float = NOISE,
        mask_threshold: float = 0.2,
        mask_steps: int = 3,
        batch_size: int = 4,
    ) -> list[Generated]:
        """Generate image ``i`` for each ``i`` in ``indices`` (see the module docstring).

        ``kind``: ``"good"``, a type, ``"A+B"`` or a list of types. ``guidance``: ``None`` takes
        the run's default. Masks come with anomaly kinds when the pipeline has a mask head.
        """
        if steps < 1 or batch_size < 1 or mask_steps < 1:
            raise ConfigError(f"steps, batch size and mask steps must be >= 1, got {steps}, {batch_size}, {mask_steps}")
        kind = resolve_kind(kind, self.prompts)
        guidance = self.default_guidance if guidance is None else float(guidance)
        text = self._text_embeddings(kind.prompt, guided=guidance > 1)
        with_masks = self.mask_head is not None and not kind.is_normal
        results = []
        for start in range(0, len(indices), batch_size):
            chunk = [int(i) for i in indices[start : start + batch_size]]
            latents = self.start_latents(chunk, seed, signal, noise)
            pixels, prob = self._sample(latents, text, guidance, steps, mask_steps if with_masks else 0)
            for j, i in enumerate(chunk):
                p = None if prob is None else prob[j].float().cpu().numpy()
                results.append(Generated(
                    image=_to_pil(pixels[j]), mask=None if p is None else p > mask_threshold, prob=p,
                    kind=kind.label, index=i, seed=seed + i, prompt=kind.prompt,
                    reference=self.references[i % len(self.references)],
                ))
        return results

    @torch.no_grad()
    def start_latents(self, indices: Sequence[int], seed: int, signal: float = SIGNAL,
                      noise: float = NOISE) -> torch.Tensor:
        """``x_init = signal * z + noise * eps`` for each index: ``(B, 4, h, w)``."""
        rows = []
        for i in indices:
            z = self.reference_latent(i % len(self.references))
            generator = torch.Generator().manual_seed(seed + i)
            eps = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
            rows.append(signal * z + noise * eps)
        return torch.cat(rows)

    @torch.no_grad()
    def reference_latent(self, number: int) -> torch.Tensor:
        """Scaled latent mean ``(1, 4, h, w)`` of normal training image ``number`` (cached)."""
        if number not in self._reference_latents:
            pixels = image_to_tensor(read_rgb(self.references[number]), self.resolution)[None]
            with self._vae_tiling(False):  # start latents do not depend on the switches' tiling
                posterior = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
            self._reference_latents[number] = posterior.mean * self.vae.config.scaling_factor
        return self._reference_latents[number]

    # ------------------------------------------------------------------------- steps

    def _scheduler(self, steps: int):
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler.from_config(
            self.run.backbone.scheduler.config, algorithm_type="dpmsolver++", solver_order=2,
            timestep_spacing="linspace", final_sigmas_type="sigma_min",
        )
        scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    @torch.no_grad()
    def _text_embeddings(self, prompt: str, guided: bool) -> torch.Tensor:
        """``(2, L, D)`` embeddings of ``["", prompt]`` when guided, else ``(1, L, D)`` of the prompt."""
        prompts = ["", prompt] if guided else [prompt]
        ids = tokenize(self.tokenizer, prompts).to(self.device)
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def _sample(self, latents: torch.Tensor, text: torch.Tensor, guidance: float, steps: int,
                mask_steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Denoise ``latents (B, 4, h, w)``.

        Returns images ``(B, 3, H, W)`` in [-1, 1] and, when ``mask_steps > 0``, the anomaly
        probability ``(B, H, W)`` averaged over the last ``min(mask_steps, steps)`` steps.
        """
        scheduler = self._scheduler(steps)
        guided = text.shape[0] == 2
        text = text.repeat_interleave(latents.shape[0], dim=0)  # (2B or B, L, D): [uncond..., cond...]
        mask_from = steps - min(mask_steps, steps)  # first step whose latent feeds the mask head
        recorder = FeatureRecorder(self.unet, self.vae) if mask_steps else None
        prob_sum = 0.0
        with recorder or contextlib.nullcontext():
            for step, t in enumerate(scheduler.timesteps):
                model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
                eps = self.unet(model_in, t, encoder_hidden_states=text).sample
                if guided:
                    eps_u, eps_c = eps.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                latents = scheduler.step(eps, t, latents).prev_sample
                if mask_from <= step < steps - 1:
                    prob_sum = prob_sum + self._decode(latents, recorder, guided, full=False)[1]
            pixels, prob = self._decode(latents, recorder, guided, full=True)
        if recorder is None:
            return pixels, None
        return pixels, (prob_sum + prob) / (steps - mask_from)

    def _decode(self, latents: torch.Tensor, recorder: FeatureRecorder | None, guided: bool,
                full: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Decode ``latents (B, 4, h, w)``, one image at a time with VAE slicing, and with a
        ``recorder`` run the mask head on each decode's features.

        ``full``: whole decodes, returning images ``(B, 3, H, W)``; otherwise decodes stopped
        after the last block the mask head reads (images ``None``). Returns also the anomaly
        probability ``(B, H, W)`` with a recorder, else ``None``.
        """
        # U-Net features of this step: [(B, C_i, h_i, w_i)], recorded before any decode.
        unet_feats = None if recorder is None else [
            conditional_half(f) if guided else f for f in recorder.unet_features
        ]
        count = latents.shape[0]
        size = 1 if self.switches.vae_slicing else count
        pixels, probs = [], []
        for part in (slice(start, start + size) for start in range(0, count, size)):
            z = latents[part]  # (b, 4, h, w): b = 1 with VAE slicing, else B
            if full:
                # Tiling only where nobody reads the features: the hooks keep the last tile's.
                with self._vae_tiling(recorder is None and self.switches.vae_tiling):
                    pixels.append(self.vae.decode(z / self.vae.config.scaling_factor).sample)
            else:
                self._decode_features(z)
            if recorder is not None:
                probs.append(self.mask_head.predict_proba([f[part] for f in unet_feats], recorder.vae_features))
        return (torch.cat(pixels) if full else None), (None if recorder is None else torch.cat(probs))

    def _decode_features(self, latents: torch.Tensor) -> None:
        """Run the VAE decoder on ``latents (B, 4, h, w)`` only as far as the last block the mask
        head reads, ``up_blocks[max(VAE_BLOCKS)]``, for the recorder's hooks."""
        handle = self.vae.decoder.up_blocks[max(VAE_BLOCKS)].register_forward_hook(_stop)
        try:
            with contextlib.suppress(_DecoderStop), self._vae_tiling(False):
                self.vae.decode(latents / self.vae.config.scaling_factor)
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _vae_tiling(self, on: bool):
        """Inside the block, the VAE tiles (diffusers' ``enable_tiling``: only latents larger
        than ``vae.tile_latent_min_size``) exactly when ``on``; diffusers' own slicing stays
        off, since this pipeline slices itself so that the hooks see every image."""
        before = self.vae.use_tiling, self.vae.use_slicing
        self.vae.use_tiling, self.vae.use_slicing = on, False
        try:
            yield
        finally:
            self.vae.use_tiling, self.vae.use_slicing = before


def _frozen(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` on ``device`` in ``dtype``, in eval mode, without gradients. It is cast only
    when its dtype differs: diffusers warns about every ``.to(dtype)``."""
    module = module.to(device) if module.dtype == dtype else module.to(device, dtype)
    return module.eval().requires_grad_(False)


def _slice_attention(unet: torch.nn.Module) -> None:
    """diffusers' "auto" attention slicing (half of a layer's heads per slice), but at least one
    head per slice: "auto" gives single-head layers (small models) a slice of 0 heads."""
    # Attention layers in the order unet.set_attention_slice visits them (depth first).
    heads = [m.sliceable_head_dim for m in unet.modules() if m is not unet and hasattr(m, "set_attention_slice")]
    unet.set_attention_slice([max(1, h // 2) for h in heads])


def _to_pil(pixels: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` in [-1, 1] -> RGB image (rounded to 8 bits)."""
    array = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())
