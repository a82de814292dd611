"""Defining behaviour of holdout_match: the forget losses are pulled to the holdout losses' quantiles at their ranks
(a minimum where the two distributions coincide, no pull past it), under the current model, holdout read but never
trained on."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from unlearnkit.adapters import ClassifierAdapter, get_adapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.base import method_not_applicable
from unlearnkit.objectives import MatchedLoss, batch_quantiles
from unlearnkit.objectives.base import StepContext


class Scaled(nn.Module):
    """Per-example loss = base · exp(w): one parameter moves every loss together."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))


class StubAdapter:
    def per_example_loss(self, model, batch, labels=None):
        return batch["base"] * torch.exp(model.w)


def batches(forget, holdout):
    return {"forget": {"base": torch.tensor(forget, dtype=torch.float64)}, "test": {"base": torch.tensor(holdout, dtype=torch.float64)}}


def ctx():
    return StepContext(step=0, n_steps=1, generator=torch.Generator(), adapter=StubAdapter())


def test_batch_quantiles_are_the_inverse_distribution_function_at_mid_ranks():
    values = torch.tensor([2.0, 0.5, 1.5, 1.0])
    # n = 3: p = 1/6, 1/2, 5/6 -> positions floor(p * 4) = 0, 2, 3 of the sorted values
    assert batch_quantiles(values, 3).tolist() == [0.5, 1.5, 2.0]
    assert batch_quantiles(values, 4).tolist() == [0.5, 1.0, 1.5, 2.0]  # the values themselves when n = len
    assert batch_quantiles(values, 8).tolist() == [0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 2.0, 2.0]


def test_matched_loss_hand_case_on_raw_losses():
    """Forget [0.1, 0.3, 0.2] sorted to [0.1, 0.2, 0.3] against holdout quantiles [0.5, 1.5, 2.0]: differences 0.4,
    1.3, 1.7; Huber(δ = 1) = 0.08, 0.8, 1.2; mean 0.69333."""
    loss = MatchedLoss("forget", "test", delta=1.0, scale="loss")(Scaled(), batches([0.1, 0.3, 0.2], [2.0, 0.5, 1.5, 1.0]), ctx())
    assert float(loss.value.detach()) == pytest.approx((0.08 + 0.8 + 1.2) / 3, abs=1e-12)


def test_matched_loss_on_log_losses_matches_numpy():
    forget, holdout = [0.01, 0.002, 0.3, 0.05], [0.2, 0.9, 0.04, 2.5, 0.6]
    loss = MatchedLoss("forget", "test", delta=0.5, scale="log")(Scaled(), batches(forget, holdout), ctx())
    f = np.sort(np.log(forget))
    h = np.sort(np.log(holdout))[np.floor((np.arange(4) + 0.5) * 5 / 4).astype(int)]
    d = np.abs(f - h)
    expected = np.where(d <= 0.5, 0.5 * d**2, 0.5 * (d - 0.25)).mean()
    assert float(loss.value.detach()) == pytest.approx(expected, abs=1e-12)


def test_minimum_where_the_distributions_coincide_and_the_pull_points_to_it():
    holdout = [0.2, 0.9, 0.04, 2.5]
    same = MatchedLoss("forget", "test")(Scaled(), batches([2.5, 0.04, 0.9, 0.2], holdout), ctx())
    assert float(same.value.detach()) == 0.0
    for forget, direction in (([0.002, 0.01, 0.05, 0.1], +1), ([5.0, 8.0, 30.0, 9.0], -1)):
        model = Scaled()
        MatchedLoss("forget", "test")(model, batches(forget, holdout), ctx()).value.backward()
        # descent moves w against the gradient: memorised (low) losses are raised, losses past the level lowered
        assert np.sign(-float(model.w.grad)) == direction


