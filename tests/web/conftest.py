"""Comparator fixtures: a small digits store (the original, retrain and two methods, with a noise floor, relearning and
the privacy score), built once per session by ``run_experiment``, and a client of the app over it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from unlearnkit.experiment import Experiment  # noqa: E402
from unlearnkit.runs import Store  # noqa: E402
from unlearnkit.runs.runner import run_experiment  # noqa: E402
from unlearnkit.web import create_app  # noqa: E402

SPEC = {
    "name": "comparator-tiny", "dataset": {"name": "digits"},
    "forget": [{"kind": "classes", "classes": [3]}],
    "model": {"name": "mlp", "params": {"hidden": [64, 32]}},
    "train": {"epochs": 6, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
    "references": {"retrain_seeds": 2},
    "metrics": ["accuracy", "retrain_gap", "threshold_mia", "privacy_score", "relearn", "noise_floor"],
    "methods": ["retrain", {"name": "finetune", "params": {"steps": 20}}, {"name": "grad_ascent", "params": {"steps": 10, "lr": 0.001}}],
    "seeds": [0],
}
# a second task in the same store (another forget set), so that comparing across tasks can be refused
OTHER = {**SPEC, "name": "comparator-other", "forget": [{"kind": "random", "fraction": 0.05}], "methods": ["retrain"],
         "metrics": ["accuracy"]}


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("comparator") / "store"
    store = Store(root)
    for spec in (SPEC, OTHER):
        run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    return root


@pytest.fixture(scope="session")
def client(store_dir) -> TestClient:
    return TestClient(create_app(store_dir))


@pytest.fixture(scope="session")
def ids(client) -> dict[str, str]:
    """Run ids of the first task by method name ("original" included), and "other": a run of the second task."""
    rows = client.get("/api/runs").json()["runs"]
    out = {r["method"]: r["run_id"] for r in rows if r["experiment"] == SPEC["name"]}
    out["other"] = next(r["run_id"] for r in rows if r["experiment"] == OTHER["name"])
    return out
