"""layer_constrained: causal tracing finds the decoder layers that hold the forget facts; a gradient recipe trains only those.

Longer than a recipe's 60 lines: a wrapper (like sam) that runs the tracing of ``analysis.locate``, chooses the layers,
restricts its inner method to them and reports the tracing matrix (the report plots it as a heatmap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ..adapters import get_adapter
from ..analysis.locate import causal_trace, edit_subjects, locate_named
from ..errors import ConfigError
from ..models.causal_lm import decoder_layers
from ..references import References
from ..types import Task, Unlearned
from .base import GradientMethod, build_method, check_forget_kind, check_numbers, method_not_applicable, register_method


@register_method
@dataclass(frozen=True)
class LayerConstrained:
    """Causal-tracing localisation, then layer-constrained unlearning (Agrawal & Huang, SHA256 at SemEval-2025 Task 4: Selective Amnesia, 2025).

    The issue calls it the task's winner; the paper reports 2nd place in the 1B-model track. It traces OLMo, finds the
    facts in the early layers' MLPs and trains only those with forget ascent + adaptively weighted retain NLL; here the
    objective is any registered gradient recipe (grad_diff is the closest).

    Causal tracing (Meng et al., NeurIPS 2022) on up to ``max_prompts`` forget examples (drawn with the run's
    generator): Gaussian noise of std ``noise`` × the token embeddings' std on the subject tokens (``samples`` draws);
    then each decoder layer's clean output restored at one prompt position at a time; the recovered answer probability
    minus the corrupted one is the indirect effect. Averaged over examples per position class (``analysis.locate.CATEGORIES``:
    subject tokens, the token after, the last token), it gives the stored layer × position matrix. A layer's score is
    its largest effect over the subject-token classes; the ``top_layers`` best-scoring layers (ties: the lower) hold the
    facts. The gradient method ``method`` (``grad_diff``, ``npo`` or any gradient method with ``restrict_to``) with
    ``params`` then trains only those layers (``restrict_to`` = ``decoder_layers`` of the chosen layers). A prompt whose
    subject is named but cannot be located in its tokens is a ``TaskError``; one that does not name its subject is not
    traced (counted in the tracing result's ``reach``; none named is a TaskError). ``subjects``: the subjects to trace
    (default: each item's own entity where the data names one, else found in the questions, a group's longest word run
    that no other group's questions contain).

    Defaults: grad_diff inside, one layer, noise 3σ and 3 draws (ROME's), 8 prompts.
    """

    method: str = "grad_diff"
    params: dict[str, Any] = field(default_factory=dict)
    top_layers: int = 1
    noise: float = 3.0
    samples: int = 3
    max_prompts: int = 8
    subjects: Sequence[str] | None = None

    name: ClassVar[str] = "layer_constrained"
    kind: ClassVar[str] = "gradient"
    paper: ClassVar[str] = ("Agrawal & Huang, SHA256 at SemEval-2025 Task 4: Selective Amnesia - Constrained Unlearning for Large Language "
                            "Models via Knowledge Isolation, SemEval 2025")
    needs: ClassVar[frozenset[str]] = frozenset()
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("profiles", "benchmark", "random", "ids")
    wraps: ClassVar[str] = "method"  # a wrapper: the parameter naming the gradient recipe it restricts

    def __post_init__(self) -> None:
        check_numbers(self, "noise", positive=True)
        for name in ("top_layers", "samples", "max_prompts"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"layer_constrained: {name} must be an integer >= 1, got {value!r}.")
        if not isinstance(self.params, dict):
            raise ConfigError(f"layer_constrained: params must be a mapping of the inner method's parameters, got {self.params!r}.")
        if "restrict_to" in self.params:
            raise ConfigError("layer_constrained: the inner method's restrict_to is set by the tracing; remove it from params.")
        if self.subjects is not None and (isinstance(self.subjects, str) or not self.subjects
                                          or not all(isinstance(s, str) and s.strip() for s in self.subjects)):
            raise ConfigError(f"layer_constrained: subjects must be a non-empty list of non-empty strings, got {self.subjects!r}.")
        self.wrapped()

    def wrapped(self) -> Any:
        """The inner method as configured (its version goes into the run key)."""
        if self.method == self.name:
            raise ConfigError("layer_constrained: the inner method cannot be layer_constrained itself.")
        inner = build_method(self.method, self.params)
        if not isinstance(inner, GradientMethod):
            raise ConfigError(f"layer_constrained: {self.method!r} is not a gradient method that can be restricted to layers.")
        return inner

    def why_not_applicable(self, task: Task) -> str | None:
        reason = method_not_applicable(self.wrapped(), task)
        return None if reason is None else f"its inner method {self.method!r} {reason}"

    def trace(self, model: nn.Module, task: Task, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
        """The tracing result (``analysis.locate.causal_trace``) on up to ``max_prompts`` forget examples."""
        located, reach = locate_named(task.forget, edit_subjects(task.forget, self.subjects, others=[task.retain, task.test]),
                                      "layer_constrained tracing")
        chosen = np.sort(rng.choice(len(located), size=min(self.max_prompts, len(located)), replace=False))
        seed = int(rng.integers(0, 2**31 - 1))
        result = causal_trace(model, [located[i] for i in chosen], noise=self.noise, samples=self.samples, seed=seed, device=device,
                              progress=progress)
        result["item_ids"] = [int(task.forget.ids[located[i].index]) for i in chosen]
        result["subjects"] = sorted({ex.subject for ex in located})
        result["reach"] = reach
        return result

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        inner = self.wrapped()
        if task.modality not in inner.modalities:
            raise ConfigError(f"layer_constrained: the inner method {self.method!r} works on {list(inner.modalities)} tasks.")
        get_adapter(task).check(model, task, device)
        n_layers = len(decoder_layers(model))
        if self.top_layers > n_layers:
            raise ConfigError(f"layer_constrained: top_layers {self.top_layers} exceeds the model's {n_layers} decoder layers.")
        tracing = self.trace(model, task, rng=rng, device=device, progress=progress)
        scores = np.asarray(tracing["layer_scores"])
        layers = sorted(int(i) for i in np.argsort(-scores, kind="stable")[: self.top_layers])
        restricted = dataclasses.replace(inner, restrict_to={"name": "decoder_layers", "params": {"layers": layers}})
        out = restricted.unlearn(model, task, refs, rng=rng, device=device, progress=progress)
        info = {"inner": {"method": self.method, "version": inner.version}, "layers": layers, "tracing": tracing, **out.info}
        return Unlearned(out.model, out.changed, info)
