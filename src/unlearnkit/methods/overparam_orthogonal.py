"""overparam_orthogonal: minimum-norm unlearning by a perturbation orthogonal to the retain-set output gradients.

Longer than a recipe's 60 lines: an edit with an optional projected descent — output Jacobians, the
orthogonal-complement projector and the projection after every step are this method's own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from .. import cost
from ..adapters import get_adapter
from ..errors import ConfigError, EmptySelection
from ..objectives import weighted
from ..objectives.classifier import DistanceRegulariser, TowardUniform
from ..references import References
from ..searchspace import FloatRange, IntRange
from ..train import TrainConfig, fit
from ..types import Mask, Task, Unlearned
from .base import ALL_FORGET_KINDS, register_method

REGULARIZERS = ("min_norm", "min_change")


def chosen_parameters(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Names of the trainable parameters matching any glob in ``patterns``, in ``named_parameters`` order."""
    names = [n for n, p in model.named_parameters() if p.requires_grad and any(fnmatch.fnmatch(n, pat) for pat in patterns)]
    if not names:
        available = [n for n, _ in model.named_parameters()]
        raise EmptySelection(f"overparam_orthogonal: params {list(patterns)} match no parameter of the model; it has {available}.")
    return names


def flat(model: nn.Module, names: list[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names])


@torch.no_grad()
def write_flat(model: nn.Module, names: list[str], vector: torch.Tensor) -> None:
    params = dict(model.named_parameters())
    start = 0
    for n in names:
        p = params[n]
        p.copy_(vector[start : start + p.numel()].view_as(p).to(p.dtype))
        start += p.numel()


