"""concept_poison: class unlearning by poisoning the forget labels, guided by a post-hoc concept bottleneck.

Longer than a recipe's 60 lines: the concept bottleneck, its integrated-gradients attribution and the choice of
poisoned labels are this method's own analysis (no other method uses them); the recipe itself is the last class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError, TaskError
from ..objectives import NLL, Weighted, weighted
from ..objectives.classifier import LabelTable, TableTargets
from ..references import References
from ..registry import suggest
from ..train import TrainConfig
from ..types import Split, Task
from .base import GradientMethod, Setup, forgotten_classes, register_method

MODES = ("random", "targeted")
PoisonMode = Literal["random", "targeted"]
POISONED_LABELS = "poisoned_labels"  # key of the forget set's new labels in ctx.extra
IG_STEPS = 16  # path points of integrated gradients; exact at any count for the linear bottleneck head used here


@dataclass(frozen=True)
class ConceptBottleneck:
    """A post-hoc concept bottleneck on penultimate features h: concept activations a = (h − mean_) · concepts_ᵀ,
    bottleneck logits = a · weight_ᵀ + bias_. Concepts are the top principal directions of retain features
    (no labels); the head is the least-squares fit of the original model's logits."""

    mean_: torch.Tensor  # (d,) retain feature mean: the zero-activation point
    concepts_: torch.Tensor  # (n_concepts, d) orthonormal rows
    weight_: torch.Tensor  # (n_classes, n_concepts)
    bias_: torch.Tensor  # (n_classes,)
    explained_variance_: float  # fraction of the retain features' variance the concepts span

    @classmethod
    def fit(cls, features: torch.Tensor, logits: torch.Tensor, n_concepts: int) -> ConceptBottleneck:
        h, z = features.double(), logits.double()
        if not 1 <= n_concepts <= min(h.shape):
            raise ConfigError(
                f"concept_poison: n_concepts must be between 1 and min(feature dimension {h.shape[1]}, retain examples {h.shape[0]}), "
                f"got {n_concepts}."
            )
        mean = h.mean(0)
        centred = h - mean
        eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / len(h))  # ascending
        top = torch.argsort(eigvals, descending=True, stable=True)[:n_concepts]
        concepts = eigvecs[:, top].T
        signs = torch.sign(concepts.gather(1, concepts.abs().argmax(1, keepdim=True)))  # largest entry positive: a fixed sign
        concepts = concepts * signs
        total = float(eigvals.clamp_min(0).sum())
        explained = float(eigvals[top].clamp_min(0).sum()) / total if total > 0 else 0.0
        acts = centred @ concepts.T
        bias = z.mean(0)
        weight = torch.linalg.lstsq(acts, z - bias, driver="gelsd").solution.T
        return cls(mean, concepts, weight, bias, explained)

    def activations(self, features: torch.Tensor) -> torch.Tensor:
        return (features.double() - self.mean_) @ self.concepts_.T

    def head(self, activations: torch.Tensor) -> torch.Tensor:
        return activations @ self.weight_.T + self.bias_

    def fidelity(self, features: torch.Tensor, logits: torch.Tensor) -> float:
        """R² of the bottleneck's logits against the model's: 1 − SS_res / SS_tot, pooled over classes."""
        z = logits.double()
        residual = float(((z - self.head(self.activations(features))) ** 2).sum())
        total = float(((z - z.mean(0)) ** 2).sum())
        return 1.0 - residual / total if total > 0 else float(residual == 0)


def integrated_gradients(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al., 2017) of output ``target[i]`` of ``fn`` for each row of ``inputs``:
    (x − x₀) ⊙ mean_m ∇fn(x₀ + α_m (x − x₀)), midpoint rule with α_m = (m + ½)/steps."""
    if steps < 1:
        raise ConfigError(f"integrated_gradients: steps must be >= 1, got {steps}.")
    delta = inputs - baseline
    alphas = ((torch.arange(steps, dtype=inputs.dtype, device=inputs.device) + 0.5) / steps).view(steps, 1, 1)
    path = (baseline + alphas * delta).reshape(-1, inputs.shape[1]).detach().requires_grad_(True)  # all path points in one batch
    chosen = fn(path).gather(1, target.repeat(steps)[:, None]).sum()
    grads = torch.autograd.grad(chosen, path)[0].view(steps, *inputs.shape)
    return delta * grads.mean(0)


def class_attribution(bottleneck: ConceptBottleneck, activations: torch.Tensor, cls: int) -> torch.Tensor:
    """Mean over the rows of ``activations`` of the IG attribution of logit ``cls`` to each concept (zero baseline)."""
    target = torch.full((len(activations),), cls, dtype=torch.long)
    attr = integrated_gradients(bottleneck.head, activations, torch.zeros_like(activations), target, IG_STEPS)
    return attr.mean(0)


def nearest_class(forgotten_vector: torch.Tensor, class_vectors: dict[int, torch.Tensor]) -> tuple[int, dict[int, float]]:
    """The class whose attribution vector has the highest cosine similarity to the forgotten class's (lowest index on ties)."""
    sims = {k: float(torch.nn.functional.cosine_similarity(forgotten_vector, v, dim=0)) for k, v in sorted(class_vectors.items())}
    return max(sims, key=lambda k: (sims[k], -k)), sims


