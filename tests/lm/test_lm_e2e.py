"""Language models through the whole flow: experiment file → target and retain models (cached) → unlearning runs →
LM evidence → verdict → tables and HTML report."""

import pytest

from unlearnkit.experiment import Experiment, load_experiment
from unlearnkit.report.html import write_report
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.runs.summary import format_tables, summarize

SPEC = {
    "name": "profiles_e2e",
    "dataset": {"name": "profiles", "params": {"scale": "tiny"}},
    "forget": [{"kind": "profiles", "fraction": 0.1}],
    "model": {"name": "tiny_llama"},
    "train": {"epochs": 30, "batch_size": 16, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    "references": {"retrain_seeds": 3},
    "methods": ["retrain", {"name": "grad_ascent", "params": {"epochs": 5, "batch_size": 8, "optimizer": "adamw", "lr": 0.001}},
                {"name": "npo", "params": {"epochs": 10, "batch_size": 8, "lr": 0.001}}],
    "metrics": ["answer_prob", "forget_quality", "min_k", "privleak", "relearn", "noise_floor"],
    "seeds": [0],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("lm-store"))
    record = run_experiment(Experiment.from_dict(SPEC), store, device="cpu", progress=False, log=lambda m: None)
    return store, record


def test_experiment_runs_and_stores_lm_evidence(finished):
    store, record = finished
    assert record["status"] == "complete" and not record["failures"]
    task = record["tasks"][0]
    assert task["task"]["modality"] == "causal_lm" and task["task"]["splits"]["forget"]["n"] == 12
    original = store.load_run(task["original_run"])
    assert original["verdict"]["label"] == "not forgotten", "the target model still knows the forget profiles"
    assert original["results"]["answer_prob"]["values"]["forget"] > 0.5
    retrain = store.load_run(task["runs"]["retrain"][0])
    assert retrain["verdict"]["label"] == "removed"
    fq = retrain["results"]["forget_quality"]["values"]
    assert fq["p_value"] > 0.05 and 0 <= fq["statistic"] <= 1
    # the tiny word-level model cannot generalise to paraphrased answers, so truth ratios (and forget quality) barely
    # separate it from the oracle; membership evidence does
    assert original["results"]["min_k"]["values"]["auc"] > 0.8
    assert abs(retrain["results"]["privleak"]["values"]["privleak"]) < abs(original["results"]["privleak"]["values"]["privleak"])
    npo = store.load_run(task["runs"]["npo"][0])
    assert npo["results"]["answer_prob"]["values"]["forget"] < original["results"]["answer_prob"]["values"]["forget"]


def test_tables_and_report_show_lm_columns(finished, tmp_path):
    store, record = finished
    text = format_tables(summarize(store, record))
    assert "forget prob" in text and "KS stat" in text and "privleak" in text and "answer probability" in text
    html = write_report(store, record, tmp_path / "report.html").read_text()
    assert "npo" in html and "answer probability" in html
    assert "forget-quality KS statistic vs the retain model, PrivLeak" in html and "MIA efficacy" not in html  # the LM evidence, named


def test_rerun_reuses_everything(finished):
    store, record = finished
    again = run_experiment(Experiment.from_dict(SPEC), store, device="cpu", progress=False, log=lambda m: None)
    assert again["runs"] == record["runs"]


@pytest.mark.parametrize("name", ["profiles_tiny", "profiles_small"])
def test_bundled_lm_experiments_validate(name):
    from pathlib import Path

    exp = load_experiment(Path(__file__).resolve().parents[2] / "experiments" / f"{name}.yaml")
    exp.check_components()
    assert exp.forget[0].kind == "profiles"
