"""One way to configure a recipe: typed dataclass fields, a strict YAML file, ``--key value`` overrides.

Both training recipes (``recipes/pretrain.py``, ``recipes/finetune.py``) declare their
hyperparameters as a dataclass deriving from :class:`RecipeConfig`, which owns everything else:

* :func:`read_yaml` reads a config file: a malformed file is reported with its path, line and
  column; a key given twice is refused (PyYAML would silently keep the last one);
* :func:`parse_overrides` reads ``--key value`` pairs as YAML scalars or flow collections;
* :func:`coerce` checks a value against its field's type (ints are accepted for floats, and so is
  every string that Python's ``float()`` reads, such as ``1e-3``, which YAML 1.1 reads as a string);
* :meth:`RecipeConfig.check_fields` checks each field on its own against the class's range table
  (:attr:`~RecipeConfig.RANGES`), choices (:attr:`~RecipeConfig.CHOICES`) and non-empty strings,
  and that every float is finite; :meth:`RecipeConfig.check` holds a recipe's cross-field checks;
* :meth:`RecipeConfig.save` writes the resolved config atomically, with the umask's permissions.

Every failure is a :class:`~timm_gated_ssl.errors.ConfigError` (a ``ValueError``) of one line that
names the field, the bad value and what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from ..errors import ConfigError

__all__ = ["Range", "RecipeConfig", "coerce", "parse_overrides", "parse_value", "read_yaml"]

_INF = math.inf
Range = tuple[float, bool, float, bool]
"""``(low, low inclusive, high, high inclusive)``; ``math.inf`` for no upper bound."""
_Config = TypeVar("_Config", bound="RecipeConfig")


def at_least(low: float) -> Range:
    """``>= low``."""
    return (low, True, _INF, False)


def above(low: float) -> Range:
    """``> low``."""
    return (low, False, _INF, False)


def interval(low: float, low_inc: bool, high: float, high_inc: bool) -> str:
    """A range as the error message writes it (``>= 1``, ``in [0, 1)``)."""
    if high == _INF:
        return f">= {low:g}" if low_inc else f"> {low:g}"
    return f"in {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"


def in_range(value: float, low: float, low_inc: bool, high: float, high_inc: bool) -> bool:
    above_low = value >= low if low_inc else value > low
    below_high = value <= high if high_inc else value < high
    return above_low and below_high


def check_schedule(*, epochs: int, warmup_epochs: float, lr: float, min_lr: float) -> None:
    """The learning-rate schedule's cross-field checks, shared by the recipes: the warm-up must
    end before the last epoch (the cosine needs updates after it) and ``min_lr <= lr``."""
    if warmup_epochs >= epochs:
        raise ConfigError(f"warmup_epochs ({warmup_epochs:g}) must be less than epochs ({epochs}): the "
                          "cosine that ends at min_lr runs after the warm-up; set --warmup_epochs, "
                          f"e.g. {max(epochs / 10, 0.5):g}")
    if min_lr > lr:
        raise ConfigError(f"min_lr ({min_lr:g}) must be <= lr ({lr:g})")


class RecipeConfig:
    """Base of a recipe's dataclass config: loading, checking and saving (see the module docstring).

    A subclass is a ``@dataclasses.dataclass`` that declares its fields and, as class variables:

    Attributes:
        RANGES: ``{field: Range}`` for numeric fields (``None`` values pass where the type allows).
        CHOICES: ``{field: valid values}`` for fields that name one of a few options.
        NON_EMPTY: String fields that may not be blank.
        RESUMABLE: Fields a resume may change (they steer when to stop, logging, monitoring or
            where the data lives, not what is trained); every other field defines the run.
    """

    RANGES: ClassVar[dict[str, Range]] = {}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    NON_EMPTY: ClassVar[tuple[str, ...]] = ()
    RESUMABLE: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        self.check_fields()
        self.check()

    # ------------------------------------------------------------------------------ checks
    def check_fields(self) -> None:
        """Check every field's value on its own (types are checked when loading, see :func:`coerce`).

        Raises:
            ConfigError: Naming the first bad field, its value and the valid range or choices.
        """
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            name, value = field.name, getattr(self, field.name)
            numbers = value if isinstance(value, list) else [value]
            for number in numbers:
                if isinstance(number, float) and not math.isfinite(number):
                    raise ConfigError(f"{name} must be a finite number, got {value!r}")
            if name in self.RANGES:
                bounds = self.RANGES[name]
                for number in numbers:
                    if number is None or isinstance(number, bool) or not isinstance(number, (int, float)):
                        continue
                    if not in_range(number, *bounds):
                        nullable = " or null" if _optional(hints[name]) else ""
                        raise ConfigError(f"{name} must be {interval(*bounds)}{nullable}, got {value!r}")
            if name in self.CHOICES and value not in self.CHOICES[name]:
                raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(self.CHOICES[name])}")
            if name in self.NON_EMPTY and isinstance(value, str) and not value.strip():
                nullable = " or null" if _optional(hints[name]) else ""
                raise ConfigError(f"{name} must be a non-empty string{nullable}, got {value!r}")

    def check(self) -> None:
        """Cross-field checks of the recipe (none in the base)."""

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{field: default value}``."""
        return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
                for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[_Config], values: dict[str, Any]) -> _Config:  # noqa: PYI019 (Self: 3.11+)
        """Build from a dict, rejecting unknown keys (the message lists the valid ones)."""
        names = cls.field_names()
        unknown = sorted(set(values) - set(names), key=str)
        if unknown:
            close = {k: difflib.get_close_matches(str(k), names, n=1) for k in unknown}
            listed = [f"{k!r} (did you mean {c[0]!r}?)" if c else repr(k) for k, c in close.items()]
            raise ConfigError(f"unknown config key(s) {', '.join(listed)}; valid keys: {', '.join(names)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(k, v, hints[k]) for k, v in values.items()})

    @classmethod
    def load(cls: type[_Config], path: str | os.PathLike[str] | None,  # noqa: PYI019 (Self: 3.11+)
             overrides: list[str] | None = None) -> _Config:
        """Read a YAML config (:func:`read_yaml`) and apply ``["--key", "value", ...]`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_yaml(path))
        values.update(parse_overrides(overrides or []))
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config as YAML, atomically and with the umask's permissions."""
        from ..files import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------ types
def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _as_float(value: Any) -> Any:
    """A string that Python's ``float()`` reads (``"1e-3"``) as that float; anything else unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint`` of field ``name`` and return it converted.

    Ints are accepted for floats, and so are strings that ``float()`` reads (YAML 1.1 reads
    ``1e-3`` as a string). A list field also takes a single value (``--budgets 0.3``).

    Raises:
        ConfigError: Naming the field, the expected type and the value.
    """
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is list:
            (item,) = typing.get_args(option) or (Any,)
            items = value if isinstance(value, list) else [value]
            if item is float:
                items = [_as_float(v) for v in items]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
            if item in (int, float) and numbers and (item is float or all(isinstance(v, int) for v in items)):
                return [item(v) for v in items]
            raise ConfigError(f"config key {name!r} must be a list of {getattr(item, '__name__', item)}, "
                              f"got {json.dumps(value, default=str)}")
        if base is float:
            number = _as_float(value) if str not in options else value
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                return float(number)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, dict) and isinstance(value, base):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config key {name!r} must be {expected}, got {json.dumps(value, default=str)}")


