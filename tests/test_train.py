import copy
import math

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError, DivergenceError
from unlearnkit.objectives import NLL, Ascent, weighted
from unlearnkit.train import Loss, TrainConfig, fit
from unlearnkit.types import Mask

from tests.conftest import state_equal

ADAPTER = ClassifierAdapter(10)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_masked_parameters_stay_bit_identical(original, random_task, optimizer):
    """Weight decay and momentum/Adam state must not move masked-out coordinates (the SalUn #32 bug)."""
    before = copy.deepcopy(original)
    mask = Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.3 for n, p in original.named_parameters()})
    cfg = TrainConfig(steps=25, batch_size=32, optimizer=optimizer, lr=0.05, weight_decay=0.1, momentum=0.9)
    fit(original, NLL("retain"), {"retain": random_task.retain}, cfg, adapter=ADAPTER, rng=np.random.default_rng(0), mask=mask)
    moved = 0
    for (n, p), (_, q) in zip(original.named_parameters(), before.named_parameters()):
        assert torch.equal(p[~mask[n]], q[~mask[n]]), f"{n}: masked-out coordinates moved"
        moved += int((p[mask[n]] != q[mask[n]]).sum())
    assert moved > 0


def test_fully_masked_parameter_is_frozen_and_restored(original, random_task):
    before = copy.deepcopy(original)
    mask = Mask({n: torch.full_like(p, n.startswith("head"), dtype=torch.bool) for n, p in original.named_parameters()})
    fit(original, NLL("retain"), {"retain": random_task.retain}, TrainConfig(steps=5, weight_decay=0.5), adapter=ADAPTER,
        rng=np.random.default_rng(0), mask=mask)
    for (n, p), (_, q) in zip(original.named_parameters(), before.named_parameters()):
        assert torch.equal(p, q) != n.startswith("head")
        assert p.requires_grad  # requires_grad is restored after training


def test_same_seed_same_result(original, random_task):
    other = copy.deepcopy(original)
    cfg = TrainConfig(steps=10, batch_size=16, lr=0.01)
    for m in (original, other):
        fit(m, NLL("retain"), {"retain": random_task.retain}, cfg, adapter=ADAPTER, rng=np.random.default_rng(7))
    assert state_equal(original, other)


def test_dropout_training_is_a_function_of_the_seed_alone(random_task):
    """Dropout masks come from torch's global RNG: fit seeds it from ``rng`` (whatever state the caller left it in, e.g. a
    fresh process) and restores the caller's state afterwards."""
    from unlearnkit.models import build_model
    from unlearnkit.seeding import torch_seed

    def train(seed: int, global_seed: int) -> torch.nn.Module:
        with torch_seed(0):
            model = build_model("mlp", (64,), 10, hidden=(32,), dropout=0.5)
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        fit(model, NLL("retain"), {"retain": random_task.retain}, TrainConfig(steps=8, batch_size=32, lr=0.1), adapter=ADAPTER,
            rng=np.random.default_rng(seed))
        assert torch.equal(torch.get_rng_state(), before)  # the caller's global RNG is untouched
        assert model.training  # fit restores the mode it was given
        return model

    a, b = train(seed=3, global_seed=123), train(seed=3, global_seed=456)
    assert state_equal(a, b)
    assert not torch.equal(a.head.weight, train(seed=4, global_seed=123).head.weight)


