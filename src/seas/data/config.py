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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

# Behaviour defaults per layout preset (spec sections 2, 4 and 6).
#   augment:       rotations by 90 degrees and flips in stage 1 (off for VisA)
#   guidance:      classifier-free guidance scale at generation
#   inside_rule:   which pixels are "inside the anomaly" for the ob1 term of L_DA:
#                  "eq1" -> M == 1 (MVTec AD), "gt0" -> M > 0 (VisA, MVTec 3D AD)
#   mask_threshold: binarisation of mask files ("half" of the range, or "nonzero" for VisA)
LAYOUT_PRESETS = {
    "mvtec": dict(augment=True, guidance=8.0, inside_rule="eq1", mask_threshold="half"),
    "mvtec3d": dict(augment=True, guidance=5.0, inside_rule="gt0", mask_threshold="half"),
    "visa": dict(augment=False, guidance=2.0, inside_rule="gt0", mask_threshold="nonzero"),
    # VisA already re-split into the MVTec AD layout: MVTec reader, VisA behaviour.
    "visa-mvtec": dict(augment=False, guidance=2.0, inside_rule="gt0", mask_threshold="half"),
    "folder": dict(augment=True, guidance=8.0, inside_rule="eq1", mask_threshold="half"),
}
INSIDE_RULES = ("eq1", "gt0")


@dataclass
class DataConfig:
    """Where one product's data is and how it is used. ``None`` fields take the preset's value."""

    root: str
    layout: str = "mvtec"
    product: str | None = None
    # "folder" layout: globs relative to root (a string or a list of strings)
    normal: list[str] = field(default_factory=list)
    normal_test: list[str] = field(default_factory=list)
    anomalies: dict[str, list[str]] = field(default_factory=dict)
    mask: str = "{parent}/{stem}.png"  # placeholders: {root} {parent} {stem} {name} {type}
    # behaviour (None -> preset)
    augment: bool | None = None
    guidance: float | None = None
    inside_rule: str | None = None
    mask_threshold: str | None = None
    # few-shot protocol
    train_fraction: float = 1.0 / 3.0  # first max(floor(n * f), 1) images per type train
    max_normal_train: int = 60  # normal training images (first of the sorted train partition)
    normal_test_fraction: float = 1.0 / 3.0  # folder layout without normal_test: last share is test

    def __post_init__(self) -> None:
        if self.layout not in LAYOUT_PRESETS:
            raise ConfigError(f"--layout {self.layout!r}: choose one of {', '.join(LAYOUT_PRESETS)}")
        for key, value in LAYOUT_PRESETS[self.layout].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.normal = _as_list(self.normal)
        self.normal_test = _as_list(self.normal_test)
        self.anomalies = {str(k): _as_list(v) for k, v in self.anomalies.items()}
        if self.inside_rule not in INSIDE_RULES:
            raise ConfigError(f"inside_rule {self.inside_rule!r}: choose one of {', '.join(INSIDE_RULES)}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction {self.train_fraction}: must be between 0 and 1 (spec: 1/3)")
        if self.max_normal_train < 1:
            raise ConfigError(f"max_normal_train {self.max_normal_train}: must be at least 1 (spec: 60)")
        if not 0.0 <= self.normal_test_fraction < 1.0:
            raise ConfigError(f"normal_test_fraction {self.normal_test_fraction}: must be in [0, 1)")
        if self.layout == "folder" and (not self.normal or not self.anomalies):
            raise ConfigError(
                "folder layout: give --normal GLOB and at least one --anomaly TYPE=GLOB "
                "(or 'normal:' and 'anomalies:' in the YAML description)"
            )

    @property
    def product_name(self) -> str:
        return self.product or Path(self.root).resolve().name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DataConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown data field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "DataConfig":
        """Read a YAML description; ``root`` is relative to the file; overrides win when not None."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the dataset description ({err}); fix the YAML") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a dataset description is a YAML mapping (layout:, root:, ...)")
        values.setdefault("root", ".")
        values["root"] = str((path.parent / values["root"]).resolve())
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
