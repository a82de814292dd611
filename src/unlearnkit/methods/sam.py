"""sam: any gradient method with sharpness-aware training steps (robustness to relearning).

Longer than a recipe's 60 lines: a wrapper, not a recipe — it validates, switches on SAM in, and reports its
inner method, and its docstring states what SAM does to the inner method's steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Task, Unlearned
from .base import ALL_FORGET_KINDS, build_method, method_not_applicable, register_method


@register_method
@dataclass(frozen=True)
class SAM:
    """Sharpness-aware unlearning (Fan et al., "Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective and Beyond", ICML 2025).

    Runs the gradient method ``method`` (registry name) with parameters ``params`` where every optimizer step is a
    SAM step (Foret et al., ICLR 2021): gradient g at θ; gradient again at θ + ρ·g/‖g‖ on the same batch (and the
    same draws from the step's generator; dropout masks are drawn afresh); θ restored exactly; the optimizer steps
    with the second gradient. ‖g‖ is the global norm over the trainable, mask-selected coordinates, and only those are
    perturbed; a non-finite loss at the perturbed
    point stops training like any divergence. Costs two forward/backward passes per step. With ``rho`` = 0 the run
    is the inner method's, bit for bit.

    Inferred: the min–max acts on the inner method's whole loss (the paper's NPO+SAM smooths the forget loss; with a
    retain term the perturbation here also follows the retain gradient). Defaults: NPO inside, ρ = 0.1 (the paper's
    WMDP NPO+SAM setting). The inner method must be a ``GradientMethod`` (SAM is set in its ``train`` settings); those that
    build their own training loop are refused. The run key holds the inner name, parameters and version (``wrapped``).
    """

    method: str = "npo"
    params: dict[str, Any] = field(default_factory=dict)
    rho: float = 0.1

    name: ClassVar[str] = "sam"
    kind: ClassVar[str] = "gradient"
    paper: ClassVar[str] = ("Fan et al., Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization "
                            "Perspective and Beyond, ICML 2025")
    needs: ClassVar[frozenset[str]] = frozenset()
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm", "classifier", "regression")
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    wraps: ClassVar[str] = "method"  # a wrapper: the parameter naming the method it runs (tune that one, then wrap it)

    def __post_init__(self) -> None:
        if not (isinstance(self.rho, (int, float)) and math.isfinite(self.rho) and self.rho >= 0):
            raise ConfigError(f"sam: rho must be a finite number >= 0, got {self.rho}.")
        if not isinstance(self.params, dict):
            raise ConfigError(f"sam: params must be a mapping of the inner method's parameters, got {self.params!r}.")
        self.inner()  # validates the inner method and its parameters

    def wrapped(self) -> Any:
        """The inner method as configured (its version goes into the run key)."""
        return build_method(self.method, self.params)

    def inner(self) -> Any:
        """The inner method with SAM steps of radius ``rho``."""
        if self.method == self.name:
            raise ConfigError("sam: the inner method cannot be sam itself.")
        inner = self.wrapped()
        if not hasattr(inner, "with_sam"):
            raise ConfigError(f"sam: {self.method!r} is not a gradient method with a training loop to make sharpness-aware.")
        return inner.with_sam(self.rho)

    def why_not_applicable(self, task: Task) -> str | None:
        """The inner method's modality and forget-kind limits (so a runner skips, rather than fails, what cannot run)."""
        reason = method_not_applicable(self.inner(), task)
        return None if reason is None else f"its inner method {self.method!r} {reason}"

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        inner = self.inner()
        if task.modality not in inner.modalities:
            raise ConfigError(f"sam: the inner method {self.method!r} works on {list(inner.modalities)} tasks; this one is {task.modality!r}.")
        out = inner.unlearn(model, task, refs, rng=rng, device=device, progress=progress)
        return Unlearned(out.model, out.changed, {"inner": {"method": self.method, "version": inner.version}, "rho": float(self.rho), **out.info})
