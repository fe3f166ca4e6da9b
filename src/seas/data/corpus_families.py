"""Products and surfaces of the procedural pretraining corpus (see `seas.data.corpus`).

A family draws a `Scene` from a random generator: per-pixel maps of what a camera would see
before any lighting (height, albedo, specular reflectance) for the product and, when the product
is an object lying on something, for what it lies on, plus the object's coverage. The corpus
lights and photographs the scene; a defect (`seas.data.corpus_defects`) edits the maps first.

Conventions: S is the image side. Maps are float32. Heights are in pixels, positive towards
the camera. Albedo is channels first, (3, S, S) in 0..1, so that (S, S) factors broadcast
cheaply over it. Every length is chosen for a 128 px image and multiplied by `px = S / 128`, so a
scene looks the same at every size. Textures come from white noise on a coarse grid
interpolated up to the image (`noise`), or sampled along rotated, stretched axes
(`stretched_noise`) for streaks and grain: a few cheap OpenCV calls each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np

TAU = 2 * np.pi


@dataclass
class Maps:
    """What the camera sees of a surface at each pixel, before lighting."""

    height: np.ndarray  # (S, S) float32, pixels towards the camera
    albedo: np.ndarray  # (3, S, S) float32 RGB reflectance 0..1
    spec: np.ndarray  # (S, S) float32 specular reflectance 0..1

    def copy(self) -> Maps:
        return Maps(self.height.copy(), self.albedo.copy(), self.spec.copy())


@dataclass
class Scene:
    """A product ready to be photographed.

    A surface fills the frame: `back` is None, `cover` is all ones and `radius` is 0. An object
    (`radius` > 0, its outline within `radius` of `centre`) lies on `back`; `cover` is its
    anti-aliased coverage and `lift` its thickness, which sets the length of its shadow.
    """

    obj: Maps
    cover: np.ndarray  # (S, S) float32 0..1
    back: Maps | None = None
    shininess: float = 20.0  # specular exponent
    centre: tuple[float, float] = (0.0, 0.0)  # (x, y) pixels
    radius: float = 0.0  # pixels
    lift: float = 0.0  # pixels

    @property
    def size(self) -> int:
        return self.cover.shape[0]

    def copy(self) -> Scene:
        back = None if self.back is None else self.back.copy()
        return replace(self, obj=self.obj.copy(), cover=self.cover.copy(), back=back)


# ----------------------------------------------------------------------------- texture tools


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates: two read-only (S, S) float32 arrays."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def local_frame(size: int, centre, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v), (S, S) float32 each, of a frame at `centre` turned by `angle`."""
    xx, yy = pixel_grid(size)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy = xx - np.float32(centre[0]), yy - np.float32(centre[1])
    return dx * cos + dy * sin, dy * cos - dx * sin


def noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth noise with about `cells` features across the image: (S, S) float32, unit std."""
    n = max(2, round(cells)) + 2
    grid = rng.standard_normal((n, n), dtype=np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)


def stretched_noise(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    cell_u: float,
    cell_v: float,
    smooth: bool = True,
) -> np.ndarray:
    """Noise with features `cell_u` pixels long along u and `cell_v` along v: (S, S), unit std.

    `smooth=False` interpolates linearly: cheaper, fine for albedo but creased under lighting.
    """
    gx = (u - u.min()) / np.float32(cell_u) + 1
    gy = (v - v.min()) / np.float32(cell_v) + 1
    grid = rng.standard_normal((int(gy.max()) + 3, int(gx.max()) + 3), dtype=np.float32)
    field = cv2.remap(grid, gx, gy, cv2.INTER_CUBIC if smooth else cv2.INTER_LINEAR)
    return field / (field.std() + 1e-6)


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage 0..1 of a shape from its signed distance in pixels (negative inside)."""
    return np.clip(0.5 - sdf, 0, 1)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 at `edge0`, 1 at `edge1` (either order), smooth in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


def pick_colour(rng: np.random.Generator, palette, jitter: float = 0.08) -> np.ndarray:
    """A palette colour with brightness and tint jitter: (3, 1, 1) float32."""
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float32)
    tint = 1 + rng.uniform(-jitter, jitter, 3) + rng.uniform(-jitter, jitter)
    return (base * tint).astype(np.float32).reshape(3, 1, 1)


def _filled(size: int, value: float) -> np.ndarray:
    return np.full((size, size), value, np.float32)


def _place(rng: np.random.Generator, size: int, radius: float) -> tuple[float, float]:
    """A random centre (x, y) keeping a disc of `radius` pixels inside the frame."""
    slack = max(0.0, size / 2 - radius - 0.04 * size)
    x, y = size / 2 + rng.uniform(-slack, slack, 2)
    return float(x), float(y)


# ----------------------------------------------------------------------------- shared materials

