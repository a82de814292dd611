"""dmm: Datamodel Matching — predict the retrained model's logits with a closed-form last-layer
attribution (ridge leave-forget-out), then fine-tune the model to match the predicted logits.

Longer than a recipe's 60 lines: the leave-forget-out ridge fit and the last-layer datamodel prediction are this
method's own closed-form attribution; the recipe itself is the last class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError, TaskError
from ..objectives import LogitMSE, KLToReference, ReferenceLogits, Weighted, weighted
from ..references import References
from ..searchspace import Choice, FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, Setup, register_method

MATCH_LOSSES = ("mse", "kl")


@dataclass(frozen=True)
class LeaveOutRidge:
    """Ridge coefficients (features × outputs) fitted on all rows and with the forget rows left out."""

    full: torch.Tensor
    retain: torch.Tensor
    penalty: float
    route: str  # "woodbury" (|F| <= feature dim) or "downdate" (solve with the downdated Gram matrix)


def ridge_penalty(phi: torch.Tensor, ridge: float) -> float:
    """λ = ridge · trace(ΦᵀΦ) / p: the ridge strength relative to the mean feature energy (scale-free)."""
    return ridge * float((phi * phi).sum()) / phi.shape[1]


def ridge_leave_out(phi: torch.Tensor, targets: torch.Tensor, forget_rows: torch.Tensor, penalty: float) -> LeaveOutRidge:
    """W = (ΦᵀΦ + λI)⁻¹ΦᵀT on every row, and W_R, the same fit on the rows outside ``forget_rows``, in closed form.

    With A = ΦᵀΦ + λI, K = A⁻¹Φ_Fᵀ and residuals r_F = T_F − Φ_F W, the Woodbury identity gives
    W_R = W − K (I − Φ_F K)⁻¹ r_F (an |F|×|F| system). When |F| exceeds the feature dimension the same
    W_R is cheaper as (A − Φ_FᵀΦ_F)⁻¹(ΦᵀT − Φ_FᵀT_F) (a p×p system). Both are exact; nothing is retrained.
    """
    p = phi.shape[1]
    gram = phi.T @ phi + penalty * torch.eye(p, dtype=phi.dtype, device=phi.device)
    moment = phi.T @ targets
    full = torch.linalg.solve(gram, moment)
    phi_f, t_f = phi[forget_rows], targets[forget_rows]
    if len(phi_f) <= p:
        k = torch.linalg.solve(gram, phi_f.T)
        leverage_complement = torch.eye(len(phi_f), dtype=phi.dtype, device=phi.device) - phi_f @ k
        retain = full - k @ torch.linalg.solve(leverage_complement, t_f - phi_f @ full)
        return LeaveOutRidge(full, retain, penalty, "woodbury")
    retain = torch.linalg.solve(gram - phi_f.T @ phi_f, moment - phi_f.T @ t_f)
    return LeaveOutRidge(full, retain, penalty, "downdate")


def centred_one_hot(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """One-hot labels minus 1/C: regression targets whose rows sum to zero, like logits up to a shift."""
    targets = torch.full((len(labels), n_classes), -1.0 / n_classes, dtype=torch.float64)
    targets[torch.arange(len(labels)), torch.as_tensor(labels, dtype=torch.long)] += 1.0
    return targets


def calibrated_scale(logits: torch.Tensor, surrogate: torch.Tensor) -> float:
    """The scale τ ≥ 0 minimising ‖(Z − rowmean Z) − τ·S‖² over the training rows: puts the label-space
    surrogate S = ΦW on the model's logit scale (logits are compared up to a per-row shift)."""
    centred = logits - logits.mean(dim=1, keepdim=True)
    denom = float((surrogate * surrogate).sum())
    return max(float((centred * surrogate).sum()) / denom, 0.0) if denom > 0 else 0.0


@dataclass(frozen=True)
class DatamodelPrediction:
    """Predicted logits of a model retrained without the forget set, for every training example."""

    ids: np.ndarray
    original: torch.Tensor
    predicted: torch.Tensor
    forget_rows: torch.Tensor
    scale: float
    fit: LeaveOutRidge

    def table(self) -> ReferenceLogits:
        return ReferenceLogits(self.ids, self.predicted)

    def summary(self, labels: np.ndarray) -> dict[str, Any]:
        shift = (self.predicted - self.original).pow(2).mean(dim=1)
        y = torch.as_tensor(labels, dtype=torch.long)

        def acc(z: torch.Tensor, rows: torch.Tensor) -> float:
            return float((z[rows].argmax(1) == y[rows]).double().mean())

        f, r = self.forget_rows, ~self.forget_rows
        return {
            "ridge_penalty": self.fit.penalty,
            "route": self.fit.route,
            "label_scale": self.scale,
            "predicted_shift_mse_forget": float(shift[f].mean()),
            "predicted_shift_mse_retain": float(shift[r].mean()),
            "forget_accuracy_original": acc(self.original, f),
            "forget_accuracy_predicted": acc(self.predicted, f),
            "retain_accuracy_predicted": acc(self.predicted, r),
        }


