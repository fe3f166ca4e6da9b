"""Procedural synthetic product with exact-mask defects, written in MVTec-AD layout.

A small stand-in for a real MVTec category, for tests and the demo: a stone tile
with veined grain, a grooved ring and four dimples, lying on a dark bench. Pose,
grain, colour, lighting direction and brightness vary per image. Three defect
types are drawn on it, each with an exact mask: a pixel is in the mask if and
only if the defect changed it.

Everything is plain numpy/OpenCV: a few milliseconds per 128 px image.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from seas.files.atomic import write_dir

SYNTHETIC_TYPES = ("hole", "scratch", "stain")

_TILE_HALF = 0.40  # tile half-side, fraction of the image size
_LIGHT_DEG = 225  # mean light direction in the image plane (x right, y down): upper left
_SAFE_HALF = 0.32  # the tile always covers the central square of this half-side (fraction of size)
_BENCH_RGB = np.array([44.0, 47.0, 52.0], dtype=np.float32)
_TILE_RGB = np.array([186.0, 176.0, 158.0], dtype=np.float32)
_STAIN_TINTS = (  # per-channel RGB multipliers: rust, oil, coolant
    (1.0, 0.72, 0.42),
    (0.62, 0.50, 0.34),
    (0.72, 0.92, 1.0),
)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise, (size, size) float32 with unit standard deviation."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return blurred / (blurred.std() + 1e-6)


def _unit(angle: float) -> np.ndarray:
    """Unit 2-vector (x, y) at `angle` radians, float32."""
    return np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)


def _rounded_square_sdf(u: np.ndarray, v: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance in pixels to a rounded square centred at u = v = 0 (negative inside)."""
    qu = np.abs(u) - (half - radius)
    qv = np.abs(v) - (half - radius)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    inside = np.minimum(np.maximum(qu, qv), 0)
    return outside + inside - radius


