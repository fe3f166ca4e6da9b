"""Procedural pretraining corpus: captioned photographs of products and surfaces with defects.

A stand-in for the web images Stable Diffusion was trained on, to pretrain a tiny SD-shaped model
on a CPU. Each sample is a photograph-like image of one of `FAMILIES` (metal plates, flanges,
fabric, wood, leather, circuit boards, bottles, nuts, pills, painted panels, bottle caps) with
zero or one of `DEFECTS`, that defect's exact mask, and a caption: `a photo of a {family}` or
`a photo of a {family} with a {defect}`.

Design:

1. A family (`seas.data.corpus_families`) draws a `Scene`: per-pixel height, albedo and specular
   maps of the product and, for an object, of the table, belt, cloth or tray it lies on, plus
   its coverage. Pose, colour, texture and shape vary per image.
2. A defect (`seas.data.corpus_defects`), one of the family's `COMPATIBLE` kinds, edits a copy of
   those maps: a groove, a pit, a depression, an albedo change, particles on top, a bite out of
   the outline...
3. One `_photograph` step turns maps into an image, the clean and the defective scene alike,
   with the same light and camera draws: Lambert shading from the height map's gradients under
   a point light, Blinn-Phong highlights plus a reflected window edge on shiny materials, the
   object's soft cast shadow; then exposure and white balance, vignetting, a slight defocus
   blur, sensor noise and a tone curve.
4. The mask is where the two photographs differ by more than `_VISIBLE` in some channel, and the
   defective image is the clean one with exactly those pixels replaced, so a pixel is in the mask
   if and only if the defect changed it. A defect that changes fewer than `_MIN_PIXELS` or more
   than `_MAX_AREA` of the image is redrawn, deterministically.

Sample `index` of corpus `seed` is a pure function of (seed, index, size, defect_share): every
step draws from its own generator seeded by (seed, index, stream), so a sample never depends on
which other samples are drawn. Plain numpy and OpenCV: 3-5 ms per 128 px sample on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seas.data.corpus_defects import DEFECT_DRAWERS
from seas.data.corpus_families import FAMILY_RENDERERS, Scene, pixel_grid

CORPUS_VERSION = "corpus-v1"
FAMILIES: tuple[str, ...] = tuple(FAMILY_RENDERERS)
DEFECTS: tuple[str, ...] = tuple(DEFECT_DRAWERS)

_ANYWHERE = ("scratch", "spot", "stain", "contamination", "fibre")
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "brushed metal plate": _ANYWHERE + ("dent", "hole", "rust", "burn mark", "discoloration"),
    "cast metal flange": _ANYWHERE
    + ("crack", "hole", "dent", "rust", "missing piece", "bent edge"),
    "woven fabric": ("spot", "stain", "contamination", "fibre", "hole", "cut")
    + ("frayed thread", "burn mark", "discoloration"),
    "wood board": _ANYWHERE + ("crack", "hole", "dent", "cut", "burn mark", "discoloration"),
    "leather": _ANYWHERE + ("crack", "hole", "cut", "burn mark", "discoloration", "bubble"),
    "circuit board": _ANYWHERE + ("crack", "hole", "burn mark", "discoloration"),
    "bottle": _ANYWHERE + ("crack", "missing piece", "bubble"),
    "hex nut": _ANYWHERE + ("crack", "dent", "rust", "missing piece"),
    "pill": _ANYWHERE + ("crack", "dent", "missing piece", "discoloration"),
    "painted panel": _ANYWHERE
    + ("crack", "dent", "hole", "rust", "bubble", "burn mark", "discoloration"),
    "bottle cap": _ANYWHERE + ("dent", "rust", "bent edge", "discoloration"),
}

_CHOICE_STREAM, _SCENE_STREAM, _DEFECT_STREAM, _CAPTION_STREAM = 0, 1, 2, 3
_VISIBLE = 6  # a pixel is changed when some channel moved by more than this (of 255)
_MIN_PIXELS = 8 / 128**2  # smallest mask, as a share of the image
_MAX_AREA = 0.35  # largest mask, as a share of the image
_ATTEMPTS = 8  # defect draws before giving up and returning the normal image
_GENERIC_SHARE = 0.15  # chance of captioning the family as "object", and the defect as "defect"


@dataclass(frozen=True)
class CorpusSample:
    """One corpus image with its defect mask and caption."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    mask: np.ndarray  # (S, S) bool, all False for a normal image
    family: str
    defect: str | None  # None: a normal image
    caption: str


