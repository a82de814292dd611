"""End-to-end runs on digits: store contents, caching, resume after Ctrl-C, and the verdict's sanity."""

import pytest

from unlearnkit.experiment import Experiment
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.runs.summary import format_tables, summarize

SPEC = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "forget": [{"kind": "random", "fraction": 0.1}],
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    "references": {"retrain_seeds": 2},
    "methods": ["retrain", {"name": "finetune", "params": {"steps": 10}}, {"name": "ssd"}],
    "seeds": [0],
}


def test_run_store_and_summary(tmp_path):
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict(SPEC), store, device="cpu", progress=False, log=lambda m: None)
    assert record["status"] == "complete" and len(record["runs"]) == 3
    rows = store.runs()
    assert {r["method"] for r in rows} == {"original", "retrain", "finetune", "ssd"}
    run = store.load_run(record["tasks"][0]["runs"]["finetune"][0])
    assert run["cost"]["optimizer_steps"] == 10 and run["cost"]["wall_seconds"] > 0
    assert run["verdict"]["label"] in {"removed", "suppressed", "not forgotten", "over-forgotten", "inconclusive"}
    assert (tmp_path / "runs" / run["run_id"] / "model.safetensors").is_file()
    assert store.load_run_array(run["run_id"], "accuracy.correct.forget.values").shape == (run["task"]["splits"]["forget"]["n"],)
    original = store.load_run(record["tasks"][0]["original_run"])
    assert original["kind"] == "reference" and original["cost"] is None and original["verdict"]["rows"]
    text = format_tables(summarize(store, record))
    assert "finetune" in text and "× retrain time" in text


def test_rerun_reuses_every_run(tmp_path):
    store = Store(tmp_path)
    exp = Experiment.from_dict(SPEC)
    first = run_experiment(exp, store, device="cpu", progress=False, log=lambda m: None)
    logs: list[str] = []
    second = run_experiment(exp, store, device="cpu", progress=False, log=logs.append)
    assert first["runs"] == second["runs"]
    assert sum("cached run" in line for line in logs) == 3


def test_ctrl_c_keeps_store_consistent_and_resumes(tmp_path, monkeypatch):
    from unlearnkit.methods import ssd

    store = Store(tmp_path)
    exp = Experiment.from_dict(SPEC)

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ssd.SSD, "unlearn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, store, device="cpu", progress=False, log=lambda m: None)
    monkeypatch.undo()
    reopened = Store(tmp_path)
    done = {r["method"] for r in reopened.runs()}
    assert done == {"original", "retrain", "finetune"}  # complete runs only; nothing half-written
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".tmp")]
    assert reopened.load_experiment(exp.exp_id())["status"] == "interrupted"
    logs: list[str] = []
    record = run_experiment(exp, reopened, device="cpu", progress=False, log=logs.append)
    assert record["status"] == "complete" and len(record["runs"]) == 3
    assert sum("cached run" in line for line in logs) == 2  # retrain and finetune were reused


def test_failed_method_is_recorded_not_fatal(tmp_path, monkeypatch):
    from unlearnkit.errors import DivergenceError
    from unlearnkit.methods import ssd

    def diverge(self, *a, **k):
        raise DivergenceError("ssd: diverged at step 3")

    monkeypatch.setattr(ssd.SSD, "unlearn", diverge)
    record = run_experiment(Experiment.from_dict(SPEC), Store(tmp_path), device="cpu", progress=False, log=lambda m: None)
    assert record["status"] == "failed" and record["failures"][0]["method"] == "ssd"
    assert len(record["runs"]) == 2


def test_inapplicable_method_is_skipped_not_failed(tmp_path):
    logs: list[str] = []
    spec = {**SPEC, "methods": ["trw", {"name": "finetune", "params": {"steps": 5}}]}
    record = run_experiment(Experiment.from_dict(spec), Store(tmp_path), device="cpu", progress=False, log=logs.append)
    assert record["status"] == "complete" and record["failures"] == []
    assert record["skipped"][0]["method"] == "trw" and "kind ['classes']" in record["skipped"][0]["reason"]
    assert any("trw" in line and "skipped" in line for line in logs)
