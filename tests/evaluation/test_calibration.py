"""Calibration of the verdict, measured rather than assumed (design.md): a model retrained with a
fresh seed must come out "removed" (false-alarm rate ≤ 5% over 20 fresh seeds), and the original
model must come out "not forgotten"."""

import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.evaluation import EvalContext, assess
from unlearnkit.train import train_model
from unlearnkit.seeding import derive_seed


@pytest.mark.slow
def test_fresh_retrains_are_removed_and_original_is_not_forgotten(random_task, random_refs):
    ctx = EvalContext(random_task, get_adapter(random_task))
    assert assess(random_refs.original, random_task, random_refs, ctx=ctx).verdict.label == "not forgotten"
    labels = []
    for i in range(20):
        seed = derive_seed("fresh-calibration-seed", i) % 2**31
        model, _, _ = train_model(random_refs.fresh_model(seed, by="test"), random_task.retain, random_refs.train_config,
                                  adapter=get_adapter(random_task), seed=seed)
        labels.append(assess(model, random_task, random_refs, ctx=ctx).verdict.label)
    false_alarms = sum(label != "removed" for label in labels)
    assert false_alarms <= 1, labels


# ---------------------------------------------------------------------------------------------------------------------
# The full battery, measured as benchmarks/verdict_calibration.py does (docs/results/verdict_calibration.md): 20 fresh
# retrain seeds per setting, family-wise false alarms not significantly above 5%, and one instance of every planted case
# with its known answer.

def bench():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["verdict_calibration"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def check(setting):
    """Calibrated: the false-alarm count of the 20 fresh retrains is not significantly above the 5% the bands promise
    (one-sided binomial test at the 1% level: up to 4 of 20 pass; 2 of 20 is what a 5% rate gives 26% of the time, so
    "at most 1" would fail a calibrated verdict one run in four). The benchmark's larger runs give the rate itself."""
    from scipy.stats import binomtest

    assert len(setting.fresh) == 20
    labels = [label for label, _ in setting.fresh]
    assert binomtest(setting.alarms(), 20, 0.05, alternative="greater").pvalue >= 0.01, labels
    known = bench().CASES
    for case, runs in setting.planted.items():
        for label, statuses in runs:
            if case == "suppressed bias" and label == "over-forgotten":
                # the bias push also costs test accuracy against retraining, and the label's precedence puts lost utility
                # first; the suppression must still be seen, by the robustness evidence (listed after the label as "also")
                assert statuses.get("relearn.auc") == "more" or statuses.get("hidden_probe.few_shot_auc") == "more", (case, runs)
            else:
                assert label == known[case], (case, runs)


@pytest.mark.slow
def test_full_classifier_battery_is_calibrated_and_finds_the_planted_cases_on_random_forgetting():
    """digits, random 10%, R = 8: ~1.5 min on 2 cores."""
    check(bench().classifier_setting("random", retrain_seeds=8, fresh=20, instances=1))


@pytest.mark.slow
def test_full_classifier_battery_is_calibrated_and_finds_the_planted_cases_on_class_forgetting():
    """digits, class 3, R = 8; the bias-suppressed original is caught by relearning and the few-shot hidden probe."""
    setting = bench().classifier_setting("class", retrain_seeds=8, fresh=20, instances=1)
    check(setting)
    (_, suppressed), = setting.planted["suppressed bias"]
    assert suppressed["relearn.auc"] == "more" and suppressed["hidden_probe.few_shot_auc"] == "more"


@pytest.mark.slow
def test_lm_default_battery_is_calibrated_and_finds_the_planted_cases():
    """tiny profiles, tiny Llama, R = 3: ~3 min on 2 cores."""
    check(bench().lm_setting(retrain_seeds=3, fresh=20, instances=1))
