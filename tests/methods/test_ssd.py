import copy

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.analysis.importance import fisher_diagonal
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method


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
