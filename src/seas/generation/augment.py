"""``seas augment``: defects of chosen types drawn on the user's own images, inside given regions.

For input image ``j`` (sorted by name) and copy ``k < N`` the output has index ``i = j x N + k``
and seed ``seed + i``. Its regions, one per requested type, come from the user's masks
(``masks``: a file named like the image, per type) or are moved real training masks
(``real-masks``: :meth:`seas.generation.placement.Placer.separate`, drawn at the run's
resolution and resized to the image by nearest neighbour, never overlapping).

One image, at its own size ``(H, W)``:

1. the image is stretched to the run's square ``R x R`` (grey for a grey product) -> ``x``;
2. for each type ``t_k`` in order: its region, taken to ``R x R`` (a pixel is in when any of the
   image's pixels under it is), is sampled as placed generation with ``x`` as the reference
   (:meth:`seas.generation.pipeline.SeaSPipeline.sample_on`: start latent, and the latent kept
   outside the region grown by ``region_dilation`` cells); inside the region ``x`` takes the
   decoded pixels, so the next type is drawn on an image that already holds this one's defect;
3. at the input's size, the output takes the decoded image (resized back, bilinear, rounded)
   exactly inside the type's region and keeps the input's bytes everywhere else: **outside the
   union of the regions the output equals the input**. The type's mask is the mask head's
   (mean probability resized bilinearly, ``> mask_threshold``) inside the region; where the
   head finds nothing there, the region itself (``mask_source`` ``placed``).

Outputs are written like ``seas generate``'s (:class:`~seas.generation.generated.GeneratedFolder`:
manifest, resumable, several processes), at the input's size and mode (grey stays grey, RGB
stays RGB, other modes become RGB), with the kind's label ``t1`` or ``t1+t2``:

* ``image``, ``mask`` (the union of the types' masks, 0/255), ``prob`` (each type's
  probability inside its region, 0 elsewhere, 8-bit), ``region`` (the union of the regions);
* with several types also ``classes`` (class-index PNG: 0 normal, ``k`` the ``k``-th type of
  ``--type``; palette :data:`PALETTE`) and ``type-mask/<type>`` (each type's binary mask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seas.config import AugmentConfig, GenerationConfig, GenerationSwitches
from seas.data.readers import IMAGE_SUFFIXES
from seas.errors import ConfigError, DataError
from seas.files.checks import ProblemList
from seas.files.images import mask_file_problem, read_mask, read_rgb
from seas.generation.generated import FORMAT, GeneratedFolder, name_width, output_paths
from seas.run import Run

# Class-index masks: palette colours of classes 0..7 (0 = normal, black); classes from 8 on
# repeat the colours 1..7. A reader takes the pixel values (PIL mode "P"), not the colours.
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240)]


def palette_bytes() -> list[int]:
    """The 256-entry palette of a class-index PNG, flattened (PIL's ``putpalette``)."""
    colours = [PALETTE[0]] + [PALETTE[1 + (k - 1) % (len(PALETTE) - 1)] for k in range(1, 256)]
    return [value for colour in colours for value in colour]


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """The images to augment and where each type goes on them (all read and checked)."""

    images: list[Path]  # sorted by name
    sizes: list[tuple[int, int]]  # (width, height) of each image
    masks: list[list[Path]] | None  # masks placement: per image, one file per type (in --type order)


def image_files(folder: Path, option: str) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{option} {folder}: not a folder; give a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{option} {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}); add images or fix the path")
    return files


def read_inputs(images: str | Path, aug: AugmentConfig, run_types: Sequence[str]) -> Inputs:
    """Every input image and mask file, checked before any model is loaded: unknown types,
    masks missing, extra or of another size than their image, unreadable files, a region that
    covers nothing or the whole image, and regions of several types that overlap. All
    problems are collected and raised together (one line each)."""
    problems = ProblemList()
    types = aug.types
    if not types:
        raise ConfigError(f"--type: name the anomaly type to draw ({', '.join(run_types)}), or several joined by commas")
    for name in types:
        if name not in run_types:
            problems.add(f"--type {name}: the run has no such type; choose from {', '.join(run_types)}")
    if len(set(types)) != len(types):
        problems.add(f"--type {aug.type}: names a type twice; give each type once")
    files = image_files(Path(images), "--images")
    sizes = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                sizes.append(img.size)
        except (OSError, SyntaxError) as err:
            problems.add(f"{path}: unreadable image ({err}); re-export it or remove it from --images")
            sizes.append((0, 0))
    problems.raise_any()
    masks = None
    if aug.placement == "masks":
        masks = _pair_masks(files, sizes, types, aug.masks, problems)
    problems.raise_any()
    return Inputs(files, sizes, masks)


