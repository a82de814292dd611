"""Metric base class, evaluation context (cached model outputs), and the shared ROC summary."""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..registry import METRICS
from ..adapters.classifier import softmax_stats  # noqa: F401  (re-exported)
from ..types import MetricResult, Split, Task


class Metric(ABC):
    """A registered piece of evidence: a frozen dataclass of parameters whose ``compute`` returns scalars,
    per-example arrays, curves and evidence. A metric declares ``name`` and ``paper`` and, of the other class
    attributes, only those that differ from the defaults here."""

    name: ClassVar[str]
    paper: ClassVar[str]
    higher_is_better: ClassVar[bool | None] = None  # direction of the values; None: neither (e.g. an attack's AUC)
    needs: ClassVar[frozenset[str]] = frozenset()  # references compute() requires, e.g. frozenset({"retrained"})
    version: ClassVar[str] = "1"  # part of every run key: bump it when the metric's numbers change
    modalities: ClassVar[tuple[str, ...] | None] = None  # task modalities it applies to, e.g. ("classifier",); None: all
    forget_kinds: ClassVar[tuple[str, ...] | None] = None  # forget sets it applies to, e.g. ("classes",) for mia_nn; None: all
    noise_floor_skip: ClassVar[bool] = False  # its evidence carries its own null band: noise_floor does not re-run it per seed

    @abstractmethod
    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        """The metric on ``model``: values, per-example arrays aligned to split ids, curves, evidence."""

    def why_not_applicable(self, task: Task) -> str | None:
        """Why the task lacks data this metric needs (e.g. the truth ratio needs paraphrased and perturbed answers),
        or None; evaluate() then skips the metric with that reason."""
        return None

    def require_needs(self, refs: References) -> None:
        """Raise MissingReference for the first (sorted) of ``needs`` that ``refs`` lacks."""
        for need in sorted(self.needs):
            refs.require(need, by=f"metric {self.name!r}")

    def result(self, values: Mapping[str, float], **fields: Any) -> MetricResult:
        """A MetricResult under this metric's name and direction; ``fields``: the others by keyword (per_example,
        curves, evidence, info)."""
        return MetricResult(name=self.name, values=values, higher_is_better=self.higher_is_better, **fields)


def register_metric(cls: type) -> type:
    METRICS.register(cls.name, cls)
    return cls


def build_metric(name: str, params: Mapping[str, Any] | None = None) -> Any:
    from ..params import build_component

    return build_component(METRICS.get(name), params, f"metric {name!r}")


class EvalContext:
    """Shared state of one evaluation: adapter, device, seed, and caches of model outputs (per model
    object and split) and of task-level results (e.g. the retrained models' relearning curves)."""

    def __init__(self, task: Task, adapter: Any, *, device: str = "cpu", seed: int = 0, batch_size: int = 1024, progress: bool = False,
                 method: Any = None, store: Any = None, executor: Any = None) -> None:
        self.task = task
        self.method = method  # the method under test (attacks that re-run it: U-LiRA, ε-score, KLoM); None = no unlearning
        self.store = store  # where shadow models and ensembles are cached (None: in memory only)
        self.executor = executor  # runs independent jobs (shadow unlearning); None = in-process
        self.adapter = adapter
        self.device = device
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress
        self._outputs: weakref.WeakKeyDictionary[nn.Module, dict[str, dict[str, np.ndarray]]] = weakref.WeakKeyDictionary()
        self._memo: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()
        self.shared: dict[Any, Any] = {}
        self.battery: list[Any] = []
        self.seconds: dict[str, float] = {}  # wall time of each metric in the last ``evaluate`` call

    def split(self, name: str) -> Split:
        splits = self.task.splits()
        if name not in splits:
            raise ConfigError(f"Task {self.task.name!r} has no split {name!r} (has {sorted(splits)}).")
        return splits[name]

    def outputs(self, model: nn.Module, split: str) -> dict[str, np.ndarray]:
        """Raw outputs and the adapter's per-example statistics of ``model`` on a split (computed once)."""
        per_model = self._outputs.setdefault(model, {})
        if split not in per_model:
            s = self.split(split)
            out = self.adapter.outputs(model, s, batch_size=self.batch_size, device=self.device)
            out.update(self.adapter.stats(out))
            out["ids"] = s.ids
            per_model[split] = out
        return per_model[split]

    def memo(self, model: nn.Module, key: Any, fn: Callable[[], Any]) -> Any:
        """Cache ``fn()`` per model object under ``key``."""
        per_model = self._memo.setdefault(model, {})
        if key not in per_model:
            per_model[key] = fn()
        return per_model[key]


# Why membership attacks are shown but do not decide class forgetting (Evidence.reported_only); measured in
# docs/results/verdict_calibration.md (benchmarks/verdict_calibration.py).
CLASS_MEMBERSHIP_REPORTED_ONLY = (
    "class forgetting: the attack separates forget examples from unseen test examples of the same class, so it measures the "
    "model's generalisation gap on that class, not whether the class is forgotten (the original and retrained models both "
    "score ≈ 0.5); on digits class 3 it detected none of the planted cases, the original included. accuracy.forget, "
    "mia_efficacy, relearn and hidden_probe decide class forgetting")


def class_membership_reported_only(task: Task) -> str | None:
    """The reason a membership attack's evidence is reported only on ``task`` (class forgetting), None otherwise."""
    return CLASS_MEMBERSHIP_REPORTED_ONLY if task.whole_classes() is not None else None


FPR_POINTS = {"1pct": 0.01, "0.1pct": 0.001}  # name in the value keys -> false-positive rate


@dataclass(frozen=True)
class ROC:
    """What ``roc_summary`` returns: the scalars under their final keys, and the down-sampled curve."""

    values: dict[str, float]  # {prefix}auc, {prefix}tpr_at_1pct_fpr, {prefix}tpr_at_0.1pct_fpr
    curve: dict[str, list[float]]  # fpr, tpr


def roc_summary(member_scores: np.ndarray, nonmember_scores: np.ndarray, *, prefix: str = "", max_points: int = 200) -> ROC:
    """AUC and TPR at 1% / 0.1% FPR of "score is higher for members" (scikit-learn's ROC), keyed ``{prefix}auc``,
    ``{prefix}tpr_at_1pct_fpr`` and ``{prefix}tpr_at_0.1pct_fpr``, plus a down-sampled curve. TPR at a FPR is the
    largest TPR whose FPR does not exceed it."""
    from sklearn.metrics import roc_auc_score, roc_curve

    m = np.asarray(member_scores, dtype=np.float64)
    n = np.asarray(nonmember_scores, dtype=np.float64)
    if len(m) == 0 or len(n) == 0:
        raise ConfigError(f"ROC needs members and non-members, got {len(m)} and {len(n)}.")
    y = np.r_[np.ones(len(m)), np.zeros(len(n))]
    s = np.r_[m, n]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # collinear points dropped by default can be the TPR-at-FPR point
    values = {f"{prefix}auc": float(roc_auc_score(y, s))}
    for name, f in FPR_POINTS.items():
        ok = fpr <= f + 1e-12
        values[f"{prefix}tpr_at_{name}_fpr"] = float(tpr[ok].max()) if ok.any() else 0.0
    if len(fpr) > max_points:
        idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, max_points).astype(int), len(fpr) - 1])
        fpr, tpr = fpr[idx], tpr[idx]
    return ROC(values=values, curve={"fpr": fpr.tolist(), "tpr": tpr.tolist()})