@dataclass(frozen=True)
class _Camera:
    """Light and camera draws, shared by the clean and the defective photograph."""

    to_light: tuple[np.ndarray, np.ndarray, float]  # x, y offsets (S, S) to the light; its height
    to_eye: tuple[np.ndarray, np.ndarray, float]  # the same for the camera
    flat: float  # Lambert term of a flat pixel: normalises the diffuse light
    ambient: float
    colour: np.ndarray  # (3, 1, 1) light colour x white balance x exposure
    vignette: np.ndarray  # (S, S) gain
    shadow: tuple[float, float, float, float]  # shift x, y per pixel of lift; blur; darkness
    window: tuple[np.ndarray, float, float, float]  # reflected edge: normal (3,), offset, width, gain
    blur: float  # defocus, Gaussian sigma in pixels
    noise: np.ndarray  # (S, S, 3) sensor noise
    tone: float  # tone-curve steepness


def _camera(rng: np.random.Generator, size: int, shininess: float) -> _Camera:
    """Draw the light, the camera and the sensor noise for one image."""
    xx, yy = pixel_grid(size)
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 1.25)
    distance = rng.uniform(1.2, 3.0) * size
    ground = distance * np.cos(elevation)
    light_x, light_y = size / 2 + ground * np.cos(azimuth), size / 2 + ground * np.sin(azimuth)
    eye_x, eye_y = size / 2 + rng.uniform(-0.2, 0.2, 2) * size
    eye_z = rng.uniform(1.5, 3) * size
    corner = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / np.float32(size * size / 2)  # 0..1
    reach = 1 / np.tan(elevation)  # shadow length per pixel of height
    colour = rng.uniform(0.85, 1.2) * (1 + rng.uniform(-0.07, 0.07, 3))
    amplitude = np.sqrt(12) * rng.uniform(0.004, 0.02)  # uniform noise, std 0.004..0.02
    noise = (rng.random((size, size, 3), dtype=np.float32) - 0.5) * np.float32(amplitude)
    # a bright window (half the surroundings) whose edge a flat pixel, picked at random, reflects:
    # a flat pixel at p mirrors the view direction into (p - eye) x, y and eye height z
    edge = rng.normal(0, 1, 3) * (1, 1, 0.3)
    edge /= np.linalg.norm(edge)
    probe = np.array([rng.uniform(0, size) - eye_x, rng.uniform(0, size) - eye_y, eye_z])
    return _Camera(
        to_light=(np.float32(light_x) - xx, np.float32(light_y) - yy, distance * np.sin(elevation)),
        to_eye=(np.float32(eye_x) - xx, np.float32(eye_y) - yy, eye_z),
        flat=float(np.sin(elevation)),
        ambient=rng.uniform(0.2, 0.45),
        colour=colour.astype(np.float32).reshape(3, 1, 1),
        vignette=1 - np.float32(rng.uniform(0.05, 0.35)) * corner,
        shadow=(
            -reach * np.cos(azimuth),
            -reach * np.sin(azimuth),
            rng.uniform(1.5, 4) * size / 128,
            rng.uniform(0.3, 0.6),
        ),
        window=(
            edge.astype(np.float32),
            float(edge @ probe / np.linalg.norm(probe)),
            1.5 / np.sqrt(shininess),  # sharper on glossier materials
            rng.uniform(0.2, 0.6),
        ),
        blur=rng.uniform(0.25, 0.7) * size / 128,
        noise=noise,
        tone=rng.uniform(1.3, 1.9),
    )


