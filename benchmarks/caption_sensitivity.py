"""Does a base draw what the defect word of a caption says? Sampled from captions alone.

SeaS tells the types apart through their tokens, so a base whose pictures hardly change with the
defect word gives stage 1 little to build on. For each base, each family of the corpus and each
of a few starting noises, the base samples ``a photo of a {family} with a {defect}`` for every
defect word (DPM-Solver++, classifier-free guidance), and the benchmark prints

* **word effect**: mean absolute pixel difference ([0, 1] units) between two defect words'
  images from the same noise;
* **noise effect**: the same between two noises' images of the same caption;
* their ratio: 0 when the defect word changes nothing, about 1 when it changes as much as
  another starting noise.

::

    OMP_NUM_THREADS=2 python -m benchmarks.caption_sensitivity --bases seas-tiny runs/seas-tiny-2/model

``--grid PNG`` also writes the images of the first base (rows: family and noise, columns: defect
words).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from PIL import Image

from seas.data import corpus
from seas.model.backbone import load_backbone
from seas.model.prompts import tokenize

WORDS = ("scratch", "hole", "stain", "crack")


@torch.no_grad()
def sample(backbone, captions: list[str], noise: torch.Tensor, steps: int, guidance: float) -> np.ndarray:
    """Images ``(B, R, R, 3)`` in [0, 1] for ``captions`` from the starting ``noise`` (B, c, h, w)."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(backbone.scheduler.config, algorithm_type="dpmsolver++")
    scheduler.set_timesteps(steps)
    text = backbone.text_encoder(tokenize(backbone.tokenizer, [*captions, *[""] * len(captions)]))[0]
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        cond, uncond = backbone.unet(torch.cat([latents, latents]), t, text).sample.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    images = backbone.vae.decode(latents / backbone.vae.config.scaling_factor).sample
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def measure(base: str, families: list[str], noises: int, steps: int, guidance: float, size: int
            ) -> tuple[dict, np.ndarray]:
    backbone = load_backbone(base)
    for part in (backbone.unet, backbone.text_encoder, backbone.vae):
        part.eval()
    h = size // backbone.vae_factor
    word, noise_effect, grid = [], [], []
    for f, family in enumerate(families):
        start = torch.randn(noises, backbone.unet.config.in_channels, h, h, generator=torch.Generator().manual_seed(f))
        # (W, N, R, R, 3): every defect word from every noise
        images = np.stack([sample(backbone, [f"a photo of a {family} with a {w}"] * noises, start, steps, guidance)
                           for w in WORDS])
        word += [np.abs(images[a] - images[b]).mean() for a, b in itertools.combinations(range(len(WORDS)), 2)]
        noise_effect += [np.abs(images[:, a] - images[:, b]).mean() for a, b in itertools.combinations(range(noises), 2)]
        grid += [np.concatenate(list(images[:, n]), 1) for n in range(noises)]
    result = {"word": float(np.mean(word)), "noise": float(np.mean(noise_effect))}
    return result | {"ratio": result["word"] / result["noise"]}, np.concatenate(grid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", nargs="+", default=["seas-tiny"])
    parser.add_argument("--families", nargs="+", default=list(corpus.FAMILIES))
    parser.add_argument("--noises", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--grid", help="PNG of the first base's images")
    args = parser.parse_args()
    print(f"| base | word effect | noise effect | ratio |  ({', '.join(WORDS)}; {len(args.families)} families, "
          f"{args.noises} noises, guidance {args.guidance:g})\n| --- | --- | --- | --- |")
    for i, base in enumerate(args.bases):
        result, grid = measure(base, args.families, args.noises, args.steps, args.guidance, args.size)
        print(f"| {base} | {result['word']:.4f} | {result['noise']:.4f} | {result['ratio']:.2f} |", flush=True)
        if i == 0 and args.grid:
            Image.fromarray((grid * 255).round().astype(np.uint8)).save(args.grid)


if __name__ == "__main__":
    main()
