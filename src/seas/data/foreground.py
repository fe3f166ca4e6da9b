"""Where the product is in its normal images: a documented estimate used to place defects on the
product and to measure whether generated masks lie on it."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from seas.files.images import as_rgb

ImageLike = np.ndarray | str | os.PathLike


def _otsu(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu threshold of 1-D ``values`` and its separability (between-class / total variance)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return hi, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mean = m0[-1]
    w1 = 1 - w0
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0)
    between[valid] = (mean * w0[valid] - m0[valid]) ** 2 / (w0[valid] * w1[valid])
    k = int(between.argmax())
    total = float((p * (centres - mean) ** 2).sum())
    return float(edges[k + 1]), float(between[k] / total) if total > 0 else 0.0


def product_foreground(normal_images: Sequence[ImageLike], *, min_contrast: float = 0.08,
                       border: float = 0.03, plain_border: float = 0.75,
                       min_fraction: float = 0.01, max_fraction: float = 0.95) -> np.ndarray:
    """Estimate where the product is: ``(H, W)`` bool at the first image's size.

    Rule (documented estimate, not a segmentation):

    1. ``M`` = mean of the normal images (resized to the first one), blurred
       with a Gaussian of sigma 1% of the size; moving parts of the product
       blur into the region they may occupy.
    2. The background colour ``b`` is the median colour of ``M``'s border
       frame (``border`` of the size wide), and ``d = ||M - b||`` (RGB in
       [0, 1]) is each pixel's distance from it.
    3. If the frame is not one plain colour (fewer than ``plain_border`` of
       its pixels within ``min_contrast`` of ``b``), the product or a
       structured background fills the frame: all True.
    4. Otherwise foreground = ``d`` above both its Otsu threshold and
       ``min_contrast``; opened to drop specks, holes filled (the inside of a
       bottle seen from above is as dark as the background), dilated by 2% of
       the size so defects on the product's edge count as on it.
    5. A result below ``min_fraction`` (nothing stands out from the border
       colour: a texture filling the frame, whose mean image is flat) or above
       ``max_fraction`` of the image is returned as all True.
    """
    if not normal_images:
        raise ValueError("need at least one normal image")
    first = as_rgb(normal_images[0])
    h, w = first.shape[:2]
    acc = np.zeros((h, w, 3), dtype=np.float64)
    for image in normal_images:
        rgb = as_rgb(image)
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        acc += rgb
    mean = (acc / len(normal_images) / 255.0).astype(np.float32)
    sigma = max(0.01 * min(h, w), 0.5)
    mean = cv2.GaussianBlur(mean, (0, 0), sigma)
    b = max(1, int(round(border * min(h, w))))
    frame = np.zeros((h, w), dtype=bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    background = np.median(mean[frame], axis=0)
    dist = np.linalg.norm(mean - background, axis=2)
    everything = np.ones((h, w), dtype=bool)
    if (dist[frame] <= min_contrast).mean() < plain_border:
        return everything
    threshold, _ = _otsu(dist.ravel())
    fg = dist > max(threshold, min_contrast)
    r = max(1, int(round(0.01 * min(h, w))))
    fg = ndimage.binary_opening(fg, structure=np.ones((2 * r + 1, 2 * r + 1), bool))
    fg = ndimage.binary_fill_holes(fg)
    grow = max(1, int(round(0.02 * min(h, w))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    fg = cv2.dilate(fg.astype(np.uint8), kernel) > 0
    if not min_fraction <= fg.mean() <= max_fraction:
        return everything
    return fg


