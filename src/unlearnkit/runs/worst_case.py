"""Worst-case forget sets (Fan, Liu, Hero, Liu, Challenging Forgets: Unveiling the Worst-Case Forget Sets in Machine
Unlearning, ECCV 2024): search for the forget set of a given size that a given unlearning method handles worst, and
measure how much worse it is handled than a random set of the same size.

Only the Python functions ``worst_case_forget`` and ``compare_with_random`` are offered, not a forget-set kind in
experiment files: the search needs the model factory, the training recipe and the method, which ``select_forget``
does not receive. Write the selected ids with ``WorstCaseReport.write_id_file`` and use ``{kind: ids, file: ...}``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..adapters import get_adapter
from ..data.sources import DataSource
from ..errors import ConfigError
from ..io import atomic_write_text, to_jsonable
from ..methods import describe_method
from ..references import References
from ..seeding import torch_seed
from ..train import train_model
from ..types import Split, Task
from .references import retrain_seed

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True, eq=False)
class WorstCaseReport:
    """What the search saw: the candidate pool (sorted ids), every candidate's mean remaining-memorisation score and
    number of observations, the retrained proxy's and the last unlearned model's loss on it (aligned to ``pool_ids``),
    the selection, and per round the mean score of the selection and of the pool."""

    method: dict[str, Any]
    size: int
    pool_ids: np.ndarray
    scores: np.ndarray
    n_observations: np.ndarray
    proxy_loss: np.ndarray
    unlearned_loss: np.ndarray
    selected: np.ndarray
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def scores_of(self, ids: np.ndarray) -> np.ndarray:
        """The mean scores of pool members ``ids`` (``pool_ids`` is sorted)."""
        return self.scores[np.searchsorted(self.pool_ids, np.asarray(ids))]

    def to_json(self) -> dict[str, Any]:
        return to_jsonable({"method": self.method, "size": self.size, "pool_ids": self.pool_ids, "scores": self.scores,
                            "n_observations": self.n_observations, "proxy_loss": self.proxy_loss,
                            "unlearned_loss": self.unlearned_loss, "selected": self.selected, "rounds": self.rounds})

    def write_id_file(self, path: str | Path) -> Path:
        """The selected ids, one per line, readable by ``{kind: ids, file: path}`` forget sets."""
        header = f"# worst-case forget set of {self.size} for method {self.method['name']} {self.method['params']}\n"
        atomic_write_text(path, header + "".join(f"{int(i)}\n" for i in self.selected))
        return Path(path)


# ------------------------------------------------------------------------------------ helpers
def resolve_data(data: DataSource | Split, test: Split | None, n_classes: int | None) -> tuple[Split, Split, int | None]:
    """(train, test, n_classes) from a DataSource or a training split with its test split."""
    if isinstance(data, DataSource):
        if test is not None and test is not data.test:
            raise ConfigError("worst_case_forget: give test=None with a DataSource (its own test split is used).")
        return data.train, data.test, data.n_classes if n_classes is None else n_classes
    if test is None:
        raise ConfigError("worst_case_forget: with a training Split, also give its test Split (tasks need one).")
    return data, test, n_classes


def resolve_method(method: Any, method_params: Mapping[str, Any] | None) -> Any:
    """A method instance from an instance or a registered name (+ params)."""
    from ..methods import build_method

    if isinstance(method, str):
        return build_method(method, method_params)
    if method_params:
        raise ConfigError("worst_case_forget: method_params only apply when method is given by name; got an instance and params.")
    if not hasattr(method, "unlearn"):
        raise ConfigError(f"worst_case_forget: method must be a registered name or a method instance, got {type(method).__name__}.")
    return method


def train_fresh(model_factory: ModelFactory, split: Split, train_config: Any, adapter: Any, seed: int, device: str,
                desc: str) -> nn.Module:
    """A freshly initialised model (seeded) trained on ``split`` by cross-entropy with ``train_config``."""
    with torch_seed(seed):
        model = model_factory()
    trained, _, _ = train_model(model, split, train_config, adapter=adapter, seed=seed, device=device, desc=desc)
    return trained


def loss_by_id(model: nn.Module, split: Split, ids: np.ndarray, adapter: Any, device: str) -> np.ndarray:
    """The adapter's per-example loss of ``model`` on the examples of ``split``, ordered as the sorted ``ids``."""
    loss = adapter.stats(adapter.outputs(model, split, device=device))["loss"]
    out = np.empty(len(ids))
    out[np.searchsorted(ids, split.ids)] = loss
    return out


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` ids with the highest scores (ties: smaller id first), sorted."""
    order = np.lexsort((ids, -scores))
    return np.sort(ids[order[:k]])


def check_search(n_train: int, size: int, pool_factor: int, rounds: int) -> None:
    """Refuse search settings that cannot work, naming the parameter and what was given."""
    if size < 1:
        raise ConfigError(f"worst_case_forget: size must be >= 1, got {size}.")
    if pool_factor < 1:
        raise ConfigError(f"worst_case_forget: pool_factor must be >= 1, got {pool_factor}.")
    if rounds < 1:
        raise ConfigError(f"worst_case_forget: rounds must be >= 1, got {rounds}.")
    if pool_factor * size >= n_train:
        raise ConfigError(f"worst_case_forget: the candidate pool (pool_factor × size = {pool_factor * size}) must be smaller than "
                          f"the training set ({n_train} examples); lower size or pool_factor.")


# ------------------------------------------------------------------------------------ the search
def worst_case_forget(
    data: DataSource | Split,
    test: Split | None,
    size: int,
    method: Any,
    model_factory: ModelFactory,
    train_config: Any,
    rng: np.random.Generator,
    *,
    method_params: Mapping[str, Any] | None = None,
    original: nn.Module | None = None,
    n_classes: int | None = None,
    pool_factor: int = 4,
    rounds: int = 2,
    device: str = "cpu",
) -> tuple[np.ndarray, WorstCaseReport]:
    """The ``size`` training ids that ``method`` leaves most memorised, found by a greedy search; returns (ids, report).

    The paper poses a bi-level problem: the upper level chooses sample weights w ∈ {0, 1}^N, ‖w‖₀ = size, to make
    unlearning hardest (the forget loss of the unlearned model stays low); the lower level is the unlearning itself,
    θ_u(w) = the method's result for the forget set w. The authors' public code alternates an unlearning run for the
    current w with an update of a continuous relaxation of w, and binarises w to its top-``size`` entries. Here the
    upper-level update is replaced by measurement (a greedy, zeroth-order search):

    1. draw a candidate pool of ``pool_factor × size`` training examples (``rng``);
    2. train a proxy of retraining without the whole pool (one fresh model with ``train_config``), so every candidate
       has the loss of a model that never saw it;
    3. split the pool into ``pool_factor`` probe forget sets of ``size``; for each, run ``method`` on a copy of the
       original model and score every member by its remaining memorisation
       s(x) = loss_proxy(x) − loss_unlearned(x)  (> 0: the unlearned model still fits x better than retraining would);
    4. for ``rounds − 1`` more rounds, run ``method`` on the current top-``size`` set (the lower level for the current
       upper-level choice) and add the new scores to its members' running means, so members that stop looking
       memorised once unlearned together drop out;
    5. return the top-``size`` candidates by mean score (the binarisation of w).

    Inferred where the paper's abstract leaves details open: the score is relative to a retrained proxy rather than the
    raw forget loss, so intrinsically easy examples (low loss even unseen) are not taken for hard-to-unlearn ones; a
    single proxy retrained without the whole pool stands in for retraining without each probe set. ``original`` is the
    model trained on all of the training data with ``train_config``; it is trained here when not given."""
    train, test_split, n_classes = resolve_data(data, test, n_classes)
    check_search(len(train), size, pool_factor, rounds)
    method = resolve_method(method, method_params)
    pool = np.sort(rng.choice(train.ids, size=pool_factor * size, replace=False))
    scaffold = Task.from_forget_ids("worst-case-pool", train, test_split, pool, n_classes=n_classes)
    adapter = get_adapter(scaffold)
    if original is None:
        original = train_fresh(model_factory, train, train_config, adapter, int(rng.integers(0, 2**31 - 1)), device, "original")
    proxy = train_fresh(model_factory, scaffold.retain, train_config, adapter, int(rng.integers(0, 2**31 - 1)), device,
                        "retrained proxy (without the pool)")
    proxy_loss = loss_by_id(proxy, scaffold.forget, pool, adapter, device)
    refs = References(original=original, train_config=train_config, model_factory=model_factory)
    sums, counts, last = np.zeros(len(pool)), np.zeros(len(pool), dtype=np.int64), np.full(len(pool), np.nan)

    def observe(forget_ids: np.ndarray, label: str) -> None:
        """Unlearn ``forget_ids`` (a lower-level solve) and add each member's remaining memorisation to its mean."""
        task = Task.from_forget_ids(f"worst-case-{label}", train, test_split, forget_ids, n_classes=n_classes)
        unlearned = method.unlearn(copy.deepcopy(original), task, refs, rng=rng, device=device).model
        pos = np.searchsorted(pool, forget_ids)
        loss = loss_by_id(unlearned, task.forget, forget_ids, adapter, device)
        sums[pos] += proxy_loss[pos] - loss
        counts[pos] += 1
        last[pos] = loss

    history: list[dict[str, Any]] = []
    for i, probe in enumerate(np.array_split(rng.permutation(pool), pool_factor)):
        observe(np.sort(probe), f"probe{i}")
    for r in range(rounds):
        if r > 0:
            observe(top_k(pool, sums / counts, size), f"round{r}")
        chosen = top_k(pool, sums / counts, size)
        history.append({"round": r, "mean_score_selected": float(np.mean((sums / counts)[np.searchsorted(pool, chosen)])),
                        "mean_score_pool": float(np.mean(sums / counts))})
    scores = sums / counts
    selected = top_k(pool, scores, size)
    report = WorstCaseReport(describe_method(method), size, pool, scores, counts, proxy_loss, last, selected, history)
    return selected, report


# ------------------------------------------------------------------------------------ evaluation
def compare_with_random(
    data: DataSource | Split,
    test: Split | None,
    worst_ids: np.ndarray,
    method: Any,
    model_factory: ModelFactory,
    train_config: Any,
    rng: np.random.Generator,
    *,
    method_params: Mapping[str, Any] | None = None,
    original: nn.Module | None = None,
    n_classes: int | None = None,
    retrain_seeds: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """The method's gap to retraining on the worst-case set and on a random training set of the same size.

    For each set: retrain ``retrain_seeds`` models without it (the same seeds for both sets), run ``method`` on a copy
    of ``original`` (the same method seed for both), and report the ``retrain_gap`` metric (|acc_s(unlearned) −
    mean acc_s(retrained)| for s in forget/retain/test, and their average ``avg_gap``) with both accuracies on the
    forget set. ``excess`` = worst-case minus random, per gap."""
    from ..evaluation import EvalContext, build_metric, evaluate

    train, test_split, n_classes = resolve_data(data, test, n_classes)
    method = resolve_method(method, method_params)
    if retrain_seeds < 1:
        raise ConfigError(f"compare_with_random: retrain_seeds must be >= 1, got {retrain_seeds}.")
    worst_ids = np.sort(np.asarray(worst_ids, dtype=np.int64))
    random_ids = np.sort(rng.choice(train.ids, size=len(worst_ids), replace=False))
    method_seed = int(rng.integers(0, 2**63 - 1))
    tasks = {label: Task.from_forget_ids(f"{label}-forget", train, test_split, ids, n_classes=n_classes)
             for label, ids in (("worst_case", worst_ids), ("random", random_ids))}
    adapter = get_adapter(tasks["worst_case"])
    if original is None:
        original = train_fresh(model_factory, train, train_config, adapter, int(rng.integers(0, 2**31 - 1)), device, "original")
    out: dict[str, Any] = {"method": describe_method(method), "size": len(worst_ids), "retrain_seeds": retrain_seeds}
    for label, task in tasks.items():
        retrained = tuple(train_fresh(model_factory, task.retain, train_config, adapter, retrain_seed(i), device, f"retrain ({label})")
                          for i in range(retrain_seeds))
        refs = References(original=original, retrained_seeds=retrained, train_config=train_config, model_factory=model_factory)
        unlearned = method.unlearn(copy.deepcopy(original), task, refs, rng=np.random.default_rng(method_seed), device=device).model
        ctx = EvalContext(task, adapter, device=device)
        gap = evaluate(unlearned, task, refs, [build_metric("retrain_gap")], ctx)[0]["retrain_gap"].values
        out[label] = {"forget_gap": gap["forget"], "avg_gap": gap["avg_gap"], "retrained_forget_accuracy": gap["retrain_forget"],
                      "forget_accuracy": float(ctx.outputs(unlearned, "forget")["correct"].mean()), "ids": task.forget.ids.tolist()}
    out["excess"] = {k: out["worst_case"][k] - out["random"][k] for k in ("forget_gap", "avg_gap")}
    return out


__all__ = ["WorstCaseReport", "compare_with_random", "worst_case_forget"]
