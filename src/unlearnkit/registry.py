"""One registry implementation, one instance per kind of component."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from .errors import ConfigError, UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> component. Registering a name twice and asking for an unknown name are errors."""

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins  # module whose import registers the built-in components

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None):  # type: ignore[no-untyped-def]
        """Register ``obj`` under ``name``; usable as ``@REGISTRY.register("name")``."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"Invalid {self.kind} name {name!r}: use letters, digits, '_' or '-'.")

        def add(item: T) -> T:
            if name in self._items:
                raise ConfigError(f"Duplicate {self.kind} {name!r}: it is already registered.")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The component registered as ``name``; unknown names raise with a suggestion."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        hint = suggest(str(name), set(self._items))
        return f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names()) or '(none)'}."

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def import_submodules(package: str, skip: tuple[str, ...] = ("base",)) -> list[str]:
    """Import every module of ``package`` (so each registers its components); returns their names.
    A new method or metric is then one file, with no list to edit."""
    import pkgutil

    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and m.name not in skip]
    for name in sorted(names):
        importlib.import_module(f"{package}.{name}")
    return names


def suggest(name: str, options: list[str] | set[str]) -> str:
    """" Did you mean: x?" or "" — shared by config validation."""
    close = difflib.get_close_matches(name, sorted(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


# The registries. Components register themselves in their own module; the module named here is
# imported on first use, so ``import unlearnkit`` stays light.
ADAPTERS: Registry = Registry("adapter", builtins="unlearnkit.adapters")
METHODS: Registry = Registry("method", builtins="unlearnkit.methods")
METRICS: Registry = Registry("metric", builtins="unlearnkit.evaluation")
MODELS: Registry = Registry("model", builtins="unlearnkit.models")
DATASETS: Registry = Registry("dataset", builtins="unlearnkit.data")
OBJECTIVES: Registry = Registry("objective", builtins="unlearnkit.objectives")
SELECTORS: Registry = Registry("selector", builtins="unlearnkit.selectors")