def test_the_holdout_is_read_without_gradient():
    """The stub's holdout losses depend on w too; the gradient is that of the forget side alone."""
    model = Scaled()
    MatchedLoss("forget", "test", delta=10.0, scale="loss")(model, batches([0.1, 0.2], [1.0, 3.0]), ctx()).value.backward()
    # value = mean(½(f_i e^w − h_i)²) at w = 0 with h fixed: d/dw = mean((f_i − h_i) f_i)
    assert float(model.w.grad) == pytest.approx(((0.1 - 1.0) * 0.1 + (0.2 - 3.0) * 0.2) / 2, abs=1e-12)


def log_losses(model, split, adapter):
    return np.log(np.maximum(torch.cat(adapter.run_split(model, split, adapter.per_example_loss)).numpy(), 1e-12))


def accuracy(model, split, adapter):
    return float(adapter.score(adapter.outputs(model, split)).mean())


def test_on_digits_the_forget_losses_move_to_the_unseen_distribution_not_past_it(random_task, random_refs, original):
    """The 1-D Wasserstein distance between the forget and test log-loss distributions (what the objective minimises,
    measured on the whole splits) shrinks under holdout_match (measured: 0.45 -> 0.23) and grows under gradient ascent
    with the same budget (2.34), which has no level to stop at."""
    adapter = ClassifierAdapter(10)

    def distance(model):
        return wasserstein_distance(log_losses(model, random_task.forget, adapter), log_losses(model, random_task.test, adapter))

    before = distance(original)
    method = build_method("holdout_match", {"epochs": 20, "lr": 3e-3})
    out = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    assert distance(out.model) < 0.75 * before
    assert accuracy(out.model, random_task.retain, adapter) > accuracy(original, random_task.retain, adapter) - 0.03
    ga = build_method("grad_ascent", {"epochs": 20, "lr": 3e-3, "optimizer": "adam"})
    assert distance(ga.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0)).model) > before


def test_on_fictitious_profiles_the_forget_answers_take_the_holdout_profiles_loss_distribution(causal_lm_task, causal_lm_refs):
    """The tiny Llama: forget answers' log-losses (length-normalised answer NLL) move to the never-trained holdout
    profiles' (measured: Wasserstein distance 2.89 -> 0.06, the retrained model's 0.20; forget mean 1.10 vs holdout
    1.11), without overshooting them and with the retain answers kept (mean retain log-loss −1.83 -> −2.09)."""
    task, refs = causal_lm_task, causal_lm_refs
    adapter = get_adapter(task)
    assert task.holdout is None  # the profiles' holdout (never-trained) profiles are the task's test split
    forget = lambda m: log_losses(m, task.forget, adapter)  # noqa: E731
    holdout = lambda m: log_losses(m, task.test, adapter)  # noqa: E731
    before = wasserstein_distance(forget(refs.original), holdout(refs.original))
    out = build_method("holdout_match", {"epochs": 20, "lr": 1e-3}).unlearn(copy.deepcopy(refs.original), task, refs, rng=np.random.default_rng(0))
    assert wasserstein_distance(forget(out.model), holdout(out.model)) < 0.1 * before
    assert forget(out.model).mean() < holdout(out.model).mean() + 0.3
    assert log_losses(out.model, task.retain, adapter).mean() < log_losses(refs.original, task.retain, adapter).mean() + 0.3


def test_refuses_whole_classes(class_task, class_refs):
    method = build_method("holdout_match")
    assert "nothing to match" in method_not_applicable(method, class_task)
    with pytest.raises(ConfigError, match="Method 'holdout_match' cannot run on this task: it matches forget losses"):
        method.unlearn(copy.deepcopy(class_refs.original), class_task, class_refs, rng=np.random.default_rng(0))


@pytest.mark.parametrize("params,message", [
    ({"delta": 0.0}, "delta"), ({"scale": "rank"}, "scale must be 'log' or 'loss'"), ({"forget_weight": 0.0}, "forget_weight must be > 0"),
    ({"retain_weight": -1.0}, "retain_weight"),
])
def test_bad_settings_are_clear_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method("holdout_match", params)
