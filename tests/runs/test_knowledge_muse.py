"""Through the runner: the knowledge task without a retrained oracle (tiny Llama standing in for the pretrained model), the
references' refusals, and a shrunk experiments/muse_book.yaml (forget sets and a request stream in one file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unlearnkit.errors import ConfigError
from unlearnkit.experiment import Experiment, load_experiment
from unlearnkit.runs.runner import run_experiment
from unlearnkit.runs.store import Store
from unlearnkit.verdict import NO_ORACLE

ROOT = Path(__file__).resolve().parents[2]

KNOWLEDGE = {
    "name": "knowledge_tiny",
    "dataset": {"name": "knowledge", "params": {"forget": ["Japan"], "tokenizer": "word"}},
    "forget": [{"kind": "benchmark"}],
    "model": {"name": "tiny_llama"},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.003},
    "references": {"retrain_seeds": 0},
    "methods": [{"name": "npo", "params": {"steps": 2, "batch_size": 4, "lr": 0.001}}],
    "metrics": [{"name": "answer_prob", "params": {"splits": ["forget", "retain", "test", "neighbours", "general"]}}],
    "seeds": [0],
}


@pytest.mark.slow
def test_knowledge_runs_without_an_oracle(tmp_path):
    store = Store(tmp_path)
    icl = {"name": "icl_probe", "params": {"max_new_tokens": 8}}  # the tiny model's context is 96 tokens
    record = run_experiment(Experiment.from_dict({**KNOWLEDGE, "metrics": KNOWLEDGE["metrics"] + [icl]}), store, device="cpu",
                            progress=False, log=lambda m: None)
    assert record["status"] == "complete", record["failures"]
    task = record["tasks"][0]
    assert task["references"]["retrain_seeds"] == [] and "pretrained model is the original" in task["references"]["oracle"]
    runs = [store.load_run(task["original_run"])] + [store.load_run(r) for r in task["runs"]["npo"]]
    for run in runs:
        verdict = run["verdict"]
        assert NO_ORACLE in verdict["reasons"] and any("retrained oracle" in m for m in verdict["missing"])
        rows = {r["key"]: r for r in verdict["rows"]}
        values = run["results"]["answer_prob"]["values"]
        # forget is banded around the original's value on the unknown facts, utility around the original's own values
        assert rows["answer_prob.forget"]["reference"] == pytest.approx(runs[0]["results"]["answer_prob"]["values"]["test"])
        for key in ("retain", "neighbours", "general"):
            assert rows[f"answer_prob.{key}"]["reference"] == pytest.approx(runs[0]["results"]["answer_prob"]["values"][key])
            assert rows[f"answer_prob.{key}"]["value"] == pytest.approx(values[key])
        # the in-context score (utility) around the level the probe measured itself: the original reading unknown facts
        icl = run["results"]["icl_probe"]
        assert rows["icl_probe.forget_in_context"]["band_from"] == "unknown facts"
        assert rows["icl_probe.forget_in_context"]["reference"] == pytest.approx(icl["values"]["unknown_forget_in_context_rouge_l"])
    # the original knows the forget facts no better than the unknown ones here (a random tiny model): whatever it decides,
    # its own utility evidence sits exactly on its reference
    assert all(runs[0]["verdict"]["rows"][i]["status"] == "inside" for i, r in enumerate(runs[0]["verdict"]["rows"]) if r["role"] == "utility")


def test_references_refuse_the_wrong_oracle_setting(tmp_path):
    with pytest.raises(ConfigError, match="has no retrained oracle .* retrain_seeds: 0"):
        run_experiment(Experiment.from_dict({**KNOWLEDGE, "references": {"retrain_seeds": 2}}), Store(tmp_path / "a"), device="cpu",
                       progress=False, log=lambda m: None)
    digits = {**KNOWLEDGE, "dataset": {"name": "digits"}, "forget": [{"kind": "random", "fraction": 0.1}], "model": {"name": "mlp"},
              "metrics": ["accuracy"], "methods": [{"name": "finetune", "params": {"steps": 1}}]}
    with pytest.raises(ConfigError, match="has a retrained oracle"):
        run_experiment(Experiment.from_dict(digits), Store(tmp_path / "b"), device="cpu", progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="retrain_seeds must be a whole number >= 2"):
        Experiment.from_dict({**KNOWLEDGE, "references": {"retrain_seeds": 1}})


def test_knowledge_experiment_file_validates():
    exp = load_experiment(ROOT / "experiments" / "knowledge_smollm2.yaml")
    assert exp.retrain_seeds == 0 and exp.dataset.params["forget"] == ["William Shakespeare", "Harry Potter", "Japan"]


@pytest.mark.slow
def test_muse_book_validates_and_a_tiny_version_runs(tmp_path):
    exp = load_experiment(ROOT / "experiments" / "muse_book.yaml")
    assert [f.fraction for f in exp.forget] == [0.01, 0.05, 0.1, 0.25] and len(exp.requests) == 4
    spec = yaml.safe_load((ROOT / "experiments" / "muse_book.yaml").read_text())
    spec["dataset"]["params"].update(chapters=6, holdout_chapters=2, passages_per_chapter=2)
    spec.update(forget=[{"kind": "random", "fraction": 0.25}], requests=[{"kind": "random", "fraction": 0.1, "repeat": 2}],
                train={**spec["train"], "epochs": 3}, methods=[{"name": "npo", "params": {"steps": 1, "batch_size": 4}}])
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    assert record["status"] == "complete", record["failures"]
    labels = [t["label"] for t in record["tasks"]]
    assert labels[0].startswith("request 1/2") and labels[1].startswith("request 2/2") and labels[2] == "random 25%"
    n_forget = [t["task"]["splits"]["forget"]["n"] for t in record["tasks"]]
    assert n_forget == [1, 2, 3]  # 10% of 12 passages twice (1 each, then 2 deleted in all), then 25%: 3
    for t in record["tasks"]:
        run = store.load_run(t["runs"]["npo"][0])
        assert {"verbatim_memorization", "privleak", "rouge_l", "answer_prob", "noise_floor"} <= set(run["results"])
        assert "relearn" in run["results"] or "too few" in run["missing"]["relearn"] or "at least" in run["missing"]["relearn"]


@pytest.mark.slow
def test_guards_edits_and_o3_run_on_the_knowledge_task_without_an_oracle(tmp_path):
    """Issue 25's methods on the real-knowledge task (no retrained model): each run completes with the no-oracle verdict;
    ECO's strength search targets the original's answer probability on the facts it does not know (the test split)."""
    methods = [{"name": "eco", "params": {"zo_steps": 2}}, {"name": "guard", "params": {}}, {"name": "rocr", "params": {"layer": 0}},
               {"name": "layer_constrained", "params": {"top_layers": 1, "max_prompts": 1, "samples": 1, "method": "grad_diff",
                                                        "params": {"steps": 2, "batch_size": 4, "lr": 0.001}}},
               {"name": "o3", "params": {}}]
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict({**KNOWLEDGE, "methods": methods}), store, device="cpu", progress=False, log=lambda m: None)
    assert record["status"] == "complete", record["failures"]
    task = record["tasks"][0]
    original = store.load_run(task["original_run"])
    assert set(task["runs"]) == {"eco", "guard", "rocr", "layer_constrained", "o3"}
    for name, ids in task["runs"].items():
        run = store.load_run(ids[0])
        assert NO_ORACLE in run["verdict"]["reasons"], name
    eco = store.load_run(task["runs"]["eco"][0])["unlearn_info"]["strength"]
    assert "facts it does not know" in eco["target"]
    # the target is the original's length-normalised answer probability on the test split: answer_prob's test value
    assert eco["target_forget_prob"] == pytest.approx(original["results"]["answer_prob"]["values"]["test"], rel=1e-4)
