"""concept_poison: class unlearning by poisoning the forget labels, guided by a post-hoc concept bottleneck.

Longer than a recipe's 60 lines: its docstring describes the concept analysis (``analysis.concepts``: the bottleneck,
its integrated-gradients attribution, the poisoned labels) and records what was inferred from the abstract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..analysis.concepts import analyse, poison_labels
from ..errors import ConfigError
from ..objectives import NLL, Weighted, weighted
from ..objectives.classifier import LabelTable, TableTargets
from ..references import References
from ..registry import suggest
from ..searchspace import Choice, FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, Setup, check_weights, forgotten_classes, register_method

MODES = ("random", "targeted")
PoisonMode = Literal["random", "targeted"]
POISONED_LABELS = "poisoned_labels"  # key of the forget set's new labels in ctx.extra


@register_method
@dataclass(frozen=True)
class ConceptPoison(GradientMethod):
    """Class unlearning by data poisoning guided by concepts (Chang, Zhu, Xu, Liu & Zhou, arXiv 2405.15662): a post-hoc concept
    bottleneck with integrated-gradients attribution picks the labels the forget examples are poisoned with.

    1. Concepts: the top ``n_concepts`` principal directions v_j of the retain set's penultimate features h = model.features(x);
       a_j(x) = ⟨h(x) − μ_retain, v_j⟩. Bottleneck head g(a) = W a + b, least squares to the original logits on retain
       (fidelity R² on retain and forget reported in info).
    2. Attribution: IG_{k,j}(x) = a_j · ∫₀¹ ∂g_k/∂a_j(α a) dα from the zero baseline (a = 0: the mean retain feature), for
       every class logit k; A_{c,k} = its mean over the forget examples of forgotten class c (a vector over concepts).
    3. Poisoning: forget examples are relabelled once, ``mode="targeted"`` to argmax_{k kept} cos(A_{c,c}, A_{c,k}) (the
       concept-nearest class: the one whose logit the same concepts drive on c's inputs), ``mode="random"`` uniformly over
       the kept classes; loss = forget_weight·CE(poisoned forget) + retain_weight·CE(retain).

    Inferred (the abstract names a post-hoc CBM, integrated gradients and random/targeted poisoning only):
    - Concepts are found without labels as PCA directions (there are no concept annotations): deterministic, orthonormal (so
      attributions do not double-count shared directions), and spanning the most feature variance for a given n_concepts,
      which bounds the head's fidelity. The head is linear, so IG is exact at any step count (IG_{k,j} = a_j·W_kj).
    - Class attribution vectors are compared on the same inputs (the forgotten class's examples). Comparing vectors taken
      on each class's own examples conflates opposite activations (a_j·W_kj > 0 both for a, W > 0 and a, W < 0): on digits
      it paired 3 with 4, which sit at opposite ends of the first concept, while on shared inputs it picks 9, the class
      retrained models send most 3s to.
    - Only forget examples are relabelled (relabelling retain examples would corrupt data the model must keep).
    - Labels are read only to group forget examples by forgotten class and for the retain CE; the concepts, the head and
      the attributions never see a label (the head is fitted to the original model's logits).
        """

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.01, schedule="cosine")
    n_concepts: int = 20
    mode: PoisonMode = "targeted"
    forget_weight: float = 1.0
    retain_weight: float = 3.0  # as random_label / salun: hard poisoned labels on confidently learnt inputs need a strong retain term
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.1, log=True), "epochs": FloatRange(0.05, 2.0, log=True),
                                                      "retain_weight": FloatRange(0.5, 10.0, log=True),
                                                      "mode": Choice(("targeted", "random"))}  # what `unlearnkit tune` searches (classifiers)

    epoch_stream: ClassVar[str] = "retain"  # an epoch is a pass over the retain set
    forget_kinds: ClassVar[tuple[str, ...]] = ("classes",)
    whole_classes_only: ClassVar[bool] = True  # a fraction of a class is refused: its rest is retained
    name: ClassVar[str] = "concept_poison"
    paper: ClassVar[str] = (
        "Chang, Zhu, Xu, Liu & Zhou, Class Machine Unlearning for Complex Data via Concepts Inference and Data Poisoning, arXiv 2405.15662"
    )
    version: ClassVar[str] = "1"  # bump when its numbers change

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ConfigError(f"concept_poison: mode must be one of {MODES}, got {self.mode!r}.{suggest(str(self.mode), set(MODES))}")
        if isinstance(self.n_concepts, bool) or not isinstance(self.n_concepts, int) or self.n_concepts < 1:
            raise ConfigError(f"concept_poison: n_concepts must be an integer >= 1, got {self.n_concepts!r}.")
        check_weights(self)
        if self.forget_weight == 0:
            raise ConfigError("concept_poison: forget_weight must be > 0 (with 0 nothing is unlearned), got 0.")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, TableTargets(POISONED_LABELS, "forget", "poisoned")), (self.retain_weight, NLL("retain")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        forgotten = forgotten_classes(task, f"method {self.name!r}")
        analysis = analyse(model, task, forgotten, self.n_concepts, setup.adapter, setup.device)
        new_labels = poison_labels(torch.as_tensor(task.forget.labels), self.mode, analysis.nearest, analysis.kept, setup.rng)
        counts = torch.bincount(new_labels, minlength=task.n_classes or 0)
        info = {
            "forgotten_classes": forgotten,
            "mode": self.mode,
            "poisoned_label_counts": {str(k): int(n) for k, n in enumerate(counts) if n},
            **analysis.summary(),
        }
        return {POISONED_LABELS: LabelTable(task.forget.ids, new_labels)}, info
