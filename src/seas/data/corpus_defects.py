"""Generic defects of the procedural pretraining corpus (see `seas.data.corpus`).

A defect edits a `Scene`'s maps in place, before the scene is photographed: a scratch, cut or
crack is a groove in the height, a dent a smooth depression, a hole a deep dark pit with a rim, a
bubble a glossy dome; a spot, stain, rust, burn mark or discoloration changes the albedo, with
texture; contamination, a fibre or a loose thread lies on top; a missing piece removes part of an
object's coverage so that the ground shows; a bent edge warps an object's outline and folds it.
Edits to the object's maps only show where the object covers the image; things lying on top edit
the background's maps too.

Every size is chosen for a 128 px image and scaled by `px = S / 128`. Line-like defects come in
thin (1-2 px at 128 px) and thick variants.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from seas.data.corpus_families import (
    TAU,
    Maps,
    Scene,
    coverage,
    noise,
    pick_colour,
    pixel_grid,
    smoothstep,
)

# ----------------------------------------------------------------------------- geometry


def _site(scene: Scene, rng: np.random.Generator, reach: float) -> np.ndarray:
    """A defect centre (x, y) in pixels, on the object and at least `reach` inside the frame."""
    size = scene.size
    low, high = reach, size - 1 - reach
    candidates = np.flatnonzero(scene.cover.ravel() >= 0.99)  # every family has such an interior
    for _ in range(20):  # the object may reach beyond the safe square: draw until inside it
        index = candidates[rng.integers(len(candidates))]
        point = np.array([index % size, index // size]) + rng.uniform(-0.5, 0.5, 2)
        if low <= point.min() and point.max() <= high:
            break
    return np.clip(point, low, high) if low < high else point


def _edge_point(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A point (x, y) on an object's outer outline, and the outward unit direction there."""
    angle = rng.uniform(0, TAU)
    direction = np.array([np.cos(angle), np.sin(angle)])
    steps = np.arange(0, 1.3 * scene.radius, 0.5)
    points = np.asarray(scene.centre) + steps[:, None] * direction  # a ray from the centre
    cols, rows = np.clip(np.rint(points).astype(int), 0, scene.size - 1).T
    inside = np.flatnonzero(scene.cover[rows, cols] >= 0.5)
    return points[inside[-1] if len(inside) else 0], direction


def _curve(rng: np.random.Generator, middle, length: float, max_bend: float) -> np.ndarray:
    """A straight or bowed line of `length` pixels through `middle`: (24, 2) points (x, y).

    The bow's control point is up to `max_bend` x `length` off the chord.
    """
    angle = rng.uniform(0, np.pi)
    heading = np.array([np.cos(angle), np.sin(angle)])
    bend = middle + np.array([-heading[1], heading[0]]) * rng.uniform(-max_bend, max_bend) * length
    start, end = middle - heading * length / 2, middle + heading * length / 2
    t = np.linspace(0, 1, 24)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier


def _wander(
    rng: np.random.Generator, start, heading: float, length: float, step: float, turn: float
) -> np.ndarray:
    """A random walk of `length` pixels in `step`s, turning by ~`turn` radians a step: (N, 2)."""
    n = max(2, int(length / step))
    headings = heading + np.cumsum(rng.normal(0, turn, n))
    steps = np.stack([np.cos(headings), np.sin(headings)], 1) * step
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(steps, 0)])


