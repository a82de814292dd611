"""Search spaces: every declared one is valid for its method; bad spaces are refused with the problem named."""

import pytest

from unlearnkit.errors import ConfigError
from unlearnkit.registry import METHODS
from unlearnkit.searchspace import Choice, FloatRange, IntRange, check_space, dimension_from_json

DECLARED = sorted(n for n in METHODS.names() if getattr(METHODS.get(n), "search_space", None) is not None)


def test_the_classifier_baselines_declare_a_space():
    assert {"finetune", "grad_ascent", "grad_diff", "random_label", "salun", "l1_sparse", "boundary_shrink", "scrub", "ssd"} <= set(DECLARED)


def test_every_approximate_classifier_method_declares_a_space():
    # all but the exact regimes (their evidence is retraining's by construction) and the wrappers (``wraps``: the
    # parameter naming the method they run, e.g. sam, whose default inner method is an LM recipe: tune the inner method,
    # then wrap it)
    classifier = [n for n in METHODS.names() if "classifier" in getattr(METHODS.get(n), "modalities", ("classifier",))]
    missing = [n for n in classifier if n not in DECLARED and getattr(METHODS.get(n), "kind", None) != "exact"
               and not getattr(METHODS.get(n), "wraps", None)]
    assert missing == []
    assert {"concept_poison", "dmm", "iau", "laf", "low_influence_skip", "overparam_orthogonal", "holdout_match", "trw"} <= set(DECLARED)


@pytest.mark.parametrize("name", DECLARED)
def test_every_declared_space_is_valid(name):
    cls = METHODS.get(name)
    space = check_space(cls, cls.search_space, name)
    assert set(space) == set(cls.search_space)
    for dim in space.values():  # ranges, not fixed values; log scales start above 0
        if not isinstance(dim, Choice):
            assert dim.low < dim.high and (not dim.log or dim.low > 0)


def test_methods_without_a_space_say_so():
    with pytest.raises(ConfigError, match="declares no search space"):
        check_space(METHODS.get("retrain"), None, "method 'retrain'")


@pytest.mark.parametrize("space, message", [
    ({"lr": FloatRange(0.1, 0.1)}, r"empty range \[0.1, 0.1\]"),
    ({"lr": FloatRange(0.2, 0.1)}, "empty range"),
    ({"lr": {"low": 0.2, "high": 0.1, "log": True}}, "empty range"),
    ({"lrr": FloatRange(1e-3, 0.1)}, r"parameter 'lrr', which it does not have\. Did you mean: lr\?"),
    ({"lr": FloatRange(0.0, 0.1, log=True)}, "log-scale range needs low > 0"),
    ({"saliency_fraction": FloatRange(0.1, 1.5)}, "reaches a value the parameter refuses"),
    ({"retain_weight": Choice(())}, "empty choice"),
    ({"retain_weight": Choice((1.0, 1.0))}, "listed twice"),
    ({"epochs": IntRange(1, 3.5)}, "high must be an integer"),
    ({}, "non-empty mapping"),
    ({"lr": {"low": 1e-3}}, "a range is"),
])
def test_bad_spaces_are_refused(space, message):
    with pytest.raises(ConfigError, match=message):
        check_space(METHODS.get("salun"), space, "method 'salun'")


def test_json_form_reads_as_the_dimensions():
    assert dimension_from_json({"low": 1e-4, "high": 0.1, "log": True}, "x") == FloatRange(1e-4, 0.1, True)
    assert dimension_from_json({"low": 1, "high": 5}, "x") == IntRange(1, 5, False)
    assert dimension_from_json({"options": ["none", "holdout"]}, "x") == Choice(("none", "holdout"))
    space = check_space(METHODS.get("finetune"), {"stop_at": {"options": ["none", "holdout"]}}, "finetune")
    assert space == {"stop_at": Choice(("none", "holdout"))}
