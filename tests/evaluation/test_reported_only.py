"""Evidence measured to have no power (docs/results/verdict_calibration.md) is reported only: shown with its band,
kept out of the verdict, with the reason."""

from __future__ import annotations

import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.evaluation import EvalContext, assess, build_metric
from unlearnkit.evaluation.base import CLASS_MEMBERSHIP_REPORTED_ONLY


def evidence_of(metric, task, refs, model=None):
    ctx = EvalContext(task, get_adapter(task))
    return build_metric(metric, {"n_shadows": 4, "n_targets": 20} if metric in ("lira", "label_only") else None) \
        .compute(model or refs.original, task, refs, ctx).evidence[0]


@pytest.mark.parametrize("metric", ["threshold_mia", "lira"])
def test_membership_attacks_decide_random_forgetting_but_are_reported_only_on_class_forgetting(metric, random_task, random_refs,
                                                                                                class_task, class_refs):
    assert evidence_of(metric, random_task, random_refs).reported_only is None
    assert evidence_of(metric, class_task, class_refs).reported_only == CLASS_MEMBERSHIP_REPORTED_ONLY


def test_mia_nn_is_reported_only(class_task, class_refs):
    assert evidence_of("mia_nn", class_task, class_refs).reported_only == CLASS_MEMBERSHIP_REPORTED_ONLY


def test_label_only_is_reported_only_with_its_measured_reason(random_task, random_refs):
    ev = evidence_of("label_only", random_task, random_refs)
    assert ev.reported_only and "no power" in ev.reported_only


def test_reported_only_class_membership_evidence_cannot_change_the_verdict(class_task, class_refs):
    """On class forgetting the original is 'not forgotten' through accuracy/mia_efficacy; threshold_mia's row says
    'reported only' and is not in the Bonferroni family."""
    verdict = assess(class_refs.original, class_task, class_refs, ["accuracy", "mia_efficacy", "threshold_mia", "noise_floor"]).verdict
    rows = {r["key"]: r for r in verdict.rows}
    assert rows["threshold_mia.loss.auc"]["status"] == "reported only"
    assert verdict.family == len(rows) - 1 == 4  # accuracy (forget, retain, test) and mia_efficacy
    assert verdict.label == "not forgotten"
