"""End-to-end runs on digits: store contents, caching, resume after Ctrl-C, and the verdict's sanity."""

import pytest
import torch

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
    assert run["cost"]["optimizer_steps"] == 10 and run["cost"]["wall_seconds"] > 0 and run["cost"]["cpu_seconds"] > 0
    assert run["verdict"]["label"] in {"removed", "suppressed", "not forgotten", "over-forgotten", "inconclusive"}
    assert (tmp_path / "runs" / run["run_id"] / "model.safetensors").is_file()
    assert store.load_run_array(run["run_id"], "accuracy.correct.forget.values").shape == (run["task"]["splits"]["forget"]["n"],)
    env = run["environment"]  # what a reader needs to reproduce the numbers, including the CPU (kernels differ)
    assert env["cpu"] and env["torch"] == torch.__version__ and env["threads"] >= 1
    original = store.load_run(record["tasks"][0]["original_run"])
    assert original["kind"] == "reference" and original["cost"] is None and original["verdict"]["rows"]
    text = format_tables(summarize(store, record))
    assert "finetune" in text and "passes × retrain" in text and "CPU × retrain" in text
    summary = summarize(store, record)[0]
    finetune = next(r for r in summary.rows if r.method == "finetune")
    retrain_passes = summary.retrain_cost.example_passes
    assert finetune.cost_cells[0] == f"{run['cost']['example_passes'] / retrain_passes:.3f}"  # the work, not the clock
    assert len(finetune.cpu_ratios) == 1 and finetune.cpu_ratios[0] == run["cost"]["cpu_seconds"] / summary.retrain_cost.cpu_seconds


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


def test_evaluation_seed_and_forget_spec_are_part_of_the_run_key(tmp_path):
    """The evaluation context's seed (task_seed) and the forget spec change metric numbers, so they change run ids
    even when the forget set itself is the same."""
    store = Store(tmp_path)
    quiet = {"device": "cpu", "progress": False, "log": lambda m: None}
    spec = {**SPEC, "forget": [{"kind": "classes", "classes": [3]}], "methods": [{"name": "finetune", "params": {"steps": 2}}]}
    first = run_experiment(Experiment.from_dict(spec), store, **quiet)
    forget_ids = store.load_run(first["runs"][0])["task"]["splits"]["forget"]
    other_seed = run_experiment(Experiment.from_dict({**spec, "task_seed": 1}), store, **quiet)
    assert other_seed["tasks"][0]["task"]["fingerprint"] == first["tasks"][0]["task"]["fingerprint"]  # same forget set
    assert set(other_seed["runs"]).isdisjoint(first["runs"])
    ids = store.load_run_array(first["runs"][0], "accuracy.correct.forget.ids").tolist()
    by_ids = run_experiment(Experiment.from_dict({**spec, "forget": [{"kind": "ids", "ids": ids}]}), store, **quiet)
    assert store.load_run(by_ids["runs"][0])["task"]["splits"]["forget"] == forget_ids
    assert set(by_ids["runs"]).isdisjoint(first["runs"])


def test_settings_of_one_method_get_rows_of_their_own(tmp_path):
    store = Store(tmp_path)
    spec = {**SPEC, "methods": [{"name": "finetune", "params": {"steps": 2}}, {"name": "finetune", "params": {"steps": 4}}]}
    record = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    runs = record["tasks"][0]["runs"]
    assert sorted(runs) == ['finetune {"steps":2}', 'finetune {"steps":4}'] and all(len(v) == 1 for v in runs.values())
    rows = summarize(store, record)[0].rows
    assert sorted(r.method for r in rows) == sorted(runs) and all(len(r.runs) == 1 for r in rows)
    from unlearnkit.errors import ConfigError
    from unlearnkit.methods import build_method

    default_lr = build_method("finetune").train.lr
    with pytest.raises(ConfigError, match="listed twice"):  # the same settings once the defaults are filled in
        Experiment.from_dict({**SPEC, "methods": [{"name": "finetune", "params": {"steps": 2}},
                                                   {"name": "finetune", "params": {"steps": 2, "lr": default_lr}}]})