def _stroke(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Coverage 0..1 of a polyline (N, 2) `width` pixels wide: (S, S) float32.

    A thin line is an anti-aliased stroke; a thick one gets a rounded groove profile from the
    distance to its centre line.
    """
    canvas = np.zeros((size, size), np.uint8)
    pts = np.rint(points * 16).astype(np.int32).reshape(-1, 1, 2)
    if width < 2.5:
        cv2.polylines(canvas, [pts], False, 255, max(1, round(width)), cv2.LINE_AA, shift=4)
        return canvas.astype(np.float32) * np.float32(min(1.0, width) / 255)
    cv2.polylines(canvas, [pts], False, 255, 1, cv2.LINE_8, shift=4)
    dist = cv2.distanceTransform(255 - canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1 - (dist / np.float32(width / 2)) ** 2, 0, 1)


def _fill(size: int, outline: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage 0..1 of a polygon (N, 2): (S, S) float32."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.rint(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255


def _blob(size: int, rng: np.random.Generator, centre, radius: float, wobble: float) -> np.ndarray:
    """Depth in a wobbly disc: (S, S) float32, 1 at the centre, 0 on the outline, < 0 outside.

    The outline's radius varies by up to about `wobble` (a share of `radius`).
    """
    xx, yy = pixel_grid(size)
    dx, dy = xx - np.float32(centre[0]), yy - np.float32(centre[1])
    theta = np.arctan2(dy, dx)
    amps, phases = rng.uniform(0, wobble / 3, 4), rng.uniform(0, TAU, 4)
    outline = 1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amps, phases))
    return 1 - np.hypot(dx, dy) / (np.float32(radius) * outline.astype(np.float32))


def _gauss(size: int, centre, radius: float) -> np.ndarray:
    """Round Gaussian bump exp(-r^2 / radius^2) at `centre` (x, y): (S, S) float32."""
    xx, yy = pixel_grid(size)
    r2 = (xx - np.float32(centre[0])) ** 2 + (yy - np.float32(centre[1])) ** 2
    return np.exp(-r2 / np.float32(radius**2))


def _layers(scene: Scene, on_top: bool) -> list[Maps]:
    """Maps a defect edits: the object's, plus the background's for things lying on top."""
    return [scene.obj] + ([scene.back] if on_top and scene.back is not None else [])


def _paint(maps: Maps, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Blend the albedo towards `colour` ((3, 1, 1) or (3, S, S)) by `alpha` (S, S) 0..1."""
    maps.albedo += alpha * (colour - maps.albedo)


def _colour(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)


def _line_width(rng: np.random.Generator, px: float, thin: tuple, thick: tuple) -> float:
    """A width in pixels: half the time `thin` (x px), else `thick`; never under 1."""
    low, high = thin if rng.random() < 0.5 else thick
    return max(1.0, rng.uniform(low, high) * px)


# ----------------------------------------------------------------------------- grooves


def scratch(scene: Scene, rng: np.random.Generator) -> None:
    """A groove, straight or curved, sometimes a few parallel ones; bright or dark, fading."""
    size, px = scene.size, scene.size / 128
    width = _line_width(rng, px, (0.8, 1.8), (2.5, 5))
    line = _curve(rng, _site(scene, rng, 0.15 * size), rng.uniform(0.15, 0.65) * size, 0.25)
    profile = _stroke(size, line, width)
    if rng.random() < 0.3:  # abrasion: parallel scratches
        shift = np.array([1.0, -1.0]) * rng.uniform(2, 4) * px
        for k in range(1, rng.integers(2, 5)):
            profile = np.maximum(profile, _stroke(size, line + k * shift, width))
    profile *= np.clip(0.75 + 0.35 * noise(rng, size, 4), 0.2, 1)  # pressure varies along it
    brighten = rng.choice((-1, 1)) * rng.uniform(0.25, 0.6)  # bare metal or primer, or grime
    scene.obj.height -= np.float32(rng.uniform(0.6, 1.6) * max(px, width / 3)) * profile
    scene.obj.albedo *= 1 + np.float32(brighten) * profile
    scene.obj.spec *= 1 - 0.5 * profile


def crack(scene: Scene, rng: np.random.Generator) -> None:
    """A jagged dark crack, one main path with one to three branches."""
    size, px = scene.size, scene.size / 128
    heading = rng.uniform(0, TAU)
    start = _site(scene, rng, 0.1 * size)
    main = _wander(rng, start, heading, rng.uniform(0.15, 0.55) * size, 2 * px, 0.25)
    width = _line_width(rng, px, (0.8, 1.6), (2, 3.5))
    profile = _stroke(size, main, width)
    for _ in range(rng.integers(1, 4)):
        fork = main[rng.integers(len(main) // 4, len(main))]
        turn = rng.choice((-1, 1)) * rng.uniform(0.4, 1.1)
        branch = _wander(rng, fork, heading + turn, rng.uniform(0.05, 0.2) * size, 2 * px, 0.3)
        profile = np.maximum(profile, _stroke(size, branch, max(1.0, 0.7 * width)))
    scene.obj.height -= np.float32(rng.uniform(1, 3) * px) * profile
    scene.obj.albedo *= 1 - np.float32(rng.uniform(0.5, 0.85)) * profile
    scene.obj.spec *= 1 - profile


def cut(scene: Scene, rng: np.random.Generator) -> None:
    """A sharp slit, widest in the middle, dark inside, with slightly raised lips."""
    size, px = scene.size, scene.size / 128
    line = _curve(rng, _site(scene, rng, 0.16 * size), rng.uniform(0.08, 0.4) * size, 0.08)
    tangent = np.gradient(line, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    half = rng.uniform(0.6, 3) * px * np.sin(np.linspace(0, np.pi, len(line)))[:, None] ** 0.7
    slit = _fill(size, np.vstack([line + normal * half, (line - normal * half)[::-1]]))
    lips = np.clip(cv2.GaussianBlur(slit, (0, 0), 1.2 * px) * 2 - slit, 0, 1)
    scene.obj.height += np.float32(0.6 * px) * lips - np.float32(3 * px) * slit
    scene.obj.albedo *= 1 - np.float32(rng.uniform(0.75, 0.95)) * slit
    scene.obj.spec *= 1 - slit


# ----------------------------------------------------------------------------- relief and shape


def hole(scene: Scene, rng: np.random.Generator) -> None:
    """A deep dark pit with steep walls and a raised rim."""
    size, px = scene.size, scene.size / 128
    radius = rng.uniform(0.02, 0.09) * size
    depth = _blob(size, rng, _site(scene, rng, 2 * radius), radius, 0.25)
    pit = smoothstep(0.0, 0.35, depth)
    rim = np.exp(-((depth / 0.25) ** 2)) * (depth < 0)
    scene.obj.height += np.float32(0.25 * radius) * rim - np.float32(2.5 * radius + px) * pit
    scene.obj.albedo *= 1 - np.float32(rng.uniform(0.75, 0.92)) * pit
    scene.obj.spec *= 1 - pit


def dent(scene: Scene, rng: np.random.Generator) -> None:
    """A smooth elliptical depression, sometimes creased along its long axis."""
    size = scene.size
    radius = rng.uniform(0.05, 0.13) * size
    angle = rng.uniform(0, np.pi)
    cx, cy = _site(scene, rng, 1.5 * radius).astype(np.float32)
    xx, yy = pixel_grid(size)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along = ((xx - cx) * cos + (yy - cy) * sin) / np.float32(radius)
    across = ((yy - cy) * cos - (xx - cx) * sin) / np.float32(radius * rng.uniform(0.45, 1))
    bowl = np.exp(-(along**2 + across**2))
    depth = rng.uniform(0.35, 0.7) * radius
    if rng.random() < 0.4:
        bowl += 0.5 * np.exp(-((across / 0.2) ** 2) - along**2 / 2)
    scene.obj.height -= np.float32(depth) * bowl
    scene.obj.albedo *= 1 - 0.06 * bowl  # scuffed paint or oxide in the hollow


def bubble(scene: Scene, rng: np.random.Generator) -> None:
    """One to four round blisters: glossy domes."""
    size = scene.size
    centre = _site(scene, rng, 0.08 * size)
    xx, yy = pixel_grid(size)
    for _ in range(rng.integers(1, 5)):
        radius = rng.uniform(0.02, 0.06) * size
        cx, cy = (centre + rng.normal(0, 0.03 * size, 2)).astype(np.float32)
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(radius**2)
        dome = np.sqrt(np.clip(1 - r2, 0, 1))
        scene.obj.height += np.float32(rng.uniform(0.4, 0.9) * radius) * dome
        scene.obj.spec += 0.3 * (dome > 0)
        scene.obj.albedo *= 1 + 0.1 * dome


def bent_edge(scene: Scene, rng: np.random.Generator) -> None:
    """Part of an object's outline pushed in or out and folded up or down along a crease."""
    size = scene.size
    point, outward = _edge_point(scene, rng)
    reach = rng.uniform(0.08, 0.16) * size  # extent of the bent part
    push = np.float32(rng.choice((-1, 1)) * rng.uniform(0.25, 0.55) * reach)
    xx, yy = pixel_grid(size)
    dx, dy = xx - np.float32(point[0]), yy - np.float32(point[1])
    weight = np.exp(-(dx * dx + dy * dy) / np.float32(reach**2))
    ox, oy = outward.astype(np.float32)
    obj = scene.obj
    stack = cv2.merge([obj.height, *obj.albedo, obj.spec, scene.cover])  # (S, S, 6)
    # each pixel takes the maps from `push` further out (near the edge point): the edge moves in
    map_x, map_y = xx + push * ox * weight, yy + push * oy * weight
    warped = cv2.remap(stack, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    height, red, green, blue, obj.spec, scene.cover = cv2.split(warped)
    crease = np.float32(rng.uniform(0.3, 0.7) * reach)  # the fold line, this far inside the edge
    beyond = np.maximum(dx * ox + dy * oy + crease, 0)
    slope = np.float32(rng.choice((-1, 1)) * rng.uniform(0.6, 1.4))  # bent up or down
    obj.height = height + slope * beyond * np.sqrt(weight)
    obj.albedo = np.stack([red, green, blue])


def missing_piece(scene: Scene, rng: np.random.Generator) -> None:
    """A chipped-off bite of an object's outline: the ground shows, a rough broken face rims it."""
    size, px = scene.size, scene.size / 128
    point, outward = _edge_point(scene, rng)
    radius = rng.uniform(0.06, 0.14) * size
    depth = _blob(size, rng, point + outward * radius * rng.uniform(0, 0.5), radius, 0.5)
    depth += 0.12 * noise(rng, size, size / (3 * px))  # jagged fracture line
    bite = coverage(-depth * np.float32(radius))
    face = smoothstep(-0.25, 0.0, depth) * (1 - bite)  # the broken face, just inside the new edge
    scene.cover *= 1 - bite
    scene.obj.height -= np.float32(0.4 * scene.lift) * face
    scene.obj.albedo *= 1 - 0.3 * face


# ----------------------------------------------------------------------------- colour


def spot(scene: Scene, rng: np.random.Generator) -> None:
    """One to three small specks, mostly dark."""
    size, px = scene.size, scene.size / 128
    centre = _site(scene, rng, 0.06 * size)
    factor = rng.uniform(0.1, 0.45) if rng.random() < 0.8 else rng.uniform(1.6, 2.2)
    for _ in range(rng.integers(1, 4)):
        speck = _gauss(size, centre + rng.normal(0, 0.02 * size, 2), rng.uniform(1.2, 3.5) * px)
        scene.obj.albedo *= 1 + np.float32(factor - 1) * speck
        scene.obj.height += np.float32(0.3 * px) * speck


_STAIN_TINTS = (  # oil, coffee, coolant, green liquid, ink
    (0.45, 0.35, 0.2),
    (0.55, 0.35, 0.15),
    (0.45, 0.65, 0.95),
    (0.55, 0.85, 0.45),
    (0.3, 0.3, 0.55),
)


def stain(scene: Scene, rng: np.random.Generator) -> None:
    """A soft textured blob tinting the surface: glossy oil, a dried water ring, a liquid."""
    size = scene.size
    radius = rng.uniform(0.05, 0.2) * size
    depth = _blob(size, rng, _site(scene, rng, radius), radius, 0.5)
    inside = smoothstep(0.0, 0.15, depth)
    kind = rng.integers(3)
    if kind == 1:  # dried water: a darker tide line at the edge
        density = inside * (0.15 + 0.6 * np.exp(-((depth / 0.08) ** 2)))
    else:
        density = inside * (0.6 + 0.4 * smoothstep(0.0, 0.6, depth))
    density *= np.clip(1 + 0.25 * noise(rng, size, 10), 0.5, 1.3) * np.float32(rng.uniform(0.7, 1))
    tint = _colour(_STAIN_TINTS[rng.integers(len(_STAIN_TINTS))]) * np.float32(rng.uniform(0.85, 1.1))
    scene.obj.albedo *= 1 + density * (tint - 1)
    scene.obj.spec += (0.4 if kind == 0 else -0.1) * density


def rust(scene: Scene, rng: np.random.Generator) -> None:
    """A ragged orange-brown patch, rough and matt."""
    size, px = scene.size, scene.size / 128
    radius = rng.uniform(0.05, 0.18) * size
    depth = _blob(size, rng, _site(scene, rng, radius), radius, 0.6)
    patch = smoothstep(0.0, 0.25, depth + 0.3 * noise(rng, size, size / (4 * px)))
    mix = smoothstep(-1, 1, noise(rng, size, size / (3 * px)))  # orange to dark brown
    colour = _colour((0.62, 0.3, 0.1)) * mix + _colour((0.3, 0.14, 0.06)) * (1 - mix)
    grain = noise(rng, size, size / px)
    _paint(scene.obj, patch, colour * (1 + 0.12 * grain))
    scene.obj.height += px * patch * (0.5 + 0.4 * grain)
    scene.obj.spec *= 1 - patch


def burn_mark(scene: Scene, rng: np.random.Generator) -> None:
    """A charred black centre fading out through a scorched brown halo."""
    size, px = scene.size, scene.size / 128
    radius = rng.uniform(0.04, 0.15) * size
    depth = _blob(size, rng, _site(scene, rng, radius), radius, 0.5)
    depth += 0.15 * noise(rng, size, size / (4 * px))
    char, scorch = smoothstep(0.25, 0.7, depth), smoothstep(0.0, 0.35, depth)
    scorched = _colour((0.45, 0.28, 0.12)) * scene.obj.albedo.mean(0)  # browned, as dark as before
    _paint(scene.obj, scorch * np.float32(rng.uniform(0.5, 0.8)), scorched)
    _paint(scene.obj, char, _colour((0.06, 0.05, 0.04)))
    scene.obj.height += px * 0.6 * char * noise(rng, size, size / (2 * px))
    scene.obj.spec *= 1 - scorch


_DISCOLOURS = (  # yellowed, darkened, blued, reddened, greened: per-channel factors
    (1.25, 1.05, 0.55),
    (0.6, 0.6, 0.62),
    (0.8, 0.95, 1.35),
    (1.3, 0.8, 0.7),
    (0.85, 1.2, 0.8),
)


def discoloration(scene: Scene, rng: np.random.Generator) -> None:
    """A broad, soft-edged patch of yellowed, darkened, tinted or faded colour."""
    size = scene.size
    radius = rng.uniform(0.08, 0.26) * size
    depth = _blob(size, rng, _site(scene, rng, 0.5 * radius), radius, 0.5)
    patch = smoothstep(0.0, 0.4, depth) * np.clip(1 + 0.3 * noise(rng, size, 6), 0.4, 1.2)
    patch *= np.float32(rng.uniform(0.6, 1))
    if rng.random() < 0.25:  # faded towards a pale grey
        _paint(scene.obj, patch * 0.6, _colour((0.75, 0.74, 0.72)))
    else:
        scene.obj.albedo *= 1 + patch * (_colour(_DISCOLOURS[rng.integers(len(_DISCOLOURS))]) - 1)


# ----------------------------------------------------------------------------- lying on top

_PARTICLES = ((0.45, 0.43, 0.4), (0.08, 0.07, 0.06), (0.85, 0.85, 0.82), (0.5, 0.35, 0.2))
_FIBRES = ((0.06, 0.05, 0.04), (0.35, 0.22, 0.12), (0.9, 0.9, 0.88), (0.2, 0.3, 0.7))


def contamination(scene: Scene, rng: np.random.Generator) -> None:
    """A cluster of foreign particles (dust, grime, metal chips, sawdust) lying on the surface."""
    size, px = scene.size, scene.size / 128
    centre = _site(scene, rng, 0.08 * size)
    spread = rng.uniform(0.02, 0.1) * size
    canvas = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(4, 30)):
        x, y = np.rint((centre + rng.normal(0, spread, 2)) * 16).astype(int).tolist()
        radius = round(rng.uniform(0.5, 2.5) * px * 16)
        cv2.circle(canvas, (x, y), radius, 255, -1, cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255
    colour = pick_colour(rng, _PARTICLES, 0.1)
    for maps in _layers(scene, on_top=True):
        _paint(maps, alpha, colour)
        maps.height += np.float32(1.5 * px) * alpha
        maps.spec *= 1 - alpha


def fibre(scene: Scene, rng: np.random.Generator) -> None:
    """A hair or textile fibre lying across the surface, dark or light."""
    size, px = scene.size, scene.size / 128
    start, heading = _site(scene, rng, 0.1 * size), rng.uniform(0, TAU)
    path = _wander(rng, start, heading, rng.uniform(0.2, 0.6) * size, 2 * px, 0.15)
    alpha = _stroke(size, path, max(1.0, rng.uniform(0.7, 1.8) * px))
    colour = pick_colour(rng, _FIBRES, 0.1)
    for maps in _layers(scene, on_top=True):
        _paint(maps, alpha, colour)
        maps.height += np.float32(1.2 * px) * alpha


def frayed_thread(scene: Scene, rng: np.random.Generator) -> None:
    """Loose threads curling off the weave, sometimes beside the gap a pulled thread left."""
    size, px = scene.size, scene.size / 128
    root = _site(scene, rng, 0.12 * size)
    x, y = np.rint(root).astype(int).tolist()
    colour = scene.obj.albedo[:, y, x].reshape(3, 1, 1) * np.float32(rng.uniform(1.1, 1.4))
    heading = rng.uniform(0, TAU)
    if rng.random() < 0.5:
        gap = _stroke(size, _curve(rng, root, rng.uniform(0.15, 0.4) * size, 0.02), 2.5 * px)
        scene.obj.height -= np.float32(1.5 * px) * gap
        scene.obj.albedo *= 1 - 0.45 * gap
    alpha = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(2, 6)):
        length = rng.uniform(0.1, 0.3) * size
        strand = _wander(rng, root, heading + rng.normal(0, 0.5), length, 1.5 * px, 0.18)
        alpha = np.maximum(alpha, _stroke(size, strand, rng.uniform(1.2, 2.5) * px))
    _paint(scene.obj, alpha, colour)
    scene.obj.height += np.float32(2 * px) * alpha


DEFECT_DRAWERS: dict[str, Callable[[Scene, np.random.Generator], None]] = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "dent": dent,
    "spot": spot,
    "stain": stain,
    "rust": rust,
    "missing piece": missing_piece,
    "contamination": contamination,
    "cut": cut,
    "bent edge": bent_edge,
    "frayed thread": frayed_thread,
    "burn mark": burn_mark,
    "discoloration": discoloration,
    "fibre": fibre,
    "bubble": bubble,
}
