"""Invariants and checks against independent implementations (scikit-learn, scipy)."""

import copy
import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unlearnkit.adapters import get_adapter
from unlearnkit.evaluation import EvalContext, build_metric, roc_summary
from unlearnkit.models import build_model, reset_parameters


def test_roc_summary_matches_sklearn_and_hand_case():
    rng = np.random.default_rng(0)
    m, n = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    s = roc_summary(m, n).values
    assert s["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(500), np.zeros(700)], np.r_[m, n]))
    # hand case: non-members 0..99, members at 98.5: one non-member (99) scores above the members, so
    # AUC = 99/100 pairs ordered, TPR = 1 at FPR 1%, and TPR = 0 at FPR 0.1% (no threshold admits them)
    hand = roc_summary(np.full(10, 98.5), np.arange(100.0)).values
    assert hand["tpr_at_1pct_fpr"] == 1.0 and hand["tpr_at_0.1pct_fpr"] == 0.0
    assert hand["auc"] == pytest.approx(0.99)


def test_roc_summary_prefix_names_the_keys_and_changes_no_number():
    rng = np.random.default_rng(1)
    m, n = rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)
    plain, prefixed = roc_summary(m, n), roc_summary(m, n, prefix="loss.")
    assert list(prefixed.values) == ["loss.auc", "loss.tpr_at_1pct_fpr", "loss.tpr_at_0.1pct_fpr"]
    assert list(prefixed.values.values()) == list(plain.values.values())
    assert prefixed.values["loss.auc"] == roc_auc_score(np.r_[np.ones(300), np.zeros(400)], np.r_[m, n])
    assert prefixed.curve == plain.curve


def test_tpr_at_fpr_keeps_collinear_operating_points():
    # tied score groups 1.0, 0.95, 0.90 each hold 5 of 200 members and 1 of 200 non-members; the threshold at 0.95 has
    # FPR 2/200 = 1% and TPR 10/200, a point on the straight line that scikit-learn's roc_curve drops by default
    members = np.r_[np.full(5, 1.0), np.full(5, 0.95), np.full(5, 0.90), np.zeros(185)]
    nonmembers = np.r_[1.0, 0.95, 0.90, np.full(197, -1.0)]
    assert roc_summary(members, nonmembers).values["tpr_at_1pct_fpr"] == pytest.approx(10 / 200)


def test_separable_scores_give_auc_one():
    s = roc_summary(np.arange(100, 200.0), np.arange(0, 100.0)).values
    assert s["auc"] == 1.0 and s["tpr_at_1pct_fpr"] == 1.0 and s["tpr_at_0.1pct_fpr"] == 1.0


def test_mia_auc_half_on_identically_distributed_sets(random_task, random_refs):
    """A model that saw neither forget nor test examples cannot tell them apart: AUC ≈ 0.5."""
    untrained = reset_parameters(copy.deepcopy(random_refs.original), seed=5)
    ctx = EvalContext(random_task, get_adapter(random_task))
    res = build_metric("threshold_mia").compute(untrained, random_task, random_refs, ctx)
    n_f, n_t = len(random_task.forget), len(random_task.test)
    se = np.sqrt((n_f + n_t + 1) / (12 * n_f * n_t))  # null sd of the AUC (Mann–Whitney)
    for score in ("loss", "confidence", "entropy"):
        assert abs(res.values[f"{score}.auc"] - 0.5) < 4 * se


def test_memorised_members_are_detected():
    """Noise inputs with random labels (50 classes) can only be memorised: members are found with
    AUC ≈ 1 and high TPR at 1% FPR, while identically drawn non-members are not."""
    import torch

    from unlearnkit import Split, Task, TensorData
    from unlearnkit.train import train_model
    from unlearnkit.train import TrainConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 20, generator=g)
    y = torch.randint(0, 50, (700,), generator=g)
    train = Split.create("train", TensorData(x[:400], y[:400]))
    test = Split.create("test", TensorData(x[400:], y[400:]), np.arange(400, 700))
    task = Task.from_forget_ids("noise", train, test, np.arange(0, 400, 4), n_classes=50)
    model = build_model("mlp", (20,), 50, hidden=(256, 256))
    model, _, _ = train_model(model, task.train, TrainConfig(epochs=150, batch_size=50, optimizer="adam", lr=2e-3),
                              adapter=get_adapter(task), seed=0)
    res = build_metric("threshold_mia").compute(model, task, None, EvalContext(task, get_adapter(task)))
    assert res.values["loss.auc"] > 0.95 and res.values["loss.tpr_at_1pct_fpr"] > 0.5


def test_retrained_model_gap_to_itself_is_zero(random_task, random_refs):
    refs = dataclasses.replace(random_refs, retrained_seeds=(random_refs.retrained,))
    ctx = EvalContext(random_task, get_adapter(random_task))
    res = build_metric("retrain_gap").compute(random_refs.retrained, random_task, refs, ctx)
    assert res.values["avg_gap"] == 0.0 and res.values["forget"] == 0.0


def test_accuracy_matches_direct_computation(random_task, random_refs):
    ctx = EvalContext(random_task, get_adapter(random_task))
    res = build_metric("accuracy").compute(random_refs.original, random_task, random_refs, ctx)
    out = get_adapter(random_task).outputs(random_refs.original, random_task.test)
    assert res.values["test"] == pytest.approx(float((out["logits"].argmax(1) == out["labels"]).mean()))


def test_mia_efficacy_separates_class_retrain_from_original(class_task, class_refs):
    """For class forgetting, retraining leaves forget confidences far below retain: efficacy ≈ 1;
    the original is confident on its training data: efficacy ≈ 0."""
    ctx = EvalContext(class_task, get_adapter(class_task))
    metric = build_metric("mia_efficacy")
    assert metric.compute(class_refs.retrained, class_task, class_refs, ctx).values["efficacy"] > 0.95
    assert metric.compute(class_refs.original, class_task, class_refs, ctx).values["efficacy"] < 0.3


def test_relearn_same_attack_for_every_model_and_original_recovers_faster(class_task, class_refs):
    metric = build_metric("relearn")
    a, h, mix = metric.slices(class_task, 0)
    a2, h2, mix2 = metric.slices(class_task, 0)
    assert np.array_equal(a.ids, a2.ids) and np.array_equal(h.ids, h2.ids) and np.array_equal(mix.ids, mix2.ids)
    assert set(a.ids).isdisjoint(h.ids) and set(a.ids) | set(h.ids) == set(class_task.forget.ids)
    ctx = EvalContext(class_task, get_adapter(class_task))
    res = metric.compute(class_refs.original, class_task, class_refs, ctx)
    assert len(res.curves["relearn"]["accuracy"]) == metric.steps // metric.eval_every + 1
    assert res.values["auc"] > res.values["retrained_auc"]
    assert res.values["retrained_start"] == 0.0  # the retrained models never learned the class
