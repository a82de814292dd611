"""Objectives of the classifier and regression recipes: losses toward targets computed before training and looked up by
example id (relabelled data, frozen predictions, attention maps), distillation, output-distribution targets, weight
penalties and representation-level terms. Every class is registered; the keys they read from ``ctx.extra`` are below."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..errors import ConfigError
from ..registry import OBJECTIVES
from ..types import Batch, Split
from .base import Loss, ReferenceLogits, StepContext, reference_for

if TYPE_CHECKING:
    from ..models.vae import EmbeddingVAE

REFERENCE_LOGITS = "reference_logits"  # ctx.extra: frozen reference logits by id (a ReferenceLogits table)
ORIGINAL_EMBEDDINGS = "original_embeddings"  # the input model's embeddings, by example id
RETAIN_DENSITY = "retain_density"  # the retain VAE (a models.vae.RetainDensity)
TYPICAL_ERROR = "typical_error"  # the original retain embeddings' mean reconstruction error under it


class LabelTable:
    """Fixed integer labels keyed by example id, looked up per batch (the id lookup of ReferenceLogits;
    labels are stored as float32, exact for class indices below 2**24)."""

    def __init__(self, ids: Any, labels: torch.Tensor) -> None:
        self._table = ReferenceLogits(ids, labels.to(torch.float32).unsqueeze(1))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self._table.lookup(ids).squeeze(1).long()


@OBJECTIVES.register("table_targets")
@dataclass(frozen=True)
class TableTargets:
    """The adapter's mean loss on the stream toward targets looked up by example id in ``ctx.extra[key]`` (a
    ``LabelTable`` or ``ReferenceLogits``) instead of the batch's own ``y``: training on relabelled data without copying
    its inputs, or matching frozen predictions. ``part`` names the logged value."""

    key: str
    stream: str = "forget"
    part: str = "targets"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        value = ctx.adapter.per_example_loss(model, b, reference_for(ctx, b, f"table_targets({self.key!r})", self.key)).mean()
        return Loss(value, {f"{self.part}_{self.stream}": float(value.detach())})


def distill_kl(logits: torch.Tensor, reference: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(reference/T) ‖ softmax(logits/T)), averaged over the batch (Hinton et al.'s distillation loss)."""
    log_student = F.log_softmax(logits / temperature, dim=-1)
    log_teacher = F.log_softmax(reference / temperature, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean() * temperature**2


@OBJECTIVES.register("distill_with_labels")
@dataclass(frozen=True)
class DistillWithLabels:
    """SCRUB's min-step loss γ·CE(f(x), y) + α·T²·KL(teacher ‖ student) from one forward pass of the stream,
    the teacher's logits looked up by id in ``ctx.extra["reference_logits"]``."""

    gamma: float
    alpha: float
    temperature: float
    stream: str = "retain"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        table = ctx.extra.get(REFERENCE_LOGITS)
        if table is None:
            raise ConfigError(f"DistillWithLabels needs ctx.extra[{REFERENCE_LOGITS!r}] (a ReferenceLogits table).")
        b = batch[self.stream]
        logits = ctx.adapter.logits(model, b)
        ce = F.cross_entropy(logits, b["y"])
        kl = distill_kl(logits, table.lookup(b["ids"]).to(logits.device), self.temperature)
        value = self.gamma * ce + self.alpha * kl
        return Loss(value, {f"nll_{self.stream}": float(ce.detach()), f"kl_{self.stream}": float(kl.detach())})


@OBJECTIVES.register("target_kl")
@dataclass(frozen=True)
class TargetKL:
    """KL(q ‖ model) on the stream, with target log-probabilities q looked up by example id from
    ``ctx.extra[key]``; terms with q_k = 0 contribute 0 (so targets may exclude classes entirely)."""

    stream: str = "forget"
    key: str = "trw_targets"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        log_q = ctx.extra[self.key].lookup(b["ids"]).to(b["x"].device)
        log_m = F.log_softmax(ctx.adapter.logits(model, b), dim=-1)
        q = log_q.exp()
        terms = torch.where(q > 0, q * (log_q - log_m), torch.zeros_like(q))
        kl = terms.sum(-1).mean()
        return Loss(kl, {f"kl_target_{self.stream}": float(kl.detach())})


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Activation-based attention (Zagoruyko & Komodakis, ICLR 2017): squared activations, averaged over
    channels for feature maps of shape (n, c, ...), flattened and L2-normalised per example. For the
    (n, h) features of an MLP every hidden unit is its own "position"."""
    energy = features.pow(2)
    if energy.ndim > 2:
        energy = energy.mean(1)
    return F.normalize(energy.flatten(1), dim=1)


@torch.no_grad()
def reference_table(model: nn.Module, split: Split, rows: Callable[[nn.Module, Batch], torch.Tensor], device: str,
                    batch_size: int = 1024) -> ReferenceLogits:
    """``rows(model, batch)`` for every example of ``split`` (model in eval mode), keyed by example id."""
    was_training = model.training
    model.eval()
    try:
        out = [rows(model, b).float().cpu() for b in split.batches(batch_size, device=device)]
    finally:
        model.train(was_training)
    cost.record(passes=len(split))
    return ReferenceLogits(split.ids, torch.cat(out))


@OBJECTIVES.register("attention_transfer")
@dataclass(frozen=True)
class AttentionTransfer:
    """Attention transfer: mean squared difference between the attention map of the model's features
    (``model.features``) and a frozen reference attention map looked up by example id in ``ctx.extra[key]``."""

    stream: str
    key: str

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        target = ctx.extra[self.key].lookup(b["ids"]).to(b["x"].device)
        value = (attention_map(ctx.adapter.features(model, b)) - target).pow(2).mean()
        return Loss(value, {f"attention_{self.stream}": float(value.detach())})


def l1_norm(model: nn.Module) -> torch.Tensor:
    """‖θ‖₁ over every parameter of the model (weights and biases, as in the reference code)."""
    return torch.stack([p.abs().sum() for p in model.parameters()]).sum()


def decayed_weight(alpha: float, step: int, n_steps: int) -> float:
    """α_t = α·(1 − t/T): α at the first step, decaying linearly to 0 at the end of the budget T."""
    return alpha * (1.0 - step / max(n_steps, 1))


@OBJECTIVES.register("decaying_l1")
@dataclass(frozen=True)
class DecayingL1:
    """Loss term α_t·‖θ‖₁ with α_t = alpha·(1 − ctx.step/ctx.n_steps). It reads no data; ``stream``
    only names a stream the training loop already draws (the loop requires every objective to name one)."""

    alpha: float
    stream: str = "retain"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        weight = decayed_weight(self.alpha, ctx.step, ctx.n_steps)
        norm = l1_norm(model)
        return Loss(weight * norm, {"l1_norm": float(norm.detach()), "l1_weight": weight})


@OBJECTIVES.register("distance_regulariser")
@dataclass(frozen=True)
class DistanceRegulariser:
    """½‖θ_S − anchor‖² over the chosen parameters (reads no data).

    For ``min_change`` the anchor is θ_S⁰. For ``min_norm`` it is the closed-form minimiser θ* = θ_S⁰ − P⊥θ_S⁰, which lies
    in span(G): for any feasible θ_S = θ* + Δ' with Δ' in the complement, ½‖θ_S‖² = ½‖θ*‖² + ½‖Δ'‖² (Pythagoras), so
    ½‖θ_S − θ*‖² is the minimum-norm regulariser up to a constant (which would otherwise dominate the loss)."""

    names: tuple[str, ...]
    anchor: torch.Tensor = field(compare=False)

    streams: ClassVar[tuple[str, ...]] = ()

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        params = dict(model.named_parameters())
        theta = torch.cat([params[n].reshape(-1) for n in self.names])
        diff = theta - self.anchor.to(theta.device, theta.dtype)
        value = 0.5 * (diff * diff).sum()
        return Loss(value, {"regulariser": float(value.detach())})


@OBJECTIVES.register("toward_uniform")
@dataclass(frozen=True)
class TowardUniform:
    """Mean KL(uniform ‖ softmax f(x)) over the stream: pushes predictions away from their labels toward
    maximum entropy; bounded below by 0 and, unlike gradient ascent, its gradient does not vanish on
    confidently fitted examples."""

    stream: str = "forget"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        logp = torch.log_softmax(ctx.adapter.logits(model, batch[self.stream]), dim=-1)
        value = (-logp.mean(dim=-1) - math.log(logp.shape[-1])).mean()
        return Loss(value, {f"kl_uniform_{self.stream}": float(value.detach())})


def saturated(error: torch.Tensor) -> torch.Tensor:
    """m / (1 + m): a bounded transform of a reconstruction error, so that pushing it up cannot diverge."""
    return error / (1.0 + error)


def contrastive_alignment(
    retain: torch.Tensor, retain_original: torch.Tensor, forget: torch.Tensor, forget_original: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE over a batch with the forget pairs as extra negatives (cosines / temperature).

    Retain anchor i has logits {cos(r_i, r⁰_j)}_j (positive j = i: its own original embedding; the other retain
    originals are in-batch negatives) and {cos(f_k, f⁰_k)}_k (each forget example's similarity to its own original).
    Minimising −log softmax(positive) aligns retain embeddings with the original model's and pushes every forget
    embedding away from its original until it is no more similar to it than unrelated examples are."""
    retain_unit, forget_unit = F.normalize(retain, dim=1), F.normalize(forget, dim=1)
    in_batch = retain_unit @ F.normalize(retain_original, dim=1).T
    forget_self = (forget_unit * F.normalize(forget_original, dim=1)).sum(1)
    logits = torch.cat([in_batch, forget_self.expand(len(retain), -1)], dim=1) / temperature
    return F.cross_entropy(logits, torch.arange(len(retain), device=retain.device))


@OBJECTIVES.register("vae_fit")
@dataclass(frozen=True)
class VAEFit:
    """Objective of the VAE fit: mean −ELBO over a batch of embeddings; the reparameterisation noise comes
    from the step's seeded generator."""

    vae: EmbeddingVAE
    beta: float
    stream: str = "retain"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        z = batch[self.stream]["x"]
        noise = torch.randn((z.shape[0], self.vae.mean.out_features), generator=ctx.generator, device=ctx.generator.device).to(z)
        value = self.vae.negative_elbo(z, noise, self.beta).mean()
        return Loss(value, {"neg_elbo": float(value.detach())})


@OBJECTIVES.register("label_agnostic")
@dataclass(frozen=True)
class LabelAgnosticObjective:
    """unlearn_weight·(ψ(m_retain) − ψ(m_forget)) + align_weight·contrastive_alignment(...) on one forget and one retain batch.

    m is the retain VAE's reconstruction error (``ctx.extra["retain_density"]``) of the current embeddings in units of
    the original retain embeddings' mean error (``ctx.extra["typical_error"]``), ψ(m) = m/(1+m); the contrastive term
    compares embeddings centred on the retain mean with the original ones (``ctx.extra["original_embeddings"]``, looked
    up by example id). Reads no labels."""

    unlearn_weight: float
    align_weight: float
    temperature: float

    @property
    def streams(self) -> tuple[str, ...]:
        return ("forget", "retain")

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        forget, retain = batch["forget"], batch["retain"]
        density, typical = ctx.extra[RETAIN_DENSITY], ctx.extra[TYPICAL_ERROR]
        e_forget = ctx.adapter.features(model, forget)
        e_retain = ctx.adapter.features(model, retain)
        atypical_forget = saturated(density.reconstruction_error(e_forget) / typical).mean()
        atypical_retain = saturated(density.reconstruction_error(e_retain) / typical).mean()
        originals = ctx.extra[ORIGINAL_EMBEDDINGS]
        c = density.center
        align = contrastive_alignment(
            e_retain - c, originals.lookup(retain["ids"]).to(e_retain) - c, e_forget - c, originals.lookup(forget["ids"]).to(e_forget) - c,
            self.temperature,
        )
        value = self.unlearn_weight * (atypical_retain - atypical_forget) + self.align_weight * align
        parts = {"atypical_forget": float(atypical_forget.detach()), "atypical_retain": float(atypical_retain.detach()),
                 "align": float(align.detach())}
        return Loss(value, parts)


__all__ = [
    "ORIGINAL_EMBEDDINGS", "REFERENCE_LOGITS", "RETAIN_DENSITY", "TYPICAL_ERROR", "AttentionTransfer", "DecayingL1", "DistanceRegulariser", "DistillWithLabels", "LabelAgnosticObjective", "LabelTable", "TableTargets",
    "TargetKL", "TowardUniform", "VAEFit", "attention_map", "contrastive_alignment", "decayed_weight", "distill_kl", "l1_norm",
    "reference_table", "saturated",
]
