import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError, EmptySelection
from unlearnkit.selectors import AllParameters, ByName, BySaliency, RMUParameters, forget_gradient


def test_by_name(original, random_task):
    m = ByName(include=("head.*",))(original, random_task, adapter=None, rng=np.random.default_rng(0))
    assert all(bool(m[n].all()) == n.startswith("head") for n in m)
    with pytest.raises(EmptySelection):
        ByName(include=("nothing*",))(original, random_task, adapter=None, rng=np.random.default_rng(0))


def test_all(original, random_task):
    assert AllParameters()(original, random_task, adapter=None, rng=np.random.default_rng(0)).fraction() == 1.0


def test_saliency_is_top_fraction_of_abs_signed_gradient_sum(original, random_task):
    adapter = ClassifierAdapter(10)
    mask = BySaliency(0.3)(original, random_task, adapter=adapter, rng=np.random.default_rng(0))
    assert abs(mask.fraction() - 0.3) < 1e-3
    grads = forget_gradient(original, random_task, adapter, "cpu")
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    sel = torch.cat([mask[n].flatten() for n in grads])
    assert flat[sel].min() >= flat[~sel].max()  # every selected coordinate is at least as salient as any other


def test_saliency_uses_signed_sum_not_sum_of_abs(original, random_task):
    """|Σ∇| differs from Σ|∇|: gradients that cancel across batches are not salient."""
    adapter = ClassifierAdapter(10)
    grads = forget_gradient(original, random_task, adapter, "cpu", batch_size=random_task.forget.__len__())
    grads_small = forget_gradient(original, random_task, adapter, "cpu", batch_size=8)
    for n in grads:
        assert torch.allclose(grads[n], grads_small[n], atol=1e-5)  # summed loss: the batching does not matter


def test_saliency_fraction_validated():
    with pytest.raises(ConfigError):
        BySaliency(0.0)


def test_rmu_parameters_refuses_an_unknown_module():
    assert RMUParameters(layer=0, module="down_proj").module == "down_proj"
    with pytest.raises(ConfigError, match=r"rmu_parameters: module must be one of \['down_proj', 'mlp'\], got 'attn'"):
        RMUParameters(layer=0, module="attn")
