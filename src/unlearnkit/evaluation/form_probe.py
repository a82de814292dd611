"""form_probe: the same forgotten fact asked as a question, a cloze, a true/false statement and a multiple choice,
next to the retrained models; the form that recovers most is the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..lm.probes import FORMS, TEMPLATE_VERSION
from ..references import References
from ..types import MetricResult, Task
from ._probes import check_kinds, check_params, check_templates, max_excess_result, records_missing
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
    the band. Per-form values and the form in info.

    On real knowledge (the ``knowledge`` task's facts) the forms are question, true/false ("True or false: the answer to
    "<question>" is <answer>", and the same with a distractor) and multiple choice (distractors: other facts' answers of
    the same type and kind, a target's name or a value); there is no cloze (a real fact comes with no declarative
    sentence to blank, so it is left out and listed in info as ``kinds_left_out``). Without a retrained oracle the excess is over the original
    model's score on the facts it does not know (the test split), and the no-oracle verdict reports it, unbanded."""

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
        check_kinds(self.name, "forms", self.forms, FORMS)

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task, knowledge=True)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return max_excess_result(self, ctx, model, task, refs, "FORMS", FORMS, self.forms)
