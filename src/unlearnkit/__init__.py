"""unlearnkit: make a trained model forget chosen data, and prove it against retraining.

Heavy pieces (methods, metrics, runner, report) are imported on first use, so ``import unlearnkit``
stays light. Typical use from Python::

    import unlearnkit as uk
    task = uk.Task.from_forget_ids("mine", train_split, test_split, forget_ids, n_classes=10)
    refs = uk.build_references(task, make_model, uk.TrainConfig(epochs=20, optimizer="adam", lr=1e-3))
    out = uk.build_method("salun").unlearn(copy.deepcopy(refs.original), task, refs, rng=np.random.default_rng(0))
    print(uk.assess(out.model, task, refs).verdict.label)
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    DataUnavailable,
    DivergenceError,
    EmptySelection,
    MissingReference,
    ModelError,
    StoreError,
    TaskError,
    UnknownName,
    UnlearnError,
)
from .registry import ADAPTERS, DATASETS, METHODS, METRICS, MODELS, OBJECTIVES, SELECTORS, Registry
from .types import Evidence, Mask, MetricResult, Split, Task, TensorData, Unlearned
from .version import __version__


_LAZY = {
    "TrainConfig": "unlearnkit.train",
    "fit": "unlearnkit.train",
    "References": "unlearnkit.references",
    "build_references": "unlearnkit.runs.references",
    "build_method": "unlearnkit.methods",
    "build_metric": "unlearnkit.evaluation",
    "assess": "unlearnkit.evaluation",
    "evaluate": "unlearnkit.evaluation",
    "EvalContext": "unlearnkit.evaluation",
    "decide": "unlearnkit.verdict",
    "Verdict": "unlearnkit.verdict",
    "ForgetSpec": "unlearnkit.data.forget",
    "make_task": "unlearnkit.data.forget",
    "load_dataset": "unlearnkit.data.sources",
    "build_model": "unlearnkit.models",
    "Store": "unlearnkit.runs.store",
    "run_experiment": "unlearnkit.runs.runner",
    "load_experiment": "unlearnkit.experiment",
    "Experiment": "unlearnkit.experiment",
    "write_report": "unlearnkit.report",
    "CostMeter": "unlearnkit.cost",
    "tune": "unlearnkit.tuning",
    "Tuner": "unlearnkit.tuning",
}


def __getattr__(name: str) -> Any:
    if name == "ledger":  # the deletion ledger (uk.ledger.Ledger): a subpackage, imported on first use
        return importlib.import_module("unlearnkit.ledger")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unlearnkit' has no attribute {name!r}")


__all__ = [
    "ADAPTERS",
    "ConfigError",
    "CostMeter",
    "DATASETS",
    "DataUnavailable",
    "DivergenceError",
    "EmptySelection",
    "EvalContext",
    "Evidence",
    "Experiment",
    "ForgetSpec",
    "METHODS",
    "METRICS",
    "MODELS",
    "Mask",
    "MetricResult",
    "MissingReference",
    "ModelError",
    "OBJECTIVES",
    "References",
    "Registry",
    "SELECTORS",
    "Split",
    "Store",
    "StoreError",
    "Task",
    "TaskError",
    "TensorData",
    "TrainConfig",
    "Tuner",
    "UnknownName",
    "UnlearnError",
    "Unlearned",
    "Verdict",
    "__version__",
    "assess",
    "build_method",
    "build_metric",
    "build_model",
    "build_references",
    "decide",
    "evaluate",
    "fit",
    "load_dataset",
    "load_experiment",
    "make_task",
    "run_experiment",
    "tune",
    "write_report",
]
