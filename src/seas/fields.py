"""Configuration dataclasses whose fields carry their own help, choices and range.

Every config of the package (data, stage 1, stage 2, generation, evaluation, demo) is a
dataclass built from :func:`option` fields and the :class:`Config` mixin, so one declaration
gives:

* ``to_dict()`` / ``from_dict()``: symmetric; ``from_dict`` refuses an unknown key, a value of
  the wrong type, a choice not allowed or a number out of range, in one line naming the key and
  what is allowed (the same checks run on construction);
* ``add_arguments(group)``: one command-line option per field, with the field's help text and
  choices (defaults ``None``, so that only options given explicitly override a config file);
* ``given(args)``: the values of the options a user actually gave.

Type annotations are read as strings (``int``, ``float | None``, ``list[int]``, ...): only the
simple types configs use are supported, and a field of any other type is a programming error.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

from seas.errors import ConfigError

_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def option(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | None = None,
           minimum: float | None = None, maximum: float | None = None, flag: str | None = None,
           factory: Any = dataclasses.MISSING, cli: bool = True) -> Any:
    """A config field with its help text (``help``), allowed values (``choices``), numeric range
    (``minimum``/``maximum``, inclusive), the command-line flag when it differs from
    ``--field-name`` (``flag``), and ``cli=False`` for fields set only by files or code."""
    metadata = dict(help=help, choices=choices, minimum=minimum, maximum=maximum, flag=flag, cli=cli)
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _parse_type(annotation: str) -> tuple[str, bool]:
    """``"float | None"`` -> (``"float"``, True)."""
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) != 1:
        raise TypeError(f"config annotation {annotation!r} is not supported")
    return parts[0], optional


def _check_value(owner: str, field: dataclasses.Field, value: Any, by_key: bool = False) -> Any:
    """``value`` converted to the field's type (int -> float, tuple -> list); a one-line
    ConfigError otherwise, naming the option (``--steps 0: ...``) or, ``by_key`` (values from a
    file), the key (``train.steps 0: ...``), with what is allowed."""
    kind, optional = _parse_type(str(field.type))
    label = (f"{owner}.{field.name}" if owner else field.name) if by_key else flag_of(field)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{label}: needs a value ({kind}); it cannot be empty")
    if kind in _SCALARS:
        expected = _SCALARS[kind]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{label} {value!r}: not a {kind}")
        if expected is float and not math.isfinite(value):
            raise ConfigError(f"{label} {value!r}: not a finite number")
    elif kind.startswith("list["):
        item = _SCALARS[kind[5:-1]]
        if item is str and isinstance(value, str):  # one glob, one name: a list of one
            value = [value]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{label} {value!r}: not a list of {kind[5:-1]}")
        value = list(value)
    elif kind.startswith("dict["):
        if not isinstance(value, dict):
            raise ConfigError(f"{label} {value!r}: not a mapping")
    else:
        raise TypeError(f"config annotation {field.type!r} is not supported")
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{label} {value!r}: choose one of {', '.join(map(str, choices))}")
    low, high = meta.get("minimum"), meta.get("maximum")
    if kind in ("int", "float") and ((low is not None and value < low) or (high is not None and value > high)):
        bounds = f"at least {low}" if high is None else (f"at most {high}" if low is None else f"in [{low}, {high}]")
        raise ConfigError(f"{label} {value}: must be {bounds}")
    return value


def read_yaml_mapping(path: Path, label: str, shape: str) -> dict:
    """The mapping in a YAML file; one line naming ``label`` (the file as the user gave it) and
    the expected ``shape`` when the file is unreadable, not YAML, or not a mapping."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{label}: cannot be read ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{label}: must be a YAML mapping ({shape})")
    return values


class Config:
    """Mixin for dataclass configs made of :func:`option` fields (see the module docstring)."""

    section: ClassVar[str] = ""  # name of this config in files and messages ("train", "mask", ...)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, _check_value(self.section, field, getattr(self, field.name)))
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields (subclasses add them)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = ""):
        """The config of ``values``; one line naming the first unknown or bad key otherwise."""
        prefix = f"{where}: " if where else ""
        if not isinstance(values, dict):
            raise ConfigError(f"{prefix}{cls.section or cls.__name__} must be a mapping of field: value")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{prefix}unknown key {cls.section + '.' if cls.section else ''}{unknown[0]}; "
                              f"known keys: {', '.join(sorted(fields))}")
        try:
            if where:  # values from a file: name the key in errors
                for name, value in values.items():
                    _check_value(cls.section, fields[name], value, by_key=True)
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from None

    @classmethod
    def check_values(cls, values: dict, where: str) -> None:
        """Check each key and value of a file's section on its own (``where``: the file): an
        unknown key, a wrong type, a choice not allowed or a number out of range is a one-line
        ConfigError, whatever other sections or options the command reads. Checks involving
        several fields wait for the resolved config."""
        prefix = f"{where}: " if where else ""
        if not isinstance(values, dict):
            raise ConfigError(f"{prefix}section {cls.section} must be a mapping of field: value")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{prefix}unknown key {cls.section + '.' if cls.section else ''}{unknown[0]}; "
                              f"known keys: {', '.join(sorted(fields))}")
        try:
            for name, value in values.items():
                _check_value(cls.section, fields[name], value, by_key=True)
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from None

    @classmethod
    def add_arguments(cls, group, exclude: tuple[str, ...] = ()) -> None:
        """One option per command-line field (default ``None``: not given)."""
        for field in dataclasses.fields(cls):
            if field.name in exclude or not field.metadata.get("cli", True):
                continue
            kind, _ = _parse_type(str(field.type))
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            text = field.metadata["help"] + (f" (default {default})" if default not in (None, [], {}) else "")
            kwargs: dict[str, Any] = dict(default=None, help=text.replace("%", "%%"), dest=field.name)
            if kind == "bool":
                kwargs["action"] = argparse.BooleanOptionalAction
            elif kind.startswith("list["):
                kwargs.update(type=_SCALARS[kind[5:-1]], nargs="+")
            elif kind in _SCALARS:
                kwargs["type"] = _SCALARS[kind]
            else:
                continue  # mappings come from files only
            if field.metadata.get("choices") is not None:
                kwargs["choices"] = field.metadata["choices"]
            group.add_argument(flag_of(field), **kwargs)

    @classmethod
    def given(cls, args: argparse.Namespace) -> dict:
        """The fields among ``args`` that the user set (not ``None``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in vars(args).items() if k in names and v is not None}