@torch.no_grad()
def features_and_logits(
    model: nn.Module, split: Split, adapter: Any, device: str, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (``model.features``) and logits of every example of ``split``, in split order, on the CPU."""
    was_training = model.training
    model.eval()
    feats, logits = [], []
    try:
        for batch in split.batches(batch_size, device=device):
            feats.append(adapter.features(model, batch).detach().cpu())
            logits.append(adapter.logits(model, batch).detach().cpu())
            cost.record(passes=len(batch["ids"]))
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(logits)


@dataclass(frozen=True)
class ConceptAnalysis:
    """What the bottleneck says about the forgotten classes: attribution vectors over their forget examples
    (one per class logit) and each forgotten class's concept-nearest kept class."""

    bottleneck: ConceptBottleneck
    fidelity: dict[str, float]
    attributions: dict[int, torch.Tensor]  # forgotten class c -> (n_classes, n_concepts): row k = mean IG of logit k over c's examples
    kept: list[int]  # the classes not forgotten: the candidates for poisoned labels
    nearest: dict[int, int]
    similarity: dict[int, dict[int, float]]

    def summary(self, top: int = 5) -> dict[str, Any]:
        def top_concepts(v: torch.Tensor) -> list[list[float]]:
            order = torch.argsort(v.abs(), descending=True, stable=True)[:top]
            return [[int(j), round(float(v[j]), 6)] for j in order]

        return {
            "n_concepts": int(self.bottleneck.concepts_.shape[0]),
            "explained_variance": round(self.bottleneck.explained_variance_, 6),
            "fidelity_r2": {k: round(v, 6) for k, v in self.fidelity.items()},
            "forgotten_top_concepts": {str(c): top_concepts(a[c]) for c, a in self.attributions.items()},
            "concept_nearest_class": {str(c): k for c, k in self.nearest.items()},
            "attribution_cosine": {str(c): {str(k): round(s, 6) for k, s in sims.items()} for c, sims in self.similarity.items()},
        }


def analyse(model: nn.Module, task: Task, forgotten: list[int], n_concepts: int, adapter: Any, device: str) -> ConceptAnalysis:
    """Fit the bottleneck on retain features and the original logits (no labels); for each forgotten class c, attribute
    every class logit to the concepts over c's forget examples and pick the kept class whose attribution vector is
    closest in cosine to c's own."""
    retain_h, retain_z = features_and_logits(model, task.retain, adapter, device)
    forget_h, forget_z = features_and_logits(model, task.forget, adapter, device)
    bottleneck = ConceptBottleneck.fit(retain_h, retain_z, n_concepts)
    fidelity = {"retain": bottleneck.fidelity(retain_h, retain_z), "forget": bottleneck.fidelity(forget_h, forget_z)}
    forget_a, forget_y = bottleneck.activations(forget_h), torch.as_tensor(task.forget.labels)
    n_classes = forget_z.shape[1]
    kept = [k for k in range(n_classes) if k not in forgotten]
    if not kept:
        raise TaskError(f"concept_poison: every class {list(range(n_classes))} is forgotten; there is no class to poison toward.")
    attributions, nearest, similarity = {}, {}, {}
    for c in forgotten:
        rows = forget_y == c
        if not bool(rows.any()):
            raise TaskError(f"concept_poison: the forget set has no example of forgotten class {c}.")
        attributions[c] = torch.stack([class_attribution(bottleneck, forget_a[rows], k) for k in range(n_classes)])
        nearest[c], similarity[c] = nearest_class(attributions[c][c], {k: attributions[c][k] for k in kept})
    return ConceptAnalysis(bottleneck, fidelity, attributions, kept, nearest, similarity)


def poison_labels(labels: torch.Tensor, mode: str, nearest: dict[int, int], kept: list[int], rng: np.random.Generator) -> torch.Tensor:
    """New labels for forget examples: ``random`` = uniform over the kept classes (drawn once per example),
    ``targeted`` = the concept-nearest kept class of the example's own forgotten class."""
    if mode == "targeted":
        return torch.tensor([nearest[int(y)] for y in labels], dtype=torch.long)
    return torch.as_tensor(np.asarray(kept, dtype=np.int64)[rng.integers(0, len(kept), size=len(labels))])


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
        for param in ("forget_weight", "retain_weight"):
            value = getattr(self, param)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"concept_poison: {param} must be a finite number >= 0, got {value}.")
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