def _compose(scene: Scene, camera: _Camera) -> tuple[np.ndarray, ...]:
    """The object over its background.

    Returns height (S, S), albedo (3, S, S), spec (S, S) and the cast shadow's gain (S, S).
    """
    obj, back, cover = scene.obj, scene.back, scene.cover
    if back is None:
        return obj.height, obj.albedo, obj.spec, np.float32(1.0)
    shift_x, shift_y, blur, darkness = camera.shadow
    size = scene.size
    move = np.float32([[1, 0, shift_x * scene.lift], [0, 1, shift_y * scene.lift]])
    cast = cv2.warpAffine(cover, move, (size, size), borderMode=cv2.BORDER_CONSTANT)
    cast = cv2.GaussianBlur(cast, (0, 0), blur + 0.1 * scene.lift)  # taller: softer shadow
    height = back.height + cover * (obj.height - back.height)
    albedo = back.albedo + cover * (obj.albedo - back.albedo)
    spec = back.spec + cover * (obj.spec - back.spec)
    return height, albedo, spec, 1 - np.float32(darkness) * cast * (1 - cover)


def _window(gx, gy, inv_n, eye, camera: _Camera) -> np.ndarray:
    """Brightness (S, S) of the reflected window at each pixel, 0..gain.

    The mirror direction R = 2 (n . E) n - E of the view direction E about the normal
    n = (-gx, -gy, 1) * inv_n is compared with the window's edge, so the edge bends over every
    bump and dent.
    """
    ex, ey, ez = eye
    (w0, w1, w2), offset, width, gain = camera.window
    n_dot_e = (ez - gx * ex - gy * ey) * inv_n
    n_dot_w = (w2 - gx * w0 - gy * w1) * inv_n
    side = 2 * n_dot_e * n_dot_w - (ex * w0 + ey * w1 + ez * w2)  # R . w
    t = np.clip((side - np.float32(offset)) / np.float32(2 * width) + np.float32(0.5), 0, 1)
    return np.float32(gain) * t * t * (3 - 2 * t)


def _photograph(scene: Scene, camera: _Camera) -> np.ndarray:
    """Light the scene's maps and take the picture: (S, S, 3) uint8 RGB."""
    height, albedo, spec, shadow = _compose(scene, camera)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * np.float32(0.125)  # slopes, px per px
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * np.float32(0.125)
    inv_n = 1 / np.sqrt(gx * gx + gy * gy + 1)  # the normal is (-gx, -gy, 1) * inv_n
    lx, ly, light_z = camera.to_light
    lz = np.float32(light_z) - height
    inv_l = 1 / np.sqrt(lx * lx + ly * ly + lz * lz)
    ex, ey, eye_z = camera.to_eye
    ez = np.float32(eye_z) - height
    inv_e = 1 / np.sqrt(ex * ex + ey * ey + ez * ez)
    ex, ey, ez = ex * inv_e, ey * inv_e, ez * inv_e
    hx, hy, hz = lx * inv_l + ex, ly * inv_l + ey, lz * inv_l + ez  # half vector, unnormalised
    lambert = np.maximum((lz - gx * lx - gy * ly) * (inv_n * inv_l), 0)
    inv_h = 1 / np.sqrt(hx * hx + hy * hy + hz * hz)
    facing = np.maximum((hz - gx * hx - gy * hy) * (inv_n * inv_h), 0)
    ambient = np.float32(camera.ambient)
    diffuse = (ambient + (1 - ambient) / np.float32(camera.flat) * lambert) * shadow
    gloss = facing ** np.float32(scene.shininess) + _window(gx, gy, inv_n, (ex, ey, ez), camera)
    radiance = (albedo * diffuse + spec * gloss * shadow) * camera.colour * camera.vignette
    image = cv2.merge(list(radiance))  # (S, S, 3)
    image = cv2.GaussianBlur(image, (0, 0), camera.blur) + camera.noise
    tone = np.float32(camera.tone)  # film-like shoulder: 0 -> 0, 2 -> 1
    image = (1 - np.exp(-tone * np.maximum(image, 0))) * np.float32(255 / (1 - np.exp(-2 * tone)))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _choose(seed: int, index: int, defect_share: float) -> tuple[str, str | None]:
    """The family and the defect (None: normal) drawn for sample `index`."""
    rng = np.random.default_rng([seed, index, _CHOICE_STREAM])
    family = FAMILIES[rng.integers(len(FAMILIES))]
    defective = rng.random() < defect_share
    kinds = COMPATIBLE[family]
    defect = kinds[rng.integers(len(kinds))]
    return family, defect if defective else None


def _caption(seed: int, index: int, family: str, defect: str | None) -> str:
    rng = np.random.default_rng([seed, index, _CAPTION_STREAM])
    name = "object" if rng.random() < _GENERIC_SHARE else family
    kind = "defect" if rng.random() < _GENERIC_SHARE else defect
    return f"a photo of a {name}" if defect is None else f"a photo of a {name} with a {kind}"


