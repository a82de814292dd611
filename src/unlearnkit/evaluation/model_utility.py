"""model_utility: TOFU's harmonic mean of answer probability, ROUGE-L and truth-ratio score on what must be kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import (answer_prob, finite_mean, finite_rows, greedy_answers, normalised_prob, outputs, qa_records_missing, rouge_l,
                  neighbours_unknown, task_split, true_tr_score, truth_ratios)
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class ModelUtility(Metric):
    """Model utility (TOFU, Maini et al. 2024): scipy.stats.hmean of {answer probability, ROUGE-L recall, truth-ratio
    score mean max(0, 1 − tr)} on the retain set and on the neighbour facts, 6 numbers (TOFU's 9 = retain, real
    authors, world facts; the neighbour probe stands for the last two). On the neighbours the probability is
    normalised over the options, mean_i P̄(a_i) / (P̄(a_i) + Σ_j P̄(pert_ij)), and their truth ratio uses the original
    answer as the correct one (it is their paraphrased answer too). ROUGE-L as in ``rouge_l`` (greedy,
    ``max_new_tokens``, stemmer on). Any component at 0 makes the harmonic mean 0. Without a neighbours probe the
    retain components alone are used (noted in info). Items without a score (an empty answer has no ROUGE-L recall) are
    left out of each component's mean, counted in info["n_excluded"] and warned about. When the original model does not
    know the neighbour facts (``neighbours_unknown``) the verdict's evidence is ``retain_utility``, the harmonic mean of
    the retain components (the value ``model_utility`` keeps TOFU's definition)."""

    max_new_tokens: int = 32
    floor: float = 0.02

    name = "model_utility"
    higher_is_better = True
    paper = "Maini et al., TOFU, COLM 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"model_utility: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return qa_records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        from scipy.stats import hmean

        components: dict[str, float] = {}
        per_example = {}
        excluded: dict[str, int] = {}

        def tr_score(split_name: str, tr: np.ndarray) -> float:
            ok = finite_rows(tr, self.name, f"{split_name} truth_ratio", excluded)
            return true_tr_score(tr[ok]) if ok.any() else float("nan")

        retain = task_split(task, "retain")
        p = answer_prob(outputs(ctx, model, retain))
        gen, gold = greedy_answers(ctx, model, retain, self.max_new_tokens)
        r = rouge_l(gold, gen, "recall")
        components["retain_prob"] = finite_mean(p, self.name, "retain prob", excluded)
        components["retain_rouge_l"] = finite_mean(r, self.name, "retain rouge_l", excluded)
        components["retain_truth_ratio"] = tr_score("retain", truth_ratios(ctx, model, retain))
        neighbours = task_split(task, "neighbours", required=False)
        if neighbours is not None:
            pn = normalised_prob(ctx, model, neighbours)
            gen, gold = greedy_answers(ctx, model, neighbours, self.max_new_tokens)
            rn = rouge_l(gold, gen, "recall")
            components["neighbours_prob_normalised"] = finite_mean(pn, self.name, "neighbours prob_normalised", excluded)
            components["neighbours_rouge_l"] = finite_mean(rn, self.name, "neighbours rouge_l", excluded)
            components["neighbours_truth_ratio"] = tr_score("neighbours", truth_ratios(ctx, model, neighbours))
            per_example["prob_normalised.neighbours"] = (neighbours.ids, pn)
        values = {"model_utility": float(hmean(list(components.values()))), **components}
        info: dict[str, Any] = {"components": sorted(components), "n_excluded": excluded}
        unknown = neighbours_unknown(ctx, refs.original, neighbours)
        if unknown:
            # A harmonic mean with components near chance for every model is pinned there: it cannot move when the retain
            # set is damaged (measured: no power on any planted case). The verdict then decides on the retain components.
            values["retain_utility"] = float(hmean([v for k, v in components.items() if k.startswith("retain_")]))
            info["neighbours_left_out"] = unknown
            evidence = (Evidence(key="model_utility.retain_utility", value=values["retain_utility"], role="utility", remembers="higher",
                                 floor=self.floor, bounds=(0.0, 1.0)),)
        else:
            evidence = (Evidence(key="model_utility.model_utility", value=values["model_utility"], role="utility", remembers="higher",
                                 floor=self.floor, bounds=(0.0, 1.0)),)
        if neighbours is None:
            info["note"] = "the task has no neighbours probe: the harmonic mean is over the retain components only"
        return self.result(values, per_example=per_example, evidence=evidence, info=info)
