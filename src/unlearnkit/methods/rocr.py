"""rocr: redirect each forget subject's MLP key to the value of a harmless concept with a closed-form rank-one edit.

Longer than a recipe's 60 lines: the edit is computed here (keys, target values, the key covariance, the solve) and
its docstring states what was inferred. Subjects, keys and the covariance come from ``analysis.locate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..analysis.locate import down_proj, edit_subjects, item_subjects, key_second_moment, locate_named, subject_keys, subject_span, substitute
from ..errors import ConfigError, TaskError
from ..objectives.lm import resolve_layer
from ..references import References
from ..types import Mask, Task, Unlearned
from .base import check_forget_kind, check_numbers, register_method


@register_method
@dataclass(frozen=True)
class ROCR:
    """Rank-one Concept Redirection (Ye, Zhang & Wu, LLM Unlearning Should Be Form-Independent, arXiv 2506.07795, 2025).

    For each forget subject s (an item's own entity, else its group's subject found in the questions, or one of
    ``subjects``: ``analysis.locate.edit_subjects``), the key k_s is the input of decoder layer ℓ's MLP down projection
    W at the subject's last token, the mean over the forget prompts that name s. A harmless target concept t (a subject
    of the holdout split, never trained on, or one of ``targets``) gives the value v_s (below), read from the same
    prompts with s replaced by t.
    The edit is ROME's closed form (Meng et al., NeurIPS 2022), solved jointly for the m subjects:
    ΔW = R (Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹, K = [k_s], R = [v_s − W k_s], C = E[k kᵀ] over every retain token's key at ℓ plus
    ``cov_reg``·tr(C)/d·I. Then (W + ΔW) k_s = v_s exactly, ΔW has rank m (one per concept) and moves a retain key k by
    (v − Wk_s)·k_sᵀC⁻¹k / k_sᵀC⁻¹k_s, small where k is C⁻¹-orthogonal to k_s. No gradient step: one forward pass over the
    forget prompts, the target prompts and the retain set.

    Inferred: the concept key is the prompt-mean of the last-subject-token keys (ROME averages over random prefixes).
    The target value (default ``value: hidden``) makes the layer's whole output at the subject's last token (attention
    and residual included) the target's: v_s = W k_s + h_ℓ(t) − h_ℓ(s), prompt means of the layer outputs, so from
    layer ℓ on the model reads the target concept wherever it read the forget subject, whatever the question's form.
    ``value: mlp`` is ROME's value, the unedited MLP's output for the target's key (v_s = W k_t): on the SmolLM2 profiles
    (LoRA-trained fictitious people, forget 10%) it moved the forget answers' probability 0.856 → 0.852 / 0.850 / 0.858
    at layers 1 / 6 / 15, where ``hidden`` gave 0.260 / 0.296 / 0.303, retain 0.845 unchanged in all six (one seed; the
    subject is still carried by the residual stream past one MLP). Defaults: ℓ = the middle layer (n_layers // 2),
    cov_reg 0.01. A LoRA-adapted layer's base weight is edited (the adapter's contribution is part of W·k). A forget
    question that does not name its subject ("Who wrote Hamlet?" for Shakespeare) has no subject key to redirect: it is
    left out and counted in ``info["reach"]`` (none named at all is a TaskError).
    """

    layer: int | None = None
    subjects: Sequence[str] | None = None
    targets: Sequence[str] | None = None
    value: Literal["mlp", "hidden"] = "hidden"
    cov_reg: float = 0.01
    batch_size: int = 16

    name: ClassVar[str] = "rocr"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = "Ye, Zhang & Wu, LLM Unlearning Should Be Form-Independent (ROCR), arXiv 2506.07795, 2025"
    needs: ClassVar[frozenset[str]] = frozenset()
    version: ClassVar[str] = "2"
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("profiles", "benchmark", "random", "ids")

    def __post_init__(self) -> None:
        check_numbers(self, "cov_reg", positive=True)
        if self.value not in ("mlp", "hidden"):
            raise ConfigError(f"rocr: value must be 'mlp' or 'hidden', got {self.value!r}.")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"rocr: batch_size must be an integer >= 1, got {self.batch_size!r}.")
        for field_name in ("subjects", "targets"):
            value = getattr(self, field_name)
            if value is not None and (isinstance(value, str) or not value or not all(isinstance(s, str) and s.strip() for s in value)):
                raise ConfigError(f"rocr: {field_name} must be a non-empty list of non-empty strings, got {value!r}.")

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        layer = resolve_layer(model, self.layer)
        codec = task.forget.data.codec
        located, reach = locate_named(task.forget, edit_subjects(task.forget, self.subjects, others=[task.retain, task.test]), "rocr")
        targets = self.target_subjects(task, list(dict.fromkeys(ex.subject for ex in located)))
        module = down_proj(model, layer)
        weight = getattr(module, "base_layer", module).weight
        was_training = model.training
        model.eval()
        try:
            keys, values, per_subject = [], [], []
            for subject, target in targets.items():
                mine = [ex for ex in located if ex.subject == subject]
                k_s = subject_keys(model, [ex.ids[: ex.n_prompt] for ex in mine], [ex.span[1] - 1 for ex in mine], layer,
                                   pad=codec.pad_id, device=device, batch_size=self.batch_size).double().mean(0)
                swapped = [subject_span(codec, substitute(task.forget.data.records[ex.index].question, subject, target), target)
                           for ex in mine]
                k_t = subject_keys(model, [ids for ids, _ in swapped], [span[1] - 1 for _, span in swapped], layer,
                                   pad=codec.pad_id, device=device, batch_size=self.batch_size).double().mean(0)
                keys.append(k_s)
                with torch.no_grad():
                    v = module(k_t.to(weight.dtype)[None]).double()[0]
                    if self.value == "hidden":  # the layer's whole output at the subject becomes the target's
                        v = module(k_s.to(weight.dtype)[None]).double()[0]
                        v = v + layer_output(model, [ids for ids, _ in swapped], [sp[1] - 1 for _, sp in swapped], layer, codec.pad_id, device)
                        v = v - layer_output(model, [ex.ids[: ex.n_prompt] for ex in mine], [ex.span[1] - 1 for ex in mine], layer, codec.pad_id, device)
                    values.append(v)
                per_subject.append({"subject": subject, "target": target, "prompts": len(mine)})
            cov, n_keys = key_second_moment(model, task.retain, layer, device=device, batch_size=self.batch_size)
            K = torch.stack(keys, 1)  # (d_ff, m)
            with torch.no_grad():
                current = module(K.T.to(weight.dtype)).double().T  # (d, m): the layer's output for the forget keys
            delta = rank_one_update(K, torch.stack(values, 1) - current, cov, self.cov_reg)
            retain_shift = self.retain_shift(model, task, layer, delta, device)
            with torch.no_grad():
                weight.add_(delta.to(weight.dtype))
                after = module(K.T.to(weight.dtype)).double().T
        finally:
            model.train(was_training)
        V = torch.stack(values, 1)
        names = {id(p): n for n, p in model.named_parameters()}
        if id(weight) not in names:
            raise ConfigError(f"rocr: the down projection of layer {layer} is not a parameter of the model.")
        changed = Mask({n: torch.full_like(p, n == names[id(weight)], dtype=torch.bool) for n, p in model.named_parameters()})
        for row, k in zip(per_subject, range(K.shape[1])):
            row["residual"] = float((after[:, k] - V[:, k]).norm() / V[:, k].norm().clamp_min(1e-12))
        info = {"layer": layer, "parameter": names[id(weight)], "concepts": per_subject, "reach": reach,
                "rank": int(torch.linalg.matrix_rank(delta.float()).item()),
                "relative_update_norm": float(delta.norm() / weight.detach().double().norm()), "retain_keys": n_keys,
                "retain_output_shift": retain_shift}
        return Unlearned(model, changed, info)

    def target_subjects(self, task: Task, forget: list[str]) -> dict[str, str]:
        """Forget subject → harmless target subject: ``targets`` in order, else the holdout split's subjects in order (the
        items' own entities where they name them, ``item_subjects``; else each group's derived subject)."""
        if self.targets is not None:
            pool = list(self.targets)
        else:
            if len(task.test) == 0:
                raise TaskError("rocr: the task has no holdout (test) examples to draw harmless target concepts from; give targets.")
            # per item (the knowledge task's test split mixes many targets in one group): its own entity, else its group's
            pool = list(dict.fromkeys(s for s in item_subjects(task.test) if s))
        pool = [t for t in pool if t not in forget]
        if len(pool) < len(forget):
            raise ConfigError(f"rocr: {len(forget)} forget subject(s) need as many distinct target concepts; got {len(pool)} ({pool}).")
        return dict(zip(forget, pool))

    def retain_shift(self, model: nn.Module, task: Task, layer: int, delta: torch.Tensor, device: str) -> float:
        """Mean over retain tokens of ‖ΔW k‖ / ‖W k‖ (W's own output, the adapter's included): how far the edit moves the
        layer's output on retain text."""
        from ..analysis.locate import mlp_keys

        module = down_proj(model, layer)
        num = den = 0.0
        for batch in task.retain.batches(self.batch_size, device=device):
            k = mlp_keys(model, batch["x"], batch["attention_mask"], layer)[batch["attention_mask"].bool()]
            with torch.no_grad():
                num += float((k.double() @ delta.T).norm(dim=-1).sum())
                den += float(module(k).double().norm(dim=-1).sum())
        return num / max(den, 1e-12)