# ------------------------------------------------------------------------------ YAML
class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _yaml_error(source: str, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f": line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{problem}" + (f" ({context})" if context else "")
    return ConfigError(f"{source}{where}: malformed YAML: {detail}")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file gives ``{}``).

    Raises:
        ConfigError: The file is missing, unreadable, not valid YAML (the message names the line
            and column), has a duplicated key, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a folder; pass a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(str(path), err) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got a "
                          f"{type(loaded).__name__}")
    return loaded


def parse_value(option: str, raw: str) -> Any:
    """A command-line value as a YAML scalar or flow collection (``"0.3"``, ``"{a: 1}"``)."""
    try:
        return yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(f"--{option} {raw!r}", err) from None


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--lr", "0.1", "--gating", "false"]`` -> ``{"lr": 0.1, "gating": False}`` (YAML scalars).

    Several values after one key make a list, so list flags are spelled as in
    ``recipes/evaluate.py``: ``--budgets 0.3 0.5`` (a YAML list, ``--budgets "[0.3, 0.5]"``, works too).
    """
    values: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ConfigError(f"expected --key value, got {token!r}")
        key = token[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
            values[key] = parse_value(key, raw)
            i += 1
            continue
        end = i + 1
        while end < len(tokens) and not tokens[end].startswith("--"):
            end += 1
        if end == i + 1:
            raise ConfigError(f"--{key} needs a value")
        parsed = [parse_value(key, raw) for raw in tokens[i + 1:end]]
        values[key] = parsed[0] if len(parsed) == 1 else parsed
        i = end
    return values