def test_a_wrapper_run_key_follows_its_inner_methods_version(monkeypatch):
    from unlearnkit.methods import build_method, describe_method
    from unlearnkit.methods.grad_ascent import GradAscent

    sam = build_method("sam", {"method": "grad_ascent", "params": {}})
    skip = build_method("low_influence_skip", {"inner": "grad_ascent"})
    before = describe_method(sam)["version"], describe_method(skip)["version"]
    assert before == (f"1+grad_ascent@{GradAscent.version}",) * 2
    monkeypatch.setattr(GradAscent, "version", "99")
    assert (describe_method(sam)["version"], describe_method(skip)["version"]) == ("1+grad_ascent@99", "1+grad_ascent@99")


def test_an_experiment_that_crashes_is_stored_as_failed(tmp_path, monkeypatch):
    from unlearnkit.runs import runner

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(runner, "build_references", broken)
    exp = Experiment.from_dict(SPEC)
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(exp, Store(tmp_path), device="cpu", progress=False, log=lambda m: None)
    assert Store(tmp_path).load_experiment(exp.exp_id())["status"] == "failed"


def test_reference_keys_follow_the_code_version_and_the_device(monkeypatch):
    import unlearnkit.version
    from unlearnkit.runs.references import reference_key
    from unlearnkit.train import TrainConfig

    def key(device="cpu"):
        return reference_key("original", "abc", {"name": "mlp"}, TrainConfig(), 0, device)

    cpu = key()
    assert key("cpu") == cpu and key("cuda:1") == key("cuda") != cpu
    monkeypatch.setattr(unlearnkit.version, "__version__", "99.0")
    assert key() != cpu


def test_a_row_is_coloured_by_its_most_common_verdict():
    from collections import Counter

    from unlearnkit.runs.summary import MethodRow

    row = MethodRow("m", "gradient", [], verdicts=Counter(["removed", "over-forgotten", "over-forgotten"]))
    assert row.verdict_label == "over-forgotten" and row.verdict == "over-forgotten 2/3, removed 1/3"


def test_the_runner_stores_the_verdict_assess_decides_and_the_table_prints_its_bands(tmp_path):
    from unlearnkit.adapters import get_adapter
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.evaluation import EvalContext, assess, build_metric
    from unlearnkit.runs.runner import ExperimentRunner
    from unlearnkit.verdict import Verdict

    store = Store(tmp_path)
    exp = Experiment.from_dict({**SPEC, "methods": [{"name": "finetune", "params": {"steps": 2}}]})
    runner = ExperimentRunner(exp, store, device="cpu", progress=False, log=lambda m: None)
    record = runner.run()
    stored = store.load_run(record["tasks"][0]["original_run"])["verdict"]
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    task = runner.build_task(source, exp.forget[0])
    refs = runner.references(task, source)  # loaded from the store
    ctx = EvalContext(task, get_adapter(task), device="cpu", seed=exp.task_seed, store=store, progress=False, executor=runner.executor)
    metrics = [build_metric(m.name, m.params) for m in exp.metrics_for(task.modality)]
    verdict = assess(refs.original, task, refs, metrics, ctx=ctx).verdict
    assert Verdict.from_json(stored) == verdict and verdict.bands and verdict.family == len(verdict.bands)
    text = format_tables(summarize(store, record))
    assert f"retrain band (R=2 seeds, Bonferroni over {verdict.family} evidence bands): " in text
    for key, band in verdict.bands.items():
        assert f"{key} [{band.lo:.3f}, {band.hi:.3f}]" in text


def test_each_metric_is_timed_and_the_run_record_keeps_the_times(tmp_path, monkeypatch):
    """evaluate leaves each computed metric's wall time in ctx.seconds (a metric that sleeps 0.2 s takes at least that,
    a skipped one has no entry), assess returns them and the runner stores them beside the whole evaluation's time."""
    import time

    from unlearnkit.evaluation import accuracy

    compute = accuracy.Accuracy.compute

    def slow(self, *a, **k):
        time.sleep(0.2)
        return compute(self, *a, **k)

    monkeypatch.setattr(accuracy.Accuracy, "compute", slow)
    spec = {**SPEC, "methods": [{"name": "finetune", "params": {"steps": 2}}], "metrics": ["accuracy", "retrain_gap", "answer_prob", "noise_floor"]}
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    run = store.load_run(record["tasks"][0]["runs"]["finetune"][0])
    seconds = run["metric_seconds"]
    assert set(seconds) == set(run["results"]) == {"accuracy", "retrain_gap", "noise_floor"}  # answer_prob: not for a classifier
    assert 0.2 <= seconds["accuracy"] < 0.2 + run["eval_seconds"] and seconds["retrain_gap"] < 0.2
    assert sum(seconds.values()) <= run["eval_seconds"]
