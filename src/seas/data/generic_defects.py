"""Generic defects drawn procedurally on normal images, with captions: what the tiny base model's
bootstrap learns words from (Stable Diffusion learned it from pretraining on the web).

They have nothing to do with a product's own anomaly types and never use its anomaly images:
flat-coloured polygons ("spot"), straight coloured strokes ("line"), patches cut from another
normal image ("pasted patch"), smooth-noise regions filled with a texture ("striped patch",
"noisy patch", "checkered patch") and defocused regions ("blurred area"). Each caption names
what was drawn and its colour, so that a model trained on them learns that words of the prompt
change local appearance, and where (the attention of those words on the drawn region).

Images are ``(H, W, 3)`` uint8 RGB; masks ``(H, W)`` bool; every draw comes from the given
``numpy`` generator.
"""

from __future__ import annotations

import cv2
import numpy as np

COLOURS = {  # name -> RGB
    "black": (20, 20, 20), "white": (240, 240, 240), "red": (200, 40, 40), "green": (40, 170, 60),
    "blue": (40, 70, 200), "yellow": (230, 210, 40),
}
TEXTURES = ("striped", "noisy", "checkered")


def normal_caption(product: str) -> str:
    return f"a photo of a {product}"


def defect_caption(product: str, what: str) -> str:
    return f"a photo of a {product} with a {what}"


def _centre(rng: np.random.Generator, size: int, reach: float) -> np.ndarray:
    """A centre (x, y) keeping a shape of radius ``reach`` px inside the image."""
    return rng.uniform(reach, size - reach, 2)


def _spot(image, rng, others):
    size = image.shape[0]
    radius = rng.uniform(0.04, 0.12) * size
    centre = _centre(rng, size, radius)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
    radii = radius * rng.uniform(0.6, 1.0, len(angles))
    points = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 1)
    colour = str(rng.choice(list(COLOURS)))
    return _paint(image, mask > 0, COLOURS[colour]), mask > 0, f"{colour} spot"


def _line(image, rng, others):
    size = image.shape[0]
    length = rng.uniform(0.2, 0.6) * size
    centre = _centre(rng, size, length / 2)
    angle = rng.uniform(0, np.pi)
    offset = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    mask = np.zeros((size, size), np.uint8)
    thickness = max(1, int(round(rng.uniform(0.01, 0.03) * size)))
    cv2.line(mask, tuple(np.rint(centre - offset).astype(int)), tuple(np.rint(centre + offset).astype(int)), 1,
             thickness)
    colour = str(rng.choice(list(COLOURS)))
    return _paint(image, mask > 0, COLOURS[colour]), mask > 0, f"{colour} line"


def _region(rng, size: int) -> np.ndarray:
    """A smooth-noise region of 2-10 % of the image around a random centre, ``(size, size)`` bool."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), size / 20)
    radius = rng.uniform(0.08, 0.18) * size
    cx, cy = _centre(rng, size, radius)
    yy, xx = np.mgrid[0:size, 0:size]
    falloff = 1 - np.hypot(xx - cx, yy - cy) / radius
    region = falloff + 0.5 * noise / (noise.std() + 1e-6) > 0.3
    if not region.any():
        region = falloff > 0
    return region


def _texture(rng, size: int, kind: str) -> np.ndarray:
    """A ``(size, size, 3)`` float texture: stripes, coloured noise or a checkerboard."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    colour = np.array(COLOURS[str(rng.choice(list(COLOURS)))], np.float32)
    if kind == "striped":
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == "checkered":
        cell = int(rng.integers(3, 7))
        wave = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        wave = rng.random((size, size)).astype(np.float32)
    return wave[..., None] * colour + (1 - wave[..., None]) * (255 - colour)


def _textured(image, rng, others):
    kind = str(rng.choice(TEXTURES))
    region = _region(rng, image.shape[0])
    blend = rng.uniform(0.6, 0.9)
    out = image.astype(np.float32)
    out[region] = blend * _texture(rng, image.shape[0], kind)[region] + (1 - blend) * out[region]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), region, f"{kind} patch"


def _pasted(image, rng, others):
    size = image.shape[0]
    donor = others[int(rng.integers(len(others)))]
    side = int(rng.uniform(0.12, 0.3) * size)
    y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
    patch = np.rot90(donor[y: y + side, x: x + side], int(rng.integers(1, 4)))
    patch = cv2.convertScaleAbs(patch, alpha=rng.uniform(0.6, 1.4), beta=rng.uniform(-40, 40))
    y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
    out = image.copy()
    out[y: y + side, x: x + side] = patch
    mask = np.zeros((size, size), bool)
    mask[y: y + side, x: x + side] = True
    return out, mask, "pasted patch"


def _blurred(image, rng, others):
    region = _region(rng, image.shape[0])
    soft = cv2.GaussianBlur(image, (0, 0), image.shape[0] / 25)
    out = image.copy()
    out[region] = soft[region]
    return out, region, "blurred area"


def _paint(image: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    """``image`` with ``mask`` filled by ``colour`` (edges softened by one pixel), uint8."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)[..., None]
    alpha[alpha < 0.01] = 0  # the blur's far tail would move distant pixels by rounding
    out = image.astype(np.float32) * (1 - alpha) + np.array(colour, np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


DRAWERS = (_spot, _line, _textured, _pasted, _blurred)


def draw_generic_defect(image: np.ndarray, others: list[np.ndarray], rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """One generic defect on ``image (H, W, 3)`` uint8 (a square image; ``others``: normal images
    of the same size for pasted patches). Returns the new image, its ``(H, W)`` bool mask and
    the words that name it (e.g. ``"red spot"``), to be put in :func:`defect_caption`."""
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"generic defects are drawn on square images, got {image.shape[:2]}")
    drawer = DRAWERS[int(rng.integers(len(DRAWERS)))]
    return drawer(image, rng, others or [image])
