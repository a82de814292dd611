"""One deletion request carried out: its ids read and checked against the model's training data, the task built
(forget = the ids, retain = the rest of what the model depends on), the method run (an exact regime through
``ExactModel.delete``; any other registered method through ``unlearn``), the evidence of the chosen tier computed, and
the guarantee that holds afterwards stated.

Evidence tiers: ``none``; ``outputs``: accuracy and loss on forget / retain / test, no reference model (the verdict is
then "inconclusive", naming what is missing); ``retrain``: models retrained without the ids (``RETRAIN_SEEDS`` seeds,
the recipe of the model spec) and the standard battery, which gives the usual verdict.

Longer than 60 lines: reading an id file, the request checks, and the three kinds of method (exact regime, retraining,
approximate) with their guarantees belong together.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError, EmptySelection, TaskError
from .models import Loaded

EVIDENCE_TIERS = ("none", "outputs", "retrain")
RETRAIN_SEEDS = 3


def read_ids(path: str | Path) -> tuple[np.ndarray, str | None]:
    """The ids of an id file and the training-data fingerprint it names (or None). Formats: a JSON list of integers; a
    JSON object {"ids": [...], "train_fingerprint": "..."} (the fingerprint of the training split the ids belong to, as
    ``Split.fingerprint``: ids of another task are then refused); or text with one integer per line (blank lines and
    lines starting with # skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the id file {path}: {exc}") from None
    fingerprint = None
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            raw = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"The id file {path} is not valid JSON: {exc}") from None
        if isinstance(raw, dict):
            fingerprint = raw.get("train_fingerprint")
            raw = raw.get("ids")
        if not isinstance(raw, list):
            raise ConfigError(f"The id file {path} must hold a list of ids (or {{\"ids\": [...]}}).")
        values = raw
    else:
        values = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    ids = []
    for v in values:
        try:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            ids.append(int(v))
        except (TypeError, ValueError):
            raise TaskError(f"The id file {path} holds {v!r}, which is not an integer example id.") from None
    if not ids:
        raise EmptySelection(f"The id file {path} holds no ids: a deletion request must name at least one example. Nothing was recorded.")
    return np.asarray(ids, dtype=np.int64), fingerprint


def check_ids(ids: Any, loaded: Loaded, *, train_fingerprint: str | None = None) -> np.ndarray:
    """The request's ids, sorted, or a clear error (nothing recorded): empty, repeated, of another task, not training
    examples of this model (test examples named as such), or already deleted from it."""
    arr = np.asarray(ids)
    if arr.size == 0:
        raise EmptySelection("The deletion request is empty; nothing was recorded.")
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TaskError(f"A request's ids must be a flat list of integers, got dtype {arr.dtype} with shape {arr.shape}.")
    uniq, counts = np.unique(arr.astype(np.int64), return_counts=True)
    if (counts > 1).any():
        raise TaskError(f"The request repeats ids, e.g. {uniq[counts > 1][:5].tolist()}; nothing was recorded.")
    train = loaded.source.train
    if train_fingerprint is not None and train_fingerprint != train.fingerprint:
        raise TaskError(f"The ids are for training data {str(train_fingerprint)[:12]}…, but this model was trained on "
                        f"{train.fingerprint[:12]}… ({loaded.spec['dataset']['name']}): ids of a different task. Nothing was recorded.")
    unknown = uniq[~np.isin(uniq, train.ids)]
    if len(unknown):
        test = unknown[np.isin(unknown, loaded.source.test.ids)]
        what = f" ({len(test)} of them are test examples, e.g. {test[:5].tolist()})" if len(test) else ""
        raise TaskError(f"{len(unknown)} id(s) of the request were never in the model's training data ({len(train)} examples of "
                        f"{loaded.spec['dataset']['name']}), e.g. {unknown[:5].tolist()}{what}. Nothing was recorded.")
    gone = uniq[np.isin(uniq, loaded.spec["excluded_ids"])]
    if len(gone):
        raise TaskError(f"{len(gone)} id(s) of the request were already deleted from this model, e.g. {gone[:5].tolist()}. "
                        "Nothing was recorded.")
    return uniq


@dataclass
class Outcome:
    module: nn.Module
    exact: bool  # the module is an exact regime's (stored with unlearnkit.exact.persist)
    guarantee: dict[str, Any]
    evidence: dict[str, Any]
    info: dict[str, Any]
    seconds: float


def build_task(loaded: Loaded, ids: np.ndarray) -> Any:
    from ..data.forget import task_from_ids

    source = loaded.source
    return task_from_ids(loaded.spec["dataset"]["name"], loaded.live, source.test, ids, forget_info={"kind": "ids"},
                         forget_label=f"deletion request ({len(ids)} examples)", n_classes=source.n_classes,
                         info={"dataset": loaded.spec["dataset"]}, modality=source.modality,
                         probes=getattr(source, "probes", None) or None, eval_retain_groups=source.info.get("eval_retain_groups"))


def prepare_method(name: str, params: dict[str, Any] | None) -> Any:
    """The registered method ``name`` built with ``params`` (unknown names and parameters are clear errors)."""
    from ..methods import build_method

    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"Method parameters must be a JSON object, got {params!r}.")
    return build_method(name, params or {})


