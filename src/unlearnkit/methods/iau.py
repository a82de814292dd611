"""iau: Influence Approximation Unlearning — a Hessian-free influence update from exact full-split gradients.

Longer than a recipe's 60 lines: an edit, not a recipe — each update is one optimizer step along exact full-split
gradients (not the training loop's mini-batches), and its docstring derives why that approximates influence removal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .. import cost
from ..adapters import get_adapter
from ..errors import ConfigError
from ..references import References
from ..searchspace import FloatRange, IntRange
from ..train import OptimizerName, TrainConfig, make_optimizer
from ..types import Mask, Split, Task, Unlearned
from .base import ALL_FORGET_KINDS, register_method


def mean_gradient(
    model: nn.Module, split: Split, adapter: Any, params: list[nn.Parameter], *, batch_size: int, device: str
) -> list[torch.Tensor]:
    """∇θ of the mean per-example loss over every example of ``split``, summed over micro-batches (exact, not sampled)."""
    sums = [torch.zeros_like(p) for p in params]
    for batch in split.batches(batch_size, device=device):
        loss = adapter.per_example_loss(model, batch).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for total, g in zip(sums, grads, strict=True):
            if g is not None:
                total.add_(g)
        cost.record(passes=len(batch["ids"]))
    return [total / len(split) for total in sums]


def flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


@dataclass(frozen=True)
class InfluenceDirection:
    """d = retain_weight·ḡ_retain − forget_weight·ḡ_forget and the diagnostics of the two gradients."""

    direction: list[torch.Tensor]
    retain_norm: float
    forget_norm: float
    cosine: float | None  # between ḡ_retain and ḡ_forget (None when either was not computed or is zero)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(d).all()) for d in self.direction)

    def summary(self) -> dict[str, float | None]:
        return {"retain_grad_norm": self.retain_norm, "forget_grad_norm": self.forget_norm, "retain_forget_cosine": self.cosine}


def influence_direction(
    model: nn.Module,
    task: Task,
    adapter: Any,
    params: list[nn.Parameter],
    *,
    forget_weight: float,
    retain_weight: float,
    batch_size: int,
    device: str,
) -> InfluenceDirection:
    """The IAU update direction at the current parameters, from exact mean gradients (model in eval mode: no dropout,
    batch-norm running statistics). A term with weight 0 is not computed."""
    was_training = model.training
    model.eval()
    try:
        zeros = [torch.zeros_like(p) for p in params]
        g_retain = mean_gradient(model, task.retain, adapter, params, batch_size=batch_size, device=device) if retain_weight else zeros
        g_forget = mean_gradient(model, task.forget, adapter, params, batch_size=batch_size, device=device) if forget_weight else zeros
    finally:
        model.train(was_training)
    direction = [retain_weight * r - forget_weight * f for r, f in zip(g_retain, g_forget, strict=True)]
    n_r, n_f = math.sqrt(flat_dot(g_retain, g_retain)), math.sqrt(flat_dot(g_forget, g_forget))
    cosine = flat_dot(g_retain, g_forget) / (n_r * n_f) if n_r > 0 and n_f > 0 else None
    return InfluenceDirection(direction, n_r, n_f, cosine)


@register_method
@dataclass(frozen=True)
class IAU:
    """Influence Approximation Unlearning (Liu, Wu, Lian & Chen, Efficient Machine Unlearning via Influence Approximation,
    arXiv 2507.23257): unlearning as the inverse of incremental learning — a Hessian-free gradient update that removes the
    forget set's influence.

    Update, for ``steps`` optimizer steps (reference code: one Adam step, lr 1e-3):
        θ ← θ − step(retain_weight·∇L_R(θ) − forget_weight·∇L_F(θ)),
    L_R, L_F = mean cross-entropy over the *whole* retain / forget set (exact gradients accumulated over micro-batches of
    ``batch_size``; the reference code uses one full batch per set), ``step`` = the optimizer (Adam's first step is
    ≈ lr·sign(d); SGD's is lr·d). −forget_weight·∇L_F is the incremental approximation (learning a "negative sample" of
    each forget point, i.e. gradient ascent on it); +retain_weight·∇L_R is the gradient correction against over-forgetting.

    Why this approximates influence removal (derived here, not stated in the abstract): let θ* minimise L_D + Ω over
    D = R ∪ F (n = n_R + n_F) for any regulariser Ω. The retrained model minimises G = L_R + Ω, and at θ* stationarity
    (n_R∇L_R + n_F∇L_F = −n∇Ω) gives ∇G(θ*) = (n_F/n)·(∇L_R(θ*) − ∇L_F(θ*)). The influence-function estimate of the
    retrained model is θ* − H_G⁻¹∇G(θ*); with equal weights the IAU direction is exactly ∇G(θ*) up to the factor n/n_F,
    so one IAU step is a gradient step on the retrain objective with H_G⁻¹ replaced by the optimizer's step — Hessian-free.
    Plain gradient ascent (retain_weight = 0) drops the retain/regulariser balance and is not parallel to ∇G(θ*).

    Inferred where the abstract leaves details open: gradients are taken in eval mode (deterministic; no dropout); further
    steps recompute both gradients at the new parameters (``steps`` > 1 iterates the update; the paper takes one); no weight
    decay. The paper's third component, the gradient-restriction loss ℓ + α‖∇ℓ‖ added while the original model is trained,
    belongs to training time and is not applied here (the original model is given). No randomness: ``rng`` is not used.
    """

    steps: int = 1
    optimizer: OptimizerName = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    batch_size: int = 512
    # what `unlearnkit tune` searches (classifiers); each step is one pass over the whole training set (exact gradients),
    # so 10 steps cost half of a 20-epoch retrain
    search_space: ClassVar[Mapping[str, Any] | None] = {"steps": IntRange(1, 10, log=True), "lr": FloatRange(1e-4, 1e-2, log=True),
                                                      "retain_weight": FloatRange(0.3, 3.0, log=True)}

    name: ClassVar[str] = "iau"
    kind: ClassVar[str] = "gradient"
    paper: ClassVar[str] = "Liu et al., Efficient Machine Unlearning via Influence Approximation, arXiv 2507.23257"
    version: ClassVar[str] = "1"  # bump when its numbers change
    needs: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ConfigError(f"iau: steps must be an integer >= 1 (the paper takes 1), got {self.steps!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"iau: lr must be a finite number > 0, got {self.lr!r}.")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"iau: momentum must be in [0, 1) (used by optimizer 'sgd'), got {self.momentum!r}.")
        for name in ("forget_weight", "retain_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"iau: {name} must be a finite number >= 0, got {value!r}.")
        if self.forget_weight == 0 and self.retain_weight == 0:
            raise ConfigError("iau: forget_weight and retain_weight are both 0; at least one must be > 0.")
        self.optimizer_config()  # validates optimizer and batch_size

    def optimizer_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=None, steps=self.steps, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, momentum=self.momentum
        )

    def unlearn(
        self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False
    ) -> Unlearned:
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, self.optimizer_config())
        diagnostics: list[dict[str, float | None]] = []
        stopped: str | None = None
        for step in range(self.steps):
            found = influence_direction(
                model, task, adapter, params, forget_weight=self.forget_weight, retain_weight=self.retain_weight,
                batch_size=self.batch_size, device=device,
            )
            diagnostics.append(found.summary())
            if not found.finite():
                stopped = f"non-finite gradient at step {step}; the update was not applied"
                break
            stopped = self.apply(optimizer, params, found.direction, step)
            if stopped:
                break
        changed = Mask.full(model)
        info: dict[str, Any] = {"steps": len(diagnostics) - (1 if stopped else 0), "gradients": diagnostics, "mask": changed.summary()}
        if stopped:
            info["warning"] = stopped
        return Unlearned(model, changed, info)

    @staticmethod
    def apply(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], direction: list[torch.Tensor], step: int) -> str | None:
        """One optimizer step along ``direction``; undone (and reported) if it makes a parameter non-finite."""
        before = [p.detach().clone() for p in params]
        for p, d in zip(params, direction, strict=True):
            p.grad = d
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        cost.record(steps=1)
        if all(bool(torch.isfinite(p).all()) for p in params):
            return None
        with torch.no_grad():
            for p, b in zip(params, before, strict=True):
                p.copy_(b)
        return f"diverged at step {step}: non-finite weights; restored the weights before that step"