def _render(
    seed: int, index: int, size: int, family: str, defect: str | None
) -> tuple[np.ndarray, CorpusSample]:
    """The clean photograph (S, S, 3) uint8 and the sample, for a given family and defect.

    The sample is normal (defect None) when `defect` is None or when no draw of the defect
    changed between `_MIN_PIXELS` and `_MAX_AREA` of the image.
    """
    rng = np.random.default_rng([seed, index, _SCENE_STREAM])
    scene = FAMILY_RENDERERS[family](rng, size)
    camera = _camera(rng, size, scene.shininess)
    clean = _photograph(scene, camera)
    for attempt in range(_ATTEMPTS if defect is not None else 0):
        edited = scene.copy()
        DEFECT_DRAWERS[defect](edited, np.random.default_rng([seed, index, _DEFECT_STREAM, attempt]))
        shot = _photograph(edited, camera)
        mask = np.abs(shot.astype(np.int16) - clean).max(axis=-1) > _VISIBLE
        if _MIN_PIXELS <= mask.mean() <= _MAX_AREA:
            image = np.where(mask[..., None], shot, clean)
            caption = _caption(seed, index, family, defect)
            return clean, CorpusSample(image, mask, family, defect, caption)
    mask = np.zeros((size, size), dtype=bool)
    return clean, CorpusSample(clean, mask, family, None, _caption(seed, index, family, None))


def render_sample(
    seed: int, index: int, size: int = 128, defect_share: float = 0.6
) -> CorpusSample:
    """Sample `index` of corpus `seed`.

    A pure function of its arguments: the family is drawn uniformly, a defect with probability
    `defect_share`, uniformly among the family's `COMPATIBLE` kinds. (In the rare case that
    every draw of the defect fails, see `_render`, the sample is normal.)

    Raises:
        ValueError: `size` outside 32..1024 or `defect_share` outside 0..1.
    """
    if not 32 <= size <= 1024:
        raise ValueError(f"size must be in 32..1024, got {size}")
    if not 0 <= defect_share <= 1:
        raise ValueError(f"defect_share must be in 0..1, got {defect_share}")
    family, defect = _choose(seed, index, defect_share)
    return _render(seed, index, size, family, defect)[1]


def render_batch(
    seed: int, indices, size: int = 128, defect_share: float = 0.6
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Samples `indices` of corpus `seed`.

    Returns images (N, S, S, 3) uint8, masks (N, S, S) bool and the N captions.
    """
    samples = [render_sample(seed, int(i), size, defect_share) for i in indices]
    images = np.zeros((len(samples), size, size, 3), np.uint8)
    masks = np.zeros((len(samples), size, size), bool)
    for i, sample in enumerate(samples):
        images[i], masks[i] = sample.image, sample.mask
    return images, masks, [sample.caption for sample in samples]


def caption_words() -> list[str]:
    """Every word a caption can contain, sorted (for building a tokenizer vocabulary)."""
    words = {"a", "photo", "of", "with", "object", "defect"}
    for name in FAMILIES + DEFECTS:
        words.update(name.split())
    return sorted(words)


def write_contact_sheet(
    path, seed: int = 0, rows: int = 8, cols: int = 12, size: int = 128
) -> Path:
    """Write a PNG grid of samples 0..rows*cols-1 of corpus `seed`, for people to look at.

    Each tile is labelled with its family and defect; a defect's mask is outlined in red.
    """
    label = 26  # pixels of text under each tile
    sheet = np.full((rows * (size + label), cols * size, 3), 255, np.uint8)
    for i in range(rows * cols):
        sample = render_sample(seed, i, size)
        tile = sample.image.copy()
        outline = sample.mask.astype(np.uint8)
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, (255, 0, 0), 1)
        top, left = (i // cols) * (size + label), (i % cols) * size
        sheet[top : top + size, left : left + size] = tile
        for line, text in enumerate((sample.family, sample.defect or "normal")):
            origin = (left + 2, top + size + 10 + 12 * line)
            font = cv2.FONT_HERSHEY_SIMPLEX
            cv2.putText(sheet, text, origin, font, 0.32, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