_METALS = (  # steel, aluminium, titanium, zinc-plated, brass
    (0.62, 0.63, 0.65),
    (0.75, 0.76, 0.78),
    (0.55, 0.54, 0.52),
    (0.66, 0.7, 0.76),
    (0.78, 0.64, 0.36),
)
_TABLES = ((0.78, 0.77, 0.74), (0.62, 0.55, 0.45), (0.33, 0.34, 0.36), (0.9, 0.9, 0.88))
_BELTS = ((0.12, 0.12, 0.13), (0.15, 0.24, 0.17), (0.22, 0.23, 0.26), (0.3, 0.29, 0.27))
_CLOTHS = ((0.22, 0.28, 0.45), (0.5, 0.48, 0.42), (0.17, 0.17, 0.19), (0.5, 0.18, 0.17))


def brushed_maps(rng: np.random.Generator, size: int, base: np.ndarray, relief: float) -> Maps:
    """Brushed metal: fine streaks along one direction over a gentle waviness, `relief` deep."""
    px = size / 128
    u, v = local_frame(size, (size / 2, size / 2), rng.uniform(0, np.pi))
    fine = stretched_noise(rng, u, v, 0.5 * size, 0.6 * px, smooth=False)  # sub-pixel hairlines
    coarse = stretched_noise(rng, u, v, 0.25 * size, 3 * px)
    wave = noise(rng, size, 3)  # sheet waviness: moves the highlight around
    height = px * relief * (0.12 * fine + 0.15 * coarse + 1.0 * wave)
    albedo = base * (1 + 0.07 * fine + 0.03 * coarse + 0.02 * wave)
    return Maps(height, albedo, 0.6 * (1 + 0.25 * fine))


def weave_maps(
    rng: np.random.Generator,
    size: int,
    pitch: float,
    warp: np.ndarray,
    weft: np.ndarray,
    relief: float,
) -> Maps:
    """Plain or twill weave of threads `pitch` pixels apart, warp and weft colours (3, 1, 1).

    Each cell of the thread lattice shows either the warp (running along v) or the weft on top;
    the top thread bulges across its width and dips at the cell ends, where it goes under.
    """
    u, v = local_frame(size, (size / 2, size / 2), rng.uniform(0, np.pi))
    wobble = 0.3 * pitch  # threads are never perfectly straight
    su = (u + wobble * noise(rng, size, 3)) / np.float32(pitch)
    sv = (v + wobble * noise(rng, size, 3)) / np.float32(pitch)
    iu, iv = np.floor(su), np.floor(sv)
    across_warp, across_weft = np.sin(np.pi * (su - iu)), np.sin(np.pi * (sv - iv))
    if rng.random() < 0.4:
        top = (np.mod(iu - iv, 4) < 2).astype(np.float32)  # twill: diagonal ribs
    else:
        top = (np.mod(iu + iv, 2) < 1).astype(np.float32)
    warp_h = np.sqrt(across_warp) * (0.55 + 0.45 * across_weft)
    weft_h = np.sqrt(across_weft) * (0.55 + 0.45 * across_warp)
    shape = top * warp_h + (1 - top) * weft_h  # 0..1
    thread_tone = (1 + 0.07 * rng.standard_normal(64)).astype(np.float32)  # dye varies by thread
    tone_u = thread_tone[iu.astype(np.int64) % 64]
    tone_v = thread_tone[(iv.astype(np.int64) + 17) % 64]
    fuzz = noise(rng, size, size / 1.5)
    shade = (0.7 + 0.3 * shape) * (1 + 0.05 * fuzz)  # crevices between threads stay darker
    albedo = (warp * (top * tone_u) + weft * ((1 - top) * tone_v)) * shade
    height = relief * pitch * (shape + 0.05 * fuzz)
    return Maps(height, albedo, _filled(size, 0.04))


def background(rng: np.random.Generator, size: int) -> Maps:
    """What an object lies on: a table top, a conveyor belt, a cloth or a metal tray."""
    px = size / 128
    kind = rng.integers(4)
    if kind == 0:  # table top: smooth laminate, mottled
        fine = noise(rng, size, size / 3)
        albedo = pick_colour(rng, _TABLES) * (1 + 0.05 * noise(rng, size, 4) + 0.025 * fine)
        return Maps(px * 0.15 * fine, albedo, _filled(size, 0.15))
    if kind == 1:  # conveyor belt: rubber with ribs across
        _, v = local_frame(size, (0, 0), rng.uniform(0, np.pi))
        period = np.float32(rng.uniform(4, 9) * px)
        ribs = smoothstep(0.3, 0.7, np.abs(np.sin(v * np.float32(np.pi) / period)))
        fine = noise(rng, size, size / 2)
        albedo = pick_colour(rng, _BELTS) * ((1 + 0.08 * fine) * (0.88 + 0.12 * ribs))
        return Maps(px * (0.8 * ribs + 0.2 * fine), albedo, _filled(size, 0.1))
    if kind == 2:
        colour = pick_colour(rng, _CLOTHS)
        return weave_maps(rng, size, rng.uniform(1.8, 3.2) * px, colour, colour * 0.92, 0.25)
    return brushed_maps(rng, size, pick_colour(rng, _METALS[:3]) * 0.8, 0.4)


