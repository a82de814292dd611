"""Building the reference models of a task: the original (trained on forget ∪ retain) and retrained models (retain
only, several seeds), each an independent job on an executor. Cached in the store by the training data's
fingerprint, the model spec, the training config, the seed, the code version and the device type, so each is
trained once and reused across forget settings, methods and runs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..cost import Cost
from ..executor import LocalExecutor
from ..io import canonical_json
from ..references import References, check_retrain_seeds, check_seed_list, checked_model
from ..seeding import derive_seed, torch_seed
from ..train import TrainConfig, train_model
from ..types import Split, Task
from ..version import code_version


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
    adapter = get_adapter(task)
    seeds = [retrain_seed(i) for i in range(check_retrain_seeds(retrain_seeds))] if isinstance(retrain_seeds, int) else \
        check_seed_list(retrain_seeds, "retrain_seeds")
    spec = model_spec if model_spec is not None else str(checked_model(model_factory))
    costs: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    executor = executor or LocalExecutor(progress=progress)
    wanted = [("original", task.train, original_seed)] + [("retrain", task.retain, s) for s in seeds]
    models: list[nn.Module | None] = [None] * len(wanted)
    jobs, slots = [], []
    for i, (kind, split, seed) in enumerate(wanted):
        key = reference_key(kind, split.fingerprint, spec, train_config, seed, device)
        keys.setdefault(kind, []).append(key)
        cached = store.load_reference(key, model_factory, device, claim=True) if store is not None else None
        if cached is not None:
            models[i] = cached[0]
            costs.setdefault(kind, []).append(cached[1]["cost"])
            continue
        if not jobs:
            with torch_seed(0):
                adapter.check(model_factory(), task, device="cpu")  # fail fast on a model that does not fit the task
        jobs.append(ReferenceJob(kind, model_factory, split, train_config, seed, adapter, device))
        slots.append((i, key))
    try:
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
    finally:
        if store is not None:
            store.release_locks()  # those of references not saved (a failed or interrupted training)
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
        None if any(c.get("cpu_seconds") is None for c in costs) else float(np.mean([c["cpu_seconds"] for c in costs])),
    )
