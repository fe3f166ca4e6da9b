"""Shared pieces of the benchmarks: SD-1.x-shaped random models and a time/peak-memory probe."""

from __future__ import annotations

import ctypes
import dataclasses
import threading
import time
from dataclasses import dataclass

import psutil
import torch

from seas.model.attention import install_reference_maps
from seas.model.losses import da_loss, diffusion_loss, mask_pyramid


def sd15_components(seed: int = 0) -> dict:
    """Random-weight parts with SD 1.x's channel widths (U-Net 860 M, CLIP-L-sized text encoder).

    The tokenizer is the tiny byte-level one (its vocabulary does not change the cost).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seas.model.backbone import SD_SCHEDULER_CONFIG, tiny_tokenizer_vocab

    torch.manual_seed(seed)
    vocab = tiny_tokenizer_vocab()
    return dict(
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )),
        unet=UNet2DConditionModel(cross_attention_dim=768),  # the defaults are SD 1.x's
        vae=AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
        ),
        scheduler=DDPMScheduler(**SD_SCHEDULER_CONFIG),
    )


@dataclass
class Measurement:
    seconds: float  # median wall time of one call
    peak_bytes: int  # peak memory above the level before the call (CPU: RSS; GPU: allocated)


def measure(fn, device: torch.device, repeats: int, warmup: int = 1) -> Measurement:
    """Median time of ``fn()`` over ``repeats`` calls after ``warmup``, and its peak memory."""
    for _ in range(warmup):
        fn()
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            peaks.append(torch.cuda.max_memory_allocated() - base)
        else:
            sampler = RssSampler()
            start = time.perf_counter()
            with sampler:
                fn()
            times.append(time.perf_counter() - start)
            peaks.append(sampler.peak)
    times.sort()
    return Measurement(times[len(times) // 2], max(peaks))


class RssSampler:
    """Samples this process's resident memory every 5 ms; ``peak`` is the rise above the start."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss - self.base)


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


class ReferenceLosses:
    """The authors' release's stage-1 loss, for comparison.

    Every cross-attention layer materialises its full (2B, heads, HW, 77) probability matrix
    and keeps the head mean on the CPU (:class:`seas.attention.ReferenceMapsProcessor`); L_DA
    reads the maps of down blocks 1 and 2 from there (their copies to the CPU are
    differentiable, so L_DA trains the U-Net as in the release). Draws as ``compute_losses``.
    """

    def __init__(self, unet, blocks=(1, 2)):
        names = [n for n in unet.attn_processors if ".attn2." in n]
        self.sink = install_reference_maps(unet)  # one entry per attn2 layer per forward, in order
        self.layers = {level: [i for i, n in enumerate(names) if n.startswith(f"down_blocks.{level}.")]
                       for level in blocks}

    def __call__(self, bb, unet, text_encoder, prompts, batch, generator: torch.Generator) -> dict:
        device = bb.vae.device
        B = len(batch.anomaly_images)
        self.sink.clear()
        with torch.no_grad():
            pixels = torch.cat([batch.anomaly_images, batch.normal_images]).to(device, bb.vae.dtype)
            moments = bb.vae.encode(pixels).latent_dist
            draw = torch.randn(moments.mean.shape, generator=generator).to(device, bb.vae.dtype)
            latents = ((moments.mean + moments.std * draw) * bb.vae.config.scaling_factor).float()
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.randint(0, bb.scheduler.config.num_train_timesteps, (2 * B,), generator=generator).to(device)
        ids = torch.cat([prompts.anomaly_ids[batch.anomaly_types], prompts.normal_ids.expand(B, -1)]).to(device)
        eps = unet(bb.scheduler.add_noise(latents, noise, t), t, text_encoder(ids)[0]).sample
        total = diffusion_loss(eps[:B], noise[:B]) + diffusion_loss(eps[B:], noise[B:])
        masks = mask_pyramid(batch.anomaly_masks, tuple(latents.shape[-2:]), list(self.layers))  # on the CPU
        cols = prompts.columns[batch.anomaly_types]  # (B, 1 + N)
        for level, layers in self.layers.items():
            maps = torch.stack([self.sink[i][:B] for i in layers]).mean(dim=0)  # (B, HW, 77) on the CPU
            maps = torch.stack([maps[b][:, cols[b]] for b in range(B)])  # (B, HW, 1 + N)
            h, w = masks[level].shape[-2:]
            maps = maps.view(B, h, w, -1).permute(0, 3, 1, 2)
            total = total + da_loss(maps[:, 1:], maps[:, 0], masks[level], "eq1", "joint", 1e-8).to(device)
        return {"total": total}


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so the RSS counts what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_probe(device: torch.device):
    """(start, stop) around the timed work; stop() returns the peak bytes held meanwhile."""
    if device.type == "cuda":
        def start():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def stop() -> int:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return start, stop
    sampler = RssSampler()

    def start():
        release_free_memory()
        sampler.__enter__()

    def stop() -> int:
        sampler.__exit__(None, None, None)
        return sampler.base + sampler.peak
    return start, stop


BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def with_settings(cfg, items: list[str], error) -> object:
    """``cfg`` (a dataclass) with ``--set FIELD=VALUE`` items applied, each value cast to the
    field's type (int, float, bool from true/false/1/0/yes/no, else str); ``error(message)`` for
    an unknown field or a value that is not of its type."""
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(cfg)}
    for item in items:
        name, _, value = item.partition("=")
        if name not in types:
            error(f"--set {item}: no setting {name!r} (one of {', '.join(types)})")
        if types[name] == "bool":
            if value.lower() not in BOOLEANS:
                error(f"--set {item}: {name} must be true or false")
            cfg = dataclasses.replace(cfg, **{name: BOOLEANS[value.lower()]})
            continue
        try:
            cfg = dataclasses.replace(cfg, **{name: {"int": int, "float": float}.get(types[name], str)(value)})
        except ValueError:
            error(f"--set {item}: {name} must be of type {types[name]}")
    return cfg