def execute(loaded: Loaded, ids: np.ndarray, method: Any, *, evidence: str, seed: int, device: str, progress: bool) -> Outcome:
    """Delete ``ids`` from ``loaded.module`` with ``method``; the new model, its guarantee and evidence."""
    from ..exact.base import GUARANTEES, ExactModel, require_exact
    from ..io import check_finite_state
    from ..methods.base import method_not_applicable
    from ..references import References

    if evidence not in EVIDENCE_TIERS:
        raise ConfigError(f"Unknown evidence tier {evidence!r}; choose one of {list(EVIDENCE_TIERS)}.")
    if getattr(method, "kind", None) == "guard":  # its model file would be the untouched weights, served without the guard
        raise ConfigError(f"Method {method.name!r} is an inference-time guard: it changes no weight, so it has no unlearned "
                          "weights to store as the model after this request (they would be the original's, with the data "
                          "in them). Honour a deletion with a method that changes the model, retrain, or the model's exact "
                          "regime. Nothing was recorded.")
    task = build_task(loaded, ids)
    reason = method_not_applicable(method, task)
    if reason is not None:
        raise ConfigError(f"Method {method.name!r} cannot honour this request: it {reason}.")
    rng = np.random.default_rng(seed)
    module = loaded.module
    start = time.perf_counter()
    if isinstance(module, ExactModel):
        if method.name != module.regime:
            raise ConfigError(f"The model is a stored {module.regime!r} regime; delete from it with --method {module.regime} "
                              f"(its exact deletion), not {method.name!r}.")
        receipt = module.delete(ids, progress=progress)
        new, info = module, {"receipt": receipt.to_json(), "regime": module.describe()}
        guarantee = {"type": receipt.guarantee, "statement": GUARANTEES[receipt.guarantee], "touched": receipt.touched}
        if receipt.guarantee == "certified_dp":
            described = module.describe()
            guarantee.update({"epsilon": described.get("group_epsilon"), "delta": described.get("group_delta"),
                              "per_record_epsilon": described.get("epsilon"), "per_record_delta": described.get("delta")})
        if module.backbone is not None:
            guarantee["backbone"] = module.backbone.to_json()
    else:
        if callable(getattr(method, "serve", None)):
            require_exact(module, f"Method {method.name!r} (an exact-only deletion)")
        refs = References(original=module, train_config=loaded.train_config(), model_factory=loaded.factory,
                          info={"model": loaded.spec["model"], "original_seed": loaded.spec["seed"]})
        out = method.unlearn(copy.deepcopy(module), task, refs, rng=rng, device=device, progress=progress)
        check_finite_state(out.model.state_dict(), f"the model produced by method {method.name!r}")
        new, info = out.model, dict(out.info)
        if method.name == "retrain":
            guarantee = {"type": "exact", "statement": "the model was trained from scratch, with the model's recipe, on its "
                                                       "training data without the deleted examples"}
        else:
            guarantee = {"type": "empirical" if evidence != "none" else "none",
                         "statement": ("an approximate method: the evidence below is the only claim" if evidence != "none" else
                                       "an approximate method run without evidence: nothing is claimed beyond the method having run")}
    seconds = time.perf_counter() - start
    ev = assess_evidence(new, task, loaded, evidence, device=device, seed=seed, progress=progress)
    if guarantee["type"] == "empirical":
        guarantee.update({"verdict": ev.get("verdict"), "rows": ev.get("rows", [])})
    new.eval()
    return Outcome(new, isinstance(new, ExactModel), guarantee, ev, info, seconds)


def assess_evidence(model: nn.Module, task: Any, loaded: Loaded, tier: str, *, device: str, seed: int, progress: bool) -> dict[str, Any]:
    """The evidence of ``tier`` for ``model`` on ``task``: {"tier", "verdict", "rows", "metrics", "missing"}."""
    if tier == "none":
        return {"tier": "none"}
    from ..adapters import get_adapter
    from ..evaluation import assess
    from ..references import References
    from ..runs.references import retrain_seed
    from ..train import train_model

    adapter = get_adapter(task)
    config = loaded.train_config()
    retrained: list[nn.Module] = []
    if tier == "retrain":
        from ..seeding import torch_seed

        for i in range(RETRAIN_SEEDS):
            with torch_seed(retrain_seed(i)):
                fresh = loaded.factory()
            fresh, _, _ = train_model(fresh, task.retain, config, adapter=adapter, seed=retrain_seed(i), device=device, progress=progress,
                                      desc=f"evidence retrain {i + 1}/{RETRAIN_SEEDS}")
            retrained.append(fresh.eval())
    refs = References(original=loaded.module, retrained_seeds=tuple(retrained), train_config=config, model_factory=loaded.factory)
    metrics = ["accuracy"] if tier == "outputs" else None
    result = assess(model, task, refs, metrics, device=device, seed=seed)
    verdict = result.verdict.to_json()
    return {"tier": tier, "verdict": verdict["label"], "reasons": verdict["reasons"], "rows": verdict["rows"],
            "metrics": {name: r.values for name, r in result.results.items() if name != "noise_floor"},
            "missing": result.missing, "retrain_seeds": len(retrained)}
