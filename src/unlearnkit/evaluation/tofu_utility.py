"""tofu_model_utility: TOFU's nine-component model utility, as OpenUnlearning computes it, composed from the answer
probability, ROUGE-L recall, truth ratio and option-normalised probability pieces the other LM metrics use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError, TaskError
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import (answer_prob, greedy_answers, normalised_prob, outputs, qa_records_missing, rouge_l, task_split, true_tr_score,
                  truth_ratios)
from .base import EvalContext, Metric, register_metric

# OpenUnlearning's names of the nine components (configs/eval/tofu_metrics/model_utility.yaml)
COMPONENTS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
              "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")
SETS = (("ra", "real_authors"), ("wf", "world_facts"))


def harmonic_utility(components: Mapping[str, float]) -> float:
    """The harmonic mean of the nine ``COMPONENTS`` (scipy.stats.hmean); 0 when any is 0. Each must be in [0, 1]."""
    from scipy.stats import hmean

    missing = [c for c in COMPONENTS if c not in components]
    if missing:
        raise TaskError(f"TOFU model utility needs all nine components; missing {missing}.")
    values = np.asarray([float(components[c]) for c in COMPONENTS])
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        raise TaskError(f"TOFU model utility components must be in [0, 1], got {dict(zip(COMPONENTS, values.tolist()))}.")
    return 0.0 if (values == 0).any() else float(hmean(values))


@register_metric
@dataclass(frozen=True)
class TofuModelUtility(Metric):
    """TOFU model utility (Maini et al., COLM 2024; OpenUnlearning's ``model_utility``): hmean of 9 numbers on retain, real authors, world facts.

    On the retain evaluation set (TOFU's ``retain_perturbed``, the task's ``retain_eval`` probe): answer probability
    mean P̄(a|q) (``retain_Q_A_Prob``), ROUGE-L recall of the greedy answer (``retain_Q_A_ROUGE``) and the truth-ratio
    score mean max(0, 1 − P̄_pert/P̄_para) (``retain_Truth_Ratio``). On real authors and world facts: the probability
    normalised over the options, mean P̄(a)/(P̄(a) + Σ_j P̄(pert_j)) (``*_Q_A_Prob_normalised``), ROUGE-L recall, and the
    truth-ratio score with the answer itself as the correct one. P̄ = exp(−mean answer-token NLL, EOS included);
    greedy answers of at most ``max_new_tokens`` (OpenUnlearning: 200) new tokens, ROUGE with the stemmer. The
    harmonic mean is 0 when any component is 0. Higher is better. Needs the ``tofu`` data source's probes."""

    max_new_tokens: int = 200
    floor: float = 0.02

    name = "tofu_model_utility"
    higher_is_better = True
    paper = "Maini et al., TOFU: A Task of Fictitious Unlearning for LLMs, COLM 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"tofu_model_utility: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def why_not_applicable(self, task: Task) -> str | None:
        lacking = [f"probe:{name}" for _, name in SETS if f"probe:{name}" not in task.splits()]
        if lacking:
            return f"needs TOFU's real-authors and world-facts sets ({', '.join(lacking)} missing; use the tofu data source)"
        return qa_records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        components: dict[str, float] = {}
        per_example = {}
        retain = task_split(task, "retain")
        p = answer_prob(outputs(ctx, model, retain))
        gen, gold = greedy_answers(ctx, model, retain, self.max_new_tokens)
        r = rouge_l(gold, gen, "recall")
        tr = truth_ratios(ctx, model, retain)
        components.update(retain_Q_A_Prob=float(np.mean(p)), retain_Q_A_ROUGE=float(np.mean(r)), retain_Truth_Ratio=true_tr_score(tr))
        per_example.update({"prob.retain": (retain.ids, p), "rouge_l.retain": (retain.ids, r), "tr.retain": (retain.ids, tr)})
        for prefix, name in SETS:
            split = task_split(task, name)
            pn = normalised_prob(ctx, model, split)
            gen, gold = greedy_answers(ctx, model, split, self.max_new_tokens)
            r = rouge_l(gold, gen, "recall")
            tr = truth_ratios(ctx, model, split)
            components.update({f"{prefix}_Q_A_Prob_normalised": float(np.mean(pn)), f"{prefix}_Q_A_ROUGE": float(np.mean(r)),
                               f"{prefix}_Truth_Ratio": true_tr_score(tr)})
            per_example.update({f"prob_normalised.{name}": (split.ids, pn), f"rouge_l.{name}": (split.ids, r), f"tr.{name}": (split.ids, tr)})
        values = {"model_utility": harmonic_utility(components), **components}
        evidence = (Evidence(key="tofu_model_utility.model_utility", value=values["model_utility"], role="utility", remembers="higher",
                             floor=self.floor, bounds=(0.0, 1.0)),)
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"components": list(COMPONENTS), "max_new_tokens": self.max_new_tokens, "retain_items": len(retain)})
