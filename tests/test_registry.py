import pytest

from unlearnkit import METHODS, METRICS
from unlearnkit.errors import ConfigError, UnknownName
from unlearnkit.registry import Registry


def test_register_get_names():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and len(reg) == 2


def test_duplicate_is_an_error():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(ConfigError, match="Duplicate widget 'alpha'"):
        reg.register("alpha", 2)


def test_unknown_name_suggests():
    with pytest.raises(UnknownName, match=r"Unknown method 'salunn'\. Did you mean: salun\?"):
        METHODS.get("salunn")
    with pytest.raises(UnknownName, match="Did you mean: relearn"):
        METRICS.get("relern")


def test_invalid_name():
    with pytest.raises(ConfigError):
        Registry("x").register("bad name", 1)


def test_builtins_registered():
    assert {"retrain", "finetune", "grad_ascent", "grad_diff", "random_label", "salun", "ssd"} <= set(METHODS.names())
    assert {"accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "relearn", "noise_floor"} <= set(METRICS.names())