def _pair_masks(files: list[Path], sizes: list, types: list[str], masks: str | None,
                problems: ProblemList) -> list[list[Path]]:
    """Per image, its mask file of each type: ``DIR/<stem>.*`` (one type, or ``DIR/<type>/``
    when that subfolder exists) or ``DIR/<type>/<stem>.*`` (several types)."""
    if masks is None:
        raise ConfigError("--placement masks needs --masks DIR (a mask named like each image, white = defect), "
                          "or use --placement real-masks")
    root = Path(masks)
    if not root.is_dir():
        raise ConfigError(f"--masks {root}: not a folder; give a folder of masks named like the images")
    folders = {t: root / t if (len(types) > 1 or (root / t).is_dir()) else root for t in types}
    by_type, miscounted = {}, set()
    for name, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"--masks {root}: no subfolder {name}/; with several types give one folder of masks "
                              f"per type ({', '.join(f'{root}/{t}/' for t in types)})")
        found = image_files(folder, "--masks")
        stems = {}
        for path in found:
            if path.stem in stems:
                problems.add(f"{path}: a second mask named {path.stem} in {folder}; keep one file per image")
            stems[path.stem] = path
        extra = sorted(set(stems) - {f.stem for f in files})
        if extra or len(found) != len(files):  # said once for the folder, not per image
            miscounted.add(name)
            problems.add(f"{stems[extra[0]]}: matches no image in --images; name each mask like its image"
                         if extra else f"--masks {folder}: {len(found)} masks for {len(files)} images in --images; "
                         "give one mask per image, named like it")
        by_type[name] = stems
    pairs = []
    for path, (width, height) in zip(files, sizes):
        row, union = [], np.zeros((height, width), dtype=bool)
        for name in types:
            mask = by_type[name].get(path.stem)
            if mask is None:
                if name not in miscounted:
                    problems.add(f"{path}: no mask named {path.stem}.* in {folders[name]}; add it (white = defect)")
                continue
            row.append(mask)
            region = _read_region(mask, (width, height), path, problems)
            if region is None:
                continue
            if (region & union).any():
                problems.add(f"{mask}: overlaps the region of another type on {path.name}; regions of several types "
                             "must not overlap")
            union |= region
        pairs.append(row)
    return pairs


def _read_region(mask: Path, size: tuple[int, int], image: Path, problems: ProblemList) -> np.ndarray | None:
    """``(H, W)`` bool of a mask file, or ``None`` with the problem recorded."""
    try:
        region = read_mask(mask)
    except DataError as err:
        problems.add(str(err))
        return None
    problem = mask_file_problem(mask)
    if problem:
        problems.add(problem)
        return None
    if region.shape[::-1] != tuple(size):
        problems.add(f"{mask}: is {region.shape[1]}x{region.shape[0]} but its image {image.name} is "
                     f"{size[0]}x{size[1]}; give masks of the images' sizes")
        return None
    if not region.any():
        problems.add(f"{mask}: covers nothing (no pixel at half range or above); draw the region white")
        return None
    if region.all():
        problems.add(f"{mask}: covers the whole image, so nothing of {image.name} would be kept; draw a smaller region")
        return None
    return region


