"""answer_prob: length-normalised answer probability per split (teacher forcing)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import answer_prob, check_splits, finite_mean, neighbours_unknown, outputs, task_split
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class AnswerProb(Metric):
    """Answer probability (TOFU, Maini et al. 2024; OpenUnlearning's ``*_Q_A_Prob``): P̄(a|q) = exp(−(1/|a|) Σ_t
    −log p(a_t | q, a_<t)), teacher-forced over the answer tokens including the final EOS; mean over the items of
    forget / retain / test (holdout profiles, never trained) / neighbours (real-world facts). Higher is better
    utility on retain and neighbours; on forget "better" means as the retrained models, so the verdict compares
    the forget value with the retrain band (the noise floor over the retain models). An item without answer tokens has
    no probability (NaN): it is left out of the mean, counted in info["n_excluded"] and warned about. The neighbours
    evidence is reported only when the original model does not know the neighbour facts (``neighbours_unknown``)."""

    splits: tuple[str, ...] = ("forget", "retain", "test", "neighbours")
    floor: float = 0.05  # smallest band half-width (tens of items per split)

    name = "answer_prob"
    higher_is_better = True
    paper = "Maini et al., TOFU, COLM 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, "answer_prob")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        excluded: dict[str, int] = {}
        for name in self.splits:
            split = task_split(task, name, required=name in ("forget", "retain", "test"))
            if split is None:
                continue
            p = answer_prob(outputs(ctx, model, split))
            values[name] = finite_mean(p, self.name, name, excluded)
            per_example[f"p.{name}"] = (split.ids, p)
        evidence = []
        if "forget" in values:
            evidence.append(Evidence(key="answer_prob.forget", value=values["forget"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)))
        info: dict = {"n_excluded": excluded}
        for name in ("retain", "neighbours", "general"):  # general: the knowledge data's general-ability probe, when listed
            if name in values:
                unknown = neighbours_unknown(ctx, refs.original, task_split(task, name)) if name == "neighbours" else None
                if unknown:
                    info["neighbours_reported_only"] = unknown
                evidence.append(Evidence(key=f"answer_prob.{name}", value=values[name], role="utility", remembers="higher", floor=self.floor,
                                         bounds=(0.0, 1.0), reported_only=unknown))
        return self.result(values, per_example=per_example, evidence=tuple(evidence), info=info)
