"""Objectives: loss terms as pure functions of (model, batches, ctx) -> Loss, combined with ``weighted``.

Each objective names the data streams it reads (``streams``); the training loop draws one batch per
stream per step. Objectives use the adapter for per-example losses, so they work for any modality
whose adapter provides them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..errors import ConfigError, TaskError
from ..registry import OBJECTIVES
from ..types import Batch
from .base import Loss, ReferenceLogits, StepContext, reference_for

Reduction = Literal["token", "example"]
REDUCTIONS: tuple[str, ...] = ("token", "example")


def shard_scaled(value: torch.Tensor, ctx: StepContext, stream: str, reduction: str) -> torch.Tensor:
    """``value``, the mean over a shard of ``stream``'s batch, rescaled in a data-parallel step (``distributed.SCALES`` in
    ``ctx.extra``) so that the ranks' share-weighted sum is the mean over the whole batch: over its examples, or over its
    answer tokens for the ``token`` reduction (the batch's global token count). Unchanged outside one."""
    scales = ctx.extra.get(distributed.SCALES)
    return value if scales is None else value * scales[stream][reduction]


def check_reduction(reduction: Any, who: str) -> None:
    """A clear error unless ``reduction`` is one of ``REDUCTIONS``."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"{who}: must be one of {list(REDUCTIONS)}, got {reduction!r}.")


@OBJECTIVES.register("nll")
@dataclass(frozen=True)
class NLL:
    """Mean negative log-likelihood (cross-entropy) of the stream's own labels: plain training (Hugging Face's causal-LM
    loss with ``reduction="token"``).

    ``reduction`` (``adapter.batch_loss``): ``example`` (default) averages the per-example losses; ``token`` divides
    the NLL summed over every target token of the batch by their number. They differ only for sequences (a language
    model's answers of different lengths); with one target per example they are the same number."""

    stream: str = "retain"
    reduction: Reduction = "example"

    def __post_init__(self) -> None:
        check_reduction(self.reduction, "nll: reduction")

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        value = shard_scaled(ctx.adapter.batch_loss(model, batch[self.stream], self.reduction), ctx, self.stream, self.reduction)
        return Loss(value, {f"nll_{self.stream}": float(value.detach())})


@OBJECTIVES.register("ascent")
@dataclass(frozen=True)
class Ascent:
    """Gradient ascent: the negated mean NLL of the stream (unbounded below; Golatkar et al. 2020 / Thudi et al. 2022).
    ``reduction`` as for ``NLL``: ``example`` (default) or ``token`` (OpenUnlearning's GradAscent: −``outputs.loss``)."""

    stream: str = "forget"
    reduction: Reduction = "example"

    def __post_init__(self) -> None:
        check_reduction(self.reduction, "ascent: reduction")

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        nll = shard_scaled(ctx.adapter.batch_loss(model, batch[self.stream], self.reduction), ctx, self.stream, self.reduction)
        return Loss(-nll, {f"nll_{self.stream}": float(nll.detach())})


def random_wrong_labels(y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels drawn uniformly from the classes other than each example's own."""
    if n_classes < 2:
        raise TaskError("Random relabelling needs at least two classes.")
    offset = torch.randint(1, n_classes, y.shape, generator=generator, device=generator.device).to(y.device)
    return (y + offset) % n_classes


@OBJECTIVES.register("random_labels")
@dataclass(frozen=True)
class RandomLabels:
    """Cross-entropy toward labels re-drawn every step uniformly among the *wrong* classes
    (Golatkar et al. 2020's random-label baseline, as used by SalUn, Fan et al. ICLR 2024)."""

    n_classes: int
    stream: str = "forget"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        labels = random_wrong_labels(b["y"], self.n_classes, ctx.generator)
        value = ctx.adapter.per_example_loss(model, b, labels).mean()
        return Loss(value, {f"random_label_{self.stream}": float(value.detach())})


@OBJECTIVES.register("kl_to_reference")
@dataclass(frozen=True)
class KLToReference:
    """KL(reference ‖ model) on the stream at a temperature, using reference logits looked up by
    example id from ``ctx.extra["reference_logits"]`` (computed once, no second model held).
    ``sign=-1`` pushes the model away from the reference (SCRUB's max-step)."""

    stream: str = "retain"
    temperature: float = 1.0
    sign: float = 1.0

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        ref = reference_for(ctx, b, "kl_to_reference")
        t = self.temperature
        logp = F.log_softmax(ctx.adapter.logits(model, b) / t, dim=-1)
        logq = F.log_softmax(ref / t, dim=-1)
        kl = (logq.exp() * (logq - logp)).sum(-1).mean() * t * t
        return Loss(self.sign * kl, {f"kl_{self.stream}": float(kl.detach())})


def batch_quantiles(values: torch.Tensor, n: int) -> torch.Tensor:
    """``values``' empirical quantiles (the inverse of its step distribution function) at the mid-ranks (r + ½)/n,
    r = 0..n−1: ``n`` points spread like ``values`` whatever its length, and ``values`` itself, sorted, when n equals
    its length."""
    ordered = torch.sort(values).values
    m = len(ordered)
    at = torch.floor((torch.arange(n, device=values.device, dtype=torch.float64) + 0.5) * m / n).long().clamp(max=m - 1)
    return ordered[at]


@OBJECTIVES.register("matched_loss")
@dataclass(frozen=True)
class MatchedLoss:
    """The 1-D optimal-transport match of ``stream``'s per-example losses to ``reference``'s, both under the current
    model: the batch's losses sorted, each pulled by Huber(·, ``delta``) toward the reference batch's quantile at its
    rank (the reference losses are computed without gradient: its examples are read, never trained on). The minimum is
    where the two loss distributions coincide — where a loss-threshold membership attack cannot tell the streams apart —
    and each example's pull is bounded (Huber), so unlike gradient ascent the term has a minimum and never pushes past that
    level (``holdout_match``'s forget term, with ``reference`` the never-trained holdout).

    ``scale="log"`` (default) matches log-losses (losses floored at 1e-12): membership attacks rank examples, and most
    trained examples sit at losses of 1e-3–1e-1, where a raw-loss difference is too small to pull on though it decides
    the ranking; for cross-entropy, log ℓ ≈ −(the true class's logit margin) there, the statistic LiRA scales to.
    ``scale="loss"`` matches raw losses."""

    stream: str = "forget"
    reference: str = "test"
    delta: float = 1.0
    scale: Literal["log", "loss"] = "log"

    def __post_init__(self) -> None:
        if self.scale not in ("log", "loss"):
            raise ConfigError(f"matched_loss: scale must be 'log' or 'loss', got {self.scale!r}.")
        if not (math.isfinite(self.delta) and self.delta > 0):
            raise ConfigError(f"matched_loss: delta must be a finite number > 0, got {self.delta}.")

    def transform(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.log(losses.clamp_min(1e-12)) if self.scale == "log" else losses

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream, self.reference)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        losses = ctx.adapter.per_example_loss(model, batch[self.stream])
        with torch.no_grad():
            reference = ctx.adapter.per_example_loss(model, batch[self.reference]).to(losses.dtype)
        ordered = torch.sort(self.transform(losses)).values
        value = F.huber_loss(ordered, batch_quantiles(self.transform(reference), len(ordered)), delta=self.delta)
        return Loss(value, {f"matched_{self.stream}": float(value.detach()), f"loss_{self.stream}": float(losses.detach().mean()),
                            f"loss_{self.reference}": float(reference.mean())})


@OBJECTIVES.register("logit_mse")
@dataclass(frozen=True)
class LogitMSE:
    """Mean squared error between the model's logits and reference logits looked up by example id in
    ``ctx.extra["reference_logits"]`` (output matching, e.g. Datamodel Matching's loss)."""

    stream: str = "forget"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        value = F.mse_loss(ctx.adapter.logits(model, b), reference_for(ctx, b, "logit_mse"))
        return Loss(value, {f"mse_{self.stream}": float(value.detach())})


@dataclass(frozen=True)
class Weighted:
    """Sum of weighted objectives; terms with weight 0 are not evaluated."""

    terms: tuple[tuple[float, Any], ...]

    @property
    def streams(self) -> tuple[str, ...]:
        active = [t for w, t in self.terms if w != 0] or [t for _, t in self.terms]
        return tuple(dict.fromkeys(s for t in active for s in t.streams))

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        return self._sum(model, batch, ctx, backward=False)[0]

    def backward_terms(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> tuple[Loss, bool]:
        """``train.loss_and_gradient`` for a sum: each term's forward and backward in turn, so only one term's graph is
        alive at a time (peak activation memory of the largest term, not of all of them). The gradient and the loss
        are the sum's: terms are evaluated in the same order and no parameter changes between them."""
        return self._sum(model, batch, ctx, backward=True)

    def _sum(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext, backward: bool) -> tuple[Loss, bool]:
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        has_grad = False
        for w, term in self.terms:
            if w == 0:
                continue
            loss = term(model, batch, ctx)
            value = w * loss.value
            if backward and value.requires_grad:
                value.backward()
                has_grad = True
                value = value.detach()
            total = value if total is None else total + value
            parts.update(loss.parts)
        return Loss(total if total is not None else torch.zeros(()), parts), has_grad


def weighted(*terms: tuple[float, Callable[..., Loss]]) -> Weighted:
    """``weighted((1, Ascent("forget")), (alpha, NLL("retain")))`` — the NegGrad+ objective."""
    if not terms:
        raise ConfigError("weighted() needs at least one (weight, objective) term.")
    return Weighted(tuple((float(w), t) for w, t in terms))


from . import classifier, lm, orthogonal  # noqa: F401, E402  (registers the classifier, language-model and orthogonality objectives)

__all__ = ["Loss", "StepContext", "NLL", "MatchedLoss", "batch_quantiles", "REDUCTIONS", "Reduction", "check_reduction", "Ascent", "KLToReference", "LogitMSE", "reference_for", "RandomLabels", "ReferenceLogits", "Weighted", "random_wrong_labels", "weighted"]
