"""Hyperparameters as dataclasses, overridable from YAML files and ``key=value`` strings.

A :class:`Recipe` bundles everything that determines a training run: data, model,
optimizer/schedule and pruning.  Named presets live in :mod:`unmasking.foundations.recipes`.
Overrides use dotted keys (``train.lr=0.05``); an unknown key is an error that lists
the valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


@dataclass
class DataHparams:
    """Which data set, where it lives and how it is fed."""

    name: str = "mnist1d"
    root: str | None = None  # data directory; falls back to $UNMASKING_DATA
    download: bool = False  # torchvision downloads are opt-in
    augment: bool = True  # the recipe's augmentation (CIFAR: crop+flip; ImageNet: RRC+flip)
    train_eval_size: int | None = None  # un-augmented train subset used for train error (None: all)
    workers: int = 4  # DataLoader workers (ImageNet only; tensor data sets need none)
    image_size: int | None = None  # ImageNet's crop size (None: 224); the other data sets have their own


@dataclass
class ModelHparams:
    """Architecture by registry name."""

    name: str = "cnn1d"
    width: int | None = None  # architecture-specific width (channels/hidden units); None: default


@dataclass
class TrainHparams:
    """SGD with momentum and a step schedule (milestones in optimizer steps)."""

    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    steps: int = 1000
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_steps: int = 0
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_every: int = 0  # 0: no intermediate checkpoints
    eval_batch_size: int = 1000


@dataclass
class PruneHparams:
    """IMP: fraction of surviving weights pruned per level, levels, rewind step, ignored layers."""

    fraction: float = 0.2
    levels: int = 20
    rewind_step: int = 0
    ignore: list[str] = field(default_factory=list)  # parameter names never pruned


# Fields added after run folders existed: in a recipe's hash only when set (not None).
HASHED_WHEN_SET = (("data", "image_size"),)


@dataclass
class Recipe:
    """A complete training/pruning configuration."""

    name: str = "custom"
    data: DataHparams = field(default_factory=DataHparams)
    model: ModelHparams = field(default_factory=ModelHparams)
    train: TrainHparams = field(default_factory=TrainHparams)
    prune: PruneHparams = field(default_factory=PruneHparams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of every field (used in provenance and to detect config drift); a field added
        after runs existed (:data:`HASHED_WHEN_SET`) counts only when set, so adding it renamed no run."""
        fields = self.to_dict()
        for section, key in HASHED_WHEN_SET:
            if fields[section][key] is None:
                del fields[section][key]
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> "Recipe":
        t, p = self.train, self.prune
        checks = [
            (t.batch_size > 0, "train.batch_size must be positive"),
            (t.lr > 0, "train.lr must be positive"),
            (t.steps > 0, "train.steps must be positive"),
            (0.0 <= t.momentum < 1.0, "train.momentum must be in [0, 1)"),
            (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
            (all(0 < m for m in t.milestones), "train.milestones must be positive steps"),
            (list(t.milestones) == sorted(t.milestones), "train.milestones must be increasing"),
            (0.0 < p.fraction < 1.0, "prune.fraction must be in (0, 1)"),
            (p.levels >= 0, "prune.levels must be >= 0"),
            (0 <= p.rewind_step < t.steps, "prune.rewind_step must be in [0, train.steps)"),
            (not (t.nesterov and t.momentum == 0), "train.nesterov needs train.momentum > 0"),
            (self.data.image_size is None or self.data.image_size >= 32, "data.image_size must be >= 32"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message} (recipe {self.name!r})")
        return self


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert ``value`` (possibly a string from the command line) to ``typ``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
            if not isinstance(value, list):
                value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(as_float)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if typ is str:
        return str(value)
    raise ConfigError(f"{key}: unsupported type {typ}")


def valid_keys(obj=None) -> list[str]:
    """All dotted keys that an override may set."""
    cls = type(obj) if obj is not None else Recipe
    keys = []
    for name, typ in _field_types(cls).items():
        if dataclasses.is_dataclass(typ):
            keys += [f"{name}.{sub}" for sub in _field_types(typ)]
        else:
            keys.append(name)
    return keys


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """Return a copy of ``recipe`` with dotted-key overrides applied (nested dicts are flattened)."""
    recipe = dataclasses.replace(
        recipe,
        **{
            f.name: dataclasses.replace(getattr(recipe, f.name))
            for f in dataclasses.fields(recipe)
            if dataclasses.is_dataclass(getattr(recipe, f.name))
        },
    )
    for key, value in _flatten(overrides).items():
        parts = key.split(".")
        target = recipe
        for part in parts[:-1]:
            sub = getattr(target, part, None) if part.isidentifier() else None
            if sub is None or not dataclasses.is_dataclass(sub):
                raise _unknown(key)
            target = sub
        name = parts[-1]
        types_ = _field_types(type(target))
        if name not in types_ or dataclasses.is_dataclass(types_[name]):
            raise _unknown(key)
        setattr(target, name, _coerce(value, types_[name], key))
    return recipe


def _unknown(key: str) -> ConfigError:
    import difflib

    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint} Valid keys: {', '.join(keys)}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``["train.lr=0.05", ...]`` into a dict; values are YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=0.05)")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def settings_kwargs(settings) -> dict[str, Any]:
    """The fields of a settings dataclass as keyword arguments (shallow: nested values are not copied),
    for library functions whose parameters carry the fields' names."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
