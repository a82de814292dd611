"""Method protocol, parameter validation, and the shared body of gradient recipes."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from torch import nn

from ..adapters import get_adapter
from ..errors import ConfigError
from ..params import build_component, component, flat_params
from ..references import References
from ..registry import METHODS, SELECTORS
from ..searchspace import FloatRange
from ..stopping import HoldoutLevelStop
from ..train import TrainConfig, fit
from ..types import Mask, Task, Unlearned


@runtime_checkable
class Method(Protocol):
    """A frozen dataclass of hyperparameters with ``unlearn``. ``kind`` is one of gradient, edit,
    guard, exact. ``unlearn`` may modify ``model`` in place and returns it inside ``Unlearned``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    paper: ClassVar[str]
    needs: ClassVar[frozenset[str]]  # references it requires, e.g. {"train_config"}
    version: ClassVar[str]  # part of every run key: bump it when the method's numbers change
    modalities: ClassVar[tuple[str, ...]]  # task modalities it works on, e.g. ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]]  # forget sets it handles: "random", "classes", "ids"
    # optional: whole_classes_only = True also refuses a "classes" forget set with a fraction (see not_whole_classes);
    # wraps = "<parameter>" marks a wrapper around the method that parameter names (sam, layer_constrained, low_influence_skip)

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned: ...


ALL_FORGET_KINDS = ("random", "classes", "ids", "corrupted", "profiles", "benchmark")


def check_forget_kind(method: Any, task: Task) -> None:
    """A clear error, before any work, when the method cannot run on the task: a forget set of a kind it does not handle,
    part of a class for a whole-class method, or the method's own reason (``why_not_applicable``) — the runner's
    ``method_not_applicable``, enforced for a method called directly."""
    kind = task.info.get("forget", {}).get("kind")
    kinds = getattr(method, "forget_kinds", ALL_FORGET_KINDS)
    if kind is not None and kind not in kinds:
        raise ConfigError(f"Method {method.name!r} handles forget sets of kind {list(kinds)}; this task's is {kind!r}.")
    if (why := method_not_applicable(method, task)) is not None:
        raise ConfigError(f"Method {method.name!r} cannot run on this task: it {why}.")


def method_not_applicable(method: Any, task: Task) -> str | None:
    """Why ``method`` cannot run on ``task`` (modality or forget-set kind), or None."""
    modalities = getattr(method, "modalities", ("classifier",))
    if task.modality not in modalities:
        return f"works on {list(modalities)} tasks, this one is {task.modality!r}"
    kind = task.info.get("forget", {}).get("kind")
    kinds = getattr(method, "forget_kinds", None)
    if kinds is not None and kind is not None and kind not in kinds:
        return f"handles forget sets of kind {list(kinds)}, this one is {kind!r}"
    if getattr(method, "whole_classes_only", False) and (why := not_whole_classes(task)) is not None:
        return f"unlearns whole classes; {why}"
    hook = getattr(method, "why_not_applicable", None)  # e.g. a wrapper whose inner method does not fit the task
    return hook(task) if callable(hook) else None


def not_whole_classes(task: Task) -> str | None:
    """Why ``task`` does not forget whole classes (the premise of a class-unlearning method), or None when it does."""
    if task.whole_classes() is not None:
        return None
    spec = task.info.get("forget", {})
    if spec.get("kind") == "classes":
        return (f"this task forgets only {float(spec['fraction']):.0%} of the examples of classes {list(spec.get('classes', []))}, "
                "the rest stay in the retain set")
    return f"this task's forget set is {spec.get('kind', 'not a class selection')!r}"


def forgotten_classes(task: Task, who: str) -> list[int]:
    """The classes of a task that forgets whole classes (``Task.whole_classes``); a clear error for any other forget set."""
    classes = task.whole_classes()
    if classes is None:
        raise ConfigError(f"{who} unlearns whole classes; {not_whole_classes(task)}. "
                          "Use a forget set {kind: classes, classes: [...]} without a fraction.")
    return classes


def register_method(cls: type) -> type:
    """Class decorator: register a method class under its ``name``."""
    METHODS.register(cls.name, cls)
    return cls