def _surface(obj: Maps, shininess: float) -> Scene:
    size = obj.height.shape[0]
    return Scene(obj, _filled(size, 1.0), None, shininess, (size / 2, size / 2))


def _on_background(rng, obj, cover, shininess, centre, radius, lift) -> Scene:
    return Scene(obj, cover, background(rng, cover.shape[0]), shininess, centre, radius, lift)


# ----------------------------------------------------------------------------- surfaces


def brushed_metal_plate(rng: np.random.Generator, size: int) -> Scene:
    """A sheet of brushed steel, aluminium, titanium or brass filling the frame."""
    maps = brushed_maps(rng, size, pick_colour(rng, _METALS, 0.05), 1.0)
    maps.spec *= rng.uniform(0.7, 1.3)
    return _surface(maps, rng.uniform(10, 30))


_DYES = (
    (0.15, 0.22, 0.45),
    (0.55, 0.12, 0.12),
    (0.75, 0.7, 0.6),
    (0.25, 0.4, 0.25),
    (0.2, 0.2, 0.22),
    (0.85, 0.85, 0.82),
    (0.7, 0.5, 0.2),
    (0.45, 0.5, 0.6),
)


def woven_fabric(rng: np.random.Generator, size: int) -> Scene:
    """Plain or twill cloth, one colour or warp and weft in two colours."""
    warp = pick_colour(rng, _DYES)
    weft = warp * rng.uniform(0.8, 1.05) if rng.random() < 0.6 else pick_colour(rng, _DYES)
    maps = weave_maps(rng, size, rng.uniform(3.5, 7) * size / 128, warp, weft, 0.35)
    return _surface(maps, 6.0)


_WOODS = ((0.8, 0.6, 0.38), (0.68, 0.5, 0.3), (0.42, 0.27, 0.16), (0.86, 0.73, 0.55), (0.6, 0.35, 0.2))


def wood_board(rng: np.random.Generator, size: int) -> Scene:
    """Boards with growth rings wandering along the grain, pores, seams and sometimes a knot."""
    px = size / 128
    u, v = local_frame(size, (size / 2, size / 2), rng.uniform(0, np.pi))
    plank_width = rng.uniform(0.3, 1.2) * size
    across = (v + np.float32(rng.uniform(0, plank_width))) / np.float32(plank_width)
    plank = np.floor(across).astype(np.int64) % 8
    to_seam = np.minimum(across % 1, 1 - across % 1) * np.float32(plank_width)  # pixels
    spacing = rng.uniform(2.5, 7) * px
    wander = stretched_noise(rng, u, v, 0.5 * size, 0.12 * size) * np.float32(rng.uniform(1.5, 4))
    rings = v / np.float32(spacing) + wander + rng.uniform(0, 50, 8).astype(np.float32)[plank]
    tone = (1 + 0.08 * rng.standard_normal(8)).astype(np.float32)[plank]
    knot = np.zeros_like(u)
    if rng.random() < 0.4:
        ku, kv = (rng.uniform(-0.35, 0.35, 2) * size).tolist()
        sigma = rng.uniform(0.04, 0.09) * size
        knot = np.exp(-(((u - ku) / (2.5 * sigma)) ** 2 + ((v - kv) / sigma) ** 2))
        rings = rings + np.float32(rng.uniform(2, 4)) * knot  # rings swirl around the knot
    phase = rings % 1
    late = smoothstep(0.5, 0.88, phase) * (1 - smoothstep(0.9, 1.0, phase))  # dark latewood
    pores = stretched_noise(rng, u, v, 0.08 * size, 0.6 * px, smooth=False)
    seam = np.exp(-((to_seam / np.float32(0.8 * px)) ** 2))
    shade = (1 - rng.uniform(0.15, 0.35) * late) * (1 + 0.05 * pores) * tone
    shade *= (1 - 0.55 * seam) * (1 + 0.05 * noise(rng, size, 3)) * (1 - 0.5 * smoothstep(0.3, 0.9, knot))
    height = px * (0.3 * late + 0.1 * pores) - np.float32(1.5 * px) * seam
    spec = _filled(size, rng.uniform(0.05, 0.4))  # bare to varnished
    return _surface(Maps(height, pick_colour(rng, _WOODS) * shade, spec), rng.uniform(10, 25))


_LEATHERS = (
    (0.62, 0.4, 0.24),
    (0.35, 0.2, 0.12),
    (0.08, 0.075, 0.07),
    (0.35, 0.09, 0.08),
    (0.1, 0.12, 0.22),
    (0.42, 0.41, 0.4),
    (0.8, 0.72, 0.6),
)


