"""Building frozen-dataclass components (methods, metrics, selectors, configs) from user parameters: a component named
in a config (``name`` or ``{name:, params:}``) is checked against its registry, unknown keys are named with a
suggestion, values are converted to the field's declared type or refused."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import types
import typing
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .registry import Registry, suggest


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert YAML scalars to the field's type (ints to floats, '1e-3' to float, lists to tuples)."""
    hint = annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit type {hint}.")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}.") from None
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}.")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}.") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}.")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}.")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}.{suggest(str(value), {str(a) for a in args})}")
        return value
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, where) for v in value) if inner is not Any else tuple(value)
    return value


def flattened(cls: type) -> dict[str, tuple[str, ...]]:
    """The nested settings objects of a component that users give as flat parameters: field name -> the keys routed
    into it (``GradientMethod.flattened``: its ``train`` field takes ``epochs``, ``lr``, ...)."""
    return dict(getattr(cls, "flattened", {}))


def param_names(cls: type) -> list[str]:
    """The (flat) parameter names a user may give a dataclass component, in field order."""
    nested = flattened(cls)
    return [key for f in dataclasses.fields(cls) if f.init for key in nested.get(f.name, (f.name,))]


def flat_params(component: Any) -> dict[str, Any]:
    """A component's parameters as a user gives them (the inverse of ``build_component``): nested settings flattened."""
    nested = flattened(type(component))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(component):
        if f.init:
            value = getattr(component, f.name)
            out.update({k: getattr(value, k) for k in nested[f.name]} if f.name in nested else {f.name: value})
    return out


def build_component(cls: type, params: Mapping[str, Any] | None, where: str) -> Any:
    """Instantiate a dataclass component from user params, naming unknown keys and bad values. Flat keys of a nested
    settings object (``flattened``) replace those fields of the field's default."""
    params = dict(params or {})
    hints = typing.get_type_hints(cls)
    names = set(param_names(cls))
    for key in params:
        if key not in names:
            raise ConfigError(f"Unknown parameter {key!r} for {where}.{suggest(key, names)} Allowed: {sorted(names)}.")
    owner = {key: name for name, keys in flattened(cls).items() for key in keys}
    kwargs: dict[str, Any] = {}
    routed: dict[str, dict[str, Any]] = {}
    for k, v in params.items():
        if k in owner:
            routed.setdefault(owner[k], {})[k] = coerce(v, typing.get_type_hints(hints[owner[k]])[k], f"{where}.{k}")
        else:
            kwargs[k] = coerce(v, hints[k], f"{where}.{k}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    try:
        kwargs.update({name: dataclasses.replace(defaults[name], **values) for name, values in routed.items()})
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Component:
    """A registered component by name with its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


def component(value: Any, where: str, registry: Registry[Any]) -> Component:
    """A registered component given as its name or as ``{name:, params:}``; unknown keys and names are named."""
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, Mapping):
        unknown = set(value) - {"name", "params"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"Unknown key {key!r} in {where}.{suggest(key, {'name', 'params'})} Allowed: ['name', 'params'].")
        if "name" not in value:
            raise ConfigError(f"{where}: missing 'name'.")
        name, params = value["name"], value.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}.params must be a mapping, got {params!r}.")
    else:
        raise ConfigError(f"{where}: expected a name or {{name:, params:}}, got {value!r}.")
    if name not in registry:
        raise ConfigError(f"{where}: {registry.unknown_message(name)}")
    return Component(str(name), dict(params))
