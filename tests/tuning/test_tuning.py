"""Tuning on digits: the objectives, the validation forget set (never the real one), resume, bad input, end to end."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from unlearnkit.cli import main
from unlearnkit.data.forget import ForgetSpec
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError
from unlearnkit.experiment import Experiment
from unlearnkit.runs.store import Store
from unlearnkit.seeding import np_rng
from unlearnkit.tuning import Tuner, band_distance, choose, pareto, tune, validation_spec
from unlearnkit.tuning import study as study_module
from unlearnkit.types import Task

SPEC = {
    "name": "tune-tiny",
    "dataset": {"name": "digits"},
    "forget": [{"kind": "random", "fraction": 0.1}],
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "train": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
    "references": {"retrain_seeds": 2},
    "methods": ["finetune"],
    "metrics": ["accuracy", "retrain_gap", "noise_floor"],
    "seeds": [0],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("tune-store"))


def quiet(**kw):
    return {"device": "cpu", "progress": False, "log": lambda m: None, **kw}


# ------------------------------------------------------------------------------------------------ objectives
def test_band_distance_is_the_largest_excess_in_half_widths():
    rows = [
        {"key": "acc.forget", "role": "forget", "status": "more", "margin": -2.5},   # 2.5 half-widths above
        {"key": "acc.test", "role": "utility", "status": "less", "margin": -0.5},    # 0.5 below
        {"key": "acc.retain", "role": "utility", "status": "more", "margin": -4.0},  # better than retraining: no failure
        {"key": "mia", "role": "forget", "status": "inside", "margin": 0.3},
        {"key": "relearn", "role": "robustness", "status": "uninformative", "margin": None},
    ]
    distance, per = band_distance(rows)
    assert distance == 2.5 and per == {"acc.forget": 2.5, "acc.test": 0.5}
    assert band_distance(rows[2:]) == (0.0, {})


def test_pareto_front_and_choice_by_hand():
    t = lambda n, d, p, state="complete": {"number": n, "state": state, "band_distance": d, "example_passes": p}  # noqa: E731
    trials = [t(0, 1.0, 100), t(1, 0.0, 500), t(2, 0.0, 300), t(3, 2.0, 50), t(4, 1.5, 200), t(5, 0.0, 10, "failed")]
    assert pareto(trials) == [0, 2, 3]  # 1 is beaten by 2 (same distance, cheaper), 4 by 0; failed trials never count
    assert choose(trials)["number"] == 2  # inside the band (0), then the cheapest
    assert choose([t(0, 0.0, 1, "failed")]) is None


# ------------------------------------------------------------------------------------------------ the validation forget set
def _task(spec):
    source = load_dataset("digits")
    from unlearnkit.data.forget import make_task

    return make_task("digits", source.train, source.test, spec, np.random.default_rng(0), n_classes=10)


def test_validation_spec_draws_like_the_real_one():
    real = _task(ForgetSpec("random", fraction=0.1))
    assert validation_spec(ForgetSpec("random", fraction=0.1), real, np_rng(1)) == ForgetSpec("random", count=len(real.forget))
    real = _task(ForgetSpec("classes", classes=(3, 5)))
    vspec = validation_spec(ForgetSpec("classes", classes=(3, 5)), real, np_rng(1))
    assert vspec.kind == "classes" and len(vspec.classes) == 2 and not set(vspec.classes) & {3, 5}


def test_validation_forget_set_that_cannot_be_drawn():
    with pytest.raises(ConfigError, match="at least twice the forget set's size"):
        validation_spec(ForgetSpec("random", fraction=0.6), _task(ForgetSpec("random", fraction=0.6)), np_rng(1))
    five = ForgetSpec("classes", classes=(0, 1, 2, 3, 4))
    with pytest.raises(ConfigError, match="would leave no class to retain"):
        validation_spec(five, _task(five), np_rng(1))
    with pytest.raises(ConfigError, match="Cannot draw a validation forget set like"):
        validation_spec(ForgetSpec("benchmark"), _task(ForgetSpec("random", fraction=0.1)), np_rng(1))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials must be a whole number >= 1"),
    ({"budget_seconds": 0}, "budget_seconds must be a number > 0"),
    ({"parallel": 0}, "parallel must be a whole number >= 1"),
    ({"space": {"lr": {"low": 0.1, "high": 0.1}}}, "empty range"),
    ({"space": {"momentun": {"low": 0.1, "high": 0.9}}}, "Did you mean: momentum"),
])
def test_bad_tuning_input(store, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Tuner(Experiment.from_dict(SPEC), store, "finetune", **quiet(**kwargs))


def test_a_method_without_a_space_and_unknown_methods(store):
    with pytest.raises(ConfigError, match=r"'retrain' declares no search space.*finetune"):
        Tuner(Experiment.from_dict(SPEC), store, "retrain", **quiet())
    with pytest.raises(ConfigError, match="finetun"):
        Tuner(Experiment.from_dict(SPEC), store, "finetun", **quiet())


def test_a_method_that_does_not_fit_a_setting_is_not_tuned_there(tmp_path, capsys):
    """A class method on a random forget set: the reason is recorded, no study is opened and no reference is trained."""
    store = Store(tmp_path / "store")
    result = tune(Experiment.from_dict(SPEC), store, "trw", trials=2, **quiet())
    (study,) = result.studies
    assert "handles forget sets of kind ['classes']" in study["not_applicable"]
    assert study["chosen"] is None and study["trials"] == [] and result.experiments == [None]
    assert not (store.root / "tuning").exists() and not any(store.refs.rglob("*.safetensors"))
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["tune", str(path), "--method", "trw", "--trials", "2", "--store", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "random 10%: not tuned — trw handles forget sets of kind ['classes']" in capsys.readouterr().out


def test_cli_refuses_bad_input_before_any_work(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["tune", str(path), "--method", "finetune", "--trials", "0", "--store", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "trials must be a whole number >= 1" in capsys.readouterr().err
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"lr": {"low": 0.5, "high": 0.01}}))
    assert main(["tune", str(path), "--method", "finetune", "--space", str(space), "--store", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "empty range" in capsys.readouterr().err
    assert not (tmp_path / "s" / "tuning").exists()


# ------------------------------------------------------------------------------------------------ no peeking
def test_trials_never_touch_the_real_forget_set(store, touched):
    """Every split any trial (or the validation references) iterates over is recorded; none holds a real forget id. The
    recorder is shown to work: evaluating the chosen setting on the real task does touch them."""
    tuner = Tuner(Experiment.from_dict(SPEC), store, "finetune", trials=2, **quiet())
    spec = tuner.exp.forget[0]
    vtask, vrefs, real = tuner.validation(spec)
    study = tuner.search(spec, vtask, vrefs)
    seen = np.unique(np.concatenate(touched))
    assert len(study["trials"]) == 2 and len(seen) > len(real.retain)  # the pool (and test data) was used ...
    assert not np.isin(real.forget.ids, seen).any()  # ... never an example of the real forget set
    assert not np.isin(real.forget.ids, vtask.train.ids).any()
    touched.clear()
    tuner.evaluate_chosen(spec, study)
    assert np.isin(real.forget.ids, np.unique(np.concatenate(touched))).all()


# ------------------------------------------------------------------------------------------------ resume
def fake_trial(job):
    """A stand-in trial whose objectives are a known function of the setting (no training)."""
    return {"number": job.number, "band_distance": abs(np.log10(job.params["lr"]) + 2), "example_passes": int(job.params["epochs"] * 1000),
            "optimizer_steps": 1, "wall_seconds": 0.0, "verdict": "removed", "per_evidence": {}}


def test_interrupted_study_resumes_without_repeating_finished_trials(store, monkeypatch):
    """A study is named by what it tunes (method, space, validation task, references, metrics, seed), so running the same
    command again reopens it from the store."""
    exp = Experiment.from_dict({**SPEC, "name": "tune-resume"})
    calls = []

    def interrupted(job):
        calls.append(dict(job.params))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fake_trial(job)

    monkeypatch.setattr(study_module, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(exp, store, "finetune", trials=5, seed=3, evaluate=False, **quiet())
    assert len(calls) == 3
    first, cut_off = calls[:2], calls[2]
    calls.clear()
    monkeypatch.setattr(study_module, "run_trial", lambda job: (calls.append(dict(job.params)), fake_trial(job))[1])
    result = tune(exp, store, "finetune", trials=5, seed=3, evaluate=False, **quiet())
    assert len(calls) == 3  # the cut-off trial again (same setting), then the two still missing; never the first two
    assert calls[0] == cut_off and not any(c in first for c in calls)
    study = result.studies[0]
    done = [t for t in study["trials"] if t["state"] == "complete"]
    assert len(done) == 5 and [t["state"] for t in study["trials"]].count("interrupted") == 1
    calls.clear()
    again = tune(exp, store, "finetune", trials=5, seed=3, evaluate=False, **quiet())  # complete: nothing runs
    assert calls == [] and again.studies[0]["pareto"] == study["pareto"]
    best = min(done, key=lambda t: (t["band_distance"], t["example_passes"]))
    assert study["chosen"]["number"] == best["number"]


def test_time_budget_stops_the_study(store, monkeypatch):
    monkeypatch.setattr(study_module, "run_trial", fake_trial)
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(study_module, "clock", lambda: next(clock))
    result = tune(Experiment.from_dict({**SPEC, "name": "tune-budget"}), store, "finetune", trials=50, budget_seconds=25, seed=11, evaluate=False,
                  **quiet())
    study = result.studies[0]
    assert len(study["trials"]) == 2 and "time budget of 25 s reached after 2 trial(s)" in study["stopped"]


def test_a_failing_setting_is_recorded_and_counted(store, monkeypatch):
    monkeypatch.setattr(study_module, "run_trial", lambda job: {"number": job.number, "error": "ConfigError: diverged"})
    result = tune(Experiment.from_dict({**SPEC, "name": "tune-fail"}), store, "finetune", trials=2, seed=12, evaluate=False, **quiet())
    study = result.studies[0]
    assert [t["state"] for t in study["trials"]] == ["failed", "failed"] and study["chosen"] is None
    assert result.experiments == [None]


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_tune_end_to_end_record_and_report(store, tmp_path):
    from unlearnkit.report import write_report

    exp = Experiment.from_dict(SPEC)
    result = tune(exp, store, "finetune", trials=3, seed=1, **quiet())
    study, record = result.studies[0], result.experiments[0]
    assert record["status"] == "complete" and record["tuning"]["study"] == study["study"]
    assert len([t for t in study["trials"] if t["state"] == "complete"]) == 3
    chosen = study["chosen"]
    assert set(chosen["params"]) == {"lr", "epochs"} and 1e-3 <= chosen["params"]["lr"] <= 0.2
    assert study["validation"]["n_forget"] == 135 and "never in it" in study["validation"]["protocol"]
    # the chosen setting ran once on the real forget set, next to the default
    task = record["tasks"][0]
    assert set(task["runs"]) == {study["evaluation"]["tuned_label"], study["evaluation"]["default_label"]}
    tuned = store.load_run(task["runs"][study["evaluation"]["tuned_label"]][0])
    assert tuned["method"]["params"]["lr"] == chosen["params"]["lr"]
    html = write_report(store, record, tmp_path / "r.html").read_text()
    assert "Tuning: finetune (random 10%)" in html and "★ chosen" in html and "data:image/png;base64" in html


@pytest.mark.slow
def test_parallel_trials_on_the_process_executor_match_local(store):
    """Two trials at a time in fresh processes give the settings and objectives of the same study run in this process."""
    from unlearnkit.executor import ProcessExecutor

    common = dict(trials=2, parallel=2, seed=5, evaluate=False, **quiet())
    local = tune(Experiment.from_dict({**SPEC, "name": "tune-par"}), store, "finetune", **common).studies[0]
    store2 = Store(store.root.parent / "tune-store-process", refs_root=store.refs)  # another study folder, same references
    par = tune(Experiment.from_dict({**SPEC, "name": "tune-par"}), store2, "finetune", executor=ProcessExecutor(2), **common).studies[0]
    key = lambda s: sorted((t["number"], t["params"]["lr"], t["example_passes"], round(t["band_distance"], 4)) for t in s["trials"])  # noqa: E731
    assert key(local) == key(par)


@pytest.mark.slow
def test_parallel_trials_on_ray_match_local(store):
    """The same two-trial study with its trials on a local Ray cluster gives the settings and objectives run here."""
    ray = pytest.importorskip("ray")
    from unlearnkit.executor import RayExecutor

    common = dict(trials=2, parallel=2, seed=5, evaluate=False, **quiet())
    local = tune(Experiment.from_dict({**SPEC, "name": "tune-ray"}), store, "finetune", **common).studies[0]
    executor = RayExecutor(num_cpus=2)
    try:
        remote = tune(Experiment.from_dict({**SPEC, "name": "tune-ray"}), Store(store.root.parent / "tune-store-ray", refs_root=store.refs),
                      "finetune", executor=executor, **common).studies[0]
    finally:
        executor.shutdown()
    assert not ray.is_initialized()
    key = lambda s: sorted((t["number"], t["params"]["lr"], t["example_passes"], round(t["band_distance"], 4)) for t in s["trials"])  # noqa: E731
    assert key(local) == key(remote) and len(remote["trials"]) == 2


def test_validation_task_is_drawn_from_retain_only():
    real = _task(ForgetSpec("random", fraction=0.1))
    from unlearnkit.tuning import validation_task

    source = load_dataset("digits")
    v = validation_task(real, ForgetSpec("random", fraction=0.1), source.test, np_rng(2), info={})
    assert isinstance(v, Task) and len(v.forget) == len(real.forget)
    assert set(v.train.ids) == set(real.retain.ids) and not np.isin(real.forget.ids, v.train.ids).any()
    assert v.info["validation_of"] == {"kind": "random", "fraction": 0.1}
    assert dataclasses.replace(v).test.fingerprint == real.test.fingerprint


@pytest.mark.slow
def test_cli_tune_prints_the_front_and_writes_the_report(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "name": "tune-cli"}))
    store = tmp_path / "s"
    assert main(["tune", str(path), "--method", "finetune", "--trials", "2", "--seed", "4", "--store", str(store), "--no-progress",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (distance to the retrain band" in out and "<- chosen" in out and "HTML report:" in out
    report = Path(out.split("HTML report: ")[-1].strip())
    assert report.is_file() and "Tuning: finetune (random 10%)" in report.read_text()
    assert len(list((store / "tuning").glob("*/journal.log"))) == 1
