"""rmu: steer the forget answers' hidden states at one layer toward a fixed random direction, keep the retain ones.

Longer than a recipe's 60 lines: its docstring records the WMDP recipe, adaptive RMU and what was inferred, and
``prepare`` builds the start model's activation tables, with adaptive RMU's per-token norms. Its selector is
``selectors.RMUParameters``; the random direction and the answer mask are in ``objectives.lm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import nn

from .. import cost
from ..errors import ConfigError
from ..objectives import ReferenceLogits, Weighted, weighted
from ..objectives.lm import (
    RMU_DIRECTION,
    RMU_FORGET_NORMS,
    RMU_REFERENCE,
    ActivationMatch,
    RMUForget,
    activations_table,
    forget_answer_mask,
    random_direction,
    resolve_layer,
)
from ..references import References
from ..searchspace import FloatRange
from ..selectors import RMU_MODULES, RMUParameters
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, Setup, check_numbers, check_weights, register_method

@register_method
@dataclass(frozen=True)
class RMU(GradientMethod):
    """Representation Misdirection for Unlearning (Li et al., The WMDP Benchmark, ICML 2024).

    L = ‖h_ℓ(forget) − c·u‖² + retain_weight · ‖h_ℓ(retain) − h_ℓ^start(retain)‖², with h_ℓ the output hidden
    states of decoder layer ℓ on the answer tokens (squared distance averaged over dimensions and answer tokens,
    then over examples, as OpenUnlearning's port), u a fixed random unit vector (``torch.rand`` normalised, seeded by
    ``seed``) and h^start the model before unlearning. Only the ``module`` weights (all MLP weights by default;
    ``down_proj`` = WMDP's choice) of layers ℓ−2..ℓ are trained; the forward pass stops at layer ℓ.

    The start model's retain activations are computed once before training (one pass over the retain set, stored
    per example id, zero-padded), so no second model is held.

    Defaults: ℓ = the middle layer (n_layers // 2); c = 6.5 and retain_weight (α) = 1200, the official WMDP Zephyr-7B
    recipe; lr 1e-4 and the budget from ``LM_TRAIN``. c sets how far the forget activations are pushed: the
    RMU paper scales it with the layer's activation norm (OpenUnlearning's TOFU config uses c = 2, α = 1), so a
    fixed c must be tuned per model. ``adaptive=True`` removes that tuning (Adaptive RMU, Dang et al., On Effects of
    Steering Latent Representation for Large Language Model Unlearning, AAAI 2025): the target of each forget
    answer token is β·‖h^start_ℓ‖·u, β = ``steering_coeff`` and ‖h^start_ℓ‖ that token's activation norm in the start
    model (one pass over the forget set before training); the paper's β is in the few units. Inferred: answer tokens
    only for both terms (OpenUnlearning; WMDP's text corpora use every token); the norm taken per token.
    """

    train: TrainConfig = LM_TRAIN
    layer: int | None = None
    steering_coeff: float = 6.5
    retain_weight: float = 1200.0
    module: Literal["mlp", "down_proj"] = "mlp"
    adaptive: bool = False
    seed: int = 0

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "rmu"
    paper: ClassVar[str] = "Li et al., The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning, ICML 2024"
    version: ClassVar[str] = "1"  # bump when its numbers change
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "steering_coeff": FloatRange(1.0, 20.0, log=True), "retain_weight": FloatRange(1.0, 2000.0, log=True)}  # what `unlearnkit tune` searches (causal LMs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        check_numbers(self, "steering_coeff")
        if self.module not in RMU_MODULES:
            raise ConfigError(f"rmu: module must be one of {sorted(RMU_MODULES)}, got {self.module!r}.")

    def selector(self) -> RMUParameters:
        return RMUParameters(self.layer, self.module)

    def objective(self, task: Task, refs: References) -> Weighted:
        forget = RMUForget(self.layer, self.steering_coeff, "forget", adaptive=self.adaptive)
        return weighted((1.0, forget), (self.retain_weight, ActivationMatch(self.layer, "retain")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        layer = resolve_layer(model, self.layer)
        extra: dict[str, Any] = {}
        if self.retain_weight != 0:
            acts = activations_table(model, task.retain, layer, batch_size=self.train.batch_size, device=setup.device)
            cost.record(passes=len(task.retain))
            extra[RMU_REFERENCE] = ReferenceLogits(task.retain.ids, acts)
            hidden = acts.shape[-1]
        else:
            hidden = int(model.get_input_embeddings().weight.shape[1])
        extra[RMU_DIRECTION] = random_direction(hidden, self.seed)
        info: dict[str, Any] = {"layer": layer, "trainable_layers": list(self.selector().layers(model))}
        if self.adaptive:
            norms = activations_table(model, task.forget, layer, batch_size=self.train.batch_size, device=setup.device).norm(dim=-1)  # (n, L)
            cost.record(passes=len(task.forget))
            extra[RMU_FORGET_NORMS] = ReferenceLogits(task.forget.ids, norms)
            answer = forget_answer_mask(task.forget, norms.shape[1])
            info["mean_forget_norm"] = float(norms[answer].mean()) if answer.any() else float("nan")
            info["mean_target_norm"] = self.steering_coeff * info["mean_forget_norm"]
        return extra, info
