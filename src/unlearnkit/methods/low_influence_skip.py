"""low_influence_skip: drop forget points of negligible influence, then run any other method on the rest.

Longer than a recipe's 60 lines: a wrapper with its own influence scoring (per-example gradients, a diagonal
Fisher) and cost accounting around the inner method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .. import cost
from ..adapters import get_adapter
from ..cost import CostMeter
from ..errors import ConfigError
from ..references import References
from ..registry import METHODS
from ..searchspace import Choice, FloatRange
from ..types import Mask, Split, Task, Unlearned
from .base import ALL_FORGET_KINDS, build_method, register_method

SCORES = ("self_influence", "grad_norm")
RULES = ("quantile", "threshold")


def per_example_gradients(model: nn.Module, split: Split, device: str, batch_size: int) -> Iterator[torch.Tensor]:
    """Flattened gradients of each example's cross-entropy w.r.t. every trainable parameter, one (b, P) block per
    batch, in split order (model in eval mode; torch.func, no parameter is modified)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss(theta: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**theta, **buffers}, (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    try:
        for batch in split.batches(batch_size, device=device):
            grads = per_example(params, batch["x"], batch["y"])
            cost.record(passes=len(batch["ids"]))
            yield torch.cat([g.flatten(start_dim=1) for g in grads.values()], dim=1)
    finally:
        model.train(was_training)


def evenly_spaced(split: Split, n: int) -> Split:
    """A deterministic sample of ``n`` examples spread evenly over the split (no randomness consumed)."""
    if n >= len(split):
        return split
    return split.subset(np.unique(np.linspace(0, len(split) - 1, n).round().astype(np.int64)))


def empirical_fisher_diagonal(model: nn.Module, split: Split, device: str, batch_size: int) -> torch.Tensor:
    """diag F = mean over examples of the squared per-example loss gradient (flattened, float64)."""
    blocks = per_example_gradients(model, split, device, batch_size)
    return sum((g.to(torch.float64).pow(2).sum(dim=0) for g in blocks), torch.zeros((), dtype=torch.float64)) / len(split)


def inverse_fisher_weights(model: nn.Module, retain_sample: Split, damping: float, device: str, batch_size: int) -> torch.Tensor:
    """(diag F + δ)⁻¹ with δ = damping·mean(diag F): the diagonal inverse-Hessian of the self-influence score."""
    fisher = empirical_fisher_diagonal(model, retain_sample, device, batch_size)
    return 1.0 / (fisher + damping * fisher.mean()).clamp_min(torch.finfo(torch.float64).tiny)


def influence_scores(model: nn.Module, forget: Split, weights: torch.Tensor | None, *, device: str, batch_size: int) -> np.ndarray:
    """Per forget example: Σ_j w_j g_j² — gᵀ(diag F + δI)⁻¹g with Fisher weights, ‖g‖² with ``weights`` None."""
    out = []
    for block in per_example_gradients(model, forget, device, batch_size):
        squares = block.to(torch.float64).pow(2)
        out.append((squares if weights is None else squares * weights).sum(dim=1).cpu())
    return torch.cat(out).numpy()


def reduced_task(task: Task, keep: np.ndarray) -> Task:
    """The task with only the kept forget positions (ids kept); retain, test and everything else unchanged.
    ``train_split`` is dropped: skipped points are neither forgotten nor retained, so forget ∪ retain shrinks."""
    return dataclasses.replace(task, forget=task.forget.subset(np.flatnonzero(keep)), train_split=None)


@register_method
@dataclass(frozen=True)
class LowInfluenceSkip:
    """Skip negligible-influence forget points, then unlearn the rest with any method (Kleiman, Fisher, Deaner & Wieder,
    "When unlearning is free: leveraging low influence points to reduce computational costs").

    Score of forget point x (``score``): ``self_influence`` s(x) = g_xᵀ(diag F + δI)⁻¹g_x, g_x the gradient of x's
    cross-entropy w.r.t. all trainable parameters at the trained model, F the empirical Fisher (mean squared per-example
    gradient) of ``n_fisher`` evenly spaced retain examples, δ = damping·mean(diag F) — the influence-function estimate
    of how much x's own loss depends on x being trained on (Koh & Liang 2017, Hessian ≈ diagonal Fisher); or
    ``grad_norm`` ‖g_x‖² (Hessian ≈ I). A point whose removal would barely change the model's output on it needs no
    unlearning. Points with s(x) strictly below the cut (``rule``: the ``quantile`` of the forget scores, or an absolute
    ``threshold``) are dropped; the ``inner`` method (with ``inner_params``) runs on the task with the reduced forget set,
    retain unchanged (skipped points are not moved to retain). Nothing skipped: the inner method sees the task as given.
    Everything skipped: the model is returned unchanged with an all-False ``changed`` mask.

    Inferred (the abstract names influence functions but not which): the self-influence score, its diagonal Fisher,
    the quantile rule and its default. Cost: info reports the scoring passes, the inner run's measured passes and steps,
    and an estimate of the inner passes avoided, inner_passes·n_skipped/n_kept — right when the inner cost is
    proportional to the forget-set size (an epoch is a pass over the forget set), an overestimate when part of it
    does not depend on the forget set (e.g. an epoch over retain: then nothing is saved). With a class forget set,
    skipped points of the class are left to whatever the inner method does to the rest of the class.
    ``kind`` describes the default inner method (grad_diff); the inner method's own reference needs apply.
    """

    inner: str = "grad_diff"
    inner_params: dict[str, Any] = field(default_factory=dict)
    score: Literal["self_influence", "grad_norm"] = "self_influence"
    rule: Literal["quantile", "threshold"] = "quantile"
    quantile: float = 0.25
    threshold: float = 0.0
    n_fisher: int = 1024
    damping: float = 1e-3
    batch_size: int = 64
    # what `unlearnkit tune` searches (classifiers): how much to skip and by which score; the inner method keeps the
    # settings given in inner_params (tune the inner method on its own first, then pass its setting here)
    search_space: ClassVar[Mapping[str, Any] | None] = {"quantile": FloatRange(0.0, 0.9),
                                                      "score": Choice(("self_influence", "grad_norm"))}

    name: ClassVar[str] = "low_influence_skip"
    kind: ClassVar[str] = "gradient"
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    wraps: ClassVar[str] = "inner"  # a wrapper: the parameter naming the method it runs on the rest of the forget set
    needs: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = ("Kleiman, Fisher, Deaner & Wieder, When unlearning is free: leveraging low influence points to reduce "
                            "computational costs")
    version: ClassVar[str] = "1"  # bump when its numbers change

    def __post_init__(self) -> None:
        if self.inner == self.name:
            raise ConfigError(f"low_influence_skip: inner must be another method, got {self.inner!r}.")
        if self.inner not in METHODS:
            raise ConfigError(f"low_influence_skip: inner: {METHODS.unknown_message(self.inner)}")
        if not isinstance(self.inner_params, dict):
            raise ConfigError(
                f"low_influence_skip: inner_params must be a mapping of the inner method's parameters, got {self.inner_params!r}."
            )
        self.wrapped()  # validates inner_params against the inner method
        if self.score not in SCORES:
            raise ConfigError(f"low_influence_skip: score must be one of {list(SCORES)}, got {self.score!r}.")
        if self.rule not in RULES:
            raise ConfigError(f"low_influence_skip: rule must be one of {list(RULES)}, got {self.rule!r}.")
        if not 0.0 <= self.quantile < 1.0:
            raise ConfigError(f"low_influence_skip: quantile must be in [0, 1), got {self.quantile}.")
        if not (self.threshold >= 0 and math.isfinite(self.threshold)):
            raise ConfigError(f"low_influence_skip: threshold must be a finite number >= 0, got {self.threshold}.")
        if self.n_fisher < 1:
            raise ConfigError(f"low_influence_skip: n_fisher must be >= 1, got {self.n_fisher}.")
        if not self.damping > 0:
            raise ConfigError(f"low_influence_skip: damping must be > 0, got {self.damping}.")
        if self.batch_size < 1:
            raise ConfigError(f"low_influence_skip: batch_size must be >= 1, got {self.batch_size}.")

    def wrapped(self) -> Any:
        """The inner method (its version goes into the run key)."""
        return build_method(self.inner, self.inner_params)

    def cut(self, scores: np.ndarray) -> float:
        return float(np.quantile(scores, self.quantile)) if self.rule == "quantile" else self.threshold

    def scores(self, model: nn.Module, task: Task, device: str) -> tuple[np.ndarray, int]:
        """Influence score per forget point (forget order) and the example passes spent computing them."""
        weights, passes = None, len(task.forget)
        if self.score == "self_influence":
            sample = evenly_spaced(task.retain, self.n_fisher)
            weights = inverse_fisher_weights(model, sample, self.damping, device, self.batch_size)
            passes += len(sample)
        return influence_scores(model, task.forget, weights, device=device, batch_size=self.batch_size), passes

    def unlearn(
        self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False
    ) -> Unlearned:
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        scores, scoring_passes = self.scores(model, task, device)
        cut = self.cut(scores)
        skip = scores < cut
        n_skipped, n_kept = int(skip.sum()), int((~skip).sum())
        info: dict[str, Any] = {
            "score": self.score, "cut": cut, "n_forget": len(scores), "n_skipped": n_skipped, "n_kept": n_kept,
            "skipped_fraction": n_skipped / len(scores), "skipped_ids": [int(i) for i in task.forget.ids[skip]],
            "score_quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0", "0.25", "0.5", "0.75", "1")},
        }
        if n_kept == 0:
            info["note"] = f"all {n_skipped} forget points scored below {cut:.4g}: nothing to unlearn, the model is unchanged"
            info["cost"] = {"scoring_passes": scoring_passes, "inner_passes": 0, "inner_steps": 0,
                            "inner_passes_avoided_estimate": None, "net_passes_saved_estimate": None}
            return Unlearned(model, Mask.full(model, False), info)
        inner_task = task if n_skipped == 0 else reduced_task(task, ~skip)
        with CostMeter(device) as inner_meter:
            out = self.wrapped().unlearn(model, inner_task, refs, rng=rng, device=device, progress=progress)
        info["cost"] = savings(inner_meter, scoring_passes, n_skipped, n_kept)
        info["inner"] = {"name": self.inner, "info": out.info}
        return Unlearned(out.model, out.changed, info)


def savings(inner_meter: CostMeter, scoring_passes: int, n_skipped: int, n_kept: int) -> dict[str, Any]:
    """Measured inner cost and the inner work avoided, estimated as proportional to the forget-set size."""
    avoided = round(inner_meter.passes * n_skipped / n_kept)
    return {
        "scoring_passes": scoring_passes, "inner_passes": inner_meter.passes, "inner_steps": inner_meter.steps,
        "inner_passes_avoided_estimate": avoided, "inner_steps_avoided_estimate": round(inner_meter.steps * n_skipped / n_kept),
        "net_passes_saved_estimate": avoided - scoring_passes,
    }
