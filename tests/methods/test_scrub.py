"""scrub: max-passes away from the teacher on the forget set, distillation toward it on the retain set."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import state_equal
from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.scrub import teacher_logits
from unlearnkit.objectives.classifier import DistillWithLabels, distill_kl
from unlearnkit.objectives import NLL, KLToReference, ReferenceLogits, weighted
from unlearnkit.train import StepContext, TrainConfig, fit

ADAPTER = ClassifierAdapter(10)
SHORT = {"epochs": 2, "steps": 20, "batch_size": 32}


def mean_kl(teacher, student, split, temperature=1.0) -> float:
    """KL(teacher ‖ student) averaged over a split, from full outputs (independent of the method's tables)."""
    t = torch.as_tensor(ADAPTER.outputs(teacher, split)["logits"]) / temperature
    s = torch.as_tensor(ADAPTER.outputs(student, split)["logits"]) / temperature
    return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean"))


def accuracy(model, split) -> float:
    return float((ADAPTER.outputs(model, split)["logits"].argmax(1) == split.labels).mean())


def test_distill_kl_hand_computed():
    logits = torch.tensor([[0.0, 0.0]])
    reference = torch.tensor([[2.0 * np.log(3.0), 0.0]])  # at T = 2: teacher (3/4, 1/4), student (1/2, 1/2)
    expected = 4.0 * (0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5))  # T²·KL
    assert float(distill_kl(logits, reference, 2.0)) == pytest.approx(expected, rel=1e-6)
    assert float(distill_kl(reference, reference, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_min_objective_equals_shared_nll_plus_kl(random_task, original):
    """One forward for both terms gives the value and gradient of weighted(γ·NLL, α·KLToReference)."""
    teacher = copy.deepcopy(original)
    with torch.no_grad():
        for p in original.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    table = teacher_logits(teacher, random_task, ADAPTER, "cpu")
    batch = {"retain": next(random_task.retain.batches(64))}
    ctx = StepContext(0, 1, torch.Generator(), ADAPTER, {"reference_logits": table})
    fused = DistillWithLabels(gamma=0.7, alpha=0.4, temperature=3.0)(original, batch, ctx)
    fused.value.backward()
    fused_grads = [p.grad.clone() for p in original.parameters()]
    original.zero_grad()
    shared = weighted((0.7, NLL("retain")), (0.4, KLToReference("retain", 3.0)))(original, batch, ctx)
    shared.value.backward()
    assert fused.value.item() == pytest.approx(shared.value.item(), rel=1e-6)
    assert fused.parts["kl_retain"] > 1e-3  # the perturbed student differs from its teacher
    for g, p in zip(fused_grads, original.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-7)


def test_without_max_passes_it_is_plain_distillation(random_task, random_refs, original):
    """max_epochs=0: exactly one fit() per epoch of γ·CE + α·KL on the retain set, at each epoch's learning rate,
    with the teacher table built independently from the original's outputs."""
    method = build_method("scrub", {**SHORT, "max_epochs": 0, "schedule": "linear", "lr": 1e-3})
    out = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(7))
    forget, retain = ADAPTER.outputs(original, random_task.forget), ADAPTER.outputs(original, random_task.retain)
    table = ReferenceLogits(np.concatenate([random_task.forget.ids, random_task.retain.ids]),
                            torch.as_tensor(np.concatenate([forget["logits"], retain["logits"]])))
    ref = copy.deepcopy(original)
    rng = np.random.default_rng(7)
    objective = DistillWithLabels(gamma=1.0, alpha=0.5, temperature=2.0)
    for lr in (1e-3, 5e-4):  # the linear schedule per epoch: lr × (1 − e/2)
        config = TrainConfig(steps=20, batch_size=32, optimizer="adam", lr=lr, schedule="constant")
        fit(ref, objective, {"retain": random_task.retain, "forget": random_task.forget}, config, adapter=ADAPTER, rng=rng,
            epoch_stream="retain", extra={"reference_logits": table})
    assert state_equal(out.model, ref)
    assert [p["phase"] for p in out.info["phases"]] == ["min", "min"]


def test_forgets_a_class_while_keeping_the_retain_set(class_task, class_refs):
    """After SCRUB the student is far from the teacher on the forget set and close to it on retain;
    the max-passes are what does it (the same run without them stays close everywhere)."""
    teacher = class_refs.original
    scrub = build_method("scrub", SHORT).unlearn(copy.deepcopy(teacher), class_task, class_refs, rng=np.random.default_rng(0))
    distilled = build_method("scrub", {**SHORT, "max_epochs": 0}).unlearn(
        copy.deepcopy(teacher), class_task, class_refs, rng=np.random.default_rng(0))
    assert "warning" not in scrub.info
    kl_forget, kl_retain = mean_kl(teacher, scrub.model, class_task.forget), mean_kl(teacher, scrub.model, class_task.retain)
    assert kl_forget > 1.0 and kl_retain < 0.1 and kl_forget > 20 * kl_retain
    assert kl_forget > 100 * mean_kl(teacher, distilled.model, class_task.forget)
    assert accuracy(teacher, class_task.forget) > 0.95 and accuracy(scrub.model, class_task.forget) < 0.2
    assert accuracy(scrub.model, class_task.retain) > accuracy(teacher, class_task.retain) - 0.02


def test_teacher_is_never_run_during_training(random_task, random_refs, original):
    """Every forward of the model, or of any copy of it (deepcopy copies hooks), is counted: the teacher's outputs
    take one pass over forget and retain up front, then each training step runs the student exactly once."""
    calls = []
    original.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    out = build_method("scrub", {"epochs": 2, "steps": 5, "batch_size": 32}).unlearn(
        original, random_task, random_refs, rng=np.random.default_rng(0))
    n_forget, n_retain = len(random_task.forget), len(random_task.retain)
    upfront = 1 + math.ceil(n_forget / 1024) + math.ceil(n_retain / 1024)  # adapter.check, then the teacher's outputs
    assert out.info["steps"] == 2 * (5 + 5)
    assert len(calls) == upfront + out.info["steps"]
    assert sum(calls[:upfront]) == 2 + n_forget + n_retain


def test_restrict_to_trains_only_the_selection_in_every_phase(random_task, random_refs, original):
    """restrict_to holds for the max- and the min-passes alike: parameters outside the selection stay bit-identical."""
    params = {**SHORT, "restrict_to": {"name": "by_name", "params": {"include": ["head.*"]}}}
    out = build_method("scrub", params).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    assert [p["phase"] for p in out.info["phases"]] == ["max", "min", "max", "min"]
    for (name, p), (_, q) in zip(out.model.named_parameters(), original.named_parameters()):
        assert bool(out.changed[name].all()) == name.startswith("head.")
        assert torch.equal(p, q) != name.startswith("head."), name
    free = build_method("scrub", SHORT).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    assert not torch.equal(free.model.body[1].weight, original.body[1].weight)


def test_stop_at_holdout_counts_steps_over_the_phases_and_ends_the_schedule(random_task, random_refs, original):
    """The rule checks every 4 steps counted across the passes (3 steps each): its first check is the min-pass's first
    step, global step 3 (counted per pass, no check would ever come). It fires there, and no later pass runs."""
    params = {"epochs": 3, "steps": 3, "batch_size": 32, "lr": 3e-3, "stop_at": "holdout", "stop_check_every": 4}
    out = build_method("scrub", params).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    rule, phases = out.info["early_stop"], out.info["phases"]
    assert [(p["phase"], p["steps"]) for p in phases] == [("max", 3), ("min", 1)] and out.info["steps"] == 4
    assert [s for s, _ in rule["trace"]] == [3] and rule["fired"] == phases[-1]["stopped"] and "warning" not in out.info


def test_params_validated():
    with pytest.raises(ConfigError, match="epochs must be a whole number"):
        build_method("scrub", {"epochs": 2.5})
    with pytest.raises(ConfigError, match="max_epochs"):
        build_method("scrub", {"epochs": 2, "max_epochs": 3})
    with pytest.raises(ConfigError, match="temperature"):
        build_method("scrub", {"temperature": 0})
    with pytest.raises(ConfigError, match="gamma and alpha are both 0"):
        build_method("scrub", {"gamma": 0, "alpha": 0})
