"""SalUn's MIA-Efficacy: the features by hand, correctness through the SVC, the training-privacy split, and the default
(confidence) unchanged."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit import Split, Task, TensorData
from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.evaluation.base import roc_summary
from unlearnkit.evaluation.mia_efficacy import FEATURES, entropy_feature, modified_entropy
from unlearnkit.references import References
from unlearnkit.seeding import np_rng


def test_entropy_and_modified_entropy_by_hand():
    p = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1])
    # row 0: −(0.5 ln 0.5 + 2 · 0.25 ln 0.25) = 1.5 ln 2; rows 1, 2: one-hot, 0 (0 · log 0 = 0)
    assert entropy_feature(p) == pytest.approx([1.5 * math.log(2), 0.0, 0.0])
    # row 0 (y = 0): −(1 − 0.5) ln 0.5 − 0.25 ln(1 − 0.25) − 0.25 ln(1 − 0.25)
    # row 1 (y = 1, p_y = 1): −0 · ln 1 − 0 − 0 = 0: sure and right
    # row 2 (y = 1, p_y = 0): −(1 − 0) ln(1e-30) − 1 · ln(max(1 − 1, 1e-30)) = 60 ln 10: sure and wrong
    expected = [-0.5 * math.log(0.5) - 0.5 * math.log(0.75), 0.0, 60 * math.log(10)]
    assert modified_entropy(p, labels) == pytest.approx(expected)


def logit_task(train_logits, train_labels, test_logits, test_labels, n_forget):
    """A task whose inputs are the logits themselves (the model is the identity); the first ``n_forget`` training
    examples are the forget set."""
    train = Split.create("train", TensorData(torch.tensor(train_logits, dtype=torch.float32), torch.tensor(train_labels)))
    n = len(train_labels)
    test = Split.create("test", TensorData(torch.tensor(test_logits, dtype=torch.float32), torch.tensor(test_labels)),
                        np.arange(n, n + len(test_labels)))
    return Task.from_forget_ids("logits", train, test, np.arange(n_forget), n_classes=2)


def correct_logits(correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-class logits that predict ``labels`` where ``correct`` and the other class elsewhere."""
    pred = np.where(correct, labels, 1 - labels)
    return np.eye(2)[pred] * 2.0


def correctness_task():
    # forget: 20 examples, 5 wrong; retain: 100, all right; test: 100, half wrong
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 2, 120), rng.integers(0, 2, 100)
    c_train = np.r_[np.arange(20) >= 5, np.ones(100, bool)]
    c_test = rng.permutation(np.r_[np.ones(50, bool), np.zeros(50, bool)])
    return logit_task(correct_logits(c_train, y_train), y_train, correct_logits(c_test, y_test), y_test, 20), c_test


def test_correctness_goes_through_the_svc_and_predicts_member_iff_right():
    task, _ = correctness_task()
    model = nn.Identity()
    ctx = EvalContext(task, get_adapter(task))
    res = build_metric("mia_efficacy", {"feature": "correctness"}).compute(model, task, References(original=model), ctx)
    # the SVC sees 0/1: at 1 there are 100 members and 50 non-members, at 0 only the 50 wrong test examples, so it
    # predicts member iff right; 5 of the 20 forget examples are wrong
    assert res.values["efficacy"] == 5 / 20
    ids, pred = res.per_example["predicted_member.forget"]
    assert np.array_equal(pred, (np.arange(20) >= 5).astype(float)) and np.array_equal(ids, task.forget.ids)
    assert res.values["attack_train_accuracy"] == (100 + 50) / 200


def test_training_privacy_split_by_hand():
    task, c_test = correctness_task()
    model = nn.Identity()
    ctx = EvalContext(task, get_adapter(task))
    plain = build_metric("mia_efficacy", {"feature": "correctness"}).compute(model, task, References(original=model), ctx)
    res = build_metric("mia_efficacy", {"feature": "correctness", "training_privacy": True}).compute(model, task, References(original=model), ctx)
    assert res.info["training_privacy_n_train_per_side"] == 50  # half the test set
    ids_r, pred_r = res.per_example["training_privacy.predicted_member.retain"]
    ids_t, pred_t = res.per_example["training_privacy.predicted_member.test"]
    assert len(ids_r) == 100 - 50 and len(ids_t) == 100 - 50  # the examples the second SVC did not train on
    # every retain example is right, so member; a held-out test example is member iff right
    right = c_test[ids_t - 120]
    assert np.all(pred_r == 1) and np.array_equal(pred_t, right.astype(float))
    expected = 0.5 * (1.0 + float(np.mean(~right)))
    assert res.values["training_privacy"] == expected
    assert res.values["training_privacy.member_rate_retain"] == 1.0
    # its draws are its own: the efficacy and everything else is what the metric gives without it
    assert {k: v for k, v in res.values.items() if not k.startswith("training_privacy")} == plain.values


def test_default_is_the_confidence_svc_bit_for_bit(random_task, random_refs):
    """The default (feature="confidence", no training privacy) is the attack as it was: an SVC on p(y|x) alone, the
    same draws, the same numbers."""
    from sklearn.svm import SVC

    model, task = random_refs.original, random_task
    ctx = EvalContext(task, get_adapter(task))
    res = build_metric("mia_efficacy").compute(model, task, random_refs, ctx)
    rng = np_rng("mia_efficacy", ctx.seed, task.fingerprint)
    retain, test, forget = (ctx.outputs(model, s)["p_true"] for s in ("retain", "test", "forget"))
    n = min(len(test), len(retain), 2000)
    pos = retain[rng.choice(len(retain), n, replace=False)]
    neg_idx = rng.choice(len(test), n, replace=False)
    x, y = np.r_[pos, test[neg_idx]][:, None], np.r_[np.ones(n), np.zeros(n)]
    clf = SVC(C=3.0, gamma="auto", kernel="rbf").fit(x, y)
    pred = clf.predict(forget[:, None])
    held = np.setdiff1d(np.arange(len(test)), neg_idx)
    nonmembers = test[held] if len(held) else test  # all test examples when the SVC trained on every one
    roc = roc_summary(clf.decision_function(forget[:, None]), clf.decision_function(nonmembers[:, None]))
    assert res.values == {"efficacy": float(np.mean(pred == 0)), "attack_train_accuracy": float(clf.score(x, y)), **roc.values}
    assert np.array_equal(res.per_example["predicted_member.forget"][1], pred.astype(float))
    assert build_metric("mia_efficacy", {"feature": "confidence"}) == build_metric("mia_efficacy")


def test_every_feature_runs_and_bad_ones_are_named(random_task, random_refs):
    ctx = EvalContext(random_task, get_adapter(random_task))
    for feature in FEATURES:
        res = build_metric("mia_efficacy", {"feature": feature, "max_train": 300}).compute(random_refs.original, random_task, random_refs, ctx)
        assert 0.0 <= res.values["efficacy"] <= 1.0 and res.info["feature"] == feature
    with pytest.raises(ConfigError, match="feature"):
        build_metric("mia_efficacy", {"feature": "loss"})
