"""The shared shape of methods: training settings held as one ``TrainConfig``, given and recorded as flat parameters."""

import dataclasses
import hashlib

import pytest

from unlearnkit import METHODS
from unlearnkit.errors import ConfigError
from unlearnkit.io import canonical_json
from unlearnkit.methods import GradientMethod, build_method, describe_method, method_params
from unlearnkit.methods.base import LM_TRAIN, TRAIN_PARAMS, check_numbers
from unlearnkit.params import param_names
from unlearnkit.train import TrainConfig


def test_flat_training_parameters_go_into_the_settings_object():
    method = build_method("salun", {"epochs": 1, "lr": 0.01, "saliency_fraction": 0.5})
    assert method.train == TrainConfig(epochs=1.0, lr=0.01) and method.saliency_fraction == 0.5
    scrub = build_method("scrub", {"lr": 0.001})  # the recipe's other defaults stay (SCRUB's Adam)
    assert scrub.train == TrainConfig(epochs=3.0, optimizer="adam", lr=0.001)
    assert build_method("npo", {"steps": 3}).train == dataclasses.replace(LM_TRAIN, steps=3)


def test_unknown_and_bad_flat_parameters_are_named():
    with pytest.raises(ConfigError, match=r"Unknown parameter 'lrr' for method 'finetune'\. Did you mean: lr\?"):
        build_method("finetune", {"lrr": 0.1})
    with pytest.raises(ConfigError, match=r"Unknown parameter 'train' for method 'finetune'"):  # only the flat form is a parameter
        build_method("finetune", {"train": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"method 'finetune'\.epochs: expected a number, got 'many'"):
        build_method("finetune", {"epochs": "many"})
    with pytest.raises(ConfigError, match=r"lr must be a finite number > 0"):
        build_method("finetune", {"lr": -1})
    with pytest.raises(ConfigError, match=r"finetune: epochs must be a number"):
        build_method("finetune", {"epochs": None, "steps": 3})


def test_method_params_are_flat_and_rebuild_the_method():
    method = build_method("salun", {"lr": 0.02})
    assert method_params(method) == {
        "epochs": 1.0, "steps": None, "batch_size": 128, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0,
        "schedule": "constant", "grad_clip": None, "stop_at": "none", "stop_check_every": 1, "restrict_to": None,
        "retain_weight": 3.0, "saliency_fraction": 0.5,
    }
    assert list(method_params(method)) == param_names(type(method))
    assert build_method("salun", method_params(method)) == method


@pytest.mark.parametrize("name, params, digest", [
    # sha256 of the method's share of every run key (name, flat params, version), computed before the settings were
    # composed into one TrainConfig: stored runs keep their ids (npo, idk_po: new digests with version 2, whose retain
    # NLL is averaged over the batch's answer tokens, and the retain_reduction parameter)
    ("salun", {"lr": 0.02}, "4a20a49fa03dda6f73cd"),
    ("scrub", {}, "f2878a81d55ff9dc7dcd"),
    ("npo", {}, "48ab6cc2f63ac6c6b4cb"),
    ("idk_po", {"beta": 0.2}, "164c551d1c35029cfa4f"),
    ("flat", {}, "3e98fd4bf9d12a3330de"),
    ("blindspot", {"epochs": 2}, "49002fb583fbe8876c0b"),
    ("sam", {"method": "scrub", "params": {"lr": 0.001}}, "d31eb05b519aa7da870e"),
])
def test_run_key_part_of_a_method_is_unchanged(name, params, digest):
    described = canonical_json(describe_method(build_method(name, params)))
    assert hashlib.sha256(described.encode()).hexdigest()[:20] == digest


def test_sam_radius_is_a_setting_but_not_a_parameter():
    method = build_method("npo", {"steps": 2})
    sharp = method.with_sam(0.1)
    assert sharp.train.sam_rho == 0.1 and method.train.sam_rho == 0.0
    assert method_params(sharp) == method_params(method)


def test_recipes_are_one_level_below_gradient_method():
    """No chain of recipes: a gradient method subclasses GradientMethod directly, sharing defaults through constants
    (``LM_TRAIN``) and behaviour through functions, and trains through GradientMethod.unlearn."""
    gradient = [METHODS.get(n) for n in METHODS.names() if issubclass(METHODS.get(n), GradientMethod)]
    assert len(gradient) >= 15
    for cls in gradient:
        assert cls.__bases__ == (GradientMethod,), cls.name
        assert cls.unlearn is GradientMethod.unlearn, f"{cls.name}: hooks and phases, not a loop of its own (stop_at, restrict_to work)"
        assert set(TRAIN_PARAMS) <= set(param_names(cls))
    for name in ("npo", "idk_po", "simnpo", "rmu"):
        assert METHODS.get(name)().train == LM_TRAIN
    assert METHODS.get("flat")().train == METHODS.get("ihl")().train == dataclasses.replace(LM_TRAIN, epochs=5.0)


def test_check_numbers_names_the_field_and_the_bound():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        a: float = 0.0
        b: object = 1.0
        name = "toy"

    check_numbers(Toy(), "a")
    check_numbers(Toy(b=1), "a", "b")
    with pytest.raises(ConfigError, match=r"toy: a must be a finite number > 0, got 0.0\."):
        check_numbers(Toy(), "b", "a", positive=True)
    with pytest.raises(ConfigError, match=r"toy: b \(a note\) must be a finite number >= 0, got nan\."):
        check_numbers(Toy(b=float("nan")), "a", "b", note=" (a note)")
    for bad in (-1.0, float("inf"), "1"):
        with pytest.raises(ConfigError, match="toy: b must be a finite number >= 0"):
            check_numbers(Toy(b=bad), "b")
