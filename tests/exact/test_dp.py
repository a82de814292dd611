"""DP2Unlearning on digits: the accountant's certificate, deletion as a restart from the stored DP base (checked against
an independent fine-tune), the group-privacy arithmetic on hand cases, bad inputs refused before training, and a tiny
Llama trained with DP-SGD and served through the same wrapper."""

from __future__ import annotations

import copy
import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("opacus")

from tests.conftest import HIDDEN, LM_CONFIG, REF_CONFIG, state_equal, tiny_llama_factory  # noqa: E402
from unlearnkit.adapters import get_adapter  # noqa: E402
from unlearnkit.errors import ConfigError, EmptySelection  # noqa: E402
from unlearnkit.exact import DPModel  # noqa: E402
from unlearnkit.exact.dp import RDP_ALPHAS, check_privacy, default_delta, group_privacy, train_private  # noqa: E402
from unlearnkit.methods import build_method  # noqa: E402
from unlearnkit.models import build_model  # noqa: E402
from unlearnkit.references import References  # noqa: E402
from unlearnkit.train import train_model  # noqa: E402

FAST = {"dp_epochs": 4, "finetune_epochs": 3}  # ~100 DP steps and ~60 fine-tune steps on digits: well under a second each


@pytest.fixture(scope="module")
def refs(digits):
    return References(train_config=REF_CONFIG, model_factory=lambda: build_model("mlp", digits.input_shape, digits.n_classes, hidden=HIDDEN))


@pytest.fixture(scope="module")
def served(random_task, refs):
    return build_method("dp2unlearning", {**FAST, "epsilon": 4.0}).build(random_task, refs, seed=7, device="cpu", progress=False)


def test_accountant_epsilon_is_within_target_and_recomputes_independently(served, random_task):
    from opacus.accountants import RDPAccountant

    a = served.account
    n = len(random_task.train)
    assert a.n == n and a.delta == default_delta(n) == 1e-5  # n = 1348: 1/n^1.1 ≈ 3.6e-4 > 1e-5
    assert 0 < a.epsilon <= a.epsilon_target == 4.0 and a.epsilon > 3.9  # the noise search stops within 0.01 below the target
    assert a.sample_rate == 1 / math.ceil(n / REF_CONFIG.batch_size) and a.steps == math.ceil(4 * math.ceil(n / REF_CONFIG.batch_size))
    assert a.max_grad_norm == 1.0 and a.noise_multiplier > 0 and a.accountant == "rdp" and a.secure_mode is False
    # an accountant of our own, fed the recorded mechanism, certifies the recorded epsilon; less noise would spend more
    acc = RDPAccountant()
    acc.history = [(a.noise_multiplier, a.sample_rate, a.steps)]
    assert acc.get_epsilon(delta=a.delta, alphas=list(RDP_ALPHAS)) == pytest.approx(a.epsilon, rel=1e-9)
    acc.history = [(0.9 * a.noise_multiplier, a.sample_rate, a.steps)]
    assert acc.get_epsilon(delta=a.delta, alphas=list(RDP_ALPHAS)) > a.epsilon_target
    d = served.describe()
    assert (d["epsilon"], d["delta"], d["accountant"], d["guarantee"]) == (a.epsilon, a.delta, "rdp", "certified_dp")
    assert served.training_info["dp_train"]["steps"] == a.steps


def test_prv_accountant_needs_less_noise_for_the_same_budget(random_task, refs, served):
    split = random_task.train
    recipe = dataclasses.replace(REF_CONFIG, epochs=4.0)
    _, account, _ = train_private(refs.fresh_model(7, by="test"), split, recipe, epsilon=4.0, delta=1e-5, max_grad_norm=1.0,
                                  accountant="prv", adapter=get_adapter(random_task), seed=7)
    assert account.accountant == "prv" and 3.9 < account.epsilon <= 4.0 and account.steps == served.account.steps
    assert account.noise_multiplier < served.account.noise_multiplier  # PRV's ε is tighter than RDP's bound


def test_served_model_is_a_plain_module_of_the_original_architecture(served, refs):
    fresh = refs.model_factory()
    inner = served.model
    assert type(inner) is type(fresh) and inner.state_dict().keys() == fresh.state_dict().keys()
    assert not any(k.startswith("_module.") for k in served.state_dict())
    assert all(not hasattr(p, "grad_sample") for p in inner.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in inner.modules())  # Opacus's hooks are gone
    x = torch.randn(3, 64)
    assert torch.equal(served(x), inner(x)) and served.features(x).shape == (3, HIDDEN[-1])


