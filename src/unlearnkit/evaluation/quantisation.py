"""quantisation: does round-to-nearest weight quantisation bring the forgotten answers back? Forget answer probability
and ROUGE-L on 8- and 4-bit copies of the model, next to the same quantisation of the retrained models."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..lm.guard import bare_model, is_guard
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import answer_prob, greedy_answers, outputs, rouge_l, task_split
from ._lm_weights import compare, gain_level, reference_scores, text_split_missing
from .base import EvalContext, Metric, register_metric

BITS = (4, 8)


def quantise_rtn(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Group-wise asymmetric round-to-nearest quantisation of a 2-D weight (out, in): each row is cut into groups of
    ``group_size`` consecutive inputs; a group with minimum m and maximum M gets the grid m + k·s, k = 0..2^bits − 1,
    s = (M − m)/(2^bits − 1), and every weight moves to its nearest grid point (error ≤ s/2). A constant group stays as
    it is. The zero point m is kept in full precision (not rounded to the grid), so the extremes are exact."""
    if bits not in BITS:
        raise ConfigError(f"quantisation: bits must be one of {list(BITS)}, got {bits}.")
    if w.ndim != 2 or group_size < 1 or w.shape[1] % group_size:
        raise ConfigError(f"quantisation: group_size {group_size} does not divide the weight's {w.shape[-1]} inputs.")
    g = w.detach().float().reshape(w.shape[0], w.shape[1] // group_size, group_size)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = (hi - lo) / (2**bits - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round((g - lo) / safe).clamp(0, 2**bits - 1)
    out = torch.where(scale > 0, lo + q * scale, g)
    return out.reshape(w.shape).to(w.dtype)


def quantised_layers(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """The linear layers a weight-only quantisation converts: every ``nn.Linear`` but the output embedding (the LM
    head stays in full precision, as in GPTQ/AWQ checkpoints)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not head:
            yield name, module


def quantised_copy(model: nn.Module, bits: int, group_size: int) -> nn.Module:
    """A copy of ``model`` (LoRA adapters merged first) whose linear layers' weights are ``quantise_rtn``-ed; the
    model itself is untouched. Every layer's width is checked before any weight is converted."""
    q = copy.deepcopy(model)
    if hasattr(q, "merge_and_unload"):  # a PEFT model: quantise the merged weights, as a deployed checkpoint would be
        q = q.merge_and_unload()
    layers = list(quantised_layers(q))
    if not layers:
        raise ConfigError(f"quantisation: {type(model).__name__} has no linear layers to quantise.")
    bad = [f"{n} ({m.in_features} inputs)" for n, m in layers if m.in_features % group_size]
    if bad:
        raise ConfigError(f"quantisation: group_size {group_size} does not divide the inputs of {', '.join(bad[:4])}"
                          f"{' …' if len(bad) > 4 else ''}; choose a divisor of every layer's width.")
    with torch.no_grad():
        for _, m in layers:
            m.weight.copy_(quantise_rtn(m.weight, bits, group_size))
    return q


@register_metric
@dataclass(frozen=True)
class Quantisation(Metric):
    """Quantisation attack (Zhang et al., Catastrophic Failure of LLM Unlearning via Quantization, ICLR 2025): the forget
    answers' probability P̄(a|q) and the ROUGE-L recall of greedy answers on weight-quantised copies of the model
    (group-wise asymmetric round-to-nearest, ``quantise_rtn``, of every linear layer but the LM head; ``bits`` 8 and 4,
    groups of ``group_size`` inputs), next to the same quantisation of each retrained model (their mean) and the
    full-precision values. Unlearning by a small weight change can sit inside the quantisation grid, so the quantised
    copy answers like the target again.

    Evidence (robustness, "higher" remembers): the forget P̄(a|q) of each quantised copy,
    ``quantisation.forget_prob_<b>bit``; the noise floor bands it with the same attack on each retrained seed.
    Per example: ``prob_<b>bit.forget``. Inferred: the LM head and embeddings stay in full precision; the zero point is
    not rounded; the retain P̄ of the quantised copies is reported as utility context only.

    Without a retrained oracle (real knowledge) the reference is the same quantisation of the original model, read on
    the facts it does not know (``unknown_…`` values), and the no-oracle verdict bands the evidence around the model's own
    full-precision forget level plus the gain quantisation gives there (``info["no_oracle_levels"]``)."""

    bits: tuple[int, ...] = (8, 4)
    group_size: int = 64
    max_new_tokens: int = 32
    floor: float = 0.05

    name = "quantisation"
    needs = frozenset({"retrained"})
    paper = "Zhang et al., Catastrophic Failure of LLM Unlearning via Quantization, ICLR 2025"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        bits = tuple(self.bits) if isinstance(self.bits, (list, tuple)) else (self.bits,)
        if not bits or any(b not in BITS for b in bits) or len(set(bits)) != len(bits):
            raise ConfigError(f"quantisation: bits must be distinct values from {list(BITS)}, got {self.bits!r}.")
        object.__setattr__(self, "bits", tuple(int(b) for b in bits))
        if not (isinstance(self.group_size, int) and self.group_size >= 1):
            raise ConfigError(f"quantisation: group_size must be an integer >= 1, got {self.group_size!r}.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"quantisation: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return text_split_missing(task)

    def scores(self, ctx: EvalContext, model: nn.Module, task: Task) -> dict[str, np.ndarray]:
        """Per item, at full precision and at each ``bits``: forget P̄(a|q) and ROUGE-L recall, retain P̄(a|q)."""

        def run() -> dict[str, np.ndarray]:
            weights = bare_model(model)  # what is quantised is the weights: a guard's inner model (a quantised release has no guard)
            forget, retain = task_split(task, "forget"), task_split(task, "retain")
            out = {"forget_prob": answer_prob(outputs(ctx, weights, forget)), "retain_prob": answer_prob(outputs(ctx, weights, retain))}
            for b in self.bits:
                q = quantised_copy(weights, b, self.group_size).to(ctx.device).eval()
                gen, gold = greedy_answers(ctx, q, forget, self.max_new_tokens)
                out[f"forget_prob_{b}bit"] = answer_prob(outputs(ctx, q, forget))
                out[f"forget_rouge_l_{b}bit"] = rouge_l(gold, gen, "recall")
                out[f"retain_prob_{b}bit"] = answer_prob(outputs(ctx, q, retain))
                del q
            return out

        return ctx.memo(model, ("quantisation", self.bits, self.group_size, self.max_new_tokens, task.forget.fingerprint, task.retain.fingerprint), run)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        own = self.scores(ctx, model, task)
        ref_scores, ref, reference = reference_scores(self.name, lambda m, t: self.scores(ctx, m, t), task, refs)
        values, excluded = compare(self.name, own, ref_scores, prefix=ref)
        for b in self.bits:
            values[f"forget_gain_{b}bit"] = values[f"forget_prob_{b}bit"] - values["forget_prob"]
            values[f"forget_excess_{b}bit"] = values[f"forget_prob_{b}bit"] - values[f"{ref}forget_prob_{b}bit"]
        ids = task_split(task, "forget").ids
        per_example = {f"prob_{b}bit.forget": (ids, own[f"forget_prob_{b}bit"]) for b in self.bits}
        evidence = tuple(Evidence(key=f"quantisation.forget_prob_{b}bit", value=values[f"forget_prob_{b}bit"], role="robustness",
                                  remembers="higher", floor=self.floor, strong=True, bounds=(0.0, 1.0)) for b in self.bits)
        levels = {"no_oracle_levels": {f"quantisation.forget_prob_{b}bit": gain_level(values, f"forget_prob_{b}bit", "forget_prob")
                                       for b in self.bits}} if ref == "unknown_" else {}
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"bits": list(self.bits), "group_size": self.group_size, **reference, **excluded, **levels,
                                 **({"measured_on": "the guard's bare weights (its inner model)"} if is_guard(model) else {})})
