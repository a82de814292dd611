"""o3: continual LM unlearning with one orthogonal LoRA adapter per request and a per-request in-distribution detector
that decides, per input, how much of each request's adapter to apply; the base weights are never changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..errors import ConfigError
from ..lm.guard import is_guard, prompt_end_marker
from ..lm.o3 import GATINGS, O3LM, fit_detector, lora_targets
from ..objectives import NLL, Ascent, check_reduction, weighted
from ..objectives.lm import NPO as NPOLoss
from ..objectives.lm import reference_tables
from ..objectives.orthogonal import LoRAOrthogonality, cross_gram_norm2
from ..references import References
from ..seeding import torch_gen
from ..train import TrainConfig, fit
from ..types import Mask, Task, Unlearned
from ._guards import check_guard_params, measure_overhead, split_prompts
from .base import ALL_FORGET_KINDS, LM_TRAIN, TRAIN_PARAMS, check_forget_kind, check_numbers, register_method

LOSSES = ("npo", "grad_diff")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@register_method
@dataclass(frozen=True)
class O3:
    """O3 (Gao, Wang, Hu, Ye & Liu, On Large Language Model Continual Unlearning, ICLR 2025).

    A guard (kind ``guard``): the model's weights are untouched; the returned model is an ``lm.o3.O3LM`` wrapping
    them, which the metrics score and generate with. Given a model that is already an ``O3LM`` (the model a request
    stream's previous step left), the new request is added to it. Per request:

    1. Orthogonal LoRA: rank ``rank`` adapters (scale ``alpha``/``rank``) on the ``targets`` linear layers, trained
       with the adapter alone at gate 1 by ``loss`` (``npo``: NPO with β = ``beta``; ``grad_diff``: gradient ascent)
       on the forget answers with ``forget_weight``, + ``retain_weight``·retain NLL (0: the paper's retain-free
       setting), + ``ortho_weight``·Σ_layers Σ_{earlier k} ‖A_k A_newᵀ‖²_F (``objectives.orthogonal``), the paper's
       regulariser keeping the new adapter's input subspace orthogonal to the earlier requests'.
    2. Detector: the request's forget prompts' features (the frozen model's hidden state ``layer``, averaged over the
       prompt) give a Mahalanobis score (Ledoit–Wolf covariance) calibrated into p = σ(a·dist + b) on held-out forget
       prompts vs held-out retain prompts (``holdout_fraction`` of each); the hard threshold is ``threshold`` or, when
       None, the held-out Youden-optimal one. At inference each request's adapter is scaled by p·1[p ≥ threshold]
       (``gating: soft``: whether to load it and to what extent, the paper's soft loading) or by 1[p ≥ threshold]
       (``hard``); a prompt no detector fires on gets exactly the bare model's outputs.

    Approximations (stated): the paper's detector is a representation trained with its contrastive-entropy loss and
    scored by a layer-aggregated "glocal" score without retain data; here it is a Mahalanobis distance on one layer of
    the frozen model, and its calibration uses held-out retain prompts. ``info["detector"]`` reports its held-out
    TPR/FPR, its firing rates on all forget, retain and neighbour prompts. A request whose forget ids or profiles
    overlap an earlier request's is refused (ConfigError naming them).
    ``info["overhead"]``: latency per generated token through the guard vs the bare model (greedy, measured).
    """

    train: TrainConfig = TrainConfig(epochs=10.0, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.0)
    loss: Literal["npo", "grad_diff"] = "npo"
    beta: float = 0.1
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    ortho_weight: float = 1.0
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    layer: int = -1
    gating: Literal["soft", "hard"] = "soft"
    threshold: float | None = None
    holdout_fraction: float = 0.3
    latency_tokens: int = 16

    name: ClassVar[str] = "o3"
    kind: ClassVar[str] = "guard"
    paper: ClassVar[str] = "Gao et al., On Large Language Model Continual Unlearning, ICLR 2025"
    version: ClassVar[str] = "2"  # 2: info["overhead"] (latency per generated token)
    needs: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    flattened: ClassVar[dict[str, tuple[str, ...]]] = {"train": TRAIN_PARAMS}

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"o3: loss must be one of {list(LOSSES)}, got {self.loss!r}.")
        if self.gating not in GATINGS:
            raise ConfigError(f"o3: gating must be one of {list(GATINGS)}, got {self.gating!r}.")
        check_numbers(self, "forget_weight", "retain_weight", "ortho_weight")
        check_numbers(self, "beta", "alpha", positive=True)
        if self.forget_weight == 0:
            raise ConfigError("o3: forget_weight must be > 0 (a zero forget term unlearns nothing).")
        if isinstance(self.rank, bool) or not (isinstance(self.rank, int) and self.rank >= 1):
            raise ConfigError(f"o3: rank must be an integer >= 1, got {self.rank!r}.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ConfigError(f"o3: layer must be an integer (a hidden_states index; -1 = the last), got {self.layer!r}.")
        if isinstance(self.targets, str) or not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ConfigError(f"o3: targets must be a non-empty list of linear-layer names (e.g. ['q_proj', 'v_proj']), got {self.targets!r}.")
        object.__setattr__(self, "targets", tuple(self.targets))
        check_guard_params(self)  # threshold, holdout_fraction, latency_tokens
        if self.train.epochs is None:
            raise ConfigError("o3: epochs must be a number (steps, when given, replaces it).")

    # ----------------------------------------------------------------------------------------------- pieces
    def wrap(self, model: nn.Module, task: Task) -> O3LM:
        """``model`` itself when it is an O3LM with this method's adapter shape, else a new O3LM around it."""
        if isinstance(model, O3LM):
            mine = {"targets": list(model.targets), "rank": model.rank, "alpha": model.alpha, "layer": model.layer, "gating": model.gating}
            want = {"targets": list(lora_targets(model.inner, self.targets)), "rank": self.rank, "alpha": self.alpha, "layer": self.layer,
                    "gating": self.gating}
            if mine != want:
                diff = {k: (mine[k], want[k]) for k in mine if mine[k] != want[k]}
                raise ConfigError(f"o3: the model holds earlier requests' adapters with other settings (held, given): {diff}; "
                                  "every request of a stream must use the same rank, alpha, targets, layer and gating.")
            return model
        if is_guard(model):
            raise ConfigError(f"o3: the model is another method's inference-time guard ({type(model).__name__}); O3 adds its adapters "
                              "to a plain model or to its own O3LM.")
        marker = prompt_end_marker(split_prompts(task.forget) + split_prompts(task.retain))
        return O3LM(model, marker, targets=lora_targets(model, self.targets), rank=self.rank, alpha=self.alpha, layer=self.layer,
                    gating=self.gating, config={"method": "o3"})

    def objective(self) -> Any:
        forget = NPOLoss("forget", self.beta) if self.loss == "npo" else Ascent("forget", "token")
        return weighted((self.forget_weight, forget), (self.retain_weight, NLL("retain", "token")), (self.ortho_weight, LoRAOrthogonality()))

    # ----------------------------------------------------------------------------------------------- unlearn
    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        adapter = get_adapter(task)
        wrapper = self.wrap(model, task)
        adapter.check(wrapper.inner, task, device)
        check_no_overlap(wrapper, task)
        k = wrapper.n_requests
        codec = task.forget.data.codec
        forget_prompts, retain_prompts = split_prompts(task.forget), split_prompts(task.retain)
        ff = wrapper.prompt_features_of(forget_prompts, pad_id=codec.pad_id)
        rf = wrapper.prompt_features_of(retain_prompts, pad_id=codec.pad_id)
        det = fit_detector(ff, rf, rng=rng, holdout_fraction=self.holdout_fraction, threshold=self.threshold)

        extra: dict[str, Any] = {}
        if self.loss == "npo":  # π_ref: the model the adapter starts from (the bare model: each adapter is trained alone)
            extra, _ = reference_tables(wrapper.inner, task.forget, adapter, reference="cached", batch_size=self.train.batch_size,
                                        device=device)
        wrapper.begin_request(torch_gen(rng))
        mask = Mask({n: torch.ones_like(p, dtype=torch.bool) if n.startswith("trainable.") else torch.zeros_like(p, dtype=torch.bool)
                     for n, p in wrapper.named_parameters()})
        objective = self.objective()
        streams = {s: getattr(task, s) for s in dict.fromkeys((*objective.streams, "forget"))}
        try:
            result = fit(wrapper, objective, streams, self.train, adapter=adapter, rng=rng, device=device, mask=mask, epoch_stream="forget",
                         extra=extra, progress=progress, desc=f"o3 request {k + 1}")
            new = [a.detach() for a, _ in wrapper.trainable_pairs()]
        except BaseException:
            wrapper.trainable = None  # the model is left as it came (a failed request adds nothing)
            raise
        groups = task.forget.labels
        wrapper.end_request(det, task.forget.ids, None if groups is None else np.unique(groups))
        ortho = {f"request_{j + 1}": float(sum(cross_gram_norm2(wrapper.adapter(j)[i][0], new[i]) for i in range(len(new))))
                 for j in range(k)}
        info: dict[str, Any] = {
            "request": k + 1, "train": result.to_json(), "guard": wrapper.describe(),
            "detector": {**det.info, **detector_rates(wrapper, task, ff, rf, k, pad_id=codec.pad_id)},
            "orthogonality": {"cross_gram_norm2": ortho, "what": "sum over layers of ||A_earlier A_new^T||_F^2"},
            "adapter": {"rank": self.rank, "alpha": self.alpha, "targets": len(wrapper.targets),
                        "parameters": int(sum(a.numel() + b.numel() for a, b in wrapper.adapter(k)))},
            "weights": "unchanged (inference-time guard: weight-level evidence is measured on the bare model)",
            # latency per generated token with every request's detector and gated adapters vs the bare model
            "overhead": measure_overhead(wrapper, task, adapter, device=device, max_new_tokens=self.latency_tokens),
        }
        if result.stopped:
            info["warning"] = result.stopped
        return Unlearned(wrapper, Mask.full(wrapper, False), info)


def check_no_overlap(wrapper: O3LM, task: Task) -> None:
    """A ConfigError naming the ids (and profiles) of the task's forget set that an earlier request already deleted."""
    ids = np.asarray(task.forget.ids)
    groups = None if task.forget.labels is None else np.unique(task.forget.labels)
    for j, (done_ids, done_groups) in enumerate(wrapper.deleted()):
        again = np.intersect1d(ids, done_ids)
        again_groups = np.intersect1d(groups, done_groups) if groups is not None and len(done_groups) else np.zeros(0, np.int64)
        if len(again) or len(again_groups):
            what = f"ids {again[:10].tolist()}" + (f" ({len(again)} in all)" if len(again) > 10 else "")
            if len(again_groups):
                what += f", profiles/groups {again_groups[:10].tolist()}"
            raise ConfigError(f"o3: this request overlaps request {j + 1} of this model: {what} were already unlearned by it. "
                              "Each request must name data no earlier request named.")


def detector_rates(wrapper: O3LM, task: Task, ff: np.ndarray, rf: np.ndarray, k: int, *, pad_id: int) -> dict[str, Any]:
    """Request ``k``'s detector as the wrapper computes it: mean p and firing rate (p ≥ threshold) on all forget and retain
    prompts and, when the task has them, its neighbour prompts (related facts to keep)."""
    feats = {"forget": ff, "retain": rf}
    neighbours = task.splits().get("probe:neighbours")
    if neighbours is not None and len(neighbours):
        feats["neighbours"] = wrapper.prompt_features_of(split_prompts(neighbours), pad_id=pad_id)
    t = float(getattr(wrapper, f"det_threshold_{k}"))
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, x in feats.items():
            p = wrapper.probabilities(torch.as_tensor(x, dtype=torch.float32, device=wrapper.marker.device))[:, k].cpu().numpy()
            out[f"mean_p_{name}"] = float(p.mean())
            out[f"{'tpr' if name == 'forget' else 'fpr'}_{name}"] = float((p >= t).mean())
    return out


__all__ = ["O3", "check_no_overlap"]