def leather(rng: np.random.Generator, size: int) -> Scene:
    """Pebbled grain, soft folds, sometimes a row of stitches."""
    px = size / 128
    u, v = local_frame(size, (size / 2, size / 2), rng.uniform(0, np.pi))
    cells = size / (rng.uniform(4, 8) * px)
    # |noise| creases where the noise crosses zero; two such networks cut the grain into pebbles
    pebble = np.minimum(np.abs(noise(rng, size, cells)), np.abs(noise(rng, size, cells)))
    pebble = np.minimum(pebble, 1.2)
    fine = noise(rng, size, size / 1.5)
    folds = stretched_noise(rng, u, v, 0.35 * size, 0.06 * size)
    height = px * (0.9 * pebble + 0.15 * fine) + np.float32(rng.uniform(0.3, 1.2) * px) * folds
    shade = (0.78 + 0.18 * pebble) * (1 + 0.06 * noise(rng, size, 4))
    albedo = pick_colour(rng, _LEATHERS) * shade
    spec = rng.uniform(0.1, 0.4) * (0.5 + 0.4 * pebble)
    if rng.random() < 0.4:  # a row of stitches along u, in a contrasting thread
        line = np.float32(rng.uniform(-0.35, 0.35) * size)
        period = rng.uniform(5, 8) * px
        dash = smoothstep(0.5, 0.35, np.abs((u / np.float32(period)) % 1 - 0.5))
        stitch = dash * coverage(np.abs(v - line) - np.float32(0.9 * px))
        seam = np.exp(-(((v - line - np.float32(3.5 * px)) / np.float32(1.2 * px)) ** 2))
        height += np.float32(1.2 * px) * stitch - np.float32(1.5 * px) * seam
        albedo += stitch * (pick_colour(rng, _DYES) - albedo)
    return _surface(Maps(height, albedo, spec.astype(np.float32)), rng.uniform(8, 20))


_PAINTS = (
    (0.6, 0.05, 0.05),
    (0.08, 0.18, 0.5),
    (0.86, 0.87, 0.87),
    (0.04, 0.04, 0.05),
    (0.55, 0.56, 0.58),
    (0.85, 0.65, 0.08),
    (0.1, 0.35, 0.2),
    (0.9, 0.4, 0.08),
)


def painted_panel(rng: np.random.Generator, size: int) -> Scene:
    """Glossy paint with orange peel over a curved panel, sometimes a panel gap or a crease."""
    px = size / 128
    u, v = local_frame(size, (size / 2, size / 2), rng.uniform(0, np.pi))
    peel = noise(rng, size, size / (rng.uniform(3, 5) * px))
    height = px * 0.05 * peel + np.float32(rng.uniform(-0.3, 0.3) / size) * u * u
    albedo = pick_colour(rng, _PAINTS, 0.05) * np.ones_like(u)
    spec = _filled(size, rng.uniform(0.5, 0.9))
    feature = rng.integers(3)
    line = np.float32(rng.uniform(-0.3, 0.3) * size)
    if feature == 1:  # gap between two panels
        gap = coverage(np.abs(v - line) - np.float32(rng.uniform(0.6, 1.6) * px))
        bevel = np.exp(-(((v - line) / np.float32(3 * px)) ** 2))
        height -= np.float32(3 * px) * bevel
        albedo *= 1 - 0.9 * gap
    elif feature == 2:  # body line: two flats meeting along a rounded ridge
        height -= np.float32(rng.uniform(0.1, 0.25)) * np.sqrt((v - line) ** 2 + np.float32(4 * px * px))
    if rng.random() < 0.4:  # metallic paint: sparkling flakes
        flake = noise(rng, size, size)
        albedo *= 1 + 0.05 * flake
        spec *= 1 + 0.15 * flake
    return _surface(Maps(height, albedo, spec), rng.uniform(50, 150))


_MASKS = ((0.08, 0.32, 0.14), (0.06, 0.16, 0.4), (0.05, 0.05, 0.06), (0.45, 0.06, 0.05), (0.85, 0.85, 0.8))
_FINISHES = ((0.85, 0.68, 0.32), (0.78, 0.78, 0.76))  # gold, tin-lead


