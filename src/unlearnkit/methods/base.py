"""Method protocol, parameter validation, and the shared body of gradient recipes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from torch import nn

from ..adapters import get_adapter
from ..params import build_component  # noqa: F401  (re-exported)
from ..registry import METHODS
from ..train import OptimizerName, Schedule, TrainConfig, fit
from ..types import Mask, Task, Unlearned


@runtime_checkable
class Method(Protocol):
    """A frozen dataclass of hyperparameters with ``unlearn``. ``kind`` is one of gradient, edit,
    guard, exact. ``unlearn`` may modify ``model`` in place and returns it inside ``Unlearned``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    paper: ClassVar[str]
    needs: ClassVar[frozenset[str]]  # references it requires, e.g. {"train_config"}
    version: ClassVar[str]  # part of every run key: bump it when the method's numbers change
    modalities: ClassVar[tuple[str, ...]]  # task modalities it works on, e.g. ("classifier",)

    def unlearn(self, model: nn.Module, task: Task, refs: Any, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned: ...


def register_method(cls: type) -> type:
    """Class decorator: register a method class under its ``name``."""
    METHODS.register(cls.name, cls)
    return cls


def build_method(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A method instance from its registry name and parameters (validated)."""
    return build_component(METHODS.get(name), params, f"method {name!r}")


def method_params(method: Any) -> dict[str, Any]:
    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.init}


@dataclass(frozen=True)
class GradientMethod:
    """Shared hyperparameters and body of gradient recipes: objective + selector + the one loop.

    Subclasses define ``objective(task, refs)`` and may override ``selector()``, ``epoch_stream``
    and ``extra(...)`` (precomputed inputs for objectives, e.g. frozen reference logits)."""

    epochs: float = 5.0
    steps: int | None = None
    batch_size: int = 128
    optimizer: OptimizerName = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    grad_clip: float | None = None

    kind: ClassVar[str] = "gradient"
    needs: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    epoch_stream: ClassVar[str] = "forget"

    def __post_init__(self) -> None:
        self.train_config()  # validates the budget and optimiser settings

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, steps=self.steps, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
            momentum=self.momentum, weight_decay=self.weight_decay, schedule=self.schedule, grad_clip=self.grad_clip,
        )

    def objective(self, task: Task, refs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must define objective()")  # pragma: no cover

    def selector(self) -> Any:
        return None

    def extra(self, model: nn.Module, task: Task, refs: Any, adapter: Any, device: str) -> dict[str, Any]:
        return {}

    def unlearn(self, model: nn.Module, task: Task, refs: Any, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned:
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        selector = self.selector()
        mask = selector(model, task, adapter=adapter, rng=rng, device=device) if selector is not None else None
        objective = self.objective(task, refs)
        streams = {"forget": task.forget, "retain": task.retain}
        result = fit(
            model, objective, streams, self.train_config(), adapter=adapter, rng=rng, device=device, mask=mask,
            epoch_stream=self.epoch_stream, extra=self.extra(model, task, refs, adapter, device),
            progress=progress, desc=self.name,  # type: ignore[attr-defined]
        )
        changed = mask if mask is not None else Mask.full(model)
        info = {"train": result.to_json(), "mask": changed.summary()}
        if result.stopped:
            info["warning"] = result.stopped
        return Unlearned(model, changed, info)
