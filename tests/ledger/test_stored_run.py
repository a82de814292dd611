"""A stored run as the model of a deletion request: its record names its experiment, data and recipe, so the ledger
rebuilds its training data (the original's: everything; an unlearning run's: the retain set)."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.errors import TaskError
from unlearnkit.experiment import Experiment
from unlearnkit.ledger import Ledger, load_model_dir
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment

SPEC = {
    "name": "ledger-tiny",
    "dataset": {"name": "digits"},
    "forget": [{"kind": "random", "fraction": 0.05}],
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "train": {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
    "references": {"retrain_seeds": 2},
    "metrics": ["accuracy"],
    "methods": [{"name": "finetune", "params": {"steps": 5}}],
    "seeds": [0],
}


def test_forget_from_stored_runs(tmp_path):
    store = Store(tmp_path / "store")
    record = run_experiment(Experiment.from_dict(SPEC), store, device="cpu", progress=False, log=lambda m: None)
    original, unlearned = record["tasks"][0]["original_run"], record["runs"][0]
    forgotten = store.load_run_array(unlearned, "accuracy.correct.forget.ids")
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        cert = ledger.forget(original, [int(forgotten[0]), 7], method="finetune", params={"epochs": 1}, store=store)
        first = load_model_dir(ledger.model_path(cert["model"]["before"]))
        assert first.spec["excluded_ids"] == [] and first.spec["train"]["epochs"] == 5
        state = store.load_run_model(original, first.factory()).state_dict()
        assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in first.module.state_dict().items())
        # the unlearning run's model no longer depends on its forget set: deleting one of those ids again is refused
        with pytest.raises(TaskError, match="already deleted"):
            ledger.forget(unlearned[:12], [int(forgotten[0])], method="finetune", params={"epochs": 1}, store=store)
        cert2 = ledger.forget(unlearned, [7], method="finetune", params={"epochs": 1}, store=store)
        spec = load_model_dir(ledger.model_path(cert2["model"]["after"])).spec
        assert spec["excluded_ids"] == sorted({*forgotten.tolist(), 7})
        assert cert2["model"]["lineage"] != cert["model"]["lineage"] and ledger.verify().ok
