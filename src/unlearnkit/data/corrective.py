"""Corrective machine unlearning data (Goel, Prabhu, Torr, Kumaraguru, Sanyal, TMLR 2024): a registered source
``poisoned`` that manipulates part of another source's training data (label flips or a backdoor trigger) and
records which training ids were manipulated, so a forget set can hold only the *identified* part of them
(``ForgetSpec(kind="corrupted", fraction=discovery rate)``) and evidence can measure what the manipulation
still does to the model (``clean_accuracy`` and ``backdoor_success`` in ``evaluation/corrective.py``).

The record travels with the training split: its data is a ``ManipulatedData`` (a ``TensorData`` carrying a
``Manipulation``), so ``make_task`` finds it without a change to how the experiment runner builds tasks, and
copies its JSON description into ``Task.info["manipulation"]`` and its probe splits into ``Task.probes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from ..errors import ConfigError, EmptySelection
from ..registry import DATASETS
from ..seeding import np_rng
from ..types import Split, Task, TensorData
from .sources import DataSource, load_dataset

ManipulationKind = Literal["label_flip", "backdoor"]
Corner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]
KINDS: tuple[str, ...] = get_args(ManipulationKind)
CORNERS: tuple[str, ...] = get_args(Corner)
TRIGGERED_PROBE = "triggered"
SOURCE_CLASS_PROBE = "source_class"


@dataclass(frozen=True)
class Trigger:
    """A square patch of ``size``×``size`` pixels in one ``corner`` of (C, H, W) images, every channel set to ``value``.

    Inputs of any layout with prod(image_shape) values per example are reshaped to (C, H, W), stamped,
    and reshaped back, so flat inputs (e.g. 64-dim digits, 784-dim Fashion-MNIST) work as well as images."""

    size: int
    corner: Corner
    value: float
    image_shape: tuple[int, int, int]

    def rows_cols(self) -> tuple[slice, slice]:
        """The rows and columns the patch covers."""
        _, height, width = self.image_shape
        rows = slice(0, self.size) if self.corner.startswith("top") else slice(height - self.size, height)
        cols = slice(0, self.size) if self.corner.endswith("left") else slice(width - self.size, width)
        return rows, cols

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the batch ``x`` (n, ...) with the trigger stamped on every example."""
        images = x.detach().clone().reshape(len(x), *self.image_shape)
        rows, cols = self.rows_cols()
        images[:, :, rows, cols] = self.value
        return images.reshape(x.shape)

    def to_info(self) -> dict[str, Any]:
        return {"size": self.size, "corner": self.corner, "value": self.value, "image_shape": list(self.image_shape)}


@dataclass(frozen=True, eq=False)
class Manipulation:
    """What the ``poisoned`` source did: which training ids were manipulated, their labels before, the new
    label, the trigger (backdoor) or source class (label flip), and the probe splits the evidence reads."""

    kind: ManipulationKind
    ids: np.ndarray
    original_labels: np.ndarray
    target_class: int
    source_class: int | None
    trigger: Trigger | None
    probes: Mapping[str, Split] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def evidence_probe(self) -> str:
        """The probe split on which success of the manipulation is measured."""
        return TRIGGERED_PROBE if self.kind == "backdoor" else SOURCE_CLASS_PROBE

    def to_info(self) -> dict[str, Any]:
        """JSON description (goes into ``DataSource.info`` and ``Task.info["manipulation"]``)."""
        return {
            "kind": self.kind,
            "ids": [int(i) for i in self.ids],
            "n_manipulated": len(self.ids),
            "target_class": self.target_class,
            "source_class": self.source_class,
            "trigger": None if self.trigger is None else self.trigger.to_info(),
            "evidence_probe": self.evidence_probe,
            "probes": sorted(self.probes),
            "params": dict(self.params),
        }


