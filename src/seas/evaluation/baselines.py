"""Classic synthetic-anomaly baselines for the downstream protocol.

They show what generated image-mask pairs add over cheap synthesis:

* :func:`cut_paste` pastes a real training defect (its masked pixels, randomly
  flipped, rotated and scaled, soft-blended towards its border) at a random
  location of a normal image.
* :func:`perlin_blend` is DRAEM-style: a thresholded Perlin-noise mask inside
  which a texture (or a colour-jittered, re-oriented copy of the image itself)
  is blended in.

Images are ``(H, W, 3)`` uint8 RGB, masks ``(H, W)`` bool.  Both functions are
deterministic given the ``numpy.random.Generator`` they receive, and both leave
every pixel outside the returned mask unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the tight bounding box of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def _warp_patch(patch: np.ndarray, mask: np.ndarray, angle: float, scale: float,
                max_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees and scale a patch ``(h, w, 3)`` and its mask ``(h, w)``.

    The scale is reduced if needed so the result fits in ``max_hw``.  Returns
    the warped patch (float32) and bool mask, cropped to the mask's bounding box.
    """
    h, w = mask.shape
    cos, sin = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    box_w, box_h = w * cos + h * sin, w * sin + h * cos
    scale = min(scale, max_hw[1] / box_w, max_hw[0] / box_h)
    out_w = int(np.clip(np.ceil(box_w * scale), 1, max_hw[1]))
    out_h = int(np.clip(np.ceil(box_h * scale), 1, max_hw[0]))
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    m[:, 2] += ((out_w - 1) / 2 - (w - 1) / 2, (out_h - 1) / 2 - (h - 1) / 2)
    warped = cv2.warpAffine(patch.astype(np.float32), m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    warped_mask = cv2.warpAffine(mask.astype(np.float32), m, (out_w, out_h), flags=cv2.INTER_LINEAR) > 0.5
    if not warped_mask.any():
        return patch.astype(np.float32), mask
    rows, cols = _bbox(warped_mask)
    return warped[rows, cols], warped_mask[rows, cols]


def cut_paste(normal_rgb: np.ndarray, defect_rgb: np.ndarray, defect_mask: np.ndarray,
              rng: np.random.Generator, *, flip: bool = True, rotate: bool = True,
              scale: tuple[float, float] = (0.75, 1.25),
              feather: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Paste the masked pixels of a real defect at a random place of a normal image.

    Args:
        normal_rgb: ``(H, W, 3)`` uint8 target image.
        defect_rgb: ``(h, w, 3)`` uint8 image containing the defect.
        defect_mask: ``(h, w)`` bool, non-empty mask of the defect.
        rng: source of all randomness.
        flip: random horizontal/vertical flips of the defect.
        rotate: random rotation in [0, 360) degrees.
        scale: range of the random scale factor (reduced if the defect would
            not fit in the target image).
        feather: width in pixels of the soft border; the defect's opacity
            grows linearly from ``1 / feather`` on its outline to 1 at
            ``feather`` pixels inside.  0 gives a hard paste.

    Returns:
        ``(image (H, W, 3) uint8, mask (H, W) bool)``; the mask is exactly the
        set of pixels that received defect content, all others are unchanged.
    """
    defect_mask = np.asarray(defect_mask, dtype=bool)
    if not defect_mask.any():
        raise ValueError("defect_mask is empty")
    rows, cols = _bbox(defect_mask)
    patch, mask = defect_rgb[rows, cols], defect_mask[rows, cols]
    if flip and rng.random() < 0.5:
        patch, mask = patch[:, ::-1], mask[:, ::-1]
    if flip and rng.random() < 0.5:
        patch, mask = patch[::-1], mask[::-1]
    angle = rng.uniform(0.0, 360.0) if rotate else 0.0
    patch, mask = _warp_patch(np.ascontiguousarray(patch), np.ascontiguousarray(mask),
                              angle, rng.uniform(*scale), normal_rgb.shape[:2])
    h, w = mask.shape
    top = rng.integers(0, normal_rgb.shape[0] - h + 1)
    left = rng.integers(0, normal_rgb.shape[1] - w + 1)
    if feather > 0:
        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
        alpha = np.clip(dist / feather, 0.0, 1.0)[..., None]
    else:
        alpha = mask[..., None].astype(np.float32)
    image = normal_rgb.copy()
    region = image[top:top + h, left:left + w]
    blended = np.rint(alpha * patch + (1 - alpha) * region).clip(0, 255).astype(np.uint8)
    region[mask] = blended[mask]
    out_mask = np.zeros(normal_rgb.shape[:2], dtype=bool)
    out_mask[top:top + h, left:left + w] = mask
    return image, out_mask


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2D gradient (Perlin) noise ``(H, W)`` float32, scaled by sqrt(2) to about [-1, 1].

    ``res = (ry, rx)`` is the number of lattice cells along each axis; ``H``
    and ``W`` need not be multiples of it.
    """
    (h, w), (ry, rx) = shape, res
    angles = rng.uniform(0.0, 2 * np.pi, (ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y, x = np.arange(h) * ry / h, np.arange(w) * rx / w
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(y0 + dy)[:, None], (x0 + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (6 * t - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return (np.sqrt(2) * (top + uy * (bottom - top))).astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, *, threshold: float = 0.5,
                max_log2_res: int = 6) -> np.ndarray:
    """Non-empty bool mask ``(H, W)``: rotated Perlin noise above ``threshold``.

    The lattice resolution is ``2**k`` per axis with ``k`` uniform in
    ``[0, max_log2_res]`` (DRAEM's scheme); noise is redrawn until the mask is
    non-empty.
    """
    while True:
        res = tuple(2 ** int(k) for k in rng.integers(0, max_log2_res + 1, size=2))
        noise = perlin_noise(shape, res, rng)
        rot = cv2.getRotationMatrix2D(((shape[1] - 1) / 2, (shape[0] - 1) / 2), rng.uniform(-90, 90), 1.0)
        noise = cv2.warpAffine(noise, rot, (shape[1], shape[0]), borderMode=cv2.BORDER_REFLECT)
        mask = noise > threshold
        if mask.any():
            return mask


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Re-orient ``(H, W, 3)`` uint8 by a random flip/90-degree turn and apply 3 random colour ops."""
    h, w = image.shape[:2]
    out = np.rot90(image, k=int(rng.integers(0, 4)) if h == w else 2 * int(rng.integers(0, 2)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = np.ascontiguousarray(out)

    def gain(x):
        return np.clip(x.astype(np.float32) * rng.uniform(0.5, 1.5) + rng.uniform(-40, 40), 0, 255)

    def hue(x):
        hsv = cv2.cvtColor(x.astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + rng.integers(0, 180)) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def posterize(x):
        bits = int(rng.integers(2, 5))
        return x.astype(np.uint8) >> (8 - bits) << (8 - bits)

    def invert(x):
        return 255 - x.astype(np.float32)

    def solarize(x):
        t = rng.uniform(64, 192)
        return np.where(x >= t, 255 - x.astype(np.float32), x)

    def shuffle(x):
        return x[..., rng.permutation(3)]

    ops = [gain, hue, posterize, invert, solarize, shuffle]
    for i in rng.choice(len(ops), size=3, replace=False):
        out = ops[i](out)
    return np.clip(out, 0, 255).astype(np.uint8)


def perlin_blend(normal_rgb: np.ndarray, rng: np.random.Generator, *, texture: np.ndarray | None = None,
                 max_beta: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM-style synthetic anomaly on a normal image.

    Args:
        normal_rgb: ``(H, W, 3)`` uint8.
        rng: source of all randomness.
        texture: optional ``(h, w, 3)`` uint8 anomaly source (e.g. a DTD
            texture), resized to ``(H, W)``; by default the image itself.
            Either way the source is colour-jittered and re-oriented.
        max_beta: inside the mask the result is
            ``beta * image + (1 - beta) * source`` with ``beta ~ U(0, max_beta)``.

    Returns:
        ``(image (H, W, 3) uint8, mask (H, W) bool)``, mask non-empty, pixels
        outside it unchanged.
    """
    h, w = normal_rgb.shape[:2]
    source = normal_rgb if texture is None else cv2.resize(texture, (w, h), interpolation=cv2.INTER_AREA)
    source = _jitter(source, rng)
    mask = perlin_mask((h, w), rng)
    beta = rng.uniform(0.0, max_beta)
    blended = np.rint(beta * normal_rgb + (1 - beta) * source.astype(np.float32)).astype(np.uint8)
    image = normal_rgb.copy()
    image[mask] = blended[mask]
    return image, mask
