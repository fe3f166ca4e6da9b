"""Colour of generated images against the normal images they started from, with and without
``--reference-stats`` (docs/GENERATION.md, Shape and colour of the outputs).

    OMP_NUM_THREADS=1 python -m benchmarks.colour_cast --run ABL/seed0/run --kind stain --num 8 --sample-steps 20
    OMP_NUM_THREADS=1 python -m benchmarks.colour_cast --run ABL/seed0/run --kind stain --num 8 --sample-steps 20 --guidance 3

Generates images ``0 .. num - 1`` of ``--kind`` twice (the decoded latent as sampled, then with
its channels given the start latent's mean and standard deviation) and prints the mean R, G, B
of the central half of each image (on the demo's product: the tile) and of the whole image,
averaged over the images, beside the same numbers of the start images. Nothing is written.
"""

from __future__ import annotations

import argparse

import numpy as np

from seas.data.transforms import sample_arrays
from seas.files.images import resize_image
from seas.generation.pipeline import SeaSPipeline


def mean_rgb(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean R, G, B ``(3,)`` of the central half and of the whole of ``(S, S, 3)`` images."""
    size = images[0].shape[0]
    centre = slice(size // 4, size - size // 4)
    return (np.mean([im[centre, centre].reshape(-1, 3).mean(0) for im in images], 0),
            np.mean([im.reshape(-1, 3).mean(0) for im in images], 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", default="stain")
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None, help="default: the run's")
    args = parser.parse_args()
    pipe = SeaSPipeline.from_run(args.run)
    run = pipe.run
    indices = list(range(args.num))
    outputs = {}
    for label, matched in (("as sampled (the reference)", False), ("--reference-stats", True)):
        results = pipe.generate(args.kind, indices, seed=args.seed, steps=args.sample_steps, batch_size=args.num,
                                guidance=args.guidance, reference_stats=matched)
        outputs[label] = [np.asarray(r.image.convert("RGB"), np.float64) for r in results]
        starts = [r.reference for r in results]
    size = outputs["--reference-stats"][0].shape[0]
    data = run.data  # the start images cut to the run's fit, as the sampler read them
    outputs["start images"] = [resize_image(sample_arrays(p, None, data.fit, data.mask_rule, False)[0], size)
                               .astype(np.float64) for p in starts]
    guidance = run.guidance if args.guidance is None else args.guidance
    print(f"{run.product}: {args.kind}, {args.num} images, {args.sample_steps} sampler steps, guidance {guidance}\n")
    print("| images | centre R, G, B | whole R, G, B |\n| --- | --- | --- |")
    for label, images in outputs.items():
        centre, whole = mean_rgb(images)
        print(f"| {label} | {', '.join(f'{v:.0f}' for v in centre)} | {', '.join(f'{v:.0f}' for v in whole)} |")


if __name__ == "__main__":
    main()