class ManipulatedData(TensorData):
    """Training examples after manipulation, carrying the ``Manipulation`` record (subsets are plain TensorData)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, manipulation: Manipulation) -> None:
        super().__init__(x, y)
        self.manipulation = manipulation


def manipulation_record(train: Split) -> Manipulation | None:
    """The manipulation record a training split carries (None for data no source manipulated)."""
    return getattr(train.data, "manipulation", None)


def manipulation_info(task: Task) -> dict[str, Any] | None:
    """``Task.info["manipulation"]`` (set by ``make_task`` for data from the ``poisoned`` source), or None."""
    info = task.info.get("manipulation")
    return dict(info) if info else None


# ------------------------------------------------------------------------------------ validation
def resolve_image_shape(input_shape: Sequence[int], image_shape: Sequence[int] | None) -> tuple[int, int, int]:
    """(C, H, W) of the inputs: given, or from a (C, H, W) / (H, W) input shape, or a square flat input."""
    n_values = math.prod(input_shape)
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or any(s <= 0 for s in shape) or math.prod(shape) != n_values:
            raise ConfigError(f"poisoned: image_shape must be (H, W) or (C, H, W) of positive sizes holding the {n_values} "
                              f"input values of shape {tuple(input_shape)}, got {list(image_shape)}.")
        return shape if len(shape) == 3 else (1, *shape)  # type: ignore[return-value]
    if len(input_shape) == 3:
        return tuple(int(s) for s in input_shape)  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, int(input_shape[0]), int(input_shape[1]))
    side = math.isqrt(n_values)
    if len(input_shape) == 1 and side * side == n_values:
        return (1, side, side)
    raise ConfigError(f"poisoned: inputs of shape {tuple(input_shape)} are not square images; give image_shape, e.g. [1, H, W].")


def default_trigger_size(image_shape: tuple[int, int, int]) -> int:
    """An eighth of the shorter image side, at least 2 pixels: 2 for 8×8 digits, 3 for 28×28 Fashion-MNIST."""
    return max(2, min(image_shape[1:]) // 8)


def check_params(kind: str, poison_fraction: float, target_class: int, source_class: int | None, n_classes: int | None,
                 trigger_corner: str) -> int:
    """Validate the manipulation parameters; returns the number of classes."""
    if kind not in KINDS:
        raise ConfigError(f"poisoned: kind must be one of {list(KINDS)}, got {kind!r}.")
    if not 0.0 < poison_fraction <= 1.0:
        raise ConfigError(f"poisoned: poison_fraction must be in (0, 1], got {poison_fraction}.")
    if n_classes is None:
        raise ConfigError("poisoned: the base dataset has no classes (n_classes is None); manipulation needs a classifier dataset.")
    if not 0 <= target_class < n_classes:
        raise ConfigError(f"poisoned: target_class must be in [0, {n_classes}), got {target_class}.")
    if kind == "label_flip":
        if source_class is None:
            raise ConfigError("poisoned: kind 'label_flip' needs source_class (the class whose examples are relabelled).")
        if not 0 <= source_class < n_classes or source_class == target_class:
            raise ConfigError(f"poisoned: source_class must be in [0, {n_classes}) and differ from target_class={target_class}, "
                              f"got {source_class}.")
    elif source_class is not None:
        raise ConfigError(f"poisoned: source_class applies to kind 'label_flip' only; kind 'backdoor' got source_class={source_class}.")
    if trigger_corner not in CORNERS:
        raise ConfigError(f"poisoned: trigger_corner must be one of {list(CORNERS)}, got {trigger_corner!r}.")
    return n_classes


# ------------------------------------------------------------------------------------ the source
def choose_positions(candidates: np.ndarray, poison_fraction: float, rng: np.random.Generator, what: str) -> np.ndarray:
    """round(poison_fraction × |candidates|) of the candidate positions, sorted."""
    k = int(round(poison_fraction * len(candidates)))
    if k == 0:
        raise EmptySelection(f"poisoned: poison_fraction={poison_fraction} of the {len(candidates)} {what} manipulates no example.")
    return np.sort(rng.choice(candidates, size=k, replace=False))


def make_trigger(source: DataSource, trigger_size: int | None, corner: Corner, image_shape: Sequence[int] | None) -> Trigger:
    """The backdoor trigger for ``source``'s inputs, its value the largest input value of the training data."""
    shape = resolve_image_shape(source.input_shape, image_shape)
    size = default_trigger_size(shape) if trigger_size is None else int(trigger_size)
    if not 1 <= size <= min(shape[1:]):
        raise ConfigError(f"poisoned: trigger_size must be in [1, {min(shape[1:])}] for images of shape {shape}, got {size}.")
    return Trigger(size, corner, float(source.train.data.x.max()), shape)  # type: ignore[attr-defined]