@torch.no_grad()
def layer_output(model: nn.Module, prompts: list[list[int]], last: list[int], layer: int, pad: int, device: str) -> torch.Tensor:
    """The mean over prompts of decoder layer ``layer``'s output at position ``last[i]`` (float64)."""
    from ..objectives.lm import layer_activations

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.as_tensor(p)
        mask[i, : len(p)] = 1
    h = layer_activations(model, {"x": ids.to(device), "attention_mask": mask.to(device)}, layer)
    return h[torch.arange(len(prompts), device=h.device), torch.as_tensor(last, device=h.device)].double().mean(0)


def rank_one_update(keys: torch.Tensor, residuals: torch.Tensor, cov: torch.Tensor, reg: float) -> torch.Tensor:
    """ΔW = R (Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹ with C regularised by ``reg``·tr(C)/d·I: the update of least C-weighted size with
    ΔW K = R (float64). One key: the rank-one ROME edit R kᵀC⁻¹ / (kᵀC⁻¹k)."""
    d = cov.shape[0]
    c = cov + reg * torch.trace(cov) / d * torch.eye(d, dtype=cov.dtype, device=cov.device)
    cinv_k = torch.linalg.solve(c, keys.to(c))  # (d_ff, m)
    gram = keys.to(c).T @ cinv_k  # (m, m)
    if torch.linalg.matrix_rank(gram) < gram.shape[0]:
        raise TaskError("rocr: the forget concepts' keys are linearly dependent; two subjects cannot be told apart at this layer.")
    return residuals.to(c) @ torch.linalg.solve(gram, cinv_k.T)
