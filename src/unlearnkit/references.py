"""Reference models: the original (trained on forget ∪ retain) and retrained models (retain only,
several seeds). Cached by the training data's fingerprint, the model spec, the training config and
the seed, so each is trained once and reused across forget settings, methods and runs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .cost import Cost, CostMeter
from .errors import MissingReference
from .io import canonical_json
from .objectives import NLL
from .seeding import derive_seed, np_rng, torch_seed
from .train import TrainConfig, TrainResult, fit
from .types import Split, Task

HOW_TO = {
    "original": "pass References(original=model), or build them with unlearnkit.build_references(task, ...)",
    "retrained": "pass References(retrained_seeds=(model, ...)), or build_references(task, retrain_seeds=3, ...)",
    "retrained_seeds": "pass References(retrained_seeds=(...)) with at least two models, or build_references(task, retrain_seeds=3, ...)",
    "train_config": "pass References(train_config=TrainConfig(...)) describing how the original was trained",
    "model_factory": "pass References(model_factory=callable returning a fresh, untrained model)",
    "shadows": "build shadow models for the task (see the shadow-model attacks)",
}


@dataclass
class References:
    """Models and facts that methods and metrics compare against; ``require`` names what is missing."""

    original: nn.Module | None = None
    retrained_seeds: tuple[nn.Module, ...] = ()
    train_config: TrainConfig | None = None
    model_factory: Callable[[], nn.Module] | None = None
    shadows: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def retrained(self) -> nn.Module | None:
        return self.retrained_seeds[0] if self.retrained_seeds else None

    def require(self, name: str, by: str) -> Any:
        """The reference ``name``; raises MissingReference naming who needed it and how to provide it."""
        value = {
            "original": self.original,
            "retrained": self.retrained,
            "retrained_seeds": self.retrained_seeds if len(self.retrained_seeds) >= 2 else None,
            "train_config": self.train_config,
            "model_factory": self.model_factory,
            "shadows": self.shadows,
        }.get(name)
        if value is None:
            raise MissingReference(f"{by} needs the {name!r} reference, which was not provided: {HOW_TO.get(name, '')}.")
        return value

    def fresh_model(self, seed: int, by: str) -> nn.Module:
        """A freshly initialised model of the original's architecture (seeded)."""
        from .models import reset_parameters

        if self.model_factory is not None:
            with torch_seed(seed):
                return self.model_factory()
        original = self.require("original", by)
        return reset_parameters(copy.deepcopy(original), seed)


def train_model(
    model: nn.Module,
    split: Split,
    config: TrainConfig,
    *,
    adapter: Any,
    seed: int,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "train",
) -> tuple[nn.Module, Cost, TrainResult]:
    """Train ``model`` on ``split`` by plain cross-entropy (how originals and retrains are made)."""
    model.to(device)
    with CostMeter(device) as meter:
        result = fit(
            model, NLL("train"), {"train": split}, config, adapter=adapter, rng=np_rng("train", seed),
            device=device, progress=progress, desc=desc, on_divergence="raise",
        )
    model.eval()
    assert meter.cost is not None
    return model, meter.cost, result


@dataclass(frozen=True)
class ReferenceJob:
    """Train one reference model: picklable, so it can run on any executor."""

    kind: str
    factory: Callable[[], nn.Module]
    split: Split
    config: TrainConfig
    seed: int
    adapter: Any
    device: str = "cpu"


def train_reference_job(job: ReferenceJob) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(state dict on CPU, cost, training summary) of one reference model trained from seed ``job.seed``."""
    with torch_seed(job.seed):
        model = job.factory()
    model, cost, result = train_model(model, job.split, job.config, adapter=job.adapter, seed=job.seed, device=job.device,
                                      desc=f"{job.kind} (seed {job.seed})")
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, cost.to_json(), result.to_json()


def reference_key(kind: str, data_fingerprint: str, model_spec: Any, config: TrainConfig, seed: int, device: str) -> str:
    """Cache key of a reference model: what it was trained on and how, by which code version (as run keys) and on
    which kind of device (numbers differ between CPU and GPU kernels)."""
    import hashlib

    from .runs.key import code_version

    blob = canonical_json({"kind": kind, "data": data_fingerprint, "model": model_spec, "train": config.to_dict(), "seed": seed,
                           "code": code_version(), "device": torch.device(device).type})
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def retrain_seed(i: int) -> int:
    return derive_seed("retrain", i) % (2**31)


def build_references(
    task: Task,
    model_factory: Callable[[], nn.Module],
    train_config: TrainConfig,
    *,
    retrain_seeds: int | Sequence[int] = 3,
    original_seed: int = 0,
    model_spec: Any = None,
    store: Any = None,
    device: str = "cpu",
    progress: bool = False,
    executor: Any = None,
) -> References:
    """Train (or load from ``store``) the original model and the retrained models for ``task``; models not in
    the store are trained as independent jobs on ``executor`` (default: in this process)."""
    from .adapters import get_adapter
    from .runs.executor import LocalExecutor

    adapter = get_adapter(task)
    spec = model_spec if model_spec is not None else str(model_factory())
    seeds = [retrain_seed(i) for i in range(retrain_seeds)] if isinstance(retrain_seeds, int) else list(retrain_seeds)
    costs: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    executor = executor or LocalExecutor(progress=progress)
    wanted = [("original", task.train, original_seed)] + [("retrain", task.retain, s) for s in seeds]
    models: list[nn.Module | None] = [None] * len(wanted)
    jobs, slots = [], []
    for i, (kind, split, seed) in enumerate(wanted):
        key = reference_key(kind, split.fingerprint, spec, train_config, seed, device)
        keys.setdefault(kind, []).append(key)
        cached = store.load_reference(key, model_factory, device) if store is not None else None
        if cached is not None:
            models[i] = cached[0]
            costs.setdefault(kind, []).append(cached[1]["cost"])
            continue
        if not jobs:
            with torch_seed(0):
                adapter.check(model_factory(), task, device="cpu")  # fail fast on a model that does not fit the task
        jobs.append(ReferenceJob(kind, model_factory, split, train_config, seed, adapter, device))
        slots.append((i, key))
    for j, (state, cost, result) in executor.imap(train_reference_job, jobs, desc="reference models"):
        i, key = slots[j]
        kind, split, seed = wanted[i]
        model = model_factory()
        model.load_state_dict(state)
        model.to(device).eval()
        meta = {"kind": kind, "seed": seed, "data": split.fingerprint, "n_examples": len(split), "model": spec,
                "train": train_config.to_dict(), "cost": cost, "result": result}
        if store is not None:
            store.save_reference(key, model, meta)
        costs.setdefault(kind, []).append(cost)
        models[i] = model
    original = models[0]
    retrained = tuple(models[1:])
    return References(
        original=original,
        retrained_seeds=retrained,
        train_config=train_config,
        model_factory=model_factory,
        info={"original_seed": original_seed, "retrain_seeds": seeds, "costs": costs, "keys": keys, "model": spec},
    )


def mean_cost(costs: Sequence[Mapping[str, Any]]) -> Cost | None:
    if not costs:
        return None
    return Cost(
        float(np.mean([c["wall_seconds"] for c in costs])),
        int(round(float(np.mean([c["optimizer_steps"] for c in costs])))),  # rounded, not truncated (steps 9 and 10 give 10)
        int(round(float(np.mean([c["example_passes"] for c in costs])))),
        float(np.mean([c["peak_memory_mb"] for c in costs])),
        costs[0].get("device", "cpu"),
    )
