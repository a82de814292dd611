"""The comparator on request-stream runs (digits, two class-deletion requests): listed in screening with their request
index, analysed against the references of the same state (retrained without everything deleted so far, checked by
hand), and a store missing a reference says so (never a 500)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from unlearnkit.data.sources import load_dataset
from unlearnkit.experiment import Experiment
from unlearnkit.models import build_model
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.web import create_app

STREAM = {"name": "comparator-stream", "dataset": {"name": "digits"},
          "requests": [{"kind": "classes", "classes": [1]}, {"kind": "classes", "classes": [7]}],
          "model": {"name": "mlp", "params": {"hidden": [32]}},
          "train": {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
          "references": {"retrain_seeds": 2, "original_seed": 0}, "metrics": ["accuracy"],
          "methods": [{"name": "finetune", "params": {"steps": 10, "lr": 0.05}}], "seeds": [0]}


@pytest.fixture(scope="module")
def stream_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("comparator-stream") / "store"
    run_experiment(Experiment.from_dict(STREAM), Store(root), device="cpu", progress=False, log=lambda m: None)
    return root


@pytest.fixture(scope="module")
def stream(stream_store) -> dict:
    client = TestClient(create_app(stream_store))
    rows = client.get("/api/runs").json()["runs"]
    return {"client": client, "rows": rows, "store": Store(stream_store, tidy=False)}


def test_stream_runs_are_listed_with_their_request_index(stream):
    rows = [r for r in stream["rows"] if r["method"] == "finetune"]
    assert sorted(r["stream"]["request"] for r in rows) == [1, 2] and all(r["stream"]["of"] == 2 for r in rows)
    originals = [r for r in stream["rows"] if r["method"] == "original"]
    assert sorted(r["stream"]["request"] for r in originals) == [1, 2]
    deleted = {r["stream"]["request"]: r["stream"]["deleted"] for r in rows}
    assert deleted[2] > deleted[1] > 0


def test_stream_step_is_compared_with_the_retrain_of_the_same_state(stream):
    client, store = stream["client"], stream["store"]
    step2 = next(r for r in stream["rows"] if r["method"] == "finetune" and r["stream"]["request"] == 2)
    body = client.get(f"/api/runs/{step2['run_id']}/classes").json()
    assert body["compared_with"]["stream"]["request"] == 2 and "requests 1–2" in body["compared_with"]["text"]
    assert body["compared_with"]["retrained"] == 2 and body["compared_with"]["missing"] == []
    forget = body["splits"]["forget"]
    assert [c for c in range(10) if forget["class_counts"][c]] == [1, 7]  # everything deleted so far: classes 1 and 7
    # the retrain band's references: retrained without classes 1 and 7, so the band's upper end on them is low, and
    # it equals min/max of those references' per-class accuracy computed here
    record = store.load_run(step2["run_id"])
    exp = store.load_experiment(record["experiment"])
    task_rec = next(t for t in exp["tasks"] if t.get("stream_request") == 2)
    source = load_dataset("digits")
    ids = store.load_run_array(step2["run_id"], "accuracy.correct.forget.ids")
    part = source.train.select_ids(ids)
    accs = []
    for key in task_rec["references"]["keys"]["retrain"]:
        model, _ = store.load_reference(key, lambda: build_model("mlp", (64,), 10, hidden=[32]))
        with torch.no_grad():
            pred = model.eval()(part.data.x.float()).argmax(1).numpy()
        accs.append([float((pred[part.labels == c] == c).mean()) for c in (1, 7)])
    for j, c in enumerate((1, 7)):
        assert forget["retrain_band"][c]["min"] == pytest.approx(min(a[j] for a in accs))
        assert forget["retrain_band"][c]["max"] == pytest.approx(max(a[j] for a in accs))
    for view in ("embedding", "cka", "attack"):
        assert client.get(f"/api/runs/{step2['run_id']}/{view}").status_code == 200, view
    attack = client.get(f"/api/runs/{step2['run_id']}/attack").json()
    assert attack["non_members"] == "test examples of the forgotten class(es) [1, 7]"
    # two steps of one stream are different tasks: comparing them is refused
    step1 = next(r for r in stream["rows"] if r["method"] == "finetune" and r["stream"]["request"] == 1)
    assert client.get(f"/api/compare?a={step1['run_id']}&b={step2['run_id']}").status_code == 400


def test_a_missing_reference_is_said_not_a_500(stream_store, stream, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(stream_store, root, ignore=shutil.ignore_patterns("analysis"))
    store = Store(root, tidy=False)
    step1 = next(r for r in stream["rows"] if r["method"] == "finetune" and r["stream"]["request"] == 1)
    exp = store.load_experiment(store.load_run(step1["run_id"])["experiment"])
    task_rec = next(t for t in exp["tasks"] if t.get("stream_request") == 1)
    for key in task_rec["references"]["keys"]["retrain"]:
        shutil.rmtree(root / "refs" / key)
    client = TestClient(create_app(root))
    body = client.get(f"/api/runs/{step1['run_id']}/classes").json()
    assert body["compared_with"]["retrained"] == 0 and "no retrained reference" in body["compared_with"]["missing"][0]
    assert all(b is None for b in body["splits"]["forget"]["retrain_band"])
    cka = client.get(f"/api/runs/{step1['run_id']}/cka")
    assert cka.status_code == 200 and all(row["retrain_mean"] is None and row["original"] is not None
                                          for row in cka.json()["splits"]["forget"])
    assert np.isfinite([row["original"] for row in cka.json()["splits"]["forget"]]).all()
