"""benchmarks/lm_attacks.py: the verdict re-decided from a stored run on a subset of its metrics is the verdict of a run
of that subset alone; the seed claims are decided from the numbers; and (slow) the whole benchmark on the tiny Llama."""

import pytest

from tests.test_benchmarks import load
from unlearnkit.experiment import Experiment
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.verdict import Verdict

DIGITS = {
    "name": "subset",
    "dataset": {"name": "digits"},
    "forget": [{"kind": "random", "fraction": 0.1}],
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    "references": {"retrain_seeds": 3},
    "methods": [{"name": "finetune", "params": {"steps": 10}}],
    "seeds": [0],
}
FULL = ["accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "noise_floor"]
SUBSET = ["accuracy", "retrain_gap", "noise_floor"]


def finetune_run(tmp_path, metrics):
    store = Store(tmp_path / "store", refs_root=tmp_path / "refs")  # the same references for both experiments
    record = run_experiment(Experiment.from_dict({**DIGITS, "metrics": metrics}), store, device="cpu", progress=False, log=lambda m: None)
    return store.load_run(record["tasks"][0]["runs"]["finetune"][0])


def test_redecide_on_a_subset_is_the_verdict_of_running_the_subset(tmp_path):
    bench = load("lm_attacks")
    full, alone = finetune_run(tmp_path, FULL), finetune_run(tmp_path, SUBSET)
    again = bench.redecide(full, FULL)  # every metric: the stored verdict
    stored = Verdict.from_json(full["verdict"])
    assert again.label == stored.label and again.family == stored.family and again.bands == stored.bands
    cut, ran = bench.redecide(full, SUBSET), Verdict.from_json(alone["verdict"])
    assert cut.family == ran.family < stored.family  # the Bonferroni family of the subset, not of the full battery
    assert set(cut.bands) == set(ran.bands) and cut.label == ran.label
    for key, band in cut.bands.items():
        assert band.lo == pytest.approx(ran.bands[key].lo) and band.hi == pytest.approx(ran.bands[key].hi)
    assert [r["value"] for r in cut.rows] == pytest.approx([r["value"] for r in ran.rows])


def verdict(rows):
    return Verdict("removed", [], rows=[{"key": k, "role": role, "status": s} for k, role, s in rows])


def test_seed_claims_are_decided_from_the_numbers():
    bench = load("lm_attacks")

    def run(f, q4, q8, lift):
        return {"results": {"quantisation": {"values": {"forget_prob": f, "forget_prob_4bit": q4, "forget_gain_4bit": q4 - f,
                                                        "forget_gain_8bit": q8 - f}},
                            "icl_probe": {"values": {"lift_forget_rouge_l": lift}}}}

    runs = {"retrain": run(0.3, 0.3, 0.3, 0.6), "grad_ascent": run(0.2, 0.5, 0.25, 0.5), "grad_diff": run(0.2, 0.45, 0.2, 0.01),
            "npo": run(0.2, 0.25, 0.2, 0.4)}
    keys = [("quantisation", "quantisation.forget_prob_4bit"), ("icl_probe", "icl_probe.forget_in_context")]
    after = {"grad_ascent": verdict([("quantisation.forget_prob_4bit", "robustness", "more"), ("icl_probe.forget_in_context", "utility", "inside")]),
             "grad_diff": verdict([("quantisation.forget_prob_4bit", "robustness", "more"), ("icl_probe.forget_in_context", "utility", "inside")]),
             "npo": verdict([("quantisation.forget_prob_4bit", "robustness", "inside"), ("icl_probe.forget_in_context", "utility", "less")])}
    before = {m: Verdict("removed", []) for m in after}
    spread = {"quantisation.forget_gain_4bit": {"sd": 0.1}, "quantisation.forget_gain_8bit": {"sd": 0.1}}
    recover, quant, icl = bench.claims(runs, after, before, keys, spread)
    assert "recover under at least one probe: supported" in recover and "2 of 3" in recover  # GA and GD above the 4-bit band
    # 4-bit gains GA 0.30, GD 0.25, NPO 0.05: both beat NPO's by more than the sd 0.1; at 8 bits GA +0.05, GD 0: not
    assert "NPO's: supported at 4 bits" in quant and "8-bit gain GA +0.050, GD +0.000, NPO +0.000 (retrained seeds' sd of the gain 0.100): not supported" in quant
    # in context: GA lifts 0.5 (works), GD 0.01 (below the 0.05 floor), NPO 0.4 but below the retrained band
    assert "reintroduction works on unlearned models: not supported" in icl and "1 of 3" in icl
    spread = {"quantisation.forget_gain_4bit": {"sd": 0.22}}
    assert "direction only" in bench.claims(runs, after, before, keys, spread)[1].split(";")[0]


@pytest.mark.slow
def test_lm_attacks_benchmark_runs_tiny(tmp_path):
    """The benchmark end to end on the tiny Llama (two methods, two retrained seeds): the probe table, both verdicts,
    the seed claims and the per-metric timing."""
    out = tmp_path / "lm_attacks.md"
    bench = load("lm_attacks")
    assert bench.main(["--model", "tiny_llama", "--scale", "tiny", "--methods", "grad_ascent", "npo", "--why", "test",
                       "--retrain-seeds", "2", "--executor", "local", "--refs-cache", str(tmp_path / "refs"), "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Recovery probes") and "Generated by `python benchmarks/lm_attacks.py --model tiny_llama" in text
    table = [line for line in text.splitlines() if line.startswith("| grad_ascent |")]
    assert len(table) == 3  # probe table, verdict table, claim numbers
    assert "forget_prob_4bit (quantisation)" in text and "heldout_prob (soft_prompt)" in text and "auc (relearn)" in text
    assert text.count("- **") == 3 and "## Evaluation cost" in text and "| **probe battery** |" in text


def test_timing_finds_the_first_model_of_each_process_by_the_noise_floor_it_paid():
    """A resumed benchmark reuses the original from an earlier process: the first unlearned model of the new process pays
    the retrained seeds' share again, and must be counted as a first model, not as a later one (the 10-minute goal is
    judged on later models)."""
    bench = load("lm_attacks")

    def run(kind, relearn, floor, wall, ev):
        return {"kind": kind, "metric_seconds": {"relearn": relearn, "noise_floor": floor}, "cost": {"wall_seconds": wall}, "eval_seconds": ev}

    everyone = {"original (target)": run("reference", 300.0, 80.0, 999.0, 400.0), "retrain": run("retrain", 50.0, 0.0, 999.0, 60.0),
                "npo": run("unlearn", 60.0, 1e-4, 30.0, 70.0), "eco": run("unlearn", 310.0, 85.0, 20.0, 420.0),  # eco: a new process
                "rmu": run("unlearn", 700.0, 0.0, 40.0, 720.0)}
    assert [m for m, r in everyone.items() if bench.first_in_process(r)] == ["original (target)", "eco"]
    assert bench.runs_seconds(everyone) == (90.0, 1670.0)  # unlearning: method runs only; evaluation: every model
    text = "\n".join(bench.timing_section(everyone, ["relearn", "noise_floor"], ["relearn"]))
    assert "First models here: original (target), eco." in text
    assert "| relearn | yes | 305.0 | 270.0 | 700.0 |" in text  # firsts: (300 + 310) / 2; later: retrain, npo, rmu
    assert "| noise_floor |  | 82.5 | 0.0 | 0.0 |" in text
    assert "max 11.7 min" in text and "not met" in text  # rmu's 700 s is over the goal
    later_ok = {m: r for m, r in everyone.items() if m != "rmu"}
    assert "— met" in "\n".join(bench.timing_section(later_ok, ["relearn", "noise_floor"], ["relearn"]))
