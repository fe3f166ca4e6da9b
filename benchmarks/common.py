"""Shared pieces of the benchmarks: SD-1.x-shaped random models and a time/peak-memory probe."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil
import torch


def sd15_components(seed: int = 0) -> dict:
    """Random-weight parts with SD 1.x's channel widths (U-Net 860 M, CLIP-L-sized text encoder).

    The tokenizer is the tiny byte-level one (its vocabulary does not change the cost).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seas.backbone import SD_SCHEDULER_CONFIG, tiny_tokenizer_vocab

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
            sampler = _RssSampler()
            start = time.perf_counter()
            with sampler:
                fn()
            times.append(time.perf_counter() - start)
            peaks.append(sampler.peak)
    times.sort()
    return Measurement(times[len(times) // 2], max(peaks))


class _RssSampler:
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
