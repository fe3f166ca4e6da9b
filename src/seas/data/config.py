"""The description of one product's dataset: where it is, its layout, and how SeaS treats it.

A dataset's behaviour (augmentation, guidance scale, the DA "inside the anomaly" rule, mask
binarisation) is a field here, with defaults taken from the *layout preset* the user names.
Nothing is ever inferred from the path (the reference release looks for "visa" or "3d" in it).

A description comes from command-line flags or from a YAML file such as::

    layout: folder
    root: ../shared/data/magnetic-tile     # relative to the YAML file
    product: magnetic-tile
    normal: MT_Free/Imgs/*.jpg
    anomalies:
      blowhole: MT_Blowhole/Imgs/*.jpg
      break: MT_Break/Imgs/*.jpg
      uneven: MT_Uneven/Imgs/*.jpg
    mask: "{parent}/{stem}.png"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seas.errors import ConfigError
from seas.fields import Config, option, read_yaml_mapping
from seas.files.images import MASK_RULES

# Behaviour defaults per layout preset (spec sections 2, 4, 5 and 6).
#   augment:       rotations by 90 degrees and flips in stage 1 (off for VisA)
#   guidance:      classifier-free guidance scale at generation
#   inside_rule:   which pixels are "inside the anomaly" for the ob1 term of L_DA:
#                  "eq1" -> M == 1 (MVTec AD), "gt0" -> M > 0 (VisA, MVTec 3D AD)
#   mask_rule:     binarisation of mask files ("half" of the range, or "nonzero" for VisA)
#   normalize_mask_targets: stage 2 divides its targets by their maximum (VisA, MVTec 3D AD)
LAYOUT_PRESETS = {
    "mvtec": dict(augment=True, guidance=8.0, inside_rule="eq1", mask_rule="half", normalize_mask_targets=False),
    "mvtec3d": dict(augment=True, guidance=5.0, inside_rule="gt0", mask_rule="half", normalize_mask_targets=True),
    "visa": dict(augment=False, guidance=2.0, inside_rule="gt0", mask_rule="nonzero", normalize_mask_targets=True),
    # VisA already re-split into the MVTec AD layout: MVTec reader, VisA behaviour.
    "visa-mvtec": dict(augment=False, guidance=2.0, inside_rule="gt0", mask_rule="half",
                       normalize_mask_targets=True),
    "folder": dict(augment=True, guidance=8.0, inside_rule="eq1", mask_rule="half", normalize_mask_targets=False),
}
LAYOUTS = tuple(LAYOUT_PRESETS)
INSIDE_RULES = ("eq1", "gt0")
# How an image of any shape becomes the model's square (seas.data.transforms, docs/DATA.md):
#   crop:        shorter side resized, centre crop (the reference; drops what lies beyond the square)
#   stretch:     the whole image resized to the square (aspect ratio lost)
#   pad:         letterboxed to a square with a neutral fill (every pixel kept, resolution shared)
#   defect-crop: a square window holding the whole mask (the default: scale kept, defects kept)
FITS = ("crop", "stretch", "pad", "defect-crop")
CHANNELS = ("auto", "rgb", "grey")
# A data description written before ``fit`` and ``channels`` existed holds exactly these keys
# (run records, split files: ``to_dict`` writes every field). It keeps the behaviour it was
# trained with: ``crop`` and ``rgb``.
FIELDS_BEFORE_GEOMETRY = frozenset({
    "root", "layout", "product", "normal", "normal_test", "anomalies", "mask", "augment", "guidance",
    "inside_rule", "mask_rule", "normalize_mask_targets", "train_fraction", "max_normal_train",
    "normal_test_fraction",
})
BEFORE_GEOMETRY = {"fit": "crop", "channels": "rgb"}


@dataclass
class DataConfig(Config):
    """Where one product's data is and how it is used. ``None`` behaviour fields take the preset's value."""

    section = "data"

    root: str = option(help="dataset root folder, or a YAML dataset description (.yaml/.yml)", flag="--data")
    layout: str = option("mvtec", help="dataset layout preset: mvtec (MVTec AD), mvtec3d (MVTec 3D AD, RGB), "
                         "visa (VisA original), visa-mvtec (VisA re-split into the MVTec layout), folder "
                         "(described by --normal/--anomaly/--mask)", choices=LAYOUTS)
    product: str | None = option(None, help="product sub-folder (e.g. bottle); omit when --data is the product")
    normal: list[str] = option(help="folder layout: globs of normal images, relative to the root",
                               factory=list, cli=False)
    normal_test: list[str] = option(help="folder layout: globs of normal test images (default: the last third "
                                    "of the normal images, sorted)", factory=list, cli=False)
    anomalies: dict[str, list[str]] = option(help="folder layout: type -> globs of its anomaly images",
                                             factory=dict, cli=False)
    mask: str = option("{parent}/{stem}.png", help="folder layout: mask path pattern with {root} {parent} {stem} "
                       "{name} {type}")
    augment: bool | None = option(None, help="rotation/flip augmentation in training (default: the layout's; on "
                                  "except VisA)")
    guidance: float | None = option(None, help="default guidance scale at generation (layout: 8 MVTec, 2 VisA, "
                                    "5 MVTec 3D)")
    inside_rule: str | None = option(None, help="pixels inside the anomaly for L_DA's ob1 term: M==1 (eq1, MVTec "
                                     "AD) or M>0 (gt0, VisA, 3D)", choices=INSIDE_RULES)
    mask_rule: str | None = option(None, help="mask-file binarisation: half of the value range or any non-zero "
                                   "value (VisA)", choices=MASK_RULES)
    normalize_mask_targets: bool | None = option(None, help="stage 2 divides its targets by their maximum "
                                                 "(reference for VisA and MVTec 3D AD)")
    fit: str = option("defect-crop", help="how an image becomes the model's square: defect-crop (a square "
                      "window that holds the whole defect), pad (letterbox, neutral fill), crop (shorter side, "
                      "centre crop: the reference; drops defects near the ends of long images), stretch",
                      choices=FITS)
    channels: str = option("auto", help="colour handling: grey trains and generates in grey (replicated to "
                           "RGB for the model, written as one-channel images); auto is grey when every "
                           "training image is grey", choices=CHANNELS)
    train_fraction: float = option(1.0 / 3.0, help="few-shot share of each type's images used for training "
                                   "(strictly between 0 and 1)")
    train_per_type: int | None = option(None, help="few-shot training images per type, the first of each type "
                                        "sorted by name (default: the --train-fraction rule)", minimum=1)
    max_normal_train: int = option(60, help="normal training images (the first of the sorted train partition)",
                                   minimum=1)
    normal_test_fraction: float = option(1.0 / 3.0, help="folder layout without normal_test: the last share of "
                                         "the normal images is for testing (at least 0, below 1)")

    def __post_init__(self) -> None:
        if isinstance(self.normal, str) or isinstance(self.normal_test, str):
            self.normal, self.normal_test = _as_list(self.normal), _as_list(self.normal_test)
        if isinstance(self.anomalies, dict):
            self.anomalies = {str(k): _as_list(v) for k, v in self.anomalies.items()}
        super().__post_init__()

    def validate(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"--train-fraction {self.train_fraction}: must be between 0 and 1 (spec: 1/3)")
        if not 0.0 <= self.normal_test_fraction < 1.0:
            raise ConfigError(f"normal_test_fraction {self.normal_test_fraction}: must be in [0, 1)")
        for key, value in LAYOUT_PRESETS[self.layout].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.layout == "folder" and (not self.normal or not self.anomalies):
            raise ConfigError(
                "folder layout: give --normal GLOB and at least one --anomaly TYPE=GLOB "
                "(or 'normal:' and 'anomalies:' in the YAML description)"
            )

    @classmethod
    def from_dict(cls, values: dict, where: str = "") -> "DataConfig":
        """As :meth:`Config.from_dict`; a complete description from before ``fit`` and
        ``channels`` (an older run record) gets the behaviour it had: ``crop``, ``rgb``."""
        if isinstance(values, dict) and set(values) == FIELDS_BEFORE_GEOMETRY:
            values = {**values, **BEFORE_GEOMETRY}
        return super().from_dict(values, where)

    @property
    def product_name(self) -> str:
        return self.product or Path(self.root).resolve().name

    @classmethod
    def from_yaml(cls, path: str | Path, defaults: dict | None = None, **overrides) -> "DataConfig":
        """Read a YAML description; ``root`` is relative to the file. Last wins: ``defaults``
        (e.g. ``--reference``, a ``--config`` file's ``data:`` section) < the description <
        ``overrides`` that are not None (the options given)."""
        path = Path(path)
        described = read_yaml_mapping(path, str(path), "a dataset description: layout:, root:, ...")
        values = {**(defaults or {}), **described}
        values.setdefault("root", ".")
        values["root"] = str((path.parent / values["root"]).resolve())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, where=str(path))


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
