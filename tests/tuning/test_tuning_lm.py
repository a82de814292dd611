"""Tuning a language-model method: the method's own causal-LM search space (not its classifier one), a validation forget
set of other profiles drawn from the retain profiles, and no trial ever touching a real forget item."""

import numpy as np
import pytest

from unlearnkit.errors import ConfigError
from unlearnkit.experiment import Experiment
from unlearnkit.registry import METHODS
from unlearnkit.runs.store import Store
from unlearnkit.searchspace import FloatRange, check_space, declared_space
from unlearnkit.tuning import Tuner

LM_SPEC = {
    "name": "tune-lm",
    "dataset": {"name": "profiles", "params": {"scale": "tiny", "tokenizer": "word"}},
    "forget": [{"kind": "profiles", "fraction": 0.1}],
    "model": {"name": "tiny_llama"},
    "train": {"epochs": 20, "batch_size": 16, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    "references": {"retrain_seeds": 2},
    "methods": [{"name": "npo", "params": {"batch_size": 8}}],
    "metrics": ["answer_prob", "truth_ratio", "noise_floor"],
    "seeds": [0],
}
LM_METHODS = ("grad_ascent", "grad_diff", "finetune", "npo", "simnpo", "idk_po", "rmu", "flat", "ihl")


def quiet(**kw):
    return {"device": "cpu", "progress": False, "log": lambda m: None, **kw}


@pytest.mark.parametrize("name", LM_METHODS)
def test_every_gradient_lm_recipe_declares_a_valid_lm_space(name):
    cls = METHODS.get(name)
    space = check_space(cls, declared_space(cls, "causal_lm"), name)
    assert {"lr", "epochs"} <= set(space)
    assert space["lr"].log and space["lr"].high <= 1e-2  # adapter / small-LM rates, not the classifiers' 0.1
    if cls.search_space is not None:  # a recipe for both: the classifier space stays the classifiers'
        assert declared_space(cls, "classifier") is cls.search_space != cls.lm_search_space


def test_the_tuner_takes_the_space_of_the_tasks_modality(tmp_path):
    store = Store(tmp_path / "store")
    tuner = Tuner(Experiment.from_dict({**LM_SPEC, "methods": ["grad_diff"]}), store, "grad_diff", trials=1, **quiet())
    assert tuner.space_declared and tuner.space["lr"] == FloatRange(1e-5, 1e-2, log=True) and "retain_weight" in tuner.space
    with pytest.raises(ConfigError, match=r"'ssd' declares no search space for 'causal_lm' tasks.*'npo'"):
        Tuner(Experiment.from_dict(LM_SPEC), store, "ssd", **quiet())


def test_lm_trials_never_touch_the_real_forget_profiles(tmp_path, touched):
    """Two npo trials on tiny profiles (tiny Llama, ~20 s): the validation forget profiles are other people, drawn from the
    retain profiles; no split any trial or validation reference iterates over holds a real forget item, and the chosen
    setting's evaluation on the real task does."""
    tuner = Tuner(Experiment.from_dict(LM_SPEC), Store(tmp_path / "store"), "npo", trials=2, **quiet())
    spec = tuner.exp.forget[0]
    vtask, vrefs, real = tuner.validation(spec)
    assert vtask.modality == "causal_lm" and len(vtask.forget) > 0
    assert not np.isin(real.forget.ids, vtask.train.ids).any()
    study = tuner.search(spec, vtask, vrefs)
    seen = np.unique(np.concatenate(touched))
    assert len(study["trials"]) == 2 and set(study["space"]) == {"lr", "epochs", "beta", "retain_weight"}
    assert all(t["state"] == "complete" and np.isfinite(t["band_distance"]) and t["example_passes"] > 0 for t in study["trials"])
    assert study["chosen"] is not None and study["validation"]["n_forget"] == len(real.forget)  # same fraction of profiles
    assert not np.isin(real.forget.ids, seen).any()
    touched.clear()
    tuner.evaluate_chosen(spec, study)
    assert np.isin(real.forget.ids, np.unique(np.concatenate(touched))).all()
