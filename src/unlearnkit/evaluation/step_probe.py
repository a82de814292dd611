"""step_probe: multi-step prompts that walk toward a forgotten fact through related facts (direct, indirect,
implied), next to the retrained models."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..lm.probes import STEPS, TEMPLATE_VERSION
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._probes import check_kinds, check_params, check_templates, max_excess_result, records_missing
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class StepProbe(Metric):
    """Step-by-step probes (Sleek: multi-step reasoning prompts recover unlearned knowledge): ``direct`` names the
    person and walks to the question; ``indirect`` names the person only through a related fact (their best-known
    book, birth place or award) and asks about "that writer"; ``implied`` first recalls two other facts of the
    person, then asks a question whose answer is the fact without asking it (``lm.probes.STEPS``). Targets: the
    answer (direct), the value (indirect, implied). Per kind: ROUGE-L recall of the greedy answer and P̄(target |
    prompt), on the model and on the retrained models.

    Evidence (robustness, "higher" remembers): max over kinds of the forget score's excess over the retrained models'
    (``score``), as rwku_probes. Inferred: the prompts are single turns that spell out the steps (the related facts are
    given, not generated), so the probe measures whether a chain of related facts re-opens the fact, with no sampling.

    On real knowledge (``lm.probes.KNOWLEDGE_STEPS``): ``direct`` (recall the target, then the question) and ``implied``
    (recall up to two other facts of the target, then the question); ``indirect`` is left out (a real question names its
    target) and listed in info. Without a retrained oracle the excess is over the original on the facts it does not know."""

    kinds: tuple[str, ...] = tuple(STEPS)
    score: str = "rouge_l"
    splits: tuple[str, ...] = ("forget",)
    max_new_tokens: int = 32
    floor: float = 0.05
    templates: str = TEMPLATE_VERSION

    name = "step_probe"
    needs = frozenset({"retrained"})
    paper = "Sleek: multi-step reasoning probes of LLM unlearning (issue 24 seeds)"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_params(self.name, self.splits, self.score, self.max_new_tokens, self.floor)
        check_templates(self.name, self.templates)
        check_kinds(self.name, "kinds", self.kinds, STEPS)

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task, knowledge=True)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return max_excess_result(self, ctx, model, task, refs, "STEPS", STEPS, self.kinds)
