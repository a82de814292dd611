"""Text membership inference on the forget answers (members) vs holdout answers (non-members): LOSS, zlib, Min-K%,
Min-K%++, reference-model and gradient-norm scores, and MUSE's privleak; each next to the retain model's AUC."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..lm.text import IGNORE
from ..references import References
from ..seeding import np_rng
from ..types import Evidence, MetricResult, Split, Task
from ._lm import answer_texts, eos_terminated, finite_rows, min_k, min_k_pp_z, outputs, task_split, token_rows, zlib_bytes
from .base import ROC, EvalContext, Metric, register_metric, roc_summary

Nonmembers = Literal["test", "holdout"]
GradNorm = Literal["global", "tensor_mean"]
TextMIA: TypeAlias = "LossMIA | ZlibMIA | MinK | MinKPlusPlus | ReferenceMIA | GradNormMIA"  # the attacks text_mia() computes
Sample = Callable[[Split, EvalContext], Split]


def logp_rows(ctx: EvalContext, model: nn.Module, split: Split) -> list[np.ndarray]:
    """Per example, the answer tokens' log-probabilities without the final EOS."""
    return token_rows(outputs(ctx, model, split), "token_logp", split)


def mean_logp(ctx: EvalContext, model: nn.Module, split: Split) -> np.ndarray:
    """−NLL̄ per example: the mean log-probability over every answer token, the final EOS included (OpenUnlearning's
    −avg_loss); NaN for an example without answer tokens."""
    return -np.asarray(outputs(ctx, model, split)["nll"], dtype=np.float64)


def check_k(metric: str, k: float) -> None:
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"{metric}: k must be in (0, 1], got {k}.")


def text_roc(attack: TextMIA, ctx: EvalContext, model: nn.Module, task: Task, refs: References, sample: Sample | None = None,
             excluded: dict[str, int] | None = None) -> tuple[ROC, Split, np.ndarray, Split, np.ndarray]:
    """ROC of ``attack.scores`` (oriented "higher = more member-like") of ``model`` on the forget answers (members) vs
    ``attack.nonmembers``, each split passed through ``sample`` if given; and the two splits with their scores (NaN
    kept). Non-finite scores (an answer with nothing to score) are left out of the ROC, counted per side in
    ``excluded`` and warned about (``finite_rows``); a side left with no score is a ConfigError."""
    members, others = task_split(task, "forget"), task_split(task, attack.nonmembers)
    if sample is not None:
        members, others = sample(members, ctx), sample(others, ctx)
    m, n = attack.scores(ctx, model, members, refs), attack.scores(ctx, model, others, refs)
    counts: dict[str, int] = {} if excluded is None else excluded
    ok_m = finite_rows(m, attack.name, "forget", counts)
    ok_n = finite_rows(n, attack.name, attack.nonmembers, counts)
    if not (ok_m.any() and ok_n.any()):
        raise ConfigError(f"{attack.name}: no {'forget' if not ok_m.any() else attack.nonmembers} answer has a score (every one "
                          "is empty or has no token besides the EOS this score leaves out).")
    return roc_summary(m[ok_m], n[ok_n]), members, m, others, n


def text_mia(attack: TextMIA, model: nn.Module, task: Task, refs: References, ctx: EvalContext, *, reference: nn.Module | None,
             no_reference: str = "no retain model (refs.retrained) to compare with", sample: Sample | None = None) -> MetricResult:
    """The text attacks' result: AUC and TPR at 1% / 0.1% FPR of forget (members) vs ``attack.nonmembers``, and the same
    AUC for ``reference`` as the reference point (NaN, with the note ``no_reference``, when there is none)."""
    attack.require_needs(refs)
    excluded: dict[str, int] = {}
    roc, members, m, others, n = text_roc(attack, ctx, model, task, refs, sample, excluded)
    ref_excluded: dict[str, int] = {}
    ref_auc = float("nan") if reference is None else text_roc(attack, ctx, reference, task, refs, sample, ref_excluded)[0].values["auc"]
    values = {**roc.values, "retrained_auc": ref_auc}
    per_example = {"score.forget": (members.ids, m), f"score.{attack.nonmembers}": (others.ids, n)}
    evidence = (Evidence(key=f"{attack.name}.auc", value=values["auc"], role="forget", remembers="higher", floor=attack.floor, bounds=(0.0, 1.0)),)
    info: dict[str, Any] = {"members": "forget", "nonmembers": attack.nonmembers, "n_members": len(m), "n_nonmembers": len(n),
                            "n_excluded": excluded}
    if reference is not None:
        info["retrained_n_excluded"] = ref_excluded
    if reference is None:
        info["note"] = no_reference
    return attack.result(values, per_example=per_example, curves={"roc": roc.curve}, evidence=evidence, info=info)