def output_jacobian(model: nn.Module, names: list[str], x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Rows ∂f_k(x_i)/∂θ_S for every example i and output k: shape (n·C, |θ_S|), model in eval mode."""
    frozen = {n: p.detach() for n, p in model.named_parameters()}
    chosen = {n: frozen[n] for n in names}

    def outputs(sub: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**frozen, **sub}, (xi.unsqueeze(0),)).squeeze(0)

    per_example = vmap(jacrev(outputs), in_dims=(None, 0))
    was_training = model.training
    model.eval()
    try:
        blocks = []
        for start in range(0, len(x), chunk):
            jac = per_example(chosen, x[start : start + chunk])
            rows = torch.cat([jac[n].flatten(start_dim=2) for n in names], dim=2)  # (b, C, |θ_S|)
            blocks.append(rows.reshape(-1, rows.shape[-1]))
            cost.record(passes=len(x[start : start + chunk]))
    finally:
        model.train(was_training)
    return torch.cat(blocks)


@dataclass(frozen=True)
class OrthogonalComplement:
    """Projector onto the orthogonal complement of the rows of G (the retain output gradients).

    With GGᵀ = UΛUᵀ, the rows span the directions with singular value √λ > tol·σ_max, and
    P⊥v = v − Gᵀ U_r Λ_r⁻¹ U_rᵀ G v, computed in G's dtype (float64 except on MPS). G is kept instead of an
    orthonormal basis of its rows, which would be no smaller; the eigen-decomposition is of an n·C × n·C matrix."""

    jacobian: torch.Tensor
    inverse_gram: torch.Tensor
    rank: int

    @classmethod
    def of(cls, jacobian: torch.Tensor, tol: float) -> OrthogonalComplement:
        eigenvalues, vectors = torch.linalg.eigh(jacobian @ jacobian.T)  # ascending
        top = float(eigenvalues[-1])
        keep = eigenvalues > tol**2 * top if top > 0 else torch.zeros_like(eigenvalues, dtype=torch.bool)
        u = vectors[:, keep]
        return cls(jacobian, (u / eigenvalues[keep]) @ u.T, int(keep.sum()))

    def project(self, vector: torch.Tensor) -> torch.Tensor:
        v = vector.to(self.jacobian.dtype)
        return v - self.jacobian.T @ (self.inverse_gram @ (self.jacobian @ v))


def compute_dtype(device: str | torch.device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def last_layer_parameters(model: nn.Module, n_layers: int) -> list[str]:
    """Parameter names of the last ``n_layers`` modules that own trainable parameters (e.g. the head and the layer before)."""
    owners: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            owners.setdefault(name.rsplit(".", 1)[0] if "." in name else "", []).append(name)
    return [n for owner in list(owners)[-n_layers:] for n in owners[owner]]


def selection_mask(model: nn.Module, names: list[str]) -> Mask:
    chosen = set(names)
    return Mask({n: torch.full_like(p, n in chosen, dtype=torch.bool) for n, p in model.named_parameters()})


@register_method
@dataclass(frozen=True)
class OverparamOrthogonal:
    """Unlearning under overparameterisation (Block, Mokhtari & Shakkottai, "Machine Unlearning under Overparameterization",
    arXiv 2505.22601, 2025): move toward the minimum-norm model that still interpolates the retain set, relaxed to first order.

    The unlearned model is θ + Δ with Δ restricted to the orthogonal complement of the retain-set output gradients at the
    original solution, G = [∂f_k(x_i)/∂θ_S] for ``n_retain_grads`` random retain examples x_i and every logit k, so that
    f(x_i; θ + Δ) = f(x_i; θ) + GΔ + O(‖Δ‖²) keeps those retain outputs to first order (exactly, when f is linear in θ_S).
    Δ minimises a regulariser: ``min_norm`` ½‖θ_S + Δ‖² (default; closed form Δ = −P⊥θ_S, i.e. θ_S is projected onto
    span(G); for a linear model this is the minimum-norm interpolator of the retain data) or ``min_change`` ½‖Δ‖²,
    plus, if ``forget_weight`` > 0, forget_weight·KL(uniform ‖ p(x)) on the forget set to push forget predictions away.
    With that term, Δ starts at the regulariser's minimiser and projected gradient descent runs through the training loop
    (``steps`` optimiser steps; after each, θ_S ← θ_S⁰ + P⊥(θ_S − θ_S⁰)). P⊥ = I − Gᵀ(GGᵀ)⁺G, the pseudo-inverse keeping
    singular values above ``tol``·σ_max. Only θ_S moves: the parameters of the last ``last_layers`` layers, or those
    matching the ``params`` globs when given (``params`` then replaces ``last_layers``).

    Inferred where the abstract is silent: outputs are the logits; G uses a random retain sample (all of them is
    intractable), so unsampled retain outputs are protected only as far as they resemble the sample; the parameter
    subset; the forget term (a bounded push toward uniform predictions, since loss gradients vanish on interpolated data,
    which is the paper's point) and the tolerance. The relaxation has room only when |θ_S| > C·n_retain_grads
    (overparameterised in the chosen subset); otherwise span(G) is everything and nothing changes (``complement_dim`` 0).

    An edit with an optional training phase, not a ``GradientMethod`` recipe: its descent needs the projection after
    every step (a ``fit`` callback) from the state of the edit, and a recipe's parameters would add ``epochs``,
    ``weight_decay``, ``grad_clip``, ``stop_at`` and ``restrict_to`` to its run keys. Its training settings are one
    ``TrainConfig`` all the same (``steps``, ``batch_size``, ``optimizer``, ``lr``, ``momentum``, ``schedule``, given flat).
    """

    last_layers: int = 2
    params: tuple[str, ...] = ()
    n_retain_grads: int = 32
    tol: float = 1e-6
    regularizer: Literal["min_norm", "min_change"] = "min_norm"
    forget_weight: float = 0.0
    train: TrainConfig = TrainConfig(epochs=None, steps=100)
    # what `unlearnkit tune` searches (classifiers): the subset that moves, how many retain outputs are held, and the
    # optional forget push with its descent budget
    search_space: ClassVar[Mapping[str, Any] | None] = {"last_layers": IntRange(1, 3), "n_retain_grads": IntRange(8, 128, log=True),
                                                      "forget_weight": FloatRange(0.0, 10.0), "steps": IntRange(10, 300, log=True),
                                                      "lr": FloatRange(1e-4, 0.1, log=True)}

    name: ClassVar[str] = "overparam_orthogonal"
    kind: ClassVar[str] = "edit"
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    needs: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = "Block, Mokhtari & Shakkottai, Machine Unlearning under Overparameterization, arXiv 2505.22601, 2025"
    version: ClassVar[str] = "1"  # bump when its numbers change
    flattened: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("steps", "batch_size", "optimizer", "lr", "momentum", "schedule")}

    def __post_init__(self) -> None:
        if self.last_layers < 1:
            raise ConfigError(f"overparam_orthogonal: last_layers must be >= 1, got {self.last_layers}.")
        if not all(isinstance(p, str) and p for p in self.params):
            raise ConfigError(f"overparam_orthogonal: params must be parameter-name globs (non-empty strings), got {list(self.params)!r}.")
        if self.n_retain_grads < 1:
            raise ConfigError(f"overparam_orthogonal: n_retain_grads must be >= 1, got {self.n_retain_grads}.")
        if not 0.0 <= self.tol < 1.0:
            raise ConfigError(f"overparam_orthogonal: tol must be in [0, 1), got {self.tol}.")
        if self.regularizer not in REGULARIZERS:
            raise ConfigError(f"overparam_orthogonal: regularizer must be one of {list(REGULARIZERS)}, got {self.regularizer!r}.")
        if not self.forget_weight >= 0:
            raise ConfigError(f"overparam_orthogonal: forget_weight must be >= 0, got {self.forget_weight}.")
        if self.regularizer == "min_change" and self.forget_weight == 0:
            raise ConfigError(
                "overparam_orthogonal: regularizer 'min_change' needs forget_weight > 0 (otherwise Δ = 0); got forget_weight 0."
            )

    def parameter_names(self, model: nn.Module) -> list[str]:
        if self.params:
            return chosen_parameters(model, tuple(self.params))
        return last_layer_parameters(model, self.last_layers)

    def unlearn(
        self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False
    ) -> Unlearned:
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        names = self.parameter_names(model)
        positions = np.sort(rng.choice(len(task.retain), size=min(self.n_retain_grads, len(task.retain)), replace=False))
        x = task.retain.data.take(torch.as_tensor(positions))["x"].to(device)
        dtype = compute_dtype(device)
        complement = OrthogonalComplement.of(output_jacobian(model, names, x).to(dtype), self.tol)
        theta0 = flat(model, names).to(dtype)
        if self.regularizer == "min_norm":
            write_flat(model, names, theta0 - complement.project(theta0))
        info: dict[str, Any] = {
            "parameters": names,
            "retain_ids_used": [int(i) for i in task.retain.ids[positions]],
            "n_parameters": int(theta0.numel()),
            "constraint_rank": complement.rank,
            "complement_dim": int(theta0.numel() - complement.rank),
        }
        if self.forget_weight > 0:
            info["train"] = self.push_forget(model, task, adapter, names, theta0, complement, rng, device, progress)
        delta = flat(model, names).to(dtype) - theta0
        info.update(delta_norm=float(delta.norm()), theta_norm_before=float(theta0.norm()), theta_norm_after=float((theta0 + delta).norm()))
        changed = selection_mask(model, names)
        info["mask"] = changed.summary()
        return Unlearned(model, changed, info)

    def push_forget(
        self, model: nn.Module, task: Task, adapter: Any, names: list[str], theta0: torch.Tensor, complement: OrthogonalComplement,
        rng: np.random.Generator, device: str, progress: bool,
    ) -> dict[str, Any]:
        """Projected gradient descent on regulariser + forget_weight·KL(uniform ‖ p) on forget, Δ kept in the complement."""
        anchor = flat(model, names).to(theta0.dtype)  # the regulariser's minimiser, where descent starts
        objective = weighted((1.0, DistanceRegulariser(tuple(names), anchor)), (self.forget_weight, TowardUniform("forget")))

        def project(step: int, m: nn.Module) -> None:
            write_flat(m, names, theta0 + complement.project(flat(m, names).to(theta0.dtype) - theta0))

        result = fit(model, objective, {"forget": task.forget}, self.train, adapter=adapter, rng=rng, device=device,
                     mask=selection_mask(model, names), callback=project, progress=progress, desc=self.name)
        out = result.to_json()
        if result.stopped:
            out["warning"] = result.stopped
        return out
