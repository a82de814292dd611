"""Concepts of a classifier's representation: a post-hoc concept bottleneck on penultimate features (PCA concepts,
a least-squares head to the model's logits), integrated-gradients attribution of class logits to concepts, the
concept-nearest class of a forgotten class, and the poisoned labels concept_poison trains toward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError, TaskError
from ..types import Split, Task

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


__all__ = [
    "IG_STEPS", "ConceptAnalysis", "ConceptBottleneck", "analyse", "class_attribution", "features_and_logits", "integrated_gradients",
    "nearest_class", "poison_labels",
]