def predict_retrained_logits(
    model: nn.Module, task: Task, adapter: Any, *, ridge: float, label_scale: float | None, device: str, batch_size: int = 1024
) -> DatamodelPrediction:
    """Last-layer datamodel: ẑ(x) = z(x) + τ·φ̃(x)(W_R − W), with W, W_R the ridge fits of centred one-hot
    labels on φ̃ = [features, 1] over the training set with and without the forget set."""
    train = task.train
    if task.n_classes is None or train.labels is None:
        raise TaskError("dmm needs a labelled classification task (n_classes and labels).")
    feats = adapter.feature_matrix(model, train, batch_size=batch_size, device=device)
    logits = adapter.outputs(model, train, batch_size=batch_size, device=device)["logits"]
    cost.record(passes=2 * len(train))
    phi = torch.cat([torch.as_tensor(feats, dtype=torch.float64), torch.ones(len(train), 1, dtype=torch.float64)], dim=1)
    z = torch.as_tensor(logits, dtype=torch.float64)
    forget_rows = torch.as_tensor(np.isin(train.ids, task.forget.ids))
    ridge_fit = ridge_leave_out(phi, centred_one_hot(train.labels, task.n_classes), forget_rows, ridge_penalty(phi, ridge))
    scale = calibrated_scale(z, phi @ ridge_fit.full) if label_scale is None else float(label_scale)
    predicted = z + scale * (phi @ (ridge_fit.retain - ridge_fit.full))
    return DatamodelPrediction(np.asarray(train.ids), z, predicted, forget_rows, scale, ridge_fit)


@register_method
@dataclass(frozen=True)
class DMM(GradientMethod):
    """Datamodel Matching (Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel, "Attribute-to-Delete", arXiv 2410.23232):
    predict the outputs of a model retrained without the forget set by data attribution, then fine-tune to match them.

    Attribution (inferred; the paper fits datamodels from many retrained models, which is intractable here): a
    last-layer linearisation. With penultimate features φ̃ = [model.features(x), 1] held fixed, the head is treated
    as a ridge regression of the labels (centred one-hot T = onehot − 1/C) on φ̃ over the training set,
    W = A⁻¹Φ̃ᵀT with A = Φ̃ᵀΦ̃ + λI, λ = ridge·trace(Φ̃ᵀΦ̃)/p (p = feature dimension + 1). Removing the forget set F changes it to the leave-F-out
    solution W_R = W − A⁻¹Φ̃_Fᵀ(I − Φ̃_F A⁻¹Φ̃_Fᵀ)⁻¹(T_F − Φ̃_F W) (Woodbury; or the downdated p×p solve when |F| > p),
    computed in closed form without retraining. As in a datamodel, the prediction is the model's own output minus the
    attributed effect of F: ẑ(x) = z(x) + τ·φ̃(x)(W_R − W), where τ (``label_scale``; None = fitted by least squares
    of the centred logits on Φ̃W) maps the label-space surrogate to logit scale. If the head is exactly τ·W, ẑ is
    exactly the ridge refit on the retain set. Regressing the model's own logits instead would be degenerate (the
    head is an exact linear function of φ̃, so residuals and hence the predicted change vanish).

    Matching: fine-tune every parameter on forget_weight·D(f, ẑ)|forget + retain_weight·D(f, ẑ)|retain, one forget
    and one retain batch per step (each step sees a fresh random sample of retain), D = MSE on logits (``match="mse"``)
    or KL(softmax ẑ/T ‖ softmax f/T) (``match="kl"``); an epoch is a pass over the forget set.
    Limit: fixed features capture the head's share of the forget set's influence (large for whole classes,
    small for random points the body memorised).
    """

    train: TrainConfig = TrainConfig(epochs=5.0, optimizer="adam", lr=1e-3, schedule="cosine")
    ridge: float = 1e-3
    label_scale: float | None = None
    match: Literal["mse", "kl"] = "mse"
    temperature: float = 1.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-4, 1e-2, log=True), "epochs": FloatRange(0.5, 10.0, log=True),
                                                      "retain_weight": FloatRange(0.3, 10.0, log=True), "ridge": FloatRange(1e-5, 0.1, log=True),
                                                      "match": Choice(("mse", "kl"))}  # what `unlearnkit tune` searches (classifiers)

    name: ClassVar[str] = "dmm"
    paper: ClassVar[str] = "Georgiev et al., Attribute-to-Delete: Machine Unlearning via Datamodel Matching, arXiv 2410.23232"
    version: ClassVar[str] = "1"  # bump when its numbers change

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ridge > 0:
            raise ConfigError(f"dmm: ridge must be > 0 (relative ridge strength), got {self.ridge}.")
        if self.label_scale is not None and not self.label_scale >= 0:
            raise ConfigError(f"dmm: label_scale must be >= 0 or null (fit it), got {self.label_scale}.")
        if self.match not in MATCH_LOSSES:
            raise ConfigError(f"dmm: match must be one of {list(MATCH_LOSSES)}, got {self.match!r}.")
        if not self.temperature > 0:
            raise ConfigError(f"dmm: temperature must be > 0, got {self.temperature}.")
        if self.forget_weight < 0 or self.retain_weight < 0 or self.forget_weight + self.retain_weight == 0:
            raise ConfigError(
                f"dmm: forget_weight and retain_weight must be >= 0 and not both 0, got {self.forget_weight} and {self.retain_weight}."
            )

    def matcher(self, stream: str) -> Any:
        return LogitMSE(stream) if self.match == "mse" else KLToReference(stream, self.temperature)

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, self.matcher("forget")), (self.retain_weight, self.matcher("retain")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        prediction = predict_retrained_logits(model, task, setup.adapter, ridge=self.ridge, label_scale=self.label_scale,
                                              device=setup.device)
        return {"reference_logits": prediction.table()}, {"datamodel": prediction.summary(task.train.labels)}