def test_deletions_restart_from_the_dp_base(random_task, refs):
    """Two deletions in a row: each time the served model is the DP base fine-tuned on what remains, computed here from
    the base's weights, the remaining split and the fine-tune seed; the DP base never changes and DP-SGD is not rerun."""
    served = build_method("dp2unlearning", FAST).build(random_task, refs, seed=3, device="cpu", progress=False)
    base = copy.deepcopy(served.base_model())
    adapter = get_adapter(random_task)
    assert served.finetune.epochs == 3.0 and served.finetune.lr == REF_CONFIG.lr

    def independent(remaining_ids):
        split = random_task.train.subset(np.flatnonzero(np.isin(random_task.train.ids, remaining_ids)))  # in training order
        model, _, result = train_model(copy.deepcopy(base), split, served.finetune, adapter=adapter, seed=served.finetune_seed)
        return model, result

    before, _ = independent(random_task.train.ids)
    assert state_equal(served.model, before)  # serving = the same restart, on all the data
    first = random_task.forget.ids[:7]
    receipt = served.delete(first)
    expected, result = independent(np.setdiff1d(random_task.train.ids, first))
    assert state_equal(served.model, expected)
    assert not state_equal(served.model, before)
    assert receipt.cost.optimizer_steps == result.steps and receipt.cost.example_passes == result.example_passes
    assert receipt.touched["restarted_from"] == "dp_base" and receipt.touched["finetuned_on"] == len(random_task.train) - 7
    second = random_task.forget.ids[7:]
    served.delete(second)
    expected, _ = independent(random_task.retain.ids)
    assert state_equal(served.model, expected)
    assert state_equal(served.base_model(), base)
    assert served.describe()["deleted"] == len(random_task.forget)


def test_same_seed_same_models_other_seed_other_noise(random_task, refs, served):
    method = build_method("dp2unlearning", {**FAST, "epsilon": 4.0})
    again = method.build(random_task, refs, seed=7, device="cpu", progress=False)
    assert state_equal(again.base_model(), served.base_model()) and state_equal(again, served)
    other = method.build(random_task, refs, seed=8, device="cpu", progress=False)
    assert not state_equal(other.base_model(), served.base_model())


def test_group_privacy_hand_cases():
    assert group_privacy(1.0, 1e-5, 0) == (0.0, 0.0)
    assert group_privacy(1.0, 1e-5, 1) == (1.0, 1e-5)
    eps, delta = group_privacy(1.0, 1e-5, 2)  # (2ε, 2·e^ε·δ)
    assert eps == 2.0 and delta == pytest.approx(5.43656365691809e-05, rel=1e-12)
    eps, delta = group_privacy(0.5, 1e-6, 3)  # (1.5, 3·e^1·1e-6)
    assert eps == 1.5 and delta == pytest.approx(8.154845485377136e-06, rel=1e-12)
    assert group_privacy(8.0, 1e-5, 10) == (80.0, 1.0)  # 10·e^72·1e-5 > 1: capped, the bound says nothing
    assert group_privacy(8.0, 1e-5, 10_000) == (80_000.0, 1.0)  # no overflow
    with pytest.raises(ConfigError, match="whole number >= 0"):
        group_privacy(1.0, 1e-5, -1)


def test_describe_and_receipt_carry_the_group_guarantee(served):
    model = copy.deepcopy(served)
    receipt = model.delete(model.live_ids()[:2])
    eps = model.account.epsilon
    d = model.describe()
    assert d["deleted"] == 2 and d["group_epsilon"] == pytest.approx(2 * eps)
    assert d["group_delta"] == pytest.approx(2 * math.exp(eps) * model.account.delta)
    assert receipt.touched["group"] == {"k": 2, "epsilon": d["group_epsilon"], "delta": d["group_delta"]}
    assert receipt.guarantee == "certified_dp"