def read_image(path: Path) -> np.ndarray:
    """An input image as uint8: ``(H, W)`` for a grey file, ``(H, W, 3)`` otherwise (RGB; other
    modes are converted to RGB)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("L", "RGB"):
            return np.asarray(img).copy()
    return read_rgb(path)


def to_square(region: np.ndarray, resolution: int) -> np.ndarray:
    """A region ``(H, W)`` bool -> ``(R, R)`` bool: a pixel is in when any input pixel under it is."""
    covered = cv2.resize(region.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_AREA)
    return covered > 0


def to_size(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A region ``(R, R)`` bool -> ``(H, W)`` bool for ``size`` = (width, height), nearest neighbour."""
    return cv2.resize(region.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


# ----------------------------------------------------------------------------- drawing


@dataclass
class Augmented:
    """One augmented image, at the input's size."""

    image: np.ndarray  # (H, W) or (H, W, 3) uint8, as the input
    masks: list[np.ndarray]  # per type, (H, W) bool
    regions: list[np.ndarray]  # per type, (H, W) bool
    prob: np.ndarray  # (H, W) float32: each type's probability inside its region, 0 elsewhere
    sources: list[str]  # per type: "head", or "placed" where the head found nothing in the region

    @property
    def mask(self) -> np.ndarray:
        return np.logical_or.reduce(self.masks)

    @property
    def region(self) -> np.ndarray:
        return np.logical_or.reduce(self.regions)

    @property
    def classes(self) -> np.ndarray:
        """``(H, W)`` uint8: 0 normal, ``k`` where the ``k``-th type's mask is."""
        index = np.zeros(self.masks[0].shape, dtype=np.uint8)
        for k, mask in enumerate(self.masks, 1):
            index[mask] = k
        return index


def augment_batch(pipe, types: Sequence[str], images: list[np.ndarray], regions: list[list[np.ndarray]],
                  indices: Sequence[int], cfg: GenerationConfig) -> list[Augmented]:
    """Draw ``types`` (in order) into ``regions[b][k]`` ``(H_b, W_b)`` bool of ``images[b]``
    (uint8, ``(H, W)`` or ``(H, W, 3)``) with a loaded :class:`~seas.generation.pipeline.SeaSPipeline`
    (module docstring); image ``b`` is seeded ``cfg.seed + indices[b]``."""
    import torch

    from seas.data.transforms import fit_frame, image_to_tensor

    size = pipe.resolution
    rgb = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    current = torch.stack([image_to_tensor(im, size, fit_frame(im.shape[1::-1], "stretch"), pipe.grey)
                           for im in rgb]).to(pipe.device, pipe.dtype)  # (B, 3, R, R) in [-1, 1]
    outputs = [im.copy() for im in images]
    masks = [[] for _ in images]  # per image, per type: (H, W) bool
    sources = [[] for _ in images]  # per image, per type: "head" or "placed"
    probs = [np.zeros(im.shape[:2], np.float32) for im in images]  # per image: (H, W)
    for k, name in enumerate(types):
        squares = np.stack([to_square(r[k], size) for r in regions])  # (B, R, R)
        pixels, prob = pipe.sample_on(name, current, squares, indices, cfg)
        inside = torch.from_numpy(squares[:, None]).to(pixels.device)
        current = torch.where(inside, pixels, current)  # the next type is drawn on this one's result
        drawn = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()  # (B, R, R, 3)
        for b, image in enumerate(images):
            height, width = image.shape[:2]
            region = regions[b][k]
            back = cv2.resize(drawn[b], (width, height), interpolation=cv2.INTER_LINEAR)
            if pipe.grey or image.ndim == 2:
                grey = back @ np.array([0.299, 0.587, 0.114], np.float32)  # luminance, as the pipeline's
                back = grey if image.ndim == 2 else np.repeat(grey[..., None], 3, axis=2)
            outputs[b][region] = np.clip(np.round(back), 0, 255).astype(np.uint8)[region]
            if prob is None:
                mask = region.copy()
            else:
                p = cv2.resize(prob[b], (width, height), interpolation=cv2.INTER_LINEAR)
                probs[b][region] = p[region]
                mask = (p > cfg.mask_threshold) & region
            sources[b].append("head" if mask.any() else "placed")
            masks[b].append(mask if mask.any() else region.copy())
    return [Augmented(outputs[b], masks[b], list(regions[b]), probs[b], sources[b]) for b in range(len(images))]


# ----------------------------------------------------------------------------- the folder


class Regions:
    """The regions of every output index: read from the user's masks, or drawn (all of them,
    at construction, so that a type that finds no place stops the command before sampling)."""

    def __init__(self, run: Run, inputs: Inputs, aug: AugmentConfig, seed: int, grey: bool):
        self.inputs, self.types, self.copies = inputs, tuple(aug.types), aug.num_per_image
        self.drawn: dict[int, list[np.ndarray]] = {}
        if inputs.masks is None:
            from seas.generation.placement import Placer

            placer = Placer(run, "real-masks", grey=grey)
            for index in range(len(inputs.images) * self.copies):
                self.drawn[index] = placer.separate(self.types, index, seed)

    def __call__(self, index: int) -> list[np.ndarray]:
        """Per type, the region ``(H, W)`` bool of output ``index`` at its image's size."""
        number = index // self.copies
        size = self.inputs.sizes[number]
        if self.inputs.masks is None:
            return [to_size(region, size) for region in self.drawn[index]]
        return [read_mask(path) for path in self.inputs.masks[number]]


def augment_settings(run: Run, inputs: Inputs, aug: AugmentConfig, cfg: GenerationConfig,
                     switches: GenerationSwitches) -> dict:
    """What ``generation.json`` records for an augment folder (a folder resumes only with the same)."""
    recorded = dataclasses.replace(cfg, num=len(inputs.images) * aug.num_per_image, placement=aug.placement,
                                   masks=aug.masks, background="reference", qc="off", reference_images=None)
    return {
        "format": FORMAT, "mode": "augment", "run": str(run.path.resolve()), "product": run.product,
        "kinds": ["+".join(aug.types)], "types": aug.types, "images": str(inputs.images[0].parent.resolve()),
        "inputs": [p.name for p in inputs.images], "num_per_image": aug.num_per_image,
        **recorded.to_dict(), "resolution": run.resolution, **switches.to_dict(),
    }


def augment_to_folder(run: Run | str | Path, images: str | Path, out: str | Path, aug: AugmentConfig,
                      cfg: GenerationConfig | None = None, switches: GenerationSwitches | None = None, *,
                      device: str | None = None, rank: int = 0, world: int = 1, progress: bool = True) -> Path:
    """Augment every image of ``images`` into ``out`` (see the module docstring). Inputs, masks
    and regions are read and checked before a model is loaded, and nothing is written before
    they are. Resumes like :func:`seas.generation.folder.generate_to_folder`; with ``world > 1``
    the caller merges the journals after every process returns."""
    import torch

    from seas.generation.folder import append_row, batches_of, progress_bar
    from seas.generation.pipeline import SeaSPipeline, is_grey

    cfg = cfg or GenerationConfig()
    switches = switches or GenerationSwitches()
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is outside 0..{world - 1}")
    run = run if isinstance(run, Run) else Run.load(run)
    inputs = read_inputs(images, aug, run.types)
    grey = is_grey(run)
    regions = Regions(run, inputs, aug, cfg.seed, grey)
    if cfg.guidance is None:
        cfg = dataclasses.replace(cfg, guidance=run.guidance)
    folder = GeneratedFolder(out)
    settings = augment_settings(run, inputs, aug, cfg, switches)
    folder.check_settings(settings)
    label, total = settings["kinds"][0], settings["num"]
    done = folder.valid_rows()
    todo = [batch for batch in batches_of(total, cfg.batch_size, rank, world)
            if any((label, i) not in done for i in batch)]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = None
    if todo:
        pipe = SeaSPipeline(run, run.load_backbone(switches.torch_dtype), run.load_mask_head(switches.torch_dtype),
                            device, switches)
    folder.remove_temporaries(rank)
    folder.write_settings(settings, rank)
    journal = folder.start_journal(done, rank, world, cfg.batch_size)
    width = name_width(total)
    missing = sum((label, i) not in done for batch in todo for i in batch)
    with journal.open("a") as fh, progress_bar(missing, progress, "augment") as bar:
        for batch in todo:
            pictures = [read_image(inputs.images[i // aug.num_per_image]) for i in batch]
            items = augment_batch(pipe, aug.types, pictures, [regions(i) for i in batch], batch, cfg)
            for i, item in zip(batch, items):
                if (label, i) not in done:
                    row = _write(folder, label, aug, i, width, item, inputs.images[i // aug.num_per_image], cfg,
                                 rank, pipe.prompts)
                    append_row(fh, journal, row)
                    bar.update(1)
    if world == 1:
        folder.merge_journals()
    return folder.path


def _write(folder: GeneratedFolder, label: str, aug: AugmentConfig, index: int, width: int, item: Augmented,
           source: Path, cfg: GenerationConfig, rank: int, prompts) -> dict:
    """Write one augmented image's files atomically; return its manifest row."""
    from seas.generation.folder import save_png

    types = aug.types
    paths = output_paths(label, False, index, width, placed=True)
    several = len(types) > 1
    if several:
        name = Path(paths["image"]).name
        paths["classes"] = f"{label}/classes/{name}"
        type_masks = {t: f"{label}/type-mask/{t}/{name}" for t in types}
    save_png(Image.fromarray(item.image), folder.file(paths["image"]), rank)
    save_png(Image.fromarray(item.mask.astype(np.uint8) * 255), folder.file(paths["mask"]), rank)
    save_png(Image.fromarray(np.round(item.prob * 255).astype(np.uint8)), folder.file(paths["prob"]), rank)
    save_png(Image.fromarray(item.region.astype(np.uint8) * 255), folder.file(paths["region"]), rank)
    if several:
        classes = Image.fromarray(item.classes)  # "L", made "P" by its palette
        classes.putpalette(palette_bytes())
        save_png(classes, folder.file(paths["classes"]), rank)
        for name, mask in zip(types, item.masks):
            save_png(Image.fromarray(mask.astype(np.uint8) * 255), folder.file(type_masks[name]), rank)
    height, width_px = item.mask.shape
    row = {
        "kind": label, "index": index, **paths, "prompt": " | ".join(prompts.anomaly_prompt([t]) for t in types),
        "seed": cfg.seed + index, "reference": str(source.resolve()), "input": source.name,
        "copy": index % aug.num_per_image, "size": [width_px, height], "types": list(types),
        "mask_area": float(item.mask.mean()), "steps": cfg.steps, "guidance": cfg.guidance, "signal": cfg.signal,
        "placement": aug.placement,
    }
    if several:
        row["type_masks"] = type_masks
        row["mask_sources"] = dict(zip(types, item.sources))
    else:
        row["mask_source"] = item.sources[0]
    return row
