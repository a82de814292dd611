import copy

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.ssd import dampen, fisher_diagonal


def test_dampen_formula_hand_computed():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0])
    imp_forget = torch.tensor([1.0, 5.0, 20.0, 100.0])
    imp_full = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = theta.clone()
    sel = dampen({"w": out}, {"w": imp_forget}, {"w": imp_full}, alpha=4.0, lam=2.0)["w"]
    # selected where I_f > 4·I_D: coords 1, 2, 3; beta = min(2·1/I_f, 1) -> 0.4, 0.1, 0.02
    assert sel.tolist() == [False, True, True, True]
    assert torch.allclose(out, torch.tensor([1.0, 2.0 * 0.4, 3.0 * 0.1, 4.0 * 0.02]))


def test_dampen_never_grows_a_parameter():
    theta = torch.tensor([1.0, -1.0])
    out = theta.clone()
    dampen({"w": out}, {"w": torch.tensor([3.0, 3.0])}, {"w": torch.tensor([1.0, 1.0])}, alpha=1.0, lam=10.0)  # λ·I_D/I_f > 1
    assert torch.equal(out, theta)


def test_ssd_only_dampens_above_threshold(random_task, random_refs, original):
    """Parameters whose forget importance is at most alpha × global importance stay bit-identical;
    the others shrink in magnitude by exactly min(λ·I_D/I_f, 1)."""
    alpha, lam = 2.0, 0.5
    before = copy.deepcopy(original)
    adapter = ClassifierAdapter(10)
    imp_d = fisher_diagonal(before, random_task.train, adapter, "cpu", 128)
    imp_f = fisher_diagonal(before, random_task.forget, adapter, "cpu", 128)
    out = build_method("ssd", {"alpha": alpha, "lambda_": lam}).unlearn(original, random_task, random_refs, rng=np.random.default_rng(0))
    n_sel = 0
    for (n, p), (_, q) in zip(out.model.named_parameters(), before.named_parameters()):
        sel = imp_f[n] > alpha * imp_d[n]
        assert torch.equal(sel, out.changed[n])
        assert torch.equal(p[~sel], q[~sel])
        beta = torch.clamp(lam * imp_d[n] / imp_f[n], max=1.0)
        assert torch.allclose(p[sel], (beta * q)[sel])
        n_sel += int(sel.sum())
    assert n_sel > 0


def test_ssd_is_deterministic_and_gradient_free(random_task, random_refs, original):
    from unlearnkit.cost import CostMeter

    a = copy.deepcopy(original)
    with CostMeter() as meter:
        build_method("ssd").unlearn(a, random_task, random_refs, rng=np.random.default_rng(0))
    assert meter.steps == 0 and meter.passes == len(random_task.train) + len(random_task.forget)
    b = build_method("ssd").unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(99))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.model.parameters()))


def test_ssd_params_validated():
    with pytest.raises(ConfigError, match="alpha and lambda_ must be positive"):
        build_method("ssd", {"alpha": 0})