def _tile_height(
    u: np.ndarray, v: np.ndarray, dist: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Height field in pixels, (H, W) float32: bevelled edge, ring groove, dimples, grain."""
    bevel = np.clip(-dist / (0.03 * size), 0, 1) * 1.5
    ring_width = 0.012 * size
    ring = np.exp(-(((np.hypot(u, v) - 0.2 * size) / ring_width) ** 2))
    corner = 0.28 * size  # the four dimples sit at (+/-corner, +/-corner)
    dimples = np.exp(-((np.abs(u) - corner) ** 2 + (np.abs(v) - corner) ** 2) / (0.02 * size) ** 2)
    grain = 0.12 * _smooth_noise(rng, size, 0.7) + 0.35 * _smooth_noise(rng, size, 2.5)
    return bevel - 1.6 * ring - 2.0 * dimples + grain


def _tile_albedo(rng: np.random.Generator, size: int) -> np.ndarray:
    """Tile colour, (H, W, 3) float32 in 0..255: base tint, mottling, veins and speckles."""
    colour = _TILE_RGB * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    mottle = 1 + 0.05 * _smooth_noise(rng, size, 6) + 0.025 * _smooth_noise(rng, size, 1.5)
    vein_field = _smooth_noise(rng, size, rng.uniform(9, 14))
    veins = np.exp(-((vein_field / 0.1) ** 2))
    specks = rng.random((size, size)) < 0.004
    speckle = cv2.GaussianBlur(specks.astype(np.float32), (0, 0), 0.5) * rng.choice((-1, 1))
    shade = mottle - 0.1 * veins + 0.35 * speckle
    return shade[..., None] * colour


def render_normal(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Render one defect-free tile image.

    Args:
        rng: random generator; the image is a pure function of its state.
        size: image side in pixels.

    Returns:
        (size, size, 3) uint8 RGB image. The tile always covers the central
        region where `add_defect` places defects.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = (size / 2 + rng.uniform(-0.03, 0.03, 2) * size).tolist()
    cos, sin = _unit(np.deg2rad(rng.uniform(-5, 5)))
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    dist = _rounded_square_sdf(u, v, _TILE_HALF * size, 0.06 * size)

    light = _unit(np.deg2rad(_LIGHT_DEG + rng.uniform(-25, 25)))
    grad_y, grad_x = np.gradient(_tile_height(u, v, dist, size, rng))
    relief = np.clip(1 - 0.35 * (grad_x * light[0] + grad_y * light[1]), 0.6, 1.4)
    tile = _tile_albedo(rng, size) * relief[..., None]

    bench = _BENCH_RGB * (1 + 0.08 * _smooth_noise(rng, size, 3))[..., None]
    cover = np.clip(0.5 - dist, 0, 1)[..., None]
    centred = np.stack([xx - size / 2, yy - size / 2]) / size
    towards_light = np.tensordot(light, centred, axes=1)
    gradient = 1 + rng.uniform(0.05, 0.15) * towards_light
    vignette = 1 - 0.25 * (centred**2).sum(0)
    brightness = rng.uniform(0.88, 1.08)
    lit = (tile * cover + bench * (1 - cover)) * (brightness * gradient * vignette)[..., None]
    return np.clip(np.rint(lit), 0, 255).astype(np.uint8)


def _defect_centre(rng: np.random.Generator, size: int, reach: float) -> np.ndarray:
    """Random defect centre (x, y) in pixels, float32.

    A defect extending at most `reach` (fraction of `size`) from it stays inside
    the central square that the tile always covers.
    """
    span = _SAFE_HALF - reach
    return ((0.5 + rng.uniform(-span, span, 2)) * size).astype(np.float32)


def _hole(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dark elliptical pit with a rim catching the light.

    Returns the (H, W, 3) float32 changed image and the (H, W) bool support.
    """
    size = base.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    axes = rng.uniform(0.035, 0.07, 2)
    rim = rng.uniform(0.25, 0.4)
    cx, cy = _defect_centre(rng, size, axes.max() * (1 + rim)).tolist()
    axes = axes * size
    cos, sin = _unit(rng.uniform(0, np.pi))
    dx, dy = xx - cx, yy - cy
    r = np.hypot((dx * cos + dy * sin) / axes[0], (dy * cos - dx * sin) / axes[1])  # 1 on the edge
    light = _unit(np.deg2rad(_LIGHT_DEG))
    towards_light = (dx * light[0] + dy * light[1]) / np.maximum(np.hypot(dx, dy), 1e-3)
    pit = (0.15 + 0.4 * r**2) * (1 - 0.35 * towards_light * r)  # wall facing the light is shaded
    lip = 1.08 + 0.11 * (1 + towards_light)  # raised rim, brightest towards the light
    gain = np.where(r < 1, pit, lip)
    return base * gain[..., None], r < 1 + rim


def _scratch(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Thin curved bright or dark line.

    Returns the (H, W, 3) float32 changed image and the (H, W) bool support.
    """
    size = base.shape[0]
    length = rng.uniform(0.3, 0.5)
    middle = _defect_centre(rng, size, length / 2)
    length *= size
    heading = _unit(rng.uniform(0, 2 * np.pi))
    start, end = middle - heading * length / 2, middle + heading * length / 2
    normal = np.array([-heading[1], heading[0]])
    bend = middle + normal * rng.uniform(-0.2, 0.2) * length  # sagitta at most 0.1 * length
    t = np.linspace(0, 1, 32, dtype=np.float32)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    canvas = np.zeros((size, size), np.uint8)
    points = np.rint(curve * 16).astype(np.int32)
    cv2.polylines(canvas, [points], False, 255, max(1, size // 128), cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255
    fade = 0.6 + 0.4 * np.abs(_smooth_noise(rng, size, 5)).clip(0, 1)
    strength = rng.choice((-1, 1)) * rng.uniform(45, 85)
    return base + (strength * alpha * fade)[..., None], alpha > 0.3


def _stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Soft-edged blob tinted towards rust, oil or coolant.

    Returns the (H, W, 3) float32 changed image and the (H, W) bool support.
    """
    size = base.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base_radius = rng.uniform(0.06, 0.12)
    cx, cy = _defect_centre(rng, size, base_radius * 1.4).tolist()
    theta = np.arctan2(yy - cy, xx - cx)
    phases = rng.uniform(0, 2 * np.pi, 4)
    wobble = sum(rng.uniform(0, 0.1) * np.cos(k * theta + phases[k - 2]) for k in range(2, 6))
    radius = base_radius * size * (1 + wobble)  # |wobble| < 0.4
    depth = 1 - np.hypot(xx - cx, yy - cy) / radius  # 1 at the centre, 0 on the edge
    texture = np.clip(1 + 0.15 * _smooth_noise(rng, size, 2), 0.7, 1.3)
    density = rng.uniform(0.6, 0.85) * (0.2 + 0.8 * np.clip(depth / 0.6, 0, 1) ** 1.5) * texture
    tint = np.array(_STAIN_TINTS[rng.integers(len(_STAIN_TINTS))], dtype=np.float32)
    return base * (1 + density[..., None] * (tint - 1)), depth > 0


_DRAWERS = {"hole": _hole, "scratch": _scratch, "stain": _stain}


def add_defect(
    image: np.ndarray, defect_type: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect at a random position in the central product region.

    Args:
        image: (S, S, 3) uint8 RGB image, e.g. from `render_normal`.
        defect_type: one of `SYNTHETIC_TYPES`.
        rng: random generator; the result is a pure function of its state.

    Returns:
        (defective, mask): the (S, S, 3) uint8 defective image (a new array) and
        its (S, S) uint8 mask, 255 exactly where `defective` differs from `image`
        and 0 elsewhere.
    """
    if defect_type not in _DRAWERS:
        raise ValueError(f"unknown defect type {defect_type!r}; expected one of {SYNTHETIC_TYPES}")
    size = image.shape[0]
    if image.shape != (size, size, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected an (S, S, 3) uint8 image, got {image.shape} {image.dtype}")
    changed, support = _DRAWERS[defect_type](image.astype(np.float32), rng)
    changed = np.clip(np.rint(changed), 0, 255).astype(np.uint8)
    defective = np.where(support[..., None], changed, image)
    mask = np.any(defective != image, axis=-1)
    return defective, mask.astype(np.uint8) * 255


def _image_rng(seed: int, product: str, folder: str, index: int) -> np.random.Generator:
    """Generator for one image, independent of how many other images are written."""
    streams = [zlib.crc32(product.encode()), zlib.crc32(folder.encode())]
    return np.random.default_rng([seed, *streams, index])


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or (H, W) grey uint8 array as PNG."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def synthetic_image(seed: int, product: str, folder: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Image ``index`` of ``folder`` (``train/good``, ``test/good``, ``test/<type>``) of the
    product that :func:`write_synthetic_product` writes with the same arguments, in memory:
    the ``(S, S, 3)`` uint8 image and its ``(S, S)`` uint8 mask (``None`` for a normal image)."""
    defect_type = folder.split("/")[1]
    rng = _image_rng(seed, product, folder, index)
    image = render_normal(rng, size)
    if defect_type == "good":
        return image, None
    return add_defect(image, defect_type, rng)


def _write_images(root: Path, seed: int, product: str, size: int, counts: dict[str, int]) -> None:
    """Write every image (and mask) of the dataset under `root`."""
    for folder, count in counts.items():
        defect_type = folder.split("/")[1]
        (root / folder).mkdir(parents=True)
        if defect_type != "good":
            (root / "ground_truth" / defect_type).mkdir(parents=True)
        for index in range(count):
            image, mask = synthetic_image(seed, product, folder, index, size)
            if mask is not None:
                _write_png(root / "ground_truth" / defect_type / f"{index:03d}_mask.png", mask)
            _write_png(root / folder / f"{index:03d}.png", image)


def write_synthetic_product(
    root: str | Path,
    product: str = "tile",
    seed: int = 0,
    size: int = 128,
    n_train_good: int = 40,
    n_test_good: int = 10,
    n_per_type: int = 9,
    types: tuple[str, ...] = SYNTHETIC_TYPES,
) -> Path:
    """Write a synthetic MVTec-AD-layout dataset to `root/<product>/` and return that path.

    Layout: `train/good/NNN.png`, `test/good/NNN.png`, `test/<type>/NNN.png` and
    `ground_truth/<type>/NNN_mask.png` (RGB images, single-channel 0/255 masks,
    all `size` x `size`). Each image comes from its own generator seeded by
    (`seed`, `product`, folder, index), so the output is deterministic and
    adding images never changes existing ones. The dataset is built in a
    temporary sibling folder and renamed into place, so a failure leaves
    nothing behind.

    Raises:
        FileExistsError: `root/<product>` exists and is not an empty folder.
        ValueError: bad product name, unknown defect type, negative count or size below 32.
    """
    if not product or Path(product).name != product:
        raise ValueError(f"product must be a plain folder name, got {product!r}")
    unknown = set(types) - set(SYNTHETIC_TYPES)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}; expected {SYNTHETIC_TYPES}")
    if size < 32 or min(n_train_good, n_test_good, n_per_type) < 0:
        raise ValueError("size must be >= 32 and image counts >= 0")
    root = Path(root)
    target = root / product
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"refusing to write synthetic product into non-empty {target}")
    counts = {"train/good": n_train_good, "test/good": n_test_good}
    counts.update({f"test/{t}": n_per_type for t in types})

    return write_dir(target, lambda staging: _write_images(staging, seed, product, size, counts))
