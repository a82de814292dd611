"""form_probe: the same forgotten fact asked as a question, a cloze, a true/false statement and a multiple choice,
next to the retrained models; the form that recovers most is the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..lm.probes import FORMS, TEMPLATE_VERSION
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._probes import check_params, check_templates, compare, facts_of, kind_scores, records_missing, strongest
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class FormProbe(Metric):
    """Form independence (ROCR / ORT: knowledge unlearned in one form should be gone in every form): each forgotten
    fact as a question (target: the answer), a cloze ("Fill in the blank", target: the value), a true/false statement
    (the true one and one with another person's value; target: the right label) and a multiple choice (target: the
    value) (``lm.probes.FORMS``). Per form: the ROUGE-L recall of the greedy answer against the target and its
    probability (P̄(answer | question), P̄(value | cloze); for true/false and multiple choice the right label's or
    option's probability normalised over the labels / options, chance 1/2 and 1/4), on the model and on the retrained
    models.

    Evidence (robustness, "higher" remembers): max over forms of the forget score's excess over the retrained models'
    (``score``), as rwku_probes: a model that forgets the question form but keeps the fact in another form is above
    the band. Per-form values and the form in info."""

    forms: tuple[str, ...] = tuple(FORMS)
    score: str = "rouge_l"
    splits: tuple[str, ...] = ("forget",)
    max_new_tokens: int = 32
    floor: float = 0.05
    templates: str = TEMPLATE_VERSION

    name = "form_probe"
    needs = frozenset({"retrained"})
    paper = "ROCR / ORT form independence (issue 24 seeds)"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_params(self.name, self.splits, self.score, self.max_new_tokens, self.floor)
        check_templates(self.name, self.templates)
        unknown = [f for f in self.forms if f not in FORMS]
        if unknown or not self.forms or len(set(self.forms)) != len(self.forms):
            raise ConfigError(f"form_probe: forms must be distinct names of {list(FORMS)}, got {list(self.forms)}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'form_probe'")
        facts = facts_of(task)

        def fn(m: nn.Module, split):  # type: ignore[no-untyped-def]
            return {f: kind_scores(ctx, m, split, facts, f, FORMS[f], self.max_new_tokens, self.name) for f in self.forms}

        values, per_example, excluded = compare(ctx, model, task, refs, self.splits, fn, self.name)
        best, which = strongest(values, self.forms, self.score)
        values = {**values, "forget_max_excess": best}
        evidence = (Evidence(key="form_probe.forget_max_excess", value=best, role="robustness", remembers="higher", floor=self.floor,
                             bounds=(-1.0, 1.0)),)
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"strongest": which, "score": self.score, "template_version": TEMPLATE_VERSION,
                                 "n_retrained": len(refs.retrained_seeds), "max_new_tokens": self.max_new_tokens,
                                 "n_excluded": excluded["model"], "retrained_n_excluded": excluded["retrained"]})