@register_metric
@dataclass(frozen=True)
class LossMIA(Metric):
    """LOSS attack (Yeom et al., CSF 2018) on text: score = −NLL̄ = the mean log p over the answer tokens including the
    final EOS (OpenUnlearning's LOSS: −avg_loss of ``evaluate_probability``); AUC of forget (members) vs holdout answers
    (non-members), TPR at 1% / 0.1% FPR, and the retain model's AUC."""

    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "loss_mia"
    paper = "Yeom et al., CSF 2018"
    version = "2"  # bump when its numbers change (2: the final EOS counts, as in OpenUnlearning)
    modalities = ("causal_lm",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return text_mia(self, model, task, refs, ctx, reference=refs.retrained)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        return mean_logp(ctx, model, split)


@register_metric
@dataclass(frozen=True)
class ZlibMIA(Metric):
    """zlib attack (Carlini et al., USENIX Sec 2021): score = −NLL̄ / len(zlib.compress(text)), the log-perplexity
    (mean NLL in nats over the answer tokens, the final EOS included) divided by the zlib-compressed size in bytes
    (level 6) of the UTF-8 answer text, the answer tokens decoded with special tokens skipped: OpenUnlearning's ZLib
    (avg_loss over the decoded target text). ``numerator="total"`` uses the summed NLL (EOS included) instead, a
    length-dependent variant. AUC of forget vs holdout, and the retain model's AUC."""

    numerator: Literal["mean", "total"] = "mean"
    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "zlib"
    paper = "Carlini et al., USENIX Security 2021"
    version = "3"  # bump when its numbers change (2: the default numerator became NLL̄, was the summed NLL; 3: the
    # final EOS counts and the compressed text is the decoded answer tokens, as in OpenUnlearning)
    modalities = ("causal_lm",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return text_mia(self, model, task, refs, ctx, reference=refs.retrained)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        out = outputs(ctx, model, split)
        nll = np.asarray(out["nll"], dtype=np.float64)
        if self.numerator == "total":
            nll = nll * out["n_tokens"]
        z = np.asarray([zlib_bytes(t) for t in answer_texts(split)], dtype=np.float64)
        return -nll / z


@register_metric
@dataclass(frozen=True)
class MinK(Metric):
    """Min-K% Prob (Shi et al., ICLR 2024): score = mean of the lowest max(1, ⌊k·|y|⌋) answer-token log-probabilities
    (k = 0.4 as in MUSE/OpenUnlearning; final EOS excluded); AUC of forget vs holdout, and the retain model's AUC."""

    k: float = 0.4
    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "min_k"
    paper = "Shi et al., ICLR 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_k(self.name, self.k)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return text_mia(self, model, task, refs, ctx, reference=refs.retrained)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        return np.asarray([min_k(r, self.k) for r in logp_rows(ctx, model, split)])


@register_metric
@dataclass(frozen=True)
class MinKPlusPlus(Metric):
    """Min-K%++ (Zhang et al., arXiv 2404.02936): per token z_t = (log p(y_t) − μ_t)/σ_t with μ_t = E_{v∼p}[log p(v)],
    σ_t² = E_p[log² p] − μ_t² over the vocabulary (z_t = 0 where σ_t = 0); score = mean of the lowest max(1, ⌊k·|y|⌋)
    z_t (final EOS excluded). AUC of forget vs holdout, and the retain model's AUC."""

    k: float = 0.4
    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "min_k_plus_plus"
    paper = "Zhang et al., arXiv 2404.02936"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_k(self.name, self.k)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return text_mia(self, model, task, refs, ctx, reference=refs.retrained)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        out = outputs(ctx, model, split)
        rows = zip(*(token_rows(out, key, split) for key in ("token_logp", "token_mu", "token_sigma")))
        return np.asarray([min_k(min_k_pp_z(lp, mu, sd), self.k) for lp, mu, sd in rows])


@register_metric
@dataclass(frozen=True)
class ReferenceMIA(Metric):
    """Reference-model attack (Carlini et al., USENIX Sec 2021; OpenUnlearning's "Reference"): score = NLL̄_ref − NLL̄_model
    (mean NLL over the answer tokens, the final EOS included, as OpenUnlearning's avg_loss), with the retain model (refs.retrained) as the attacker's reference: it saw neither the
    forget nor the holdout answers, so it calibrates per-example difficulty without membership signal of its own.
    AUC of forget vs holdout. retrained_auc scores the second retain seed against the first (NaN with one seed; the
    first against itself would be a constant score)."""

    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "reference_mia"
    needs = frozenset({"retrained"})
    paper = "Carlini et al., USENIX Security 2021"
    version = "2"  # bump when its numbers change (2: the final EOS counts, as in OpenUnlearning)
    modalities = ("causal_lm",)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        ref = refs.require("retrained", by="metric 'reference_mia'")
        return mean_logp(ctx, model, split) - mean_logp(ctx, ref, split)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        seeds = refs.retrained_seeds
        return text_mia(self, model, task, refs, ctx, reference=seeds[1] if len(seeds) >= 2 else None,
                        no_reference="retrained_auc needs two retain models (the second scored against the first)")


def grad_norms(ctx: EvalContext, model: nn.Module, split: Split, norm: GradNorm = "global") -> np.ndarray:
    """Per example (batch size 1, eval mode), the gradient norm of NLL̄ (over the answer tokens without the final EOS)
    with respect to the trainable parameters: ``global`` ‖∇_θ NLL̄‖₂ over all of them together, ``tensor_mean`` the
    mean over parameter tensors of each tensor's ‖∇‖₂ (OpenUnlearning's GradNorm)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("grad_norm_mia: the model has no trainable parameter to take gradients of.")
    eos = eos_terminated(split)
    was_training = model.training
    model.eval()
    norms = []
    try:
        for i, b in enumerate(split.batches(1, device=ctx.device)):
            labels = b["labels"].clone()
            if eos[i]:
                last = int(torch.nonzero(labels[0] != IGNORE)[-1])
                labels[0, last] = IGNORE
            if not bool((labels != IGNORE).any()):  # an empty answer has no token to take a gradient of
                norms.append(float("nan"))
                continue
            with torch.enable_grad():
                loss = ctx.adapter.per_example_loss(model, b, labels)[0]
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            per_tensor = [float(g.double().norm()) for g in grads if g is not None]
            norms.append(math.sqrt(sum(n * n for n in per_tensor)) if norm == "global" else float(np.mean(per_tensor)))
    finally:
        model.train(was_training)
    return np.asarray(norms, dtype=np.float64)


@register_metric
@dataclass(frozen=True)
class GradNormMIA(Metric):
    """Gradient-norm attack (OpenUnlearning's GradNorm, after Wang et al. 2024): score = −‖∇_θ NLL̄(y|x)‖₂ over the
    trainable parameters — with ``norm`` = ``global`` the L2 norm over all of them together, with ``tensor_mean`` the mean
    of per-tensor L2 norms as OpenUnlearning computes it — batch size 1, eval mode (deterministic; OpenUnlearning uses
    train mode), final EOS excluded: members sit nearer a minimum. Slow (one backward per example): at most
    ``max_examples`` per side, a seeded sample. AUC of forget vs holdout, and the retain model's AUC."""

    max_examples: int = 32
    norm: GradNorm = "global"
    nonmembers: Nonmembers = "test"
    floor: float = 0.05  # AUC on tens of items per side moves by ~1/n per item

    name = "grad_norm_mia"
    paper = "Wang et al., arXiv 2406.17975 (OpenUnlearning GradNorm)"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if self.max_examples < 1:
            raise ConfigError(f"grad_norm_mia: max_examples must be >= 1, got {self.max_examples}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return text_mia(self, model, task, refs, ctx, reference=refs.retrained, sample=self.sample)

    def sample(self, split: Split, ctx: EvalContext) -> Split:
        if len(split) <= self.max_examples:
            return split
        pos = np.sort(np_rng("grad_norm_mia", ctx.seed, split.fingerprint).choice(len(split), self.max_examples, replace=False))
        return split.subset(pos, split.name)

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split, refs: References) -> np.ndarray:
        return -ctx.memo(model, ("lm.grad_norm", self.norm, split.fingerprint), lambda: grad_norms(ctx, model, split, self.norm))


def privleak_value(auc: float, auc_retain: float, min_reference: float = 0.01) -> float:
    """MUSE's privleak from forget-as-member AUCs: with AUC' = 1 − AUC, (AUC'_model − AUC'_retain)/AUC'_retain × 100;
    NaN when AUC'_retain < ``min_reference`` (the ratio is undefined or unstable there)."""
    denom = 1.0 - auc_retain
    if denom < min_reference or denom <= 0.0:
        return float("nan")
    return ((1.0 - auc) - denom) / denom * 100.0


@register_metric
@dataclass(frozen=True)
class PrivLeak(Metric):
    """PrivLeak (MUSE, Shi et al. 2024; OpenUnlearning's privleak): (AUC'_model − AUC'_retain)/AUC'_retain × 100 with
    AUC' = 1 − AUC of the Min-K% (k = 0.4) attack, AUC = forget-as-member vs holdout (``min_k``). This is MUSE's
    orientation (holdout as member), so the numbers compare with published ones: 0 = as the retain model, strongly
    negative = the forget set is still recognisable (under-unlearning), positive = over-unlearning. AUC'_retain is
    computed here on the actual retain model (refs.retrained) — never a constant, never a 0.5 fallback; if it is
    below ``min_reference`` the ratio is unstable and privleak is NaN (with a note). auc_gap = AUC − AUC_retain is
    the stable absolute difference."""

    k: float = 0.4
    nonmembers: Nonmembers = "test"
    min_reference: float = 0.01
    floor: float = 5.0

    name = "privleak"
    needs = frozenset({"retrained"})
    paper = "Shi et al., MUSE, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_k(self.name, self.k)
        if not 0.0 <= self.min_reference < 0.5:
            raise ConfigError(f"privleak: min_reference must be in [0, 0.5), got {self.min_reference}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        retrained = refs.require("retrained", by="metric 'privleak'")
        attack = MinK(k=self.k, nonmembers=self.nonmembers)
        excluded: dict[str, int] = {}
        ref_excluded: dict[str, int] = {}
        own, members, m, others, n = text_roc(attack, ctx, model, task, refs, excluded=excluded)
        ref = text_roc(attack, ctx, retrained, task, refs, excluded=ref_excluded)[0]
        auc_u, auc_r = own.values["auc"], ref.values["auc"]
        privleak = privleak_value(auc_u, auc_r, self.min_reference)
        info: dict[str, Any] = {"attack": f"min_k (k={self.k})", "orientation": "AUC' = 1 - AUC(forget as member)",
                                "n_excluded": excluded, "retrained_n_excluded": ref_excluded}
        if not math.isfinite(privleak):
            info["note"] = (f"the retain model's AUC' = 1 - {auc_r:.4f} is below min_reference={self.min_reference}: the relative "
                            "difference is undefined or unstable; see auc_gap")
        values = {"privleak": privleak, "auc": auc_u, "retrained_auc": auc_r, "auc_gap": auc_u - auc_r}
        per_example = {"min_k.forget": (members.ids, m), f"min_k.{self.nonmembers}": (others.ids, n)}
        evidence = (Evidence(key="privleak.privleak", value=privleak, role="forget", remembers="lower", floor=self.floor),)
        return self.result(values, per_example=per_example, evidence=evidence, info=info)
