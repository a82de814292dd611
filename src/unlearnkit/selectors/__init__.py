"""Selectors: which parameters may change. ``(model, task, ctx) -> Mask``; compose masks with & | ~."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError
from ..registry import SELECTORS
from ..types import Mask, Task


@SELECTORS.register("all")
@dataclass(frozen=True)
class AllParameters:
    """Every parameter may change."""

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        return Mask.full(model)


@SELECTORS.register("by_name")
@dataclass(frozen=True)
class ByName:
    """Parameters whose names match any ``include`` glob and no ``exclude`` glob (e.g. ``head.*``)."""

    include: Sequence[str] = ("*",)
    exclude: Sequence[str] = ()

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        out = {}
        for name, p in model.named_parameters():
            keep = any(fnmatch.fnmatch(name, pat) for pat in self.include) and not any(
                fnmatch.fnmatch(name, pat) for pat in self.exclude
            )
            out[name] = torch.full_like(p, keep, dtype=torch.bool)
        return Mask(out).require_nonempty(f"by_name(include={list(self.include)}, exclude={list(self.exclude)})")


def forget_gradient(model: nn.Module, task: Task, adapter: Any, device: Any, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Σ over forget batches of ∇θ of the summed forget loss (signed, model in eval mode)."""
    was_training = model.training
    model.eval()
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    try:
        for batch in task.forget.batches(batch_size, device=device):
            model.zero_grad(set_to_none=True)
            loss = adapter.per_example_loss(model, batch).sum()
            loss.backward()
            cost.record(passes=len(batch["ids"]))
            for n, p in model.named_parameters():
                if p.grad is not None and n in grads:
                    grads[n] += p.grad.detach()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return grads


@SELECTORS.register("by_saliency")
@dataclass(frozen=True)
class BySaliency:
    """SalUn's weight saliency (Fan et al., ICLR 2024): keep the top ``fraction`` of coordinates by
    |∇θ Σ_i (−ℓ_i)| over the forget examples, ranked globally across all parameters (signed sum, then absolute value).
    The reference sums the gradients of each batch's *mean* loss instead; summing per-example losses gives the same
    ranking when every batch is full and, unlike it, does not depend on how the forget set falls into batches."""

    fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"by_saliency: fraction must be in (0, 1], got {self.fraction}.")

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        grads = forget_gradient(model, task, adapter, device)
        flat = torch.cat([g.abs().flatten() for g in grads.values()])
        k = max(1, int(round(self.fraction * flat.numel())))
        # exact top-k by magnitude; ties broken by position (deterministic)
        order = torch.argsort(flat, descending=True, stable=True)
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[:k]] = True
        out, start = {}, 0
        for name, p in model.named_parameters():
            if name in grads:
                out[name] = chosen[start : start + p.numel()].view_as(p)
                start += p.numel()
            else:
                out[name] = torch.zeros_like(p, dtype=torch.bool)
        return Mask(out).require_nonempty("by_saliency")


@SELECTORS.register("extractor")
@dataclass(frozen=True)
class Extractor:
    """The representation extractor: every parameter outside ``model.head`` (all of them for a model without a ``head``
    module; parameters that ``features`` does not use get no gradient and stay put)."""

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        head = getattr(model, "head", None)
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        mask = Mask({n: torch.full_like(p, id(p) not in head_ids, dtype=torch.bool) for n, p in model.named_parameters()})
        return mask.require_nonempty("extractor (every parameter outside model.head)")


@SELECTORS.register("decoder_layers")
@dataclass(frozen=True)
class DecoderLayers:
    """The trainable parameters of submodule ``module`` (a dotted path inside each block, e.g. ``mlp`` or
    ``mlp.down_proj``; empty = the whole block) of the listed decoder layers of a causal LM (negative = from the
    end). With LoRA adapters these are the adapters' parameters (the base weights are not trainable)."""

    layers: Sequence[int] = (-1,)
    module: str = ""

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        from ..models.causal_lm import decoder_layers, layer_indices

        blocks = decoder_layers(model)
        chosen: set[int] = set()
        for i in layer_indices(self.layers, len(blocks), "decoder_layers: layers"):
            sub: Any = blocks[i]
            for part in filter(None, self.module.split(".")):
                if not hasattr(sub, part):
                    raise ConfigError(f"decoder_layers: layer {i} has no submodule {self.module!r} (no {part!r} in {type(sub).__name__}).")
                sub = getattr(sub, part)
            chosen |= {id(p) for p in sub.parameters() if p.requires_grad}
        out = {name: torch.full_like(p, id(p) in chosen, dtype=torch.bool) for name, p in model.named_parameters()}
        return Mask(out).require_nonempty(f"decoder_layers(layers={list(self.layers)}, module={self.module!r})")


RMU_MODULES = {"mlp": "mlp", "down_proj": "mlp.down_proj"}  # rmu's ``module`` choices: the submodule path in a block


@SELECTORS.register("rmu_parameters")
@dataclass(frozen=True)
class RMUParameters:
    """RMU's trainable parameters (Li et al., The WMDP Benchmark, ICML 2024): the ``module`` weights (``mlp``: the whole
    MLP; ``down_proj``: its down projection) of decoder layers [ℓ−2, ℓ] (clipped at 0), ℓ = ``layer`` resolved on the
    model (None: the middle layer, n_layers // 2)."""

    layer: int | None = None
    module: str = "mlp"

    def __post_init__(self) -> None:
        if self.module not in RMU_MODULES:
            raise ConfigError(f"rmu_parameters: module must be one of {sorted(RMU_MODULES)}, got {self.module!r}.")

    def layers(self, model: nn.Module) -> tuple[int, ...]:
        from ..objectives.lm import resolve_layer

        top = resolve_layer(model, self.layer)
        return tuple(range(max(0, top - 2), top + 1))

    def __call__(self, model: nn.Module, task: Task, *, adapter: Any, rng: np.random.Generator, device: Any = "cpu") -> Mask:
        return DecoderLayers(self.layers(model), RMU_MODULES[self.module])(model, task, adapter=adapter, rng=rng, device=device)


__all__ = ["RMU_MODULES", "AllParameters", "ByName", "BySaliency", "DecoderLayers", "Extractor", "RMUParameters", "forget_gradient"]