def test_frozen_batchnorm_layers_keep_their_running_statistics():
    """Training only the head of a CNN must not move the frozen body's BatchNorm statistics (its outputs would change
    although no parameter did); with the whole model training they update as usual."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.models import build_model
    from unlearnkit.seeding import torch_seed

    src = load_dataset("digits", flatten=False)
    task = make_task("digits", src.train, src.test, ForgetSpec("random", fraction=0.1), np.random.default_rng(0), n_classes=10)
    with torch_seed(0):
        model = build_model("small_cnn", src.input_shape, 10, width=8, hidden=16)
    start = {n: b.clone() for n, b in model.named_buffers()}
    head_only = Mask({n: torch.full(p.shape, n.startswith("head."), dtype=torch.bool) for n, p in model.named_parameters()})
    cfg = TrainConfig(steps=5, batch_size=32, lr=0.1)
    fit(model, NLL("retain"), {"retain": task.retain}, cfg, adapter=ADAPTER, rng=np.random.default_rng(0), mask=head_only)
    assert all(torch.equal(b, start[n]) for n, b in model.named_buffers())
    assert model.training and all(m.training for m in model.modules())  # the modes are restored afterwards
    fit(model, NLL("retain"), {"retain": task.retain}, cfg, adapter=ADAPTER, rng=np.random.default_rng(0))
    assert any(not torch.equal(b, start[n]) for n, b in model.named_buffers() if b.is_floating_point())


def test_budget_in_epochs_and_steps(original, random_task):
    r = fit(original, NLL("retain"), {"retain": random_task.retain}, TrainConfig(epochs=2, batch_size=100), adapter=ADAPTER,
            rng=np.random.default_rng(0))
    assert r.steps == 2 * math.ceil(len(random_task.retain) / 100)
    r = fit(original, NLL("retain"), {"retain": random_task.retain}, TrainConfig(steps=3), adapter=ADAPTER, rng=np.random.default_rng(0))
    assert r.steps == 3 and r.example_passes == 3 * 128
    ends = [h["elapsed"] for h in r.history]
    assert ends == sorted(ends) and 0 < ends[-1] <= r.seconds
    assert r.to_json()["seconds_per_step"] == round((ends[2] - ends[0]) / 2, 4)


def test_steady_step_time_leaves_out_the_first_step():
    from unlearnkit.train import TrainResult

    slow_first = TrainResult(3, 0, 9.0, [{"loss": 0.0, "elapsed": e} for e in (5.0, 5.5, 6.5)])
    assert slow_first.seconds_per_step == 0.75
    assert TrainResult(1, 0, 1.0, [{"loss": 0.0, "elapsed": 1.0}]).seconds_per_step is None


def test_divergence_guard_restores_last_good_weights(original, random_task):
    """Gradient ascent with a huge learning rate explodes; the guard stops and restores finite weights."""
    cfg = TrainConfig(steps=200, batch_size=64, lr=50.0)
    result = fit(original, Ascent("forget"), {"forget": random_task.forget}, cfg, adapter=ADAPTER, rng=np.random.default_rng(0))
    assert result.stopped is not None and result.stopped.startswith("diverged")
    assert all(torch.isfinite(p).all() for p in original.parameters())
    assert all(p.grad is None for p in original.parameters())  # the diverging step's gradient is not left behind


def test_nan_loss_raises_when_asked(original, random_task):
    def nan_objective(model, batch, ctx):
        value = ctx.adapter.per_example_loss(model, batch["retain"]).mean()
        return Loss(value * float("nan"))

    nan_objective.streams = ("retain",)
    before = copy.deepcopy(original)
    with pytest.raises(DivergenceError, match="non-finite"):
        fit(original, nan_objective, {"retain": random_task.retain}, TrainConfig(steps=3), adapter=ADAPTER,
            rng=np.random.default_rng(0), on_divergence="raise")
    assert state_equal(original, before)  # nothing half-updated


def test_zero_weight_objective_changes_nothing(original, random_task):
    before = copy.deepcopy(original)
    fit(original, weighted((0.0, Ascent("forget"))), {"forget": random_task.forget}, TrainConfig(steps=5, lr=1.0),
        adapter=ADAPTER, rng=np.random.default_rng(0))
    assert state_equal(original, before)


def test_config_errors():
    with pytest.raises(ConfigError, match="optimizer must be one of.*Did you mean: adam"):
        TrainConfig(optimizer="adma")
    with pytest.raises(ConfigError, match="Unknown parameter 'epoch' for train. Did you mean: epochs"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="lr must be"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"train.epochs: expected a number, got 'many'"):
        TrainConfig.from_dict({"epochs": "many"})
    assert TrainConfig.from_dict({"lr": "1e-3", "epochs": 2}).lr == 1e-3  # YAML reads 1e-3 as a string


def test_missing_stream_is_an_error(original, random_task):
    with pytest.raises(ConfigError, match=r"needs data streams \['forget'\]"):
        fit(original, Ascent("forget"), {"retain": random_task.retain}, TrainConfig(steps=1), adapter=ADAPTER, rng=np.random.default_rng(0))


def test_guard_restores_the_last_good_step_not_the_start(original, random_task):
    """The restored weights are those of the last step whose loss was finite and within the limit,
    so a method that diverges late keeps its progress (and the record says which step)."""
    import re

    start = copy.deepcopy(original)
    cfg = TrainConfig(steps=500, batch_size=64, lr=0.05)
    result = fit(original, Ascent("forget"), {"forget": random_task.forget}, cfg, adapter=ADAPTER, rng=np.random.default_rng(0),
                 loss_limit=50.0)
    assert result.stopped is not None
    restored = int(re.search(r"restored the weights of step (\d+)", result.stopped).group(1))
    assert restored == result.history[-1]["step"] > 0  # the last step whose loss passed the guard
    assert len(result.history) < 500 and not state_equal(original, start)
    assert all(torch.isfinite(p).all() for p in original.parameters())


def test_callback_string_stops_early_and_keeps_the_weights(original, random_task):
    """A callback that returns a reason ends training after that step; the weights are the trained ones (no restore)."""
    seen = []

    def stop_after_three(step, model):
        seen.append(step)
        return "enough" if step == 2 else None

    other = copy.deepcopy(original)
    cfg = TrainConfig(steps=10, batch_size=16, lr=0.01)
    r = fit(original, NLL("retain"), {"retain": random_task.retain}, cfg, adapter=ADAPTER, rng=np.random.default_rng(7), callback=stop_after_three)
    assert r.steps == 3 and r.stopped == "enough" and seen == [0, 1, 2]
    fit(other, NLL("retain"), {"retain": random_task.retain}, TrainConfig(steps=3, batch_size=16, lr=0.01), adapter=ADAPTER,
        rng=np.random.default_rng(7))
    assert state_equal(original, other)  # exactly the first three steps of the same run


def test_divergence_snapshot_copies_only_what_training_can_change(original):
    """The last-good-weights snapshot holds the trainable parameters and the buffers, never the frozen parameters
    (a LoRA model would otherwise carry a second copy of its base weights)."""
    from unlearnkit.train import Snapshot

    params = list(original.parameters())
    trainable = params[-2:]
    snap = Snapshot(original, trainable)
    buffers = sum(b.numel() for b in original.buffers())
    assert sum(t.numel() for t in snap.saved) == sum(p.numel() for p in trainable) + buffers
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    snap.restore()
    assert all(torch.equal(p, b) for p, b in zip(trainable, before[-2:]))  # restored
    assert all(torch.equal(p, b + 1.0) for p, b in zip(params[:-2], before[:-2]))  # frozen ones are not its business
    with torch.no_grad():
        trainable[0].fill_(float("nan"))
    assert not snap.finite()


def test_a_weighted_sum_backpropagates_one_term_at_a_time(original, random_task):
    """``loss_and_gradient`` on a weighted sum gives the sum's loss and gradient (bit for bit: each parameter's gradient
    is the same two contributions added once) while only one term's saved activations are alive at a time."""
    import weakref

    from unlearnkit.train import StepContext, loss_and_gradient

    batch = {s: next(iter(getattr(random_task, s).batches(64))) for s in ("forget", "retain")}
    objective = weighted((1.0, Ascent("forget")), (2.5, NLL("retain")))
    ctx = StepContext(0, 1, torch.Generator().manual_seed(0), ADAPTER)
    alive = peak = 0

    def pack(t: torch.Tensor):  # count the bytes autograd holds for backward, released when the graph is freed
        nonlocal alive, peak

        class Held:
            pass

        held = Held()
        held.t, size = t, t.numel() * t.element_size()
        alive += size
        peak = max(peak, alive)

        def release() -> None:
            nonlocal alive
            alive -= size

        weakref.finalize(held, release)
        return held

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda held: held.t):
        original.zero_grad(set_to_none=True)
        total = objective(original, batch, ctx)
        total.value.backward()
        del total
        summed = {n: p.grad.clone() for n, p in original.named_parameters()}
        peak_summed, peak = peak, 0
        original.zero_grad(set_to_none=True)
        loss, has_grad = loss_and_gradient(objective, original, batch, ctx)
        each = {n: p.grad.clone() for n, p in original.named_parameters()}
        peak_each, peak = peak, 0
        singles = []
        for _, term in objective.terms:
            term(original, batch, ctx).value.backward()
            singles.append(peak)
            peak = 0
    assert has_grad and not loss.value.requires_grad
    assert float(loss.value) == float(objective(original, batch, ctx).value)
    assert all(torch.equal(each[n], summed[n]) for n in summed)
    assert peak_each == max(singles) < peak_summed == sum(singles)