def manipulate(train: Split, positions: np.ndarray, record: Manipulation) -> ManipulatedData:
    """The training examples with those at ``positions`` relabelled to the target class (and triggered, for a backdoor)."""
    x = train.data.x.clone()  # type: ignore[attr-defined]
    if record.trigger is not None:
        x[positions] = record.trigger.stamp(x[positions])
    y = train.data.y.clone()  # type: ignore[attr-defined]
    y[positions] = record.target_class
    return ManipulatedData(x, y, record)


def triggered_probe(test: Split, trigger: Trigger, target_class: int) -> Split:
    """The clean test examples not of ``target_class``, trigger stamped, true labels and test ids kept."""
    keep = np.flatnonzero(test.labels != target_class)
    clean = test.subset(keep)
    data = TensorData(trigger.stamp(clean.data.x), clean.data.y)  # type: ignore[attr-defined]
    return Split.create(TRIGGERED_PROBE, data, clean.ids)


def source_class_probe(test: Split, source_class: int) -> Split:
    """The clean test examples of ``source_class`` (test ids kept)."""
    return test.subset(np.flatnonzero(test.labels == source_class), SOURCE_CLASS_PROBE)


@DATASETS.register("poisoned")
def poisoned(
    base: str = "digits",
    base_params: Mapping[str, Any] | None = None,
    kind: ManipulationKind = "backdoor",
    poison_fraction: float = 0.1,
    target_class: int = 0,
    source_class: int | None = None,
    trigger_size: int | None = None,
    trigger_corner: Corner = "bottom_right",
    image_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> DataSource:
    """Another registered source with part of its training data manipulated (corrective unlearning, Goel et al., TMLR 2024).

    - ``label_flip``: ``poison_fraction`` of the training examples of ``source_class`` relabelled ``target_class``
      (inter-class confusion); probe ``source_class`` = the clean test examples of ``source_class``.
    - ``backdoor``: a ``trigger_size``×``trigger_size`` patch in ``trigger_corner`` set to the largest input value of the
      base training data, stamped on ``poison_fraction`` of the training examples of the other classes, which are
      relabelled ``target_class``; probe ``triggered`` = the clean test examples of the other classes with the trigger.

    Only training data is touched (the test split is the base source's); ids are the base source's. The chosen examples
    depend on ``seed`` only. ``trigger_size`` defaults to an eighth of the shorter image side, at least 2 pixels."""
    if base == "poisoned":
        raise ConfigError("poisoned: base must be another dataset, not 'poisoned' itself.")
    source = load_dataset(base, **dict(base_params or {}))
    n_classes = check_params(kind, poison_fraction, target_class, source_class, source.n_classes, trigger_corner)
    labels = source.train.labels
    rng = np_rng("poisoned", kind, seed)
    if kind == "backdoor":
        trigger = make_trigger(source, trigger_size, trigger_corner, image_shape)
        candidates, what = np.flatnonzero(labels != target_class), "training examples of non-target classes"
        probes = {TRIGGERED_PROBE: triggered_probe(source.test, trigger, target_class)}
    else:
        trigger = None
        candidates, what = np.flatnonzero(labels == source_class), f"training examples of class {source_class}"
        probes = {SOURCE_CLASS_PROBE: source_class_probe(source.test, int(source_class))}  # type: ignore[arg-type]
    positions = choose_positions(candidates, poison_fraction, rng, what)
    params = {"base": base, "base_params": dict(base_params or {}), "kind": kind, "poison_fraction": poison_fraction,
              "target_class": target_class, "source_class": source_class, "seed": seed}
    record = Manipulation(kind, source.train.ids[positions].copy(), labels[positions].copy(), target_class, source_class, trigger,
                          probes, params)
    train = Split.create("train", manipulate(source.train, positions, record), source.train.ids)
    info = {"base": base, "base_info": dict(source.info), "manipulation": record.to_info()}
    return DataSource("poisoned", train, source.test, n_classes, source.input_shape, info)


__all__ = ["ManipulatedData", "Manipulation", "Trigger", "manipulation_info", "manipulation_record", "poisoned"]
