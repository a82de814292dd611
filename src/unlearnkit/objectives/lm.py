"""Loss terms of language-model unlearning: NPO, SimNPO, DPO toward "I don't know", RMU's activation losses, FLAT's
f-divergence and LoKU's inverted hinge. Pure objectives ``(model, batch_by_stream, ctx) -> Loss`` like the others, so
they compose with ``weighted`` and any retain term; frozen reference outputs come from ``ctx.extra`` tables computed
once before training (``ReferenceLogits``, keyed by example id), so no second model is held unless asked for.

Notation: log π(y|x) is the summed log-probability of the answer tokens (teacher forcing), |y| the number of answer
tokens, NLL̄ = −log π(y|x)/|y|, σ the logistic function; all means are over the examples of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..errors import ConfigError
from ..lm.text import IGNORE
from ..registry import OBJECTIVES
from ..types import Batch, Split, to_device
from .base import Loss, ReferenceLogits, StepContext, reference_for

REFERENCE_MODEL = "reference_model"  # ctx.extra key of a frozen live reference (``reference: live``)
NPO_REFERENCE = "npo_reference"  # (n,) summed answer log-probs of the reference on the forget set
IDK_ANSWERS = "idk_answers"  # PairedAnswers: the "I don't know" variants of the forget set
IDK_REFERENCE = "idk_reference"  # (n, k) the reference's summed log-probs of each IDK variant
RMU_DIRECTION = "rmu_direction"  # (hidden,) the fixed random unit vector u
RMU_REFERENCE = "rmu_reference"  # (n, L, hidden) the frozen model's activations on the retain set
RMU_FORGET_NORMS = "rmu_forget_norms"  # (n, L) the frozen model's per-token activation norms on the forget set (adaptive RMU)


def _check_beta(beta: float, who: str) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise ConfigError(f"{who}: beta must be a finite number > 0, got {beta}.")


def reference_logprob(ctx: StepContext, batch: Batch, key: str, who: str) -> torch.Tensor:
    """The reference's summed answer log-probs of ``batch``: looked up in ``ctx.extra[key]`` (cached), or computed
    without gradient by the frozen model in ``ctx.extra["reference_model"]`` (live)."""
    ref = ctx.extra.get(REFERENCE_MODEL)
    if ref is not None:
        with torch.no_grad():
            return ctx.adapter.sequence_logprob(ref, batch)[0].detach()
    return reference_for(ctx, batch, who, key)


# ------------------------------------------------------------------------------------------------ paired answers
@dataclass(frozen=True, eq=False)
class PairedAnswers:
    """Other answers to the same questions (e.g. the "I don't know" variants), one Split per variant with the
    same ids as the stream; ``batch(ids, k)`` gives variant k of exactly the examples of a stream batch."""

    variants: tuple[Split, ...]

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError("PairedAnswers needs at least one variant split.")

    def __len__(self) -> int:
        return len(self.variants)

    def batch(self, ids: torch.Tensor, k: int, device: Any) -> Batch:
        split = self.variants[k]
        pos = split.positions_of(ids.detach().cpu().numpy())
        b = split.data.take(torch.as_tensor(pos))
        b["ids"] = ids.detach().cpu()
        return to_device(b, device)

    def draw(self, ctx: StepContext) -> int:
        """A variant drawn with the step's generator (one per step: the examples of a batch get variant k, which itself
        cycles the answers across examples)."""
        if len(self.variants) == 1:
            return 0
        return int(torch.randint(len(self.variants), (1,), generator=ctx.generator, device=ctx.generator.device).item())


def paired_for(ctx: StepContext, who: str) -> PairedAnswers:
    pairs = ctx.extra.get(IDK_ANSWERS)
    if pairs is None:
        raise ConfigError(f"{who} needs ctx.extra[{IDK_ANSWERS!r}] (the forget set's \"I don't know\" answers, built before training).")
    return pairs  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ NPO / SimNPO
def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·(log π_θ − log π_ref)) = (2/β)·mean softplus(β·(log π_θ − log π_ref))."""
    return F.softplus(beta * (logp - ref_logp)).mean() * (2.0 / beta)