@pytest.mark.parametrize("params, match", [
    ({"epsilon": 0.0}, "epsilon must be a finite number > 0"),
    ({"epsilon": -1.0}, "epsilon must be a finite number > 0"),
    ({"epsilon": float("inf")}, "epsilon must be a finite number > 0"),
    ({"epsilon": float("nan")}, "epsilon must be a finite number > 0"),
    ({"delta": 0.0}, "delta must lie strictly between 0 and 1"),
    ({"delta": 1.0}, "delta must lie strictly between 0 and 1"),
    ({"delta": -1e-6}, "delta must lie strictly between 0 and 1"),
    ({"max_grad_norm": 0.0}, "max_grad_norm .* must be a finite number > 0"),
    ({"max_grad_norm": -2.0}, "max_grad_norm .* must be a finite number > 0"),
    ({"accountant": "gauss"}, "accountant must be one of"),
    ({"dp_epochs": 0}, "dp_epochs must be a finite number > 0"),
    ({"finetune_epochs": -1}, "finetune_epochs must be a finite number > 0"),
    ({"dp_batch_size": 0}, "dp_batch_size must be a whole number >= 1"),
])
def test_bad_parameters_are_refused_when_the_method_is_built(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("dp2unlearning", params)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_delta_not_below_one_over_n_is_refused_before_training(random_task, refs):
    calls = []
    counting = References(train_config=REF_CONFIG, model_factory=lambda: calls.append(1) or refs.model_factory())
    n = len(random_task.train)
    with pytest.raises(ConfigError, match=rf"delta=0.001 is not below 1/n = 1/{n}"):
        build_method("dp2unlearning", {"delta": 1e-3}).build(random_task, counting, seed=0, device="cpu", progress=False)
    assert not calls  # refused before a model was even built
    assert check_privacy(1.0, None, 1.0, n=n) == 1e-5 and check_privacy(1.0, None, 1.0, n=10**6) == pytest.approx(10**-6.6)
    with pytest.raises(ConfigError, match="no noise level reaches epsilon"):  # a budget no noise can meet in this many steps
        train_private(refs.model_factory(), random_task.train.subset(np.arange(8)), REF_CONFIG, epsilon=1e-3, delta=1e-5,
                      max_grad_norm=1.0, accountant="rdp", adapter=get_adapter(random_task), seed=0)


def test_deleting_everything_left_is_refused_and_changes_nothing(served):
    model = copy.deepcopy(served)
    model.delete(model.live_ids()[:-3])
    weights = copy.deepcopy(model.model.state_dict())
    with pytest.raises(EmptySelection, match="no live data would remain"):
        model.delete(model.live_ids())
    assert len(model.live_ids()) == 3 and all(torch.equal(v, model.model.state_dict()[k]) for k, v in weights.items())


def test_batch_norm_models_are_refused_with_the_reason(random_task):
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 10))
    with pytest.raises(ConfigError, match="Opacus cannot train this model.*BatchNorm"):
        train_private(net, random_task.train, REF_CONFIG, epsilon=1.0, delta=1e-5, max_grad_norm=1.0, accountant="rdp",
                      adapter=get_adapter(random_task), seed=0)


def test_core_imports_without_opacus_and_the_method_says_how_to_install_it(random_task, refs, monkeypatch):
    code = ("import sys; sys.modules['opacus'] = None; import unlearnkit, unlearnkit.methods, unlearnkit.exact.dp; "
            "from unlearnkit.methods import build_method; build_method('dp2unlearning', {}); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(ConfigError, match=r"pip install 'unlearnkit\[dp\]'"):
        build_method("dp2unlearning", FAST).build(random_task, refs, seed=0, device="cpu", progress=False)


def test_tiny_llama_trains_with_dp_sgd_and_deletes(causal_lm_task, profiles_source):
    """Opacus computes per-example gradients of the tiny Llama (embeddings, attention, RMSNorm): the LM is served through
    the same wrapper, and a deletion is the same restart from its DP base."""
    refs = References(train_config=LM_CONFIG, model_factory=tiny_llama_factory(profiles_source))
    out = build_method("dp2unlearning", {"dp_epochs": 1, "finetune_epochs": 1}).unlearn(
        refs.fresh_model(0, by="test"), causal_lm_task, refs, rng=np.random.default_rng(0))
    assert isinstance(out.model, DPModel) and 0 < out.info["regime"]["epsilon"] <= 8.0
    assert out.info["receipt"]["touched"]["finetuned_on"] == len(causal_lm_task.retain)
    adapter = get_adapter(causal_lm_task)
    adapter.check(out.model, causal_lm_task)  # vocabulary, context and logits come through the wrapper
    assert np.isfinite(adapter.outputs(out.model, causal_lm_task.forget)["nll"]).all()
