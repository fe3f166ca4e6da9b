"""Generation of anomaly images with masks, and of normal images (spec section 6).

Image ``i`` of a call with ``seed`` s, prompt P and guidance g:

1. start latent: normal training image number ``i % n_normals`` of the run's split (every
   normal image in turn), read as training reads it (the dataset's ``fit`` and
   ``channels``), VAE-encoded (latent mean x ``vae.config.scaling_factor``) -> ``z``;
   ``eps ~ N(0, I)`` from a CPU generator seeded ``s + i``;
   ``x_init = signal * z + noise * eps`` (defaults 0.0979 and 0.99984, the reference's recipe);
2. DPM-Solver++ (2M, linspace timesteps, final step to sigma_min) from the first timestep,
   with classifier-free guidance against an empty prompt:
   ``eps_hat = eps_u + g (eps_c - eps_u)``; for ``g <= 1`` only the conditional pass runs
   (as in diffusers: guidance below 1 acts as 1);
3. anomaly kinds only, as the reference (spec section 5, "Inference"): at each of the last
   ``mask_steps`` steps, the conditional half's U-Net features of that step's U-Net call
   (input x_t) are kept with x_t itself; after the loop the kept latents are decoded while
   hooks record the VAE decoder features, and the mask head reads them with the U-Net
   features of the same step; the anomaly probabilities are averaged over those steps and
   thresholded (``prob > mask_threshold``);
4. the final latent is decoded into the output image (with ``reference_stats``, each of its
   channels first shifted and scaled to the spatial mean and standard deviation of ``z``'s); for
   a grey product (``channels``) it is converted to a one-channel grey image (luminance).

Placement (anomaly kinds, ``placement`` other than ``free``; :mod:`seas.generation.placement`
draws the region ``M`` of image ``i``): the region is taken to the latent grid (a cell is in it
when any of its pixels is), grown by ``region_dilation`` cells, giving ``K (B, 1, h, w)``. After
every solver step the latent outside ``K`` is replaced by the reference latent noised to that
step with the image's own start noise, ``alpha_s z + sigma_s eps`` (blended latent diffusion;
after the last step ``z`` itself). The VAE decoder sees the whole latent (its middle block
attends globally), so the decoded background still moves with the region's content; the decoded
image is therefore composited under the pixels of ``K``, feathered inwards over one latent
cell, with ``background``: ``reference`` (default), the reference normal image itself as
training read it, or ``round-trip``, the decode of ``z``. Outside ``K`` the output is that image
exactly. The mask is the head's mask inside ``K``; where that is empty,
the placed region itself (``mask_source = "placed"``).

The mask decodes stop after the last block the mask head reads (``vae.decoder.up_blocks[2]``):
the remaining block and the output convolution would only make pixels that nobody looks at. A
forward hook ends the pass, so the VAE stays upstream code. The head runs once per step on
that step's batch, as the reference does; in eval mode (the default) a mask does not depend
on its batch mates, while with ``mask_batchnorm="batch"`` (the reference's BatchNorm
behaviour) it does.

Batching: every random draw of image ``i`` comes from its own generator and the mask head is
in eval mode by default, so image ``i`` is the same whatever batch it shares. Floating-point kernels may
round differently for other batch shapes or thread counts (about 1e-6 on the CPU), which can
move a pixel value by one grey level; with the same batch size, device and thread count,
outputs are bit-identical.

Memory switches (:class:`~seas.config.GenerationSwitches`, docs/GENERATION.md): weights in
half precision; VAE slicing decodes, and runs the mask head on, one image at a time (the
outputs equal the batched ones up to float rounding); VAE tiling tiles only the decodes whose
features nobody reads (the image decodes), since the recorder's hooks would keep only the
last tile's features; attention slicing computes the U-Net's attention in slices of heads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seas.config import GenerationConfig, GenerationSwitches
from seas.data.readers import GOOD
from seas.data.training_set import split_channels
from seas.data.transforms import sample_tensors
from seas.errors import ConfigError
from seas.generation.placement import Placer
from seas.model.features import VAE_BLOCKS, FeatureRecorder, conditional_half
from seas.model.prompts import MIX, PromptSpec, tokenize
from seas.model.rmp import set_batchnorm_mode
from seas.run import Run


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

    image: Image.Image  # RGB, or grey ("L") for a grey product; resolution x resolution
    mask: np.ndarray | None  # (H, W) bool; None for normal images or without a mask head
    prob: np.ndarray | None  # (H, W) float32 mean anomaly probability over the mask steps
    kind: str  # the kind's label
    index: int
    seed: int  # seed of this image's generator: call seed + index
    prompt: str
    reference: str  # the normal image whose latent started the sampler
    placement: str = "free"
    region: np.ndarray | None = None  # (H, W) bool placed region (before dilation); None when free
    mask_source: str | None = None  # "head", or "placed" when the head found nothing in the region
    background: Image.Image | None = None  # placed only: the image kept outside the region


class _DecoderStop(Exception):
    """Raised by a forward hook to end a VAE decode once the wanted features exist."""


def _stop(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    raise _DecoderStop


def is_grey(run: Run) -> bool:
    """Whether a run's product is generated in grey (its ``channels``, ``auto`` resolved on its
    training images)."""
    return split_channels(run.data.channels, run.split) == "grey"


class SeaSPipeline:
    """A finished run's generator (and mask head) on one device, ready to sample.

    Args:
        run: the run (:meth:`seas.run.Run.load`).
        backbone: its generator (:meth:`Run.load_backbone`).
        mask_head: its mask head (:meth:`Run.load_mask_head`), or ``None`` for images only.
        device: where the models run.
        switches: memory switches; the models are cast to ``switches.dtype``. ``None``: the
            backbone's precision and no slicing or tiling.
        placer: a :class:`~seas.generation.placement.Placer` already built for this run (its
            masks read before the models were loaded), used for its placement and masks.
    """

    def __init__(self, run: Run, backbone, mask_head=None, device: str | torch.device = "cpu",
                 switches: GenerationSwitches | None = None, placer: Placer | None = None):
        self.run = run
        self.device = torch.device(device)
        self.switches = switches or GenerationSwitches(dtype=str(backbone.unet.dtype).removeprefix("torch."))
        self.dtype = self.switches.torch_dtype
        self.tokenizer = backbone.tokenizer
        self.scheduler_config = backbone.scheduler.config
        self.text_encoder, self.unet, self.vae = (
            _frozen(m, self.device, self.dtype) for m in (backbone.text_encoder, backbone.unet, backbone.vae)
        )
        self.mask_head = None if mask_head is None else _frozen(mask_head, self.device, self.dtype)
        if self.switches.attention_slicing:
            _slice_attention(self.unet)
        self.resolution = run.resolution
        self._reference_latents: dict[int, torch.Tensor] = {}
        self._grey: bool | None = None
        self._placers: dict[tuple, Placer] = {} if placer is None else {(placer.placement, placer.masks): placer}
        self._reference_pixels: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 with_masks: bool = True, switches: GenerationSwitches | None = None) -> SeaSPipeline:
        """Load a finished run in ``switches.dtype`` (or ``dtype``; default fp32); ``with_masks``
        also loads its mask head (stage 2 must have run)."""
        if switches is None:
            switches = GenerationSwitches(dtype=str(dtype or torch.float32).removeprefix("torch."))
        elif dtype is not None and dtype != switches.torch_dtype:
            raise ConfigError(f"dtype {dtype} differs from the switches' {switches.dtype}; give one of them")
        run = Run.load(run_dir)
        head = run.load_mask_head(switches.torch_dtype) if with_masks else None
        return cls(run, run.load_backbone(switches.torch_dtype), head, device, switches)

    @property
    def prompts(self) -> PromptSpec:
        return self.run.prompt

    @property
    def types(self) -> list[str]:
        return self.run.types

    @property
    def grey(self) -> bool:
        """Whether the run's product is grey (its ``channels``; ``auto`` resolved on its training
        images): start latents from grey images, outputs converted to one-channel grey."""
        if self._grey is None:
            self._grey = is_grey(self.run)
        return self._grey

    # ------------------------------------------------------------------------- public

    def generate(self, kind: str | Sequence[str], indices: Sequence[int], cfg: GenerationConfig | None = None,
                 **options) -> list[Generated]:
        """Generate image ``i`` for each ``i`` in ``indices`` (see the module docstring).

        ``kind``: ``"good"``, a type, ``"A+B"`` or a list of types. ``cfg`` (default
        :class:`GenerationConfig`), with any of its fields overridden by ``options``; its
        ``guidance`` ``None`` takes the run's default. Masks come with anomaly kinds when the
        pipeline has a mask head.
        """
        cfg = dataclasses.replace(cfg or GenerationConfig(), **options)
        kind = resolve_kind(kind, self.prompts)
        guidance = self.run.guidance if cfg.guidance is None else float(cfg.guidance)
        text = self._text_embeddings(kind.prompt, guided=guidance > 1)
        with_masks = self.mask_head is not None and not kind.is_normal
        if with_masks:
            set_batchnorm_mode(self.mask_head, cfg.mask_batchnorm)
        references = self.run.references[: cfg.reference_images]
        placer = None if kind.is_normal or cfg.placement == "free" else self.placer(cfg.placement, cfg.masks)
        results = []
        for start in range(0, len(indices), cfg.batch_size):
            chunk = [int(i) for i in indices[start : start + cfg.batch_size]]
            z, eps = self._start_parts(chunk, cfg.seed, len(references))
            latents = cfg.signal * z + cfg.noise * eps
            regions = keep = None
            if placer is not None:
                regions = np.stack([placer.region(kind.types, i, cfg.seed) for i in chunk])  # (B, R, R)
                keep = self.latent_region(regions, cfg.region_dilation)  # (B, 1, h, w)
            pixels, prob = self._sample(latents, text, guidance, cfg.steps, cfg.mask_steps if with_masks else 0,
                                        cfg.mask_batchnorm == "batch", None if keep is None else (keep, z, eps),
                                        z if cfg.reference_stats else None)
            area = None
            if keep is not None:
                area = _pixel_region(keep, self.resolution)  # (B, R, R) bool
                pixels = self._composite(pixels, area, [i % len(references) for i in chunk], cfg.background)
            for j, i in enumerate(chunk):
                p = None if prob is None else prob[j].float().cpu().numpy()
                mask = None if p is None else p > cfg.mask_threshold
                source = None
                if mask is not None and area is not None:
                    mask &= area[j]
                    source = "head" if mask.any() else "placed"
                    mask = mask if mask.any() else regions[j].copy()
                results.append(Generated(
                    image=_to_pil(pixels[j], self.grey), mask=mask, prob=p,
                    kind=kind.label, index=i, seed=cfg.seed + i, prompt=kind.prompt,
                    reference=references[i % len(references)], placement=cfg.placement if placer else "free",
                    region=None if regions is None else regions[j], mask_source=source,
                    background=None if placer is None else _to_pil(
                        self.background_pixels(i % len(references), cfg.background)[0], self.grey),
                ))
        return results

    @torch.no_grad()
    def sample_on(self, kind: str | Sequence[str], backgrounds: torch.Tensor, regions: np.ndarray,
                  indices: Sequence[int], cfg: GenerationConfig) -> tuple[torch.Tensor, np.ndarray | None]:
        """Draw ``kind`` into ``regions (B, R, R)`` bool of given images ``backgrounds (B, 3, R, R)``
        in [-1, 1] (``seas augment``): as placed generation, with each background standing in
        for the reference normal image (start latent, and the latent kept outside the region),
        image ``i`` seeded ``cfg.seed + i``. Returns the decoded images ``(B, 3, R, R)`` in
        [-1, 1], not composited (the caller keeps its own pixels outside the region), and the
        mean anomaly probability ``(B, R, R)`` float32 when the pipeline has a mask head."""
        kind = resolve_kind(kind, self.prompts)
        guidance = self.run.guidance if cfg.guidance is None else float(cfg.guidance)
        text = self._text_embeddings(kind.prompt, guided=guidance > 1)
        with_masks = self.mask_head is not None
        if with_masks:
            set_batchnorm_mode(self.mask_head, cfg.mask_batchnorm)
        z = torch.cat([self._encode(image[None]) for image in backgrounds])  # (B, 4, h, w)
        eps = self._noises(indices, cfg.seed, z[:1].shape)
        keep = self.latent_region(regions, cfg.region_dilation)
        pixels, prob = self._sample(cfg.signal * z + cfg.noise * eps, text, guidance, cfg.steps,
                                    cfg.mask_steps if with_masks else 0, cfg.mask_batchnorm == "batch", (keep, z, eps),
                                    z if cfg.reference_stats else None)
        return pixels, None if prob is None else prob.float().cpu().numpy()

    def placer(self, placement: str, masks: str | None = None) -> Placer:
        """The :class:`~seas.generation.placement.Placer` of this run (cached); every mask file
        and the real masks are read, and checked, here."""
        key = (placement, masks)
        if key not in self._placers:
            self._placers[key] = Placer(self.run, placement, masks, self.grey)
        return self._placers[key]

    def latent_region(self, regions: np.ndarray, dilation: int) -> torch.Tensor:
        """Placed regions ``(B, R, R)`` bool -> ``(B, 1, h, w)`` 0/1 latent cells: a cell is in
        when any of its pixels is, then grown by ``dilation`` cells (a square neighbourhood)."""
        cells = torch.from_numpy(regions[:, None].astype(np.float32))  # (B, 1, R, R)
        keep = torch.nn.functional.max_pool2d(cells, self.vae_scale)  # (B, 1, R / f, R / f)
        if dilation:
            keep = torch.nn.functional.max_pool2d(keep, 2 * dilation + 1, stride=1, padding=dilation)
        return keep.to(self.device, self.dtype)

    def _composite(self, pixels: torch.Tensor, area: np.ndarray, numbers: list[int], background: str
                   ) -> torch.Tensor:
        """Images ``(B, 3, R, R)`` inside ``area (B, R, R)`` and the backgrounds outside,
        with a weight that ramps from 0 at the border of ``area`` to 1 one latent cell inside."""
        inside = torch.from_numpy(area[:, None].astype(np.float32))
        width = self.vae_scale
        # distance-like ramp: erosions by growing squares, averaged -> 0 at the border, 1 deep inside
        ramp = sum(-torch.nn.functional.max_pool2d(-inside, 2 * k + 1, stride=1, padding=k) for k in range(width))
        weight = (ramp / width).to(pixels.device, pixels.dtype)
        kept = torch.cat([self.background_pixels(n, background) for n in numbers])
        return weight * pixels + (1 - weight) * kept

    @torch.no_grad()
    def background_pixels(self, number: int, background: str = "reference") -> torch.Tensor:
        """``(1, 3, R, R)`` in [-1, 1]: normal training image ``number`` as training read it
        (``reference``), or its :meth:`reference_latent` decoded (``round-trip``); cached."""
        key = (number, background)
        if key not in self._reference_pixels:
            if background == "round-trip":
                pixels = self._decode_images(self.reference_latent(number))
            else:
                data = self.run.data
                pixels = sample_tensors(self.run.references[number], None, self.resolution, data.fit,
                                        data.mask_rule, self.grey)[0][None].to(self.device, self.dtype)
            self._reference_pixels[key] = pixels
        return self._reference_pixels[key]

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell along a side: 2 ** (number of VAE down blocks - 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def start_latents(self, indices: Sequence[int], seed: int, signal: float = 0.0979, noise: float = 0.99984,
                      cycle: int | None = None) -> torch.Tensor:
        """``x_init = signal * z + noise * eps`` for each index: ``(B, 4, h, w)``; image ``i``
        starts from normal training image ``i % cycle`` (default: all of them in turn)."""
        z, eps = self._start_parts(indices, seed, cycle)
        return signal * z + noise * eps

    def _start_parts(self, indices: Sequence[int], seed: int, cycle: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference latents ``z`` and start noises ``eps``, each ``(B, 4, h, w)``; ``eps`` of
        image ``i`` from a CPU generator seeded ``seed + i``."""
        cycle = cycle or len(self.run.references)
        zs = [self.reference_latent(i % cycle) for i in indices]
        return torch.cat(zs), self._noises(indices, seed, zs[0].shape)

    def _noises(self, indices: Sequence[int], seed: int, shape: torch.Size) -> torch.Tensor:
        """Start noises ``(B, 4, h, w)``: image ``i``'s from a CPU generator seeded ``seed + i``."""
        noises = []
        for i in indices:
            generator = torch.Generator().manual_seed(seed + i)
            noises.append(torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype))
        return torch.cat(noises)

    @torch.no_grad()
    def reference_latent(self, number: int) -> torch.Tensor:
        """Scaled latent mean ``(1, 4, h, w)`` of normal training image ``number`` (cached), read
        as training read it (the dataset's ``fit`` and ``channels``)."""
        if number not in self._reference_latents:
            data = self.run.data
            pixels = sample_tensors(self.run.references[number], None, self.resolution, data.fit, data.mask_rule,
                                    self.grey)[0][None]
            self._reference_latents[number] = self._encode(pixels)
        return self._reference_latents[number]

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images ``(1, 3, R, R)`` in [-1, 1] -> scaled latent mean ``(1, 4, h, w)``."""
        with self._vae_tiling(False):  # start latents do not depend on the switches' tiling
            posterior = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    # ------------------------------------------------------------------------- steps

    def _scheduler(self, steps: int):
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler.from_config(
            self.scheduler_config, algorithm_type="dpmsolver++", solver_order=2,
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
                mask_steps: int, batch_norm: bool = False, blend: tuple | None = None,
                stats_of: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Denoise ``latents (B, 4, h, w)``.

        ``blend``: ``(K (B, 1, h, w), z (B, 4, h, w), eps (B, 4, h, w))``: after each step the
        latent outside ``K`` becomes ``z`` noised to that step (module docstring, Placement).
        ``stats_of``: reference latents ``z (B, 4, h, w)``: before the image decode, each channel of
        the final latent is shifted and scaled to ``z``'s spatial mean and standard deviation
        (``reference_stats``; the mask steps' latents are not touched, so the masks are the same
        with and without it).
        Returns images ``(B, 3, H, W)`` in [-1, 1] and, when ``mask_steps > 0``, the anomaly
        probability ``(B, H, W)`` averaged over the last ``min(mask_steps, steps)`` steps.
        """
        scheduler = self._scheduler(steps)
        guided = text.shape[0] == 2
        text = text.repeat_interleave(latents.shape[0], dim=0)  # (2B or B, L, D): [uncond..., cond...]
        mask_from = steps - min(mask_steps, steps)  # first step whose x_t feeds the mask head
        recorder = FeatureRecorder(self.unet, self.vae) if mask_steps else None
        kept = []  # per mask step: (x_t (B, 4, h, w), conditional U-Net features [(B, C_i, h_i, w_i)])
        with recorder or contextlib.nullcontext():
            for step, t in enumerate(scheduler.timesteps):
                model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
                eps = self.unet(model_in, t, encoder_hidden_states=text).sample
                if recorder is not None and step >= mask_from:
                    kept.append((latents, [conditional_half(f) if guided else f for f in recorder.unet_features]))
                if guided:
                    eps_u, eps_c = eps.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                latents = scheduler.step(eps, t, latents).prev_sample
                if blend is not None:
                    latents = _blend(latents, *blend, scheduler, step)
            prob = None if recorder is None else self._mask_probability(kept, recorder, batch_norm)
        if stats_of is not None:
            latents = match_channel_stats(latents, stats_of)
        return self._decode_images(latents), prob

    def _decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, 4, h, w)`` -> images ``(B, 3, H, W)``; one at a time with VAE slicing, tiled
        with VAE tiling (nobody reads these decodes' features)."""
        size = 1 if self.switches.vae_slicing else latents.shape[0]
        with self._vae_tiling(self.switches.vae_tiling):
            return torch.cat([self.vae.decode(z / self.vae.config.scaling_factor).sample
                              for z in latents.split(size)])

    def _mask_probability(self, kept: list, recorder: FeatureRecorder, batch_norm: bool) -> torch.Tensor:
        """Mean anomaly probability ``(B, H, W)`` over the kept mask steps.

        One decode and one head call per step over that step's batch (the reference's grouping,
        which ``batch_norm``, its train-mode BatchNorm, needs). In eval mode every layer acts per
        sample, so VAE slicing may cut the groups to one image; decoding the three steps as one
        batch would be exact too, but was measured slower on the CPU (``bench_generation
        --parts``: 0.504 s for three steps at once against 3 x 0.137 s, tiny model, 128 px).
        """
        latents = torch.cat([x for x, _ in kept])  # (S * B, 4, h, w), step-major
        unet_feats = [torch.cat(level) for level in zip(*(feats for _, feats in kept))]
        B = kept[0][0].shape[0]
        head_group = B if batch_norm or not self.switches.vae_slicing else 1
        decode_size = 1 if self.switches.vae_slicing else head_group
        probs = []
        for start in range(0, latents.shape[0], head_group):
            group = slice(start, start + head_group)
            vae_feats = []
            for z in latents[group].split(decode_size):
                self._decode_features(z)
                vae_feats.append(recorder.vae_features)
            vae_feats = [torch.cat(level) for level in zip(*vae_feats)]
            probs.append(self.mask_head([f[group] for f in unet_feats], vae_feats)[0][:, 1])
        return torch.cat(probs).view(len(kept), B, *probs[0].shape[-2:]).mean(dim=0)

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


def match_channel_stats(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``latents (B, C, h, w)`` with each channel shifted and scaled to the spatial mean and
    standard deviation of ``reference``'s (``(B or 1, C, h', w')``, any spatial size). Measured
    reason (docs/GENERATION.md): the tiny base, started from 0.0979 of a normal image's latent,
    ends on latents whose channels have lost the product's balance, which decodes as a green,
    paler tile."""
    mean, std = latents.mean((2, 3), keepdim=True), latents.std((2, 3), keepdim=True)
    return (latents - mean) / std.clamp_min(1e-6) * reference.std((2, 3), keepdim=True) + reference.mean(
        (2, 3), keepdim=True)


def _blend(latents: torch.Tensor, keep: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, scheduler,
           step: int) -> torch.Tensor:
    """Keep ``latents`` inside ``keep`` and the reference outside: ``z`` noised to the level the
    solver has just reached (its ``sigmas[step + 1]``, a VP sigma ``s``: ``alpha = 1 / sqrt(1 +
    s^2)``, ``x = alpha z + s alpha eps``), or ``z`` itself after the last step."""
    if step + 1 >= len(scheduler.timesteps):
        background = z
    else:
        s = float(scheduler.sigmas[step + 1])
        alpha = (1 + s * s) ** -0.5
        background = alpha * z + s * alpha * eps
    return keep * latents + (1 - keep) * background


def _pixel_region(keep: torch.Tensor, resolution: int) -> np.ndarray:
    """Latent cells ``(B, 1, h, w)`` -> the pixels they cover, ``(B, R, R)`` bool."""
    pixels = torch.nn.functional.interpolate(keep.float(), size=(resolution, resolution), mode="nearest")
    return pixels[:, 0].cpu().numpy() > 0.5


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


# ITU-R 601 luminance, the weights of PIL's "L" (grey inputs are converted with the same).
_LUMA = (0.299, 0.587, 0.114)


def _to_pil(pixels: torch.Tensor, grey: bool = False) -> Image.Image:
    """``(3, H, W)`` in [-1, 1] -> RGB image (rounded to 8 bits); ``grey``: one-channel "L"
    image of the luminance, so that no colour fringe of the decoder survives."""
    values = (pixels.float() / 2 + 0.5).clamp(0, 1)
    if grey:
        luma = sum(w * values[c] for c, w in enumerate(_LUMA))
        return Image.fromarray((luma.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    array = (values * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())