@OBJECTIVES.register("npo")
@dataclass(frozen=True)
class NPO:
    """Negative preference optimisation (Zhang et al., COLM 2024): L = −(2/β)·mean log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))
    on the stream, with summed answer log-probs; π_ref from ``ctx.extra["npo_reference"]`` (cached) or the frozen
    ``ctx.extra["reference_model"]`` (live). Bounded below by 0, reached as log π_θ − log π_ref → −∞; as β → 0 its
    gradient tends to gradient ascent's on the summed NLL."""

    stream: str = "forget"
    beta: float = 0.1

    def __post_init__(self) -> None:
        _check_beta(self.beta, "npo")

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        logp, _ = ctx.adapter.sequence_logprob(model, b)
        ref = reference_logprob(ctx, b, NPO_REFERENCE, "npo").to(logp.device)
        value = npo_loss(logp, ref, self.beta)
        return Loss(value, {f"npo_{self.stream}": float(value.detach()), f"log_ratio_{self.stream}": float((logp - ref).mean().detach())})


def simnpo_loss(nll_mean: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(β·(NLL̄ − δ)) = (2/β)·mean softplus(−β·(NLL̄ − δ))."""
    return F.softplus(-beta * (nll_mean - delta)).mean() * (2.0 / beta)


@OBJECTIVES.register("simnpo")
@dataclass(frozen=True)
class SimNPO:
    """SimNPO (Fan et al., 2024, "Simplicity prevails"): reference-free, length-normalised NPO,
    L = −(2/β)·mean log σ(β·(NLL̄_θ(y|x) − δ)) with NLL̄ = −log π_θ(y|x)/|y| and margin δ (the code's γ)."""

    stream: str = "forget"
    beta: float = 4.5
    delta: float = 0.0

    def __post_init__(self) -> None:
        _check_beta(self.beta, "simnpo")
        if not math.isfinite(self.delta):
            raise ConfigError(f"simnpo: delta must be finite, got {self.delta}.")

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        nll = ctx.adapter.per_example_loss(model, batch[self.stream])
        value = simnpo_loss(nll, self.beta, self.delta)
        return Loss(value, {f"simnpo_{self.stream}": float(value.detach()), f"nll_{self.stream}": float(nll.mean().detach())})


# ------------------------------------------------------------------------------------------------ DPO toward IDK
def dpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(β·[(log π_w − log π^ref_w) − (log π_l − log π^ref_l)])."""
    margin = (logp_w - ref_w) - (logp_l - ref_l)
    return F.softplus(-beta * margin).mean() * (2.0 / beta)


@OBJECTIVES.register("idk_dpo")
@dataclass(frozen=True)
class IdkDPO:
    """DPO (Rafailov et al., NeurIPS 2023) with the "I don't know" answer as the preferred one and the true answer as the
    rejected one (TOFU's IdkDPO): −(2/β)·mean log σ(β·[(log π_w − log π^ref_w) − (log π_l − log π^ref_l)]). The IDK
    answers come from ``ctx.extra["idk_answers"]`` (one variant per step, drawn with the step generator), the reference
    log-probs from ``ctx.extra["npo_reference"]`` / ``["idk_reference"]`` or the live reference model."""

    stream: str = "forget"
    beta: float = 0.1

    def __post_init__(self) -> None:
        _check_beta(self.beta, "idk_dpo")

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        lose = batch[self.stream]
        pairs = paired_for(ctx, "idk_dpo")
        k = pairs.draw(ctx)
        win = pairs.batch(lose["ids"], k, lose["x"].device)
        logp_w, _ = ctx.adapter.sequence_logprob(model, win)
        logp_l, _ = ctx.adapter.sequence_logprob(model, lose)
        ref_l = reference_logprob(ctx, lose, NPO_REFERENCE, "idk_dpo").to(logp_l.device)
        if ctx.extra.get(REFERENCE_MODEL) is not None:
            ref_w = reference_logprob(ctx, win, IDK_REFERENCE, "idk_dpo").to(logp_w.device)
        else:
            ref_w = reference_for(ctx, win, "idk_dpo", IDK_REFERENCE)[:, k].to(logp_w.device)
        value = dpo_loss(logp_w, logp_l, ref_w, ref_l, self.beta)
        return Loss(value, {f"dpo_{self.stream}": float(value.detach()),
                            "margin": float(((logp_w - ref_w) - (logp_l - ref_l)).mean().detach())})


# ------------------------------------------------------------------------------------------------ RMU
class _Stop(Exception):
    pass


def layer_activations(model: nn.Module, batch: Batch, layer: int) -> torch.Tensor:
    """The output hidden states (n, L, hidden) of decoder layer ``layer``; the forward pass stops there."""
    from ..models.causal_lm import decoder_layers

    module = decoder_layers(model)[layer]
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        store.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(input_ids=batch["x"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        handle.remove()
    if not store:  # pragma: no cover - a layer that the forward pass never reaches
        raise ConfigError(f"Decoder layer {layer} produced no output in the forward pass.")
    return store[0]


def resolve_layer(model: nn.Module, layer: int | None) -> int:
    """A decoder layer index, non-negative; None = the middle layer (n_layers // 2)."""
    from ..models.causal_lm import decoder_layers

    n = len(decoder_layers(model))
    if layer is None:
        return n // 2
    if not -n <= layer < n:
        raise ConfigError(f"Decoder layer {layer} is out of range for a model with {n} decoder layers.")
    return layer % n


def masked_activation_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example: Σ over masked tokens of mean over dimensions of (h − target)², divided by the token count; then
    the mean over examples (OpenUnlearning's RMU ``compute_activation_loss``)."""
    sq = (h.float() - target.float()).square().mean(-1)  # (n, L)
    m = mask.float()
    return ((sq * m).sum(1) / m.sum(1).clamp(min=1)).mean()


def answer_mask(batch: Batch) -> torch.Tensor:
    return batch["labels"] != IGNORE


@OBJECTIVES.register("rmu_forget")
@dataclass(frozen=True)
class RMUForget:
    """RMU's forget term (Li et al., WMDP, ICML 2024): the mean squared distance between decoder layer ``layer``'s
    hidden states on the stream's answer tokens and c·u, u the fixed random unit vector in ``ctx.extra["rmu_direction"]``
    (``layer`` None = the middle layer). ``adaptive``: c = coeff·‖h^start_ℓ(token)‖ per token, the start model's
    activation norms looked up by id in ``ctx.extra["rmu_forget_norms"]`` (Adaptive RMU, Dang et al., AAAI 2025)."""

    layer: int | None = None
    coeff: float = 6.5
    stream: str = "forget"
    adaptive: bool = False

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        u = ctx.extra.get(RMU_DIRECTION)
        if u is None:
            raise ConfigError(f"rmu_forget needs ctx.extra[{RMU_DIRECTION!r}] (the random unit direction).")
        h = layer_activations(model, b, resolve_layer(model, self.layer))
        scale: Any = self.coeff
        if self.adaptive:
            scale = self.coeff * reference_for(ctx, b, "rmu_forget (adaptive)", RMU_FORGET_NORMS)[:, : h.shape[1], None].to(h.device)
        target = (scale * u.to(h.device, torch.float32)).expand(h.shape)
        value = masked_activation_mse(h, target, answer_mask(b))
        return Loss(value, {f"rmu_{self.stream}": float(value.detach())})


@OBJECTIVES.register("activation_match")
@dataclass(frozen=True)
class ActivationMatch:
    """RMU's retain term: the mean squared distance between decoder layer ``layer``'s hidden states on the stream's
    answer tokens and the frozen start model's, looked up by id in ``ctx.extra["rmu_reference"]`` (cached once;
    ``layer`` None = the middle layer)."""

    layer: int | None = None
    stream: str = "retain"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        h = layer_activations(model, b, resolve_layer(model, self.layer))
        ref = reference_for(ctx, b, "activation_match", RMU_REFERENCE)[:, : h.shape[1]].to(h.device)
        value = masked_activation_mse(h, ref, answer_mask(b))
        return Loss(value, {f"act_mse_{self.stream}": float(value.detach())})


# ------------------------------------------------------------------------------------------------ FLAT
Divergence = Literal["kl", "js", "tv", "pearson"]
DIVERGENCES = ("kl", "js", "tv", "pearson")
_LOG2 = math.log(2.0)


def flat_terms(divergence: str) -> tuple[Any, Any]:
    """FLAT's (g, f*∘g) pair of an f-divergence's variational form (f-GAN, Nowozin et al. 2016), as in the FLAT code:
    the loss is −g(P̄_template) + f*(g(P̄_forget))."""
    if divergence == "kl":
        return (lambda v: v), (lambda v: torch.exp(v - 1.0))
    if divergence == "js":
        return (lambda v: _LOG2 - F.softplus(-v)), (lambda v: F.softplus(v) - _LOG2)
    if divergence == "tv":
        return (lambda v: 0.5 * torch.tanh(v)), (lambda v: 0.5 * torch.tanh(v))
    if divergence == "pearson":
        return (lambda v: v), (lambda v: v * v / 4.0 + v)
    raise ConfigError(f"flat: divergence must be one of {list(DIVERGENCES)}, got {divergence!r}.")


def mean_token_probability(model: nn.Module, batch: Batch, adapter: Any) -> torch.Tensor:
    """P̄ per example: the mean over answer tokens of p(y_t | x, y_<t) (a probability, not a log-probability)."""
    tok, mask = adapter.token_logprobs(model, batch)
    probs = tok.exp() * mask
    return probs.sum(1) / mask.sum(1).clamp(min=1)


def flat_loss(p_template: torch.Tensor, p_forget: torch.Tensor, divergence: str) -> torch.Tensor:
    g, conj = flat_terms(divergence)
    return -g(p_template.mean()) + conj(p_forget.mean())


@OBJECTIVES.register("flat")
@dataclass(frozen=True)
class FLAT:
    """FLAT (Wang et al., ICLR 2025): loss = −g(P̄_template) + f*(g(P̄_forget)) on the forget questions only, P̄ the batch
    mean of the per-example mean answer-token probability of the template ("I don't know") answer and of the forget
    answer; (g, f*) from ``divergence``. Reads only its stream and ``ctx.extra["idk_answers"]``."""

    divergence: Divergence = "tv"
    stream: str = "forget"

    def __post_init__(self) -> None:
        flat_terms(self.divergence)

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        pairs = paired_for(ctx, "flat")
        template = pairs.batch(b["ids"], pairs.draw(ctx), b["x"].device)
        p_t = mean_token_probability(model, template, ctx.adapter)
        p_f = mean_token_probability(model, b, ctx.adapter)
        value = flat_loss(p_t, p_f, self.divergence)
        return Loss(value, {"flat": float(value.detach()), "p_template": float(p_t.mean().detach()), f"p_{self.stream}": float(p_f.mean().detach())})


# ------------------------------------------------------------------------------------------------ IHL
def inverted_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per position: max(0, 1 + p(y_t) − max_{v≠y_t} p(v)) with p = softmax(logits) (LoKU's inverted hinge loss)."""
    p = torch.softmax(logits.float(), dim=-1)
    p_true = p.gather(-1, target[..., None])[..., 0]
    others = p.scatter(-1, target[..., None], -1.0)
    return (1.0 + p_true - others.max(-1).values).clamp(min=0)


@OBJECTIVES.register("inverted_hinge")
@dataclass(frozen=True)
class InvertedHinge:
    """LoKU's inverted hinge loss (Cha et al., ICLR 2025) on the stream: per answer token max(0, 1 + p(y_t) − max_{v≠y_t} p(v)),
    averaged over each example's answer tokens, then over the batch. It lowers the true token's probability by raising
    its strongest competitor's, and is bounded (in [0, 2])."""

    stream: str = "forget"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        logits, labels, _ = ctx.adapter.answer_logits(model, batch[self.stream])  # (B, K, V) at answer-predicting positions only
        mask = (labels != IGNORE).float()
        per_token = inverted_hinge(logits, labels.clamp(min=0))
        value = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
        return Loss(value, {f"ihl_{self.stream}": float(value.detach())})


def idk_pairs(split: Split) -> PairedAnswers:
    """The "I don't know" variants of a question–answer split: variant k gives example i the answer
    IDK_ANSWERS[(i + k) mod K], so every variant cycles through the K answers (``data.profiles.variant``)."""
    from ..data.profiles import variant
    from ..lm.profiles import IDK_ANSWERS as ANSWERS

    return PairedAnswers(tuple(variant(split, "idk", k) for k in range(len(ANSWERS))))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no gradients (a live reference model)."""
    import copy

    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def summed_logprobs(model: nn.Module, split: Split, adapter: Any, *, batch_size: int, device: Any) -> torch.Tensor:
    """The summed answer log-probability of every example of ``split`` (eval mode, no gradient), in split order."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for b in split.batches(batch_size, device=device):
                out.append(adapter.sequence_logprob(model, b)[0].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


Reference = Literal["cached", "live"]


def reference_tables(model: nn.Module, forget: Split, adapter: Any, *, reference: Reference, batch_size: int,
                     device: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The NPO-family reference π_ref (the start model) as ``ctx.extra`` entries, and what to report: ``cached``, its
    summed answer log-probs on ``forget``, one table keyed by id (no second model); ``live``, a frozen deep copy that
    recomputes them every step (to measure what caching saves)."""
    if reference == "live":
        return {REFERENCE_MODEL: frozen_copy(model)}, {"reference": "live"}
    logp = summed_logprobs(model, forget, adapter, batch_size=batch_size, device=device)
    cost.record(passes=len(forget))
    return {NPO_REFERENCE: ReferenceLogits(forget.ids, logp)}, {"reference": "cached"}


def idk_reference_table(model: nn.Module, forget: Split, pairs: PairedAnswers, adapter: Any, *, batch_size: int,
                        device: Any) -> ReferenceLogits:
    """π_ref's summed log-probs of every "I don't know" variant of ``forget`` (n, K), keyed by id: one pass per variant."""
    table = torch.stack([summed_logprobs(model, v, adapter, batch_size=batch_size, device=device) for v in pairs.variants], 1)
    cost.record(passes=len(forget) * len(pairs))
    return ReferenceLogits(forget.ids, table)


def idk_tables(model: nn.Module, forget: Split, adapter: Any, *, reference: Reference, batch_size: int,
               device: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """IdkDPO's ``ctx.extra`` entries and what to report: the NPO reference of the true answers (``reference_tables``),
    the "I don't know" variants of ``forget`` and, with a cached reference, their table (``idk_reference_table``)."""
    pairs = idk_pairs(forget)
    extra, info = reference_tables(model, forget, adapter, reference=reference, batch_size=batch_size, device=device)
    extra[IDK_ANSWERS] = pairs
    if reference == "cached":
        extra[IDK_REFERENCE] = idk_reference_table(model, forget, pairs, adapter, batch_size=batch_size, device=device)
    return extra, {**info, "idk_answers": len(pairs)}


def activations_table(model: nn.Module, split: Split, layer: int, *, batch_size: int, device: Any) -> torch.Tensor:
    """Decoder layer ``layer``'s hidden states on every example of ``split`` (eval mode, no gradient), zero-padded to
    the split's longest example: (n, L, hidden), in split order."""
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for b in split.batches(batch_size, device=device):
                rows.append(layer_activations(model, b, layer).float().cpu())
    finally:
        model.train(was_training)
    width = max(r.shape[1] for r in rows)
    return torch.cat([F.pad(r, (0, 0, 0, width - r.shape[1])) for r in rows])


def forget_answer_mask(split: Any, width: int) -> torch.Tensor:
    """(n, width) True at the answer tokens of ``split``'s examples (the positions the RMU terms average over)."""
    labels = split.data.labels[:, :width]
    return torch.nn.functional.pad(labels != IGNORE, (0, width - labels.shape[1]))


def random_direction(hidden: int, seed: int) -> torch.Tensor:
    """u = r/‖r‖, r ~ Uniform[0, 1)^hidden (``torch.rand`` as in the WMDP code, so u lies in the positive orthant)."""
    r = torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


__all__: Sequence[str] = [
    "DIVERGENCES",
    "FLAT",
    "NPO",
    "ActivationMatch",
    "IdkDPO",
    "InvertedHinge",
    "PairedAnswers",
    "RMUForget",
    "Reference",
    "SimNPO",
    "activations_table",
    "dpo_loss",
    "flat_loss",
    "flat_terms",
    "forget_answer_mask",
    "frozen_copy",
    "idk_pairs",
    "idk_reference_table",
    "idk_tables",
    "inverted_hinge",
    "layer_activations",
    "mean_token_probability",
    "npo_loss",
    "random_direction",
    "reference_tables",
    "resolve_layer",
    "simnpo_loss",
    "summed_logprobs",
]
