"""trw: class unlearning by fine-tuning forget-class outputs toward a tilted, renormalised distribution.

Longer than a recipe's 60 lines: its docstring defines the tilted targets (built by ``analysis.targets.tilted_targets``)
and records how their form was inferred from the abstract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..analysis.targets import tilted_targets
from ..errors import ConfigError
from ..objectives import NLL, Weighted, weighted
from ..objectives.classifier import TargetKL
from ..references import References
from ..searchspace import FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, Setup, check_numbers, check_weights, forgotten_classes, register_method


@register_method
@dataclass(frozen=True)
class TRW(GradientMethod):
    """Tilted ReWeighting class unlearning (Ebrahimpour-Boroojeny, Wang & Sundaram, arXiv 2506.20893): fine-tune forget-class
    outputs toward the original's distribution with the forgotten classes removed and tilted by inter-class similarity.

    For a forget example x of forgotten class c, with p the original model's softmax and K the kept classes:
      p̃_k(x) = p_k(x) / Σ_{j∈K} p_j(x)                      (forgotten classes removed, renormalised)
      s_{c,k} = mean_{x' in forget, y(x')=c} p̃_k(x')           (inter-class similarity of c to k)
      q_k(x) ∝ p̃_k(x) · s_{c,k}^tilt  for k ∈ K,  q_k(x) = 0 otherwise
    loss = forget_weight · KL(q ‖ model) on forget + retain_weight · CE on retain; targets are computed once
    from the input model before training and looked up by example id.

    Inferred (the abstract names "inter-class similarity" and a "tilt" only): the similarity estimate s above and
    the tilt's form. q is the exponential (maximum-entropy) tilt of p̃ with sufficient statistic log s_c: among all
    distributions r on K with a prescribed E_r[log s_c], it is the one closest to p̃ in KL(r ‖ p̃) (equivalently of maximal
    entropy relative to p̃); ``tilt`` is the Lagrange multiplier. tilt = 0 gives the plain renormalised target (the
    paper's v1, RWFT); tilt > 0 moves mass toward the classes the forgotten class is most often confused with, meant
    to approximate where a model retrained without it sends its inputs. The default tilt = 1 is the tilted variant;
    it is not tuned: on digits (forget class 3, three retrains) tilt 0 came closer to the retrained models' outputs on
    forget inputs than tilt 1 (mean total variation 0.29 vs 0.37). Forget labels are read only to group forget
    examples by forgotten class (one similarity row per class); the targets never use retain data.
    """

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.01, schedule="cosine")
    tilt: float = 1.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0

    epoch_stream: ClassVar[str] = "retain"  # an epoch is a pass over the retain set
    forget_kinds: ClassVar[tuple[str, ...]] = ("classes",)
    whole_classes_only: ClassVar[bool] = True  # a fraction of a class is refused: its rest is retained
    name: ClassVar[str] = "trw"
    paper: ClassVar[str] = (
        "Ebrahimpour-Boroojeny, Wang & Sundaram, On the Necessity of Output Distribution Reweighting for Effective Class Unlearning, "
        "arXiv 2506.20893"
    )
    version: ClassVar[str] = "1"  # bump when its numbers change
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.1, log=True), "epochs": FloatRange(0.02, 2.0, log=True),
                                                      "retain_weight": FloatRange(0.3, 10.0, log=True), "tilt": FloatRange(0.0, 2.0)}  # what `unlearnkit tune` searches (classifiers)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, "tilt", note=" (0 = plain renormalisation)")
        check_weights(self)
        if self.forget_weight == 0:
            raise ConfigError("trw: forget_weight must be > 0 (with 0 nothing is unlearned), got 0.")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, TargetKL("forget")), (self.retain_weight, NLL("retain")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        forgotten = forgotten_classes(task, f"method {self.name!r}")
        table, sim = tilted_targets(model, task.forget, forgotten, self.tilt, setup.adapter, setup.device)
        info = {
            "forgotten_classes": forgotten,
            "similarity": {str(c): [round(float(v), 6) for v in sim[c]] for c in forgotten},
            "target_mean_entropy": round(float(torch.special.entr(table.logits.exp()).sum(1).mean()), 6),
        }
        return {"trw_targets": table}, info