def build_method(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A method instance from its registry name and parameters (validated)."""
    return build_component(METHODS.get(name), params, f"method {name!r}")


def method_params(method: Any) -> dict[str, Any]:
    """The method's parameters as a user gives them (flat: training settings next to the recipe's own); run keys hash them."""
    return flat_params(method)


def method_version(method: Any) -> str:
    """The method's version followed by that of the method it wraps (``wrapped()``, e.g. sam's inner method), so a
    wrapper's stored runs are recomputed when its inner method's numbers change: "1+npo@1"."""
    wrapped = getattr(method, "wrapped", None)
    if wrapped is None:
        return str(method.version)
    inner = wrapped()
    return f"{method.version}+{inner.name}@{method_version(inner)}"


def describe_method(method: Any) -> dict[str, Any]:
    """Name, parameters and version (inner methods' included) of a method: what run keys and reports record."""
    return {"name": method.name, "params": method_params(method), "version": method_version(method)}


TRAIN_PARAMS = ("epochs", "steps", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "grad_clip")
"""The fields of a gradient method's ``TrainConfig`` that users set, as flat parameters next to the recipe's own."""

LM_TRAIN = TrainConfig(epochs=10.0, batch_size=8, optimizer="adamw", lr=1e-4, weight_decay=0.01)
"""Training defaults of the language-model recipes (causal LMs, forget sets of question–answer pairs).

An epoch is one pass over the forget set; each step draws a forget batch and, for recipes with a retain term, a
retain batch of the same size (OpenUnlearning's forget-anchored pairing). AdamW, lr 1e-4 (the LoRA learning rate of
LoKU's recipe; full fine-tuning of billion-parameter models uses 1e-5, our models are small or LoRA-adapted), weight
decay 0.01 and 10 epochs (OpenUnlearning's TOFU setting), batch size 8 (TOFU's forget sets have 40–400 items at an
effective batch of 32; ours have 6–120, so 8 keeps several steps per epoch). Recipes with a retain term use retain NLL
weighted by ``retain_weight`` and reduced by ``retain_reduction`` (default ``token``: summed over the batch's retain
answer tokens and divided by their number, Hugging Face's loss as in OpenUnlearning and the NPO code; ``example``: the
mean of per-example length-normalised NLLs), and check every ``*_weight`` with ``check_weights``."""

LM_BUDGET_SPACE: dict[str, Any] = {"lr": FloatRange(1e-5, 1e-2, log=True), "epochs": FloatRange(0.5, 10.0, log=True)}
"""The learning rate and budget every LM recipe's ``lm_search_space`` searches (AdamW on LoRA adapters or a small model;
log scale): the LM recipes' own dimensions are added to it."""



@dataclass(frozen=True)
class Setup:
    """What a recipe's hooks may use besides the model and the task: the references, the task's adapter, the run's
    generator (hooks that draw from it do so in a fixed order, before training), the device and progress display."""

    refs: References
    adapter: Any
    rng: np.random.Generator
    device: str = "cpu"
    progress: bool = False


@dataclass(frozen=True)
class Phase:
    """One run of the training loop in a recipe's schedule: an objective with its settings and the stream an epoch
    passes over. ``label`` names it in progress bars and warnings; ``info`` goes with its result in ``info["phases"]``."""

    label: str
    objective: Any
    train: TrainConfig
    epoch_stream: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GradientMethod:
    """Shared body of gradient recipes: objective + selector + the one loop, with the training settings in ``train``.

    Subclasses define ``objective(task, refs)`` and may override ``selector()``, ``epoch_stream``,
    ``prepare(model, task, setup)`` (inputs computed once before training that objectives read from ``ctx.extra``,
    e.g. frozen reference logits, and what to report about them), ``phases(task, refs)`` (several runs of the loop in
    sequence, e.g. SCRUB's max- and min-passes; default: one phase of ``objective`` with ``train``) and
    ``report(model, task, setup, extra)`` (what to add to ``Unlearned.info`` after training). A stream is the task's
    split of that name (``forget``, ``retain``, ``train``). A recipe's own training
    defaults are its ``train`` default (``train: TrainConfig = TrainConfig(epochs=3.0, lr=0.05)``); users give those
    settings as flat parameters (``{epochs: 1, lr: 0.01}``, the ``TRAIN_PARAMS``), which ``build_method`` routes into
    ``train`` and ``method_params`` reads back out.

    ``stop_at="holdout"`` ends training early, the first time (checked every ``stop_check_every`` steps, counted over
    all phases) the forget
    set's mean true-answer probability falls to the holdout (test) examples' on the input model
    (``stopping.HoldoutLevelStop``, Jang et al.'s forgetting threshold): the budget becomes a maximum and the method
    stops before over-forgetting, without consulting a retrained model; later phases do not run. It keeps the weights
    of that check or, when the previous check was nearer the level, the previous check's.

    ``restrict_to`` = ``{"name": <registered selector>, "params": {...}}`` (or just the name; parsed like an experiment
    file's components) trains only the parameters that selector
    picks (intersected with the recipe's own selector, if it has one), in every phase, e.g. ``decoder_layers`` with
    ``layers: [-3, -2, -1]`` for the adapters of a causal LM's top three blocks. Everything else is frozen, so the
    backward pass stops at the lowest selected parameter."""

    train: TrainConfig = TrainConfig(epochs=5.0)
    stop_at: Literal["none", "holdout"] = "none"
    stop_check_every: int = 1
    restrict_to: dict[str, Any] | None = None

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[str]
    kind: ClassVar[str] = "gradient"
    needs: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    epoch_stream: ClassVar[str] = "forget"
    flattened: ClassVar[dict[str, tuple[str, ...]]] = {"train": TRAIN_PARAMS}
    # the ranges and choices `unlearnkit tune` searches (``searchspace``: FloatRange, IntRange, Choice per parameter), on
    # classifier tasks (``search_space``) and on causal-LM tasks (``lm_search_space``: adapters or small LMs train at other
    # rates and budgets); None: none declared, the tuner then needs one given explicitly (``searchspace.declared_space``)
    search_space: ClassVar[Mapping[str, Any] | None] = None
    lm_search_space: ClassVar[Mapping[str, Any] | None] = None

    def __post_init__(self) -> None:
        if self.train.epochs is None:
            raise ConfigError(f"{self.name}: epochs must be a number (steps, when given, replaces it).")
        if self.stop_at not in ("none", "holdout"):
            raise ConfigError(f"{self.name}: stop_at must be 'none' or 'holdout', got {self.stop_at!r}.")
        if not (isinstance(self.stop_check_every, int) and self.stop_check_every >= 1):
            raise ConfigError(f"{self.name}: stop_check_every must be an integer >= 1, got {self.stop_check_every!r}.")
        self.restriction()  # validates restrict_to

    def with_sam(self, rho: float) -> GradientMethod:
        """A copy whose training steps are sharpness-aware with radius ``rho`` (``TrainConfig.sam_rho``). The radius is
        not one of the ``TRAIN_PARAMS``, so the copy's parameters (and run keys) are the method's own."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, sam_rho=float(rho)))

    def objective(self, task: Task, refs: References) -> Any:
        raise TypeError(f"{type(self).__name__} must define objective() or phases()")  # pragma: no cover

    def selector(self) -> Any:
        return None

    def restriction(self) -> Any:
        """The selector named by ``restrict_to``, or None."""
        if self.restrict_to is None:
            return None
        spec = component(self.restrict_to, f"{self.name}: restrict_to", SELECTORS)
        return build_component(SELECTORS.get(spec.name), spec.params, f"{self.name}: restrict_to {spec.name!r}")

    def phases(self, task: Task, refs: References) -> list[Phase]:
        return [Phase(self.name, self.objective(task, refs), self.train, self.epoch_stream)]

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        """What objectives read from ``ctx.extra`` (computed once from the input model, before training), and what
        to report about it in ``Unlearned.info`` (a ``warning`` there joins the training warnings). Default: nothing."""
        return {}, {}

    def report(self, model: nn.Module, task: Task, setup: Setup, extra: dict[str, Any]) -> dict[str, Any]:
        """What to add to ``Unlearned.info`` about the trained model. Default: nothing."""
        return {}

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        setup = Setup(refs, adapter, rng, device, progress)
        masks = [s(model, task, adapter=adapter, rng=rng, device=device) for s in (self.selector(), self.restriction()) if s is not None]
        mask = None if not masks else functools.reduce(operator.and_, masks).require_nonempty(f"{self.name}'s parameter selection")
        phases = self.phases(task, refs)
        extra, prepared = self.prepare(model, task, setup)
        warnings = [prepared.pop("warning")] if "warning" in prepared else []
        rule = self.stop_rule(model, task, adapter, device)
        results: list[dict[str, Any]] = []
        for phase in phases:
            streams = {s: getattr(task, s) for s in dict.fromkeys((*phase.objective.streams, phase.epoch_stream))}
            result = fit(
                model, phase.objective, streams, phase.train, adapter=adapter, rng=rng, device=device, mask=mask,
                epoch_stream=phase.epoch_stream, extra=extra, progress=progress,
                desc=self.name if len(phases) == 1 else f"{self.name} {phase.label}",
                callback=None if rule is None else offset_steps(rule, sum(r["steps"] for r in results)),
            )
            results.append({**phase.info, **result.to_json()})
            if result.stopped and (rule is None or result.stopped != rule.fired):
                warnings.append(result.stopped if len(phases) == 1 else f"{phase.label}: {result.stopped}")
            if rule is not None and rule.fired:
                break
        changed = mask if mask is not None else Mask.full(model)
        trained = {"train": results[0]} if len(phases) == 1 else {"phases": results, "steps": sum(r["steps"] for r in results)}
        info = {**trained, "mask": changed.summary(), **prepared, **self.report(model, task, setup, extra)}
        if rule is not None:
            info["early_stop"] = rule.to_json()
        if warnings:
            info["warning"] = "; ".join(warnings)
        return Unlearned(model, changed, info)

    def stop_rule(self, model: nn.Module, task: Task, adapter: Any, device: str) -> HoldoutLevelStop | None:
        """The early-stopping rule of ``stop_at`` (its level measured on ``model`` before training), or None."""
        if self.stop_at == "none":
            return None
        if len(task.test) == 0:
            raise ConfigError(f"{self.name}: stop_at='holdout' needs holdout (test) examples; the task has none.")
        if task.whole_classes() is not None:
            raise ConfigError(f"{self.name}: stop_at='holdout' stops once the forget set is predicted no better than unseen "
                              "examples; when whole classes are forgotten, the model predicts those classes' unseen examples "
                              "about as well as the forget set, so the rule would stop almost at once, far from a retrained "
                              "model (which never predicts those classes); give a step or epoch budget instead.")
        return HoldoutLevelStop.measured(model, task.forget, task.test, adapter, batch_size=max(self.train.batch_size, 16), device=device,
                                         every=self.stop_check_every)


def offset_steps(rule: Callable[[int, nn.Module], str | None], offset: int) -> Callable[[int, nn.Module], str | None]:
    """``rule`` as the callback of a later phase: its steps counted from ``offset``, the steps of the phases before."""
    return lambda step, model: rule(offset + step, model)


def check_weights(method: Any) -> None:
    """Every ``*_weight`` field of ``method`` is a finite number >= 0 (the language-model recipes' check)."""
    check_numbers(method, *(f.name for f in dataclasses.fields(method) if f.name.endswith("_weight")))


def check_numbers(method: Any, *names: str, positive: bool = False, note: str = "") -> None:
    """Each field ``names`` of ``method`` is a finite number >= 0 (> 0 if ``positive``); otherwise a ConfigError
    "<method>: <name><note> must be a finite number >= 0, got <value>."."""
    for name in names:
        value = getattr(method, name)
        if not (isinstance(value, (int, float)) and np.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ConfigError(f"{method.name}: {name}{note} must be a finite number {'>' if positive else '>='} 0, got {value}.")


@dataclass(frozen=True)
class ExactMethod:
    """Shared body of the exact regimes (``exact/``): ``build`` trains the regime's served model on the task's
    training data (forget ∪ retain), then ``unlearn`` deletes the forget set from it and returns the receipt.

    ``serve`` is the training half: it returns ``model`` itself when that is already this regime's served model (a
    request stream passes the model of the previous request), else (after checking that ``model`` fits the task) a
    newly built one. The runner calls it before
    metering the run, so a run's cost is the deletion's alone and the regime's training cost sits in
    ``info["training"]``. Subclasses define ``build(task, refs, *, seed, device, progress)``."""

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[str]
    kind: ClassVar[str] = "exact"
    needs: ClassVar[frozenset[str]] = frozenset({"train_config"})
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("random", "classes", "ids", "corrupted")

    def build(self, task: Task, refs: References, *, seed: int, device: str, progress: bool) -> Any:
        raise TypeError(f"{type(self).__name__} must define build()")  # pragma: no cover

    def serve(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
              progress: bool = False) -> Any:
        from ..exact import ExactModel

        if isinstance(model, ExactModel) and model.regime == self.name:
            return model
        # the input is the model a deletion request is made against: it must fit the task even though the regime
        # trains its own (a wrong output size or NaN weights there means the request names the wrong model)
        get_adapter(task).check(model, task, device)
        seed = int(rng.integers(0, 2**31 - 1))
        return self.build(task, refs, seed=seed, device=device, progress=progress)

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        served = self.serve(model, task, refs, rng=rng, device=device, progress=progress)
        receipt = served.delete(task.forget.ids, progress=progress)
        info = {"regime": served.describe(), "receipt": receipt.to_json(), "training": getattr(served, "training_info", {})}
        return Unlearned(served, Mask.full(served), info)
