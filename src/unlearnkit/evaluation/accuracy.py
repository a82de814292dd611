"""accuracy: top-1 accuracy and mean loss per split, with per-example correctness and loss."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class Accuracy(Metric):
    """Top-1 accuracy on forget / retain / test (UA = 1 − forget accuracy, RA, TA in SalUn's terms;
    Fan et al., ICLR 2024). acc = mean(argmax f(x) = y); higher is better for retain/test, while for
    forget "better" means "as the retrained model", so the verdict compares it to the retrain band."""

    floor: float = 0.01

    name = "accuracy"
    higher_is_better = True
    paper = "Fan et al., ICLR 2024 (UA/RA/TA protocol)"
    modalities = ("classifier",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        for split in task.splits():
            out = ctx.outputs(model, split)
            values[split] = float(out["correct"].mean())
            values[f"loss_{split}"] = float(out["loss"].mean())
            per_example[f"correct.{split}"] = (out["ids"], out["correct"])
            per_example[f"loss.{split}"] = (out["ids"], out["loss"])
        evidence = (
            Evidence(key="accuracy.forget", value=values["forget"], role="forget", remembers="higher", floor=self.floor,
                     resolution=1 / len(task.forget), bounds=(0.0, 1.0)),
            Evidence(key="accuracy.retain", value=values["retain"], role="utility", remembers="higher", floor=self.floor,
                     resolution=1 / len(task.retain), bounds=(0.0, 1.0)),
            Evidence(key="accuracy.test", value=values["test"], role="utility", remembers="higher", floor=self.floor,
                     resolution=1 / len(task.test), bounds=(0.0, 1.0)),
        )
        return self.result(values, per_example=per_example, evidence=evidence)