def _rect(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle, (4, 2) float64 board coordinates."""
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


class _Board:
    """Drawing canvases for a circuit board, in board coordinates turned onto the image."""

    LAYERS = ("copper", "finish", "silk", "dark", "light", "metal", "drill")

    def __init__(self, size: int, centre, angle: float):
        self.size = size
        cos, sin = np.cos(angle), np.sin(angle)
        self.turn = np.array([[cos, -sin], [sin, cos]])
        self.centre = np.asarray(centre)
        self.layers = {name: np.zeros((size, size), np.uint8) for name in self.LAYERS}
        self.height = np.zeros((size, size), np.uint8)  # component heights, quarter pixels

    def _pts(self, points) -> np.ndarray:
        """Board points (N, 2) to image points in 1/16 pixels, (N, 1, 2) int32."""
        image = np.asarray(points) @ self.turn.T + self.centre
        return np.rint(image * 16).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, layer: str, points, height: float = 0.0) -> None:
        pts = self._pts(points)
        cv2.fillPoly(self.layers[layer], [pts], 255, cv2.LINE_AA, shift=4)
        if height:
            cv2.fillPoly(self.height, [pts], round(4 * height), cv2.LINE_AA, shift=4)

    def line(self, layer: str, points, width: float) -> None:
        thickness = max(1, round(width))
        cv2.polylines(self.layers[layer], [self._pts(points)], False, 255, thickness, cv2.LINE_AA, 4)

    def dot(self, layer: str, point, radius: float) -> None:
        x, y = self._pts([point])[0, 0].tolist()
        cv2.circle(self.layers[layer], (x, y), round(radius * 16), 255, -1, cv2.LINE_AA, shift=4)


def _trace_route(rng: np.random.Generator, half: float, step: float) -> np.ndarray:
    """A trace: 2-4 straight runs turning by 45 or 90 degrees, (N, 2) board coordinates."""
    points = [rng.uniform(-half, half, 2)]
    heading = rng.integers(4) * 2  # eighths of a turn; start axis-aligned
    for _ in range(rng.integers(2, 5)):
        direction = np.array([np.cos(heading * np.pi / 4), np.sin(heading * np.pi / 4)])
        points.append(points[-1] + direction * rng.uniform(0.5, 3) * step)
        heading += rng.choice((-2, -1, 1, 2))
    return np.array(points)


def _draw_components(board: _Board, rng: np.random.Generator, k: float) -> None:
    """Two-terminal chips and small ICs with pads, pins and silkscreen outlines; `k` is the scale."""
    for _ in range(rng.integers(2, 6)):
        cx, cy = rng.uniform(-0.4, 0.4, 2) * board.size
        if rng.random() < 0.6:  # chip resistor or capacitor, along x or y
            length, width = rng.uniform(6, 11) * k, rng.uniform(3, 5) * k
            turned = rng.random() < 0.5

            def part(x: float, w: float, h: float, cx=cx, cy=cy, turned=turned) -> np.ndarray:
                return _rect(cx, cy + x, h, w) if turned else _rect(cx + x, cy, w, h)

            for end in (-1, 1):
                board.poly("finish", part(end * length * 0.42, length * 0.34, width * 1.25))
                board.poly("metal", part(end * length * 0.4, length * 0.22, width), 1.6 * k)
            body = "dark" if rng.random() < 0.5 else "light"
            board.poly(body, part(0, length * 0.6, width), 1.8 * k)
            board.line("silk", part(0, length * 1.4, width * 1.8)[[0, 1, 2, 3, 0]], 0.6 * k)
        else:  # small outline IC, pins on two sides
            length, width = rng.uniform(10, 18) * k, rng.uniform(7, 11) * k
            pins = rng.integers(3, 8)
            for i in range(pins):
                x = (i - (pins - 1) / 2) * length / pins
                for side in (-1, 1):
                    pad_y, pin_y = cy + side * (width / 2 + 2 * k), cy + side * (width / 2 + 1.4 * k)
                    board.poly("finish", _rect(cx + x, pad_y, 1.6 * k, 3.5 * k))
                    board.poly("metal", _rect(cx + x, pin_y, 1 * k, 2.8 * k), 1.0 * k)
            board.poly("dark", _rect(cx, cy, length, width), 3 * k)
            board.dot("silk", (cx - length * 0.38, cy + width * 0.25), 0.9 * k)
            board.line("silk", _rect(cx, cy, length + 3 * k, width + 8 * k)[[0, 1, 2, 3, 0]], 0.6 * k)


def circuit_board(rng: np.random.Generator, size: int) -> Scene:
    """Solder mask over copper traces, vias, gold or tin pads, chips and ICs, white silkscreen."""
    px = size / 128
    k = rng.uniform(0.8, 1.5) * px  # board zoom
    centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    board = _Board(size, centre, rng.integers(4) * np.pi / 2 + rng.uniform(-0.12, 0.12))
    half = 0.75 * size
    for _ in range(rng.integers(6, 14)):
        route = _trace_route(rng, half, 12 * k)
        offset = np.array([1.0, 1.0]) * rng.choice((3, 4)) * k  # a bus: the route shifted diagonally
        width = rng.choice((1, 1, 1.5, 2.5)) * k
        for copy in range(rng.choice((1, 1, 3, 5))):
            board.line("copper", route + copy * offset, width)
        if rng.random() < 0.5:  # via at the end of the route
            board.dot("finish", route[-1], 2 * k)
            board.dot("drill", route[-1], 0.9 * k)
    _draw_components(board, rng, k)
    layer = {name: canvas.astype(np.float32) / 255 for name, canvas in board.layers.items()}
    mask = pick_colour(rng, _MASKS, 0.06)
    fibres = noise(rng, size, size / (4 * k))  # the glass-fibre laminate showing through the mask
    albedo = mask * (1 + 0.04 * fibres + 0.4 * layer["copper"])  # copper lightens the mask over it
    paints = (
        ("silk", (0.9, 0.9, 0.86)),
        ("finish", _FINISHES[rng.integers(2)]),
        ("dark", (0.07, 0.07, 0.08)),
        ("light", (0.72, 0.58, 0.4)),
        ("metal", (0.8, 0.8, 0.78)),
        ("drill", (0.04, 0.04, 0.04)),
    )
    for name, colour in paints:  # bottom to top
        albedo += layer[name] * (np.array(colour, np.float32).reshape(3, 1, 1) - albedo)
    parts = cv2.GaussianBlur(board.height.astype(np.float32) / 4, (0, 0), 0.6 * px)
    height = np.float32(0.5 * px) * (layer["copper"] + layer["finish"]) + parts
    spec = 0.3 + 0.5 * (layer["finish"] + layer["metal"]) - 0.25 * (layer["dark"] + layer["light"])
    return _surface(Maps(height, albedo, np.clip(spec, 0, 1)), rng.uniform(20, 40))


# ----------------------------------------------------------------------------- objects


def _polar(size: int, centre, angle: float) -> tuple[np.ndarray, ...]:
    """Local (u, v), radius and angle around `centre`: four (S, S) float32 arrays."""
    u, v = local_frame(size, centre, angle)
    return u, v, np.hypot(u, v), np.arctan2(v, u)


_FLANGE_METALS = _METALS[:3] + (  # + bronze and painted blue, green and red
    (0.6, 0.45, 0.25),
    (0.2, 0.3, 0.55),
    (0.22, 0.4, 0.25),
    (0.55, 0.12, 0.1),
)


def cast_metal_flange(rng: np.random.Generator, size: int) -> Scene:
    """Cast disc with a raised machined hub, a bore and a circle of bolt holes, seen from above."""
    px = size / 128
    radius = rng.uniform(0.33, 0.44) * size
    centre = _place(rng, size, radius)
    _, _, rho, theta = _polar(size, centre, rng.uniform(0, TAU))
    bore, hub = radius * rng.uniform(0.16, 0.26), radius * rng.uniform(0.42, 0.52)
    bolt_r, pitch = radius * rng.uniform(0.06, 0.1), radius * rng.uniform(0.72, 0.78)
    sector = TAU / int(rng.choice((4, 6, 8)))
    phi = np.mod(theta + sector / 2, sector) - sector / 2  # angle to the nearest bolt hole
    to_bolt = np.hypot(rho * np.cos(phi) - pitch, rho * np.sin(phi))
    holes = coverage(rho - bore) + coverage(to_bolt - bolt_r)
    cover = coverage(rho - radius) * (1 - np.minimum(holes, 1))
    thick, rise = rng.uniform(0.05, 0.09) * size, rng.uniform(0.03, 0.06) * size
    on_hub = smoothstep(hub + 2 * px, hub - 2 * px, rho)
    rough = noise(rng, size, size / (1.5 * px)) * 0.2 + noise(rng, size, size / 10) * 0.25
    turned = np.sin(rho * np.float32(TAU / (1.3 * px)))  # tool marks on the machined hub face
    chamfers = 1.5 * smoothstep(radius - 3 * px, radius, rho) + smoothstep(bore + 3 * px, bore, rho)
    chamfers += smoothstep(bolt_r + 2 * px, bolt_r, to_bolt)
    height = thick + rise * on_hub - 2 * px * chamfers
    height = height + px * (rough * (1 - on_hub) + 0.12 * turned * on_hub)
    base = pick_colour(rng, _FLANGE_METALS)
    bare = rng.uniform(1.0, 1.4)  # the machined face is bare metal, brighter than the cast body
    shade = (1 + 0.08 * rough) * (1 + (bare - 1) * on_hub)
    spec = 0.25 + 0.4 * on_hub
    obj = Maps(height.astype(np.float32), base * shade, spec.astype(np.float32))
    return _on_background(rng, obj, cover, rng.uniform(15, 30), centre, radius, thick + rise)


_GLASSES = (  # amber, green, clear, cobalt glass; white plastic
    (0.45, 0.25, 0.08),
    (0.15, 0.35, 0.15),
    (0.6, 0.66, 0.64),
    (0.1, 0.15, 0.45),
    (0.86, 0.86, 0.83),
)


def bottle(rng: np.random.Generator, size: int) -> Scene:
    """A bottle seen from above: curved shoulder, neck, rolled lip and the dark opening."""
    px = size / 128
    radius = rng.uniform(0.3, 0.44) * size
    centre = _place(rng, size, radius)
    _, _, rho, _ = _polar(size, centre, 0.0)
    r = rho / np.float32(radius)
    mouth = rng.uniform(0.2, 0.28)
    lip = mouth + rng.uniform(0.07, 0.11)
    neck = lip + rng.uniform(0.05, 0.14)
    lift = 0.5 * radius
    slope = np.clip((r - neck) / (1 - neck), 0, 1)
    shoulder = lift * (0.35 + 0.65 * np.sqrt(1 - slope**2))
    across_rim = (r - (mouth + lip) / 2) / ((lip - mouth) / 2)  # -1..1 over the rolled lip
    rim = radius * 0.05 * np.sqrt(np.clip(1 - across_rim**2, 0, 1))
    inside = smoothstep(mouth + 0.01, mouth - 0.01, r)
    ripple = np.sin(rho * np.float32(TAU / (3 * px))) * smoothstep(neck, neck + 0.1, r)  # mould rings
    height = shoulder + rim - 0.3 * radius * inside + px * 0.15 * ripple
    glass = pick_colour(rng, _GLASSES, 0.05)
    bottom = np.exp(-(((r - mouth * 0.55) / 0.04) ** 2))  # the bottle's base glinting through
    shade = (1 - 0.75 * inside + 0.25 * inside * bottom) * (1 + 0.04 * noise(rng, size, 6))
    spec = (0.8 - 0.7 * inside) * np.ones_like(r)
    obj = Maps(height.astype(np.float32), glass * shade, spec.astype(np.float32))
    cover = coverage(rho - np.float32(radius))
    return _on_background(rng, obj, cover, rng.uniform(40, 90), centre, radius, lift)


_NUTS = _METALS + ((0.14, 0.14, 0.15), (0.8, 0.7, 0.4))  # + black oxide, yellow zinc


def hex_nut(rng: np.random.Generator, size: int) -> Scene:
    """A hex nut from above: chamfered corners, countersunk threaded bore showing the ground."""
    px = size / 128
    flats = rng.uniform(0.22, 0.31) * size  # centre to a flat side
    radius = flats / np.cos(np.pi / 6)
    centre = _place(rng, size, radius)
    u, v, rho, theta = _polar(size, centre, rng.uniform(0, TAU))
    hexagon = np.maximum(np.abs(u), np.abs(0.5 * u + 0.866 * v))  # distance to the farthest flat
    hexagon = np.maximum(hexagon, np.abs(0.5 * u - 0.866 * v))
    major = flats * rng.uniform(0.5, 0.6)
    minor = major * 0.84
    cover = coverage(hexagon - np.float32(flats)) * (1 - coverage(rho - np.float32(minor)))
    thick = rng.uniform(0.08, 0.12) * size
    face = flats * rng.uniform(0.92, 1.0)  # the chamfer cone starts at this radius
    sink = smoothstep(major * 1.15, major, rho)
    pitch = rng.uniform(2, 3.5) * px
    thread = np.sin(TAU * (rho / np.float32(pitch) - theta / np.float32(TAU)))  # helix from above
    turned = np.sin(rho * np.float32(TAU / (1.1 * px)))  # tool marks on the faced top
    height = thick - 0.6 * np.maximum(rho - np.float32(face), 0) - 0.15 * major * sink
    height = height + px * (0.5 * thread * smoothstep(major, minor, rho) + 0.15 * turned)
    shade = (1 - 0.55 * sink) * (1 + 0.05 * noise(rng, size, size / 3))
    spec = rng.uniform(0.5, 0.85) * (1 - 0.5 * sink)
    obj = Maps(height.astype(np.float32), pick_colour(rng, _NUTS) * shade, spec.astype(np.float32))
    return _on_background(rng, obj, cover, rng.uniform(20, 40), centre, radius, thick)


_PILLS = (
    (0.93, 0.93, 0.91),
    (0.9, 0.85, 0.7),
    (0.92, 0.66, 0.72),
    (0.95, 0.85, 0.4),
    (0.6, 0.75, 0.92),
    (0.92, 0.55, 0.25),
    (0.6, 0.25, 0.2),
    (0.3, 0.5, 0.3),
)


def pill(rng: np.random.Generator, size: int) -> Scene:
    """A round or oval tablet (sometimes scored) or a two-coloured capsule, from above."""
    px = size / 128
    if rng.random() < 0.35:  # capsule: a stadium, two halves
        width = rng.uniform(0.12, 0.17) * size
        reach = width * rng.uniform(1.3, 2.1)  # half-length of the straight part
        radius = reach + width
        centre = _place(rng, size, radius)
        u, v, _, _ = _polar(size, centre, rng.uniform(0, TAU))
        sdf = np.hypot(np.maximum(np.abs(u) - np.float32(reach), 0), v) - np.float32(width)
        depth = np.clip(-sdf / np.float32(width), 0, 1)
        split = np.float32(rng.uniform(-0.3, 0.3) * reach)
        cap = smoothstep(split + 0.7 * px, split - 0.7 * px, u)
        seam = np.exp(-(((u - split) / np.float32(0.8 * px)) ** 2))
        height = width * np.sqrt(1 - (1 - depth) ** 2) + px * (0.8 * cap - 0.6 * seam)
        colour = pick_colour(rng, _PILLS) * cap + pick_colour(rng, _PILLS) * (1 - cap)
        spec, shininess = 0.6, 50.0
    else:
        semi = rng.uniform(0.2, 0.34) * size
        aspect = 1.0 if rng.random() < 0.5 else rng.uniform(0.55, 0.8)
        radius = semi
        centre = _place(rng, size, radius)
        u, v, _, _ = _polar(size, centre, rng.uniform(0, TAU))
        k = np.hypot(u / np.float32(semi), v / np.float32(semi * aspect))
        sdf = (k - 1) * np.float32(semi * aspect)
        bevel = np.clip(-sdf / np.float32(0.15 * semi), 0, 1)
        dome = np.clip(1 - k * k, 0, 1)
        height = semi * (0.15 * np.sqrt(1 - (1 - bevel) ** 2) + rng.uniform(0.05, 0.15) * dome)
        if rng.random() < 0.5:  # score line across the short axis
            height -= 1.5 * px * np.exp(-((u / np.float32(1.2 * px)) ** 2)) * bevel
        colour = pick_colour(rng, _PILLS, 0.04)
        spec, shininess = rng.uniform(0.1, 0.5), 20.0
    powder = noise(rng, size, size / (1.2 * px))
    height = (height + 0.1 * px * powder).astype(np.float32)
    albedo = colour * (1 + 0.03 * powder) * np.ones_like(u)
    obj = Maps(height, albedo, _filled(size, spec))
    return _on_background(rng, obj, coverage(sdf), shininess, centre, radius, float(height.max()))


def _print_design(
    rng: np.random.Generator, rho: np.ndarray, theta: np.ndarray, top: float, colours: list
) -> np.ndarray:
    """Printed crown-cap top of radius `top`: a ring, a centre disc or star, lettering dashes.

    Three (3, 1, 1) `colours`: ground, ring, centre. Returns (3, S, S) float32 albedo.
    """
    r = rho / np.float32(top)
    albedo = colours[0] * np.ones_like(r)
    ring_in = rng.uniform(0.55, 0.7)
    ring = coverage((np.abs(r - ring_in - 0.06) - 0.06) * np.float32(top))
    albedo += ring * (colours[1] - albedo)
    points = rng.integers(4, 7)
    star = 0.3 + 0.1 * np.cos(points * theta) * (rng.random() < 0.5)  # disc or star outline
    albedo += coverage((r - star) * np.float32(top)) * (colours[2] - albedo)
    letters = np.abs(np.sin(theta * rng.integers(12, 30))) > 0.5  # dashes along the ring
    dashes = letters * coverage((np.abs(r - ring_in - 0.06) - 0.03) * np.float32(top))
    return albedo + dashes * (colours[0] - albedo)


def bottle_cap(rng: np.random.Generator, size: int) -> Scene:
    """A crown cap from above: printed top, rolled edge, 21 flutes crimped around the skirt."""
    px = size / 128
    radius = rng.uniform(0.28, 0.4) * size
    centre = _place(rng, size, radius)
    _, _, rho, theta = _polar(size, centre, rng.uniform(0, TAU))
    flutes = (0.5 + 0.5 * np.cos(21 * theta)).astype(np.float32)
    edge = np.float32(radius) * (1 - 0.035 * flutes)
    top = radius * rng.uniform(0.74, 0.8)
    skirt = np.clip((rho - np.float32(top)) / (edge - np.float32(top)), 0, 1)
    thick = rng.uniform(0.05, 0.08) * size
    height = thick * (1 - 0.6 * skirt**1.5) + px * (1.5 * flutes * skirt - 1.0)
    height = height + px * (1.2 * np.exp(-(((rho - np.float32(top)) / np.float32(2 * px)) ** 2)))
    height = height + px * 1.5 * np.clip(1 - (rho / np.float32(top)) ** 2, 0, 1)
    colours = [pick_colour(rng, _PAINTS, 0.05) for _ in range(3)]
    printed = _print_design(rng, rho, theta, top, colours)
    side = pick_colour(rng, _METALS[:2]) if rng.random() < 0.5 else colours[0]  # bare or painted
    on_top = smoothstep(top + px, top - px, rho)
    albedo = printed * on_top + side * (1 - on_top)
    albedo *= 1 + 0.03 * noise(rng, size, size / 4)
    spec = _filled(size, rng.uniform(0.35, 0.7))
    obj = Maps(height.astype(np.float32), albedo, spec)
    return _on_background(rng, obj, coverage(rho - edge), rng.uniform(25, 45), centre, radius, thick)


FAMILY_RENDERERS: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "brushed metal plate": brushed_metal_plate,
    "cast metal flange": cast_metal_flange,
    "woven fabric": woven_fabric,
    "wood board": wood_board,
    "leather": leather,
    "circuit board": circuit_board,
    "bottle": bottle,
    "hex nut": hex_nut,
    "pill": pill,
    "painted panel": painted_panel,
    "bottle cap": bottle_cap,
}
