"""Hyperparameter search spaces: the ranges (linear or log scale) and choices a method declares next to its parameters
(its ``search_space`` class attribute), checked against the parameters it has; ``unlearnkit tune`` searches them.

A space maps a method's (flat, user-facing) parameter names to a ``FloatRange``, ``IntRange`` or ``Choice``. Every
bound and choice must itself be a valid value of that parameter (the method is built with it), so a declared space
cannot send a tuner to a setting the method refuses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from .errors import ConfigError
from .params import build_component, param_names
from .registry import suggest


@dataclass(frozen=True)
class FloatRange:
    """Real values in [low, high], sampled uniformly or, with ``log``, uniformly in log scale (then low > 0)."""

    low: float
    high: float
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class IntRange:
    """Whole numbers in [low, high] (both included), uniformly or, with ``log``, in log scale (then low >= 1)."""

    low: int
    high: int
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """One of a few listed values (numbers, strings, booleans)."""

    options: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": "choice", "options": list(self.options)}


Dimension = Union[FloatRange, IntRange, Choice]


def dimension_from_json(value: Any, where: str) -> Dimension:
    """A dimension from its JSON/YAML form: ``{low, high, log?, type?: float|int}`` or ``{options: [...]}`` (or a
    ready dimension)."""
    if isinstance(value, (FloatRange, IntRange, Choice)):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected {{low:, high:, log:}} or {{options: [...]}}, got {value!r:.80}.")
    keys = set(value) - {"type"}
    if "options" in keys:
        if keys != {"options"} or not isinstance(value["options"], (list, tuple)):
            raise ConfigError(f"{where}: a choice is {{options: [v1, v2, ...]}} alone, got {dict(value)!r:.80}.")
        return Choice(tuple(value["options"]))
    unknown = keys - {"low", "high", "log"}
    if unknown or not {"low", "high"} <= keys:
        raise ConfigError(f"{where}: a range is {{low:, high:, log: false}} (type: float or int), got {dict(value)!r:.80}.")
    kind = value.get("type", "int" if all(isinstance(value[k], int) and not isinstance(value[k], bool) for k in ("low", "high")) else "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: type must be 'float' or 'int', got {kind!r}.")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}.")
    return (IntRange if kind == "int" else FloatRange)(value["low"], value["high"], log)  # type: ignore[arg-type]


def _check_bounds(dim: Dimension, where: str) -> None:
    if isinstance(dim, Choice):
        if not dim.options:
            raise ConfigError(f"{where}: empty choice; list at least two options (or fix the parameter instead).")
        if len({repr(o) for o in dim.options}) != len(dim.options):
            raise ConfigError(f"{where}: options listed twice in {list(dim.options)}.")
        return
    numbers = (int,) if isinstance(dim, IntRange) else (int, float)
    for name in ("low", "high"):
        value = getattr(dim, name)
        if isinstance(value, bool) or not isinstance(value, numbers) or not math.isfinite(value):
            kind = "an integer" if isinstance(dim, IntRange) else "a finite number"
            raise ConfigError(f"{where}: {name} must be {kind}, got {value!r}.")
    if not dim.low < dim.high:
        raise ConfigError(f"{where}: empty range [{dim.low}, {dim.high}]: low must be below high (a fixed value is a "
                          "parameter, not a search dimension).")
    if dim.log and dim.low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0, got {dim.low}.")


def check_space(cls: type, space: Mapping[str, Any] | None, where: str) -> dict[str, Dimension]:
    """``space`` as checked dimensions of the component class ``cls``: a non-empty mapping of its parameter names to
    ranges or choices whose bounds and options the component accepts. A ConfigError naming the problem otherwise."""
    if space is None:
        raise ConfigError(f"{where}: declares no search space (search_space); give one, e.g. {{lr: {{low: 1e-4, high: 0.1, log: true}}}}.")
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{where}: a search space is a non-empty mapping of parameter names to ranges or choices, got {space!r:.80}.")
    names = param_names(cls)
    out: dict[str, Dimension] = {}
    for key, raw in space.items():
        if key not in names:
            raise ConfigError(f"{where}: search space names parameter {key!r}, which it does not have.{suggest(str(key), set(names))} "
                              f"Parameters: {sorted(names)}.")
        dim = dimension_from_json(raw, f"{where}: search space {key!r}")
        _check_bounds(dim, f"{where}: search space {key!r}")
        values = dim.options if isinstance(dim, Choice) else (dim.low, dim.high)
        for value in values:
            try:
                build_component(cls, {key: value}, f"{where} with {key}={value!r}")
            except ConfigError as exc:
                raise ConfigError(f"{where}: search space {key!r} reaches a value the parameter refuses: {exc}") from None
        out[str(key)] = dim
    return out


def declared_space(cls: type, modality: str) -> Mapping[str, Any] | None:
    """The search space the method class ``cls`` declares for tasks of ``modality``: its ``lm_search_space`` on causal-LM
    tasks, its ``search_space`` on the others (classifiers); None when it declares none for that modality."""
    return getattr(cls, "lm_search_space" if modality == "causal_lm" else "search_space", None)


def space_to_json(space: Mapping[str, Dimension]) -> dict[str, Any]:
    return {key: dim.to_json() for key, dim in space.items()}


__all__ = ["Choice", "Dimension", "FloatRange", "IntRange", "check_space", "declared_space", "dimension_from_json", "space_to_json"]
