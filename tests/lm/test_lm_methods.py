"""Language-model unlearning methods: the behaviour that defines each one (NPO bounded where gradient ascent is not,
cached = live reference, SimNPO reference-free, IdkPO prefers "I don't know", RMU's layer-local steering, FLAT never
reads retain data, the inverted hinge on hand-made probabilities, FILA leaves the output unchanged, SAM equals a
hand-computed step), the divergence guard under exploding gradient ascent, and that every method forgets on the
tiny fictitious-profile task."""

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from tests.conftest import state_equal
from unlearnkit.adapters import ClassifierAdapter, get_adapter
from unlearnkit.data.profiles import variant
from unlearnkit.errors import ConfigError, EmptySelection
from unlearnkit.methods import Setup, build_method
from unlearnkit.models import build_model
from unlearnkit.models.causal_lm import adapt, decoder_layers
from unlearnkit.objectives import NLL, ReferenceLogits
from unlearnkit.objectives.lm import (
    NPO,
    NPO_REFERENCE,
    RMU_DIRECTION,
    flat_loss,
    inverted_hinge,
    layer_activations,
    masked_activation_mse,
    npo_loss,
    simnpo_loss,
)
from unlearnkit.references import References
from unlearnkit.train import StepContext, TrainConfig, fit
from unlearnkit.types import Mask, Split

FAST = {"steps": 10, "lr": 1e-3}  # the tiny model forgets visibly in 10 steps at this lr


@pytest.fixture
def target(causal_lm_refs):
    return copy.deepcopy(causal_lm_refs.original)


def forget_prob(model, task, split=None):
    """Mean length-normalised answer probability exp(−NLL̄) on the forget set (or ``split``)."""
    return float(np.exp(-get_adapter(task).outputs(model, split or task.forget)["nll"]).mean())


def run(name, params, model, task):
    return build_method(name, params).unlearn(model, task, References(), rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------ shared methods
@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff"])
def test_shared_gradient_methods_work_on_causal_lm(name, causal_lm_task, target):
    from unlearnkit import METHODS

    assert METHODS.get(name).modalities == ("classifier", "causal_lm")  # classifier first: its defaults and runs unchanged
    before = forget_prob(target, causal_lm_task)
    run(name, {**FAST, "optimizer": "adamw", "batch_size": 8}, target, causal_lm_task)
    assert forget_prob(target, causal_lm_task) < 0.7 * before


def test_gradient_ascent_nan_stops_and_restores_last_good_weights(causal_lm_task, target):
    """The issue's case: gradient ascent at a huge lr drives the loss to −inf/NaN; the guard stops and restores the
    weights of the last step whose loss was finite (whole-forget-set batches, so that loss can be recomputed)."""
    out = run("grad_ascent", {"steps": 200, "lr": 50.0, "batch_size": 64}, target, causal_lm_task)
    assert out.info["warning"].startswith("diverged")
    assert all(torch.isfinite(p).all() for p in out.model.parameters())
    o = get_adapter(causal_lm_task).outputs(out.model, causal_lm_task.forget)
    nll = float((o["nll"] * o["n_tokens"]).sum() / o["n_tokens"].sum())  # grad_ascent's default: the token mean
    assert math.isclose(-nll, out.info["train"]["final_loss"], rel_tol=1e-4, abs_tol=1e-4)


# ------------------------------------------------------------------------------------------------ NPO
def test_npo_loss_is_bounded_where_gradient_ascent_is_not():
    ref = torch.zeros(4)
    gaps = torch.tensor([0.0, -10.0, -100.0, -1e4])
    npo = [float(npo_loss(ref + g, ref, beta=0.1)) for g in gaps]
    assert npo[0] == pytest.approx(2 / 0.1 * math.log(2))  # (2/β)·log 2 at the start
    assert all(a > b >= 0 for a, b in itertools.pairwise(npo)) and npo[-1] < 1e-6  # → 0 from above
    ga = [float(-(-(ref + g)).mean()) for g in gaps]  # GA's loss −NLL = log π: unbounded below
    assert ga[-1] == -1e4


def test_npo_gradient_tends_to_gradient_ascent_as_beta_vanishes(causal_lm_task, target):
    """∇L_NPO = mean_i 2σ(β·Δ_i)·∇log π_i → ∇ mean log π (ascent on the summed NLL) as β → 0, even away from π_ref."""
    adapter = get_adapter(causal_lm_task)
    batch = next(causal_lm_task.forget.batches(12))
    with torch.no_grad():
        logp = adapter.sequence_logprob(target, batch)[0]
    offsets = torch.linspace(-30.0, 30.0, len(logp))  # a reference far from the model, both sides
    table = ReferenceLogits(causal_lm_task.forget.ids, logp + offsets)

    def grad(objective):
        target.zero_grad()
        objective().backward()
        return torch.cat([p.grad.flatten() for p in target.parameters()])

    ctx = StepContext(0, 1, torch.Generator(), adapter, {NPO_REFERENCE: table})
    ga = grad(lambda: adapter.sequence_logprob(target, batch)[0].mean())  # gradient ascent on the summed NLL: minimise log π
    cos = torch.nn.functional.cosine_similarity
    small = grad(lambda: NPO("forget", beta=1e-4)(target, {"forget": batch}, ctx).value)
    large = grad(lambda: NPO("forget", beta=1.0)(target, {"forget": batch}, ctx).value)
    assert float(cos(small, ga, dim=0)) > 0.9999 and float((small - ga).norm() / ga.norm()) < 1e-3
    assert float(cos(large, ga, dim=0)) < 0.99  # a finite β re-weights the examples


def test_npo_cached_and_live_reference_agree(causal_lm_task, target):
    params = {"steps": 6, "lr": 1e-3}
    live_model = copy.deepcopy(target)
    cached = run("npo", params, target, causal_lm_task)
    live = run("npo", {**params, "reference": "live"}, live_model, causal_lm_task)
    assert cached.info["reference"] == "cached" and live.info["reference"] == "live"
    assert cached.info["train"]["final_loss"] == pytest.approx(live.info["train"]["final_loss"], rel=1e-4, abs=1e-5)
    for p, q in zip(cached.model.parameters(), live.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_idk_po_cached_and_live_reference_agree(causal_lm_task, target):
    params = {"steps": 4, "lr": 1e-3}
    live_model = copy.deepcopy(target)
    a = run("idk_po", params, target, causal_lm_task)
    b = run("idk_po", {**params, "reference": "live"}, live_model, causal_lm_task)
    assert a.info["train"]["final_loss"] == pytest.approx(b.info["train"]["final_loss"], rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------------------------------------ SimNPO
def test_simnpo_is_reference_free_and_bounded(causal_lm_task):
    method = build_method("simnpo")
    assert method.prepare(None, causal_lm_task, Setup(None, None, np.random.default_rng(0))) == ({}, {})  # nothing computed before training
    nll = torch.tensor([0.5, 2.0])
    beta, delta = 2.5, 0.3
    hand = float(-(2 / beta) * torch.nn.functional.logsigmoid(beta * (nll - delta)).mean())
    assert float(simnpo_loss(nll, beta, delta)) == pytest.approx(hand)
    assert 0 <= float(simnpo_loss(torch.tensor([1e4]), beta, delta)) < 1e-6


# ------------------------------------------------------------------------------------------------ IdkPO
def test_idk_po_prefers_i_dont_know(causal_lm_task, target):
    idk = variant(causal_lm_task.forget, "idk", 0)
    adapter = get_adapter(causal_lm_task)

    def margin(m):  # mean token log p(IDK) − log p(true answer) on the forget questions
        return float((adapter.outputs(m, causal_lm_task.forget)["nll"] - adapter.outputs(m, idk)["nll"]).mean())

    before = margin(target)
    run("idk_po", FAST, target, causal_lm_task)
    assert margin(target) > before + 2.0


# ------------------------------------------------------------------------------------------------ RMU
def test_rmu_trains_only_the_chosen_mlp_weights_and_steers_forget_activations(causal_lm_task, target):
    before = copy.deepcopy(target)
    method = build_method("rmu", {**FAST, "retain_weight": 10.0})
    out = method.unlearn(target, causal_lm_task, References(), rng=np.random.default_rng(0))
    layer = out.info["layer"]
    assert layer == len(decoder_layers(target)) // 2 and out.info["trainable_layers"] == list(range(max(0, layer - 2), layer + 1))
    for (n, p), (_, q) in zip(target.named_parameters(), before.named_parameters()):
        chosen = ".mlp." in n and any(f"layers.{i}." in n for i in out.info["trainable_layers"])
        assert bool(out.changed[n].all()) == chosen and bool(out.changed[n].any()) == chosen, n
        assert torch.equal(p, q) != chosen, n

    extra, _ = method.prepare(before, causal_lm_task, Setup(None, get_adapter(causal_lm_task), np.random.default_rng(0)))
    batch = next(causal_lm_task.forget.batches(12))
    mask = batch["labels"] != -100

    def distance(m):
        with torch.no_grad():
            h = layer_activations(m, batch, layer)
            return float(masked_activation_mse(h, (method.steering_coeff * extra[RMU_DIRECTION]).expand(h.shape), mask))

    assert distance(target) < 0.9 * distance(before)


def test_restrict_to_trains_only_the_selected_layers_and_backward_stops_there(causal_lm_task, target):
    before = copy.deepcopy(target)
    got_grad = set()
    hooks = [p.register_hook(lambda g, n=n: got_grad.add(n)) for n, p in target.named_parameters() if p.requires_grad]
    spec = {"name": "decoder_layers", "params": {"layers": [-1]}}
    out = run("npo", {**FAST, "restrict_to": spec}, target, causal_lm_task)
    for h in hooks:
        h.remove()
    top = f"layers.{len(decoder_layers(target)) - 1}."
    assert any(top in n for n in got_grad)
    for (n, p), (_, q) in zip(target.named_parameters(), before.named_parameters()):
        chosen = top in n
        assert bool(out.changed[n].all()) == chosen and bool(out.changed[n].any()) == chosen, n
        assert torch.equal(p, q) != chosen, n
        assert (n in got_grad) == chosen, n  # frozen, not merely masked: no gradient is computed below the top block
    assert forget_prob(target, causal_lm_task) < forget_prob(before, causal_lm_task)

    # intersected with the recipe's own selector (RMU: the MLP of its layers)
    rmu = copy.deepcopy(before)
    run("rmu", {"steps": 2, "lr": 1e-3, "layer": 0, "restrict_to": {"name": "by_name", "params": {"include": ["*down_proj*"]}}}, rmu, causal_lm_task)
    assert [n for n, p in rmu.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])] == ["model.layers.0.mlp.down_proj.weight"]
    with pytest.raises(EmptySelection, match="rmu's parameter selection selected no parameters"):
        run("rmu", {"steps": 1, "layer": 0, "restrict_to": {"name": "decoder_layers", "params": {"layers": [1]}}}, copy.deepcopy(before), causal_lm_task)
    with pytest.raises(ConfigError, match="Unknown key 'selector' in npo: restrict_to"):  # the experiment file's component parser
        build_method("npo", {"restrict_to": {"selector": "decoder_layers"}})
    with pytest.raises(ConfigError, match="Unknown parameter 'layer' for npo: restrict_to 'decoder_layers'"):
        build_method("npo", {"restrict_to": {"name": "decoder_layers", "params": {"layer": 1}}})


def test_rmu_layer_and_module_choice(causal_lm_task, target):
    before = copy.deepcopy(target)
    out = run("rmu", {"steps": 2, "lr": 1e-3, "layer": 0, "module": "down_proj"}, target, causal_lm_task)
    assert out.info["trainable_layers"] == [0]
    changed = [n for n, p in target.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert changed == ["model.layers.0.mlp.down_proj.weight"]
    with pytest.raises(ConfigError, match="out of range"):
        run("rmu", {"steps": 1, "layer": 7}, copy.deepcopy(before), causal_lm_task)


def test_adaptive_rmu_targets_beta_times_each_tokens_start_norm(causal_lm_task, target):
    """Adaptive RMU: the forget target of every answer token is β·‖h_start‖·u. At the start model the loss equals the
    hand-computed mean over answer tokens of mean_d (h − β‖h‖u)², and training moves the activations toward it."""
    from unlearnkit.objectives.lm import RMU_FORGET_NORMS, RMUForget

    beta = 3.0
    method = build_method("rmu", {**FAST, "retain_weight": 10.0, "adaptive": True, "steering_coeff": beta})
    before = copy.deepcopy(target)
    adapter = get_adapter(causal_lm_task)
    extra, info = method.prepare(before, causal_lm_task, Setup(None, adapter, np.random.default_rng(0)))
    layer = info["layer"]
    batch = next(causal_lm_task.forget.batches(12))
    mask = batch["labels"] != -100
    with torch.no_grad():
        h = layer_activations(before, batch, layer)
    u = extra[RMU_DIRECTION]
    norms = h.norm(dim=-1, keepdim=True)
    per_token = (h - beta * norms * u).square().mean(-1)
    expected = float(((per_token * mask).sum(1) / mask.sum(1)).mean())
    assert info["mean_forget_norm"] == pytest.approx(float(norms[..., 0][mask].mean()), rel=1e-4)
    assert info["mean_target_norm"] == pytest.approx(beta * info["mean_forget_norm"])
    assert torch.allclose(extra[RMU_FORGET_NORMS].lookup(batch["ids"])[:, : h.shape[1]][mask], norms[..., 0][mask], rtol=1e-5)
    ctx = StepContext(0, 1, torch.Generator(), adapter, extra)
    with torch.no_grad():
        value = float(RMUForget(layer, beta, "forget", adaptive=True)(before, {"forget": batch}, ctx).value)
    assert value == pytest.approx(expected, rel=1e-4)
    fixed = float(RMUForget(layer, beta, "forget")(before, {"forget": batch}, ctx).value)
    assert abs(fixed - value) > 0.1 * value  # a fixed c = β is a different target

    out = method.unlearn(target, causal_lm_task, References(), rng=np.random.default_rng(0))
    with torch.no_grad():
        after = float(RMUForget(layer, beta, "forget", adaptive=True)(out.model, {"forget": batch}, ctx).value)
    assert after < 0.9 * value


# ------------------------------------------------------------------------------------------------ FLAT
class _Untouchable:
    """Data whose examples cannot be read: any batch or subset raises."""

    def __init__(self, data):
        self.n, self.fingerprint = len(data), data.fingerprint
        self.attention_mask = data.attention_mask  # sequence lengths only (the adapter checks they fit the context)

    def __len__(self):
        return self.n

    def take(self, positions):
        raise AssertionError("the retain data was read")

    def subset(self, positions):
        raise AssertionError("the retain data was read")


def test_flat_never_reads_retain_data(causal_lm_task, target, monkeypatch):
    """Neither preparation nor training touches a retain example (the adapter's up-front model check, which runs two
    retain examples through the model for every method, is switched off here)."""
    from unlearnkit.adapters.causal_lm import CausalLMAdapter

    monkeypatch.setattr(CausalLMAdapter, "check", lambda self, model, task, device="cpu": None)
    r = causal_lm_task.retain
    sealed = Split(r.name, _Untouchable(r.data), r.ids, r.fingerprint)
    task = dataclasses.replace(causal_lm_task, retain=sealed)
    idk = variant(causal_lm_task.forget, "idk", 0)
    p_forget, p_idk = forget_prob(target, task), forget_prob(target, task, idk)
    out = run("flat", {"steps": 6, "lr": 1e-3}, target, task)
    assert out.info["train"]["steps"] == 6
    # the forget answer falls, relative to the template answer too (which the tiny model never saw: p ≈ 1e-3, where
    # the probability-space gradient of FLAT's template term nearly vanishes)
    assert forget_prob(target, task) < 0.5 * p_forget
    assert forget_prob(target, task, idk) / forget_prob(target, task) > 2 * p_idk / p_forget


@pytest.mark.parametrize("divergence, hand", [
    ("tv", lambda t, f: -0.5 * math.tanh(t) + 0.5 * math.tanh(f)),
    ("kl", lambda t, f: -t + math.exp(f - 1)),
    ("js", lambda t, f: -(math.log(2) - math.log1p(math.exp(-t))) + math.log1p(math.exp(f)) - math.log(2)),
    ("pearson", lambda t, f: -t + f * f / 4 + f),
])
def test_flat_loss_per_divergence(divergence, hand):
    p_t, p_f = torch.tensor([0.1, 0.3]), torch.tensor([0.9, 0.7])
    assert float(flat_loss(p_t, p_f, divergence)) == pytest.approx(hand(0.2, 0.8), rel=1e-6)
    # lower with a more likely template answer and a less likely forget answer
    assert float(flat_loss(p_t + 0.5, p_f - 0.5, divergence)) < float(flat_loss(p_t, p_f, divergence))
    with pytest.raises(ConfigError, match="divergence"):
        build_method("flat", {"divergence": "hellinger"})


# ------------------------------------------------------------------------------------------------ IHL / FILA
def test_inverted_hinge_on_hand_made_probabilities():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    values = inverted_hinge(logits.expand(3, 3), torch.tensor([0, 1, 2]))
    assert values.tolist() == pytest.approx([1 + 0.5 - 0.3, 1 + 0.3 - 0.5, 1 + 0.2 - 0.5])
    sure = inverted_hinge(torch.tensor([[20.0, 0.0, 0.0]]), torch.tensor([0]))  # the memorised token: loss near 2
    assert float(sure) == pytest.approx(2.0, abs=1e-6)


def test_fila_initialises_lora_without_changing_the_output(causal_lm_task, target):
    lora = adapt(target, lora_r=4, lora_alpha=8.0)
    batch = next(causal_lm_task.forget.batches(12))
    with torch.no_grad():
        start = lora(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
    adapter = get_adapter(causal_lm_task)
    method = build_method("ihl", {"fila": True, "steps": 3, "lr": 1e-3})
    _, info = method.prepare(lora, causal_lm_task, Setup(None, adapter, np.random.default_rng(0)))
    assert info["fila_layers"] == 2 * 7  # q, k, v, o, gate, up, down in both layers
    b_weights = [p for n, p in lora.named_parameters() if "lora_B" in n]
    assert all(bool(p.abs().sum() > 0) for p in b_weights)  # PEFT starts B at zero; FILA fills it
    with torch.no_grad():
        after = lora(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(after, start, atol=1e-4)


def test_fila_keeps_the_output_of_a_lora_fine_tuned_model(causal_lm_task, target):
    """A target fine-tuned through its LoRA adapters (B != 0): FILA folds that adapter in, it does not drop it."""
    lora = adapt(target, lora_r=4, lora_alpha=8.0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
    batch = next(causal_lm_task.forget.batches(12))
    with torch.no_grad():
        start = lora(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
        with lora.disable_adapter():
            base_only = lora(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(start, base_only, atol=1e-2)  # the adapter matters
    build_method("ihl", {"fila": True}).prepare(lora, causal_lm_task, Setup(None, get_adapter(causal_lm_task), np.random.default_rng(0)))
    with torch.no_grad():
        after = lora(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(after, start, atol=1e-4)


def test_fila_cannot_be_restricted_to_some_layers():
    with pytest.raises(ConfigError, match="cannot be combined with restrict_to"):
        build_method("ihl", {"fila": True, "restrict_to": {"name": "decoder_layers", "params": {"layers": [-1]}}})


def test_fila_without_lora_is_a_clear_error(causal_lm_task, target):
    with pytest.raises(ConfigError, match="fila=true initialises LoRA adapters, but the model has none"):
        run("ihl", {"fila": True, "steps": 1}, target, causal_lm_task)


# ------------------------------------------------------------------------------------------------ SAM
def test_sam_with_zero_radius_is_the_inner_method(causal_lm_task, target):
    params = {"steps": 4, "lr": 1e-3}
    other = copy.deepcopy(target)
    a = run("npo", params, target, causal_lm_task)
    b = run("sam", {"method": "npo", "params": params, "rho": 0.0}, other, causal_lm_task)
    assert state_equal(a.model, b.model) and b.info["inner"] == {"method": "npo", "version": "2"}
    assert "sam_rho" not in TrainConfig().to_dict() and TrainConfig(sam_rho=0.05).to_dict()["sam_rho"] == 0.05


def test_sam_step_equals_hand_computed_step(random_task):
    """One SGD step with SAM and a mask: ε = ρ·(m⊙g)/‖m⊙g‖, θ' = θ − η·m⊙∇L(θ + ε), masked-out coordinates fixed."""
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10, hidden=(8,))
    data = random_task.retain.subset(np.arange(40))
    mask = Mask({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)) < 0.5 for n, p in model.named_parameters()})
    adapter = ClassifierAdapter(10)
    rho, lr = 0.5, 0.3
    batch = next(data.batches(40))
    start = copy.deepcopy(model)

    def grads(m):
        m.zero_grad()
        adapter.per_example_loss(m, batch).mean().backward()
        return {n: p.grad * mask[n] for n, p in m.named_parameters()}

    g = grads(start)
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    probe = copy.deepcopy(start)
    with torch.no_grad():
        for n, p in probe.named_parameters():
            p.add_(rho * g[n] / norm)
    g2 = grads(probe)
    cfg = TrainConfig(steps=1, batch_size=40, optimizer="sgd", momentum=0.0, lr=lr, sam_rho=rho)
    fit(model, NLL("retain"), {"retain": data}, cfg, adapter=adapter, rng=np.random.default_rng(0), mask=mask)
    for (n, p), (_, q) in zip(model.named_parameters(), start.named_parameters()):
        assert torch.allclose(p, q - lr * g2[n], atol=1e-6), n
        assert torch.equal(p[~mask[n]], q[~mask[n]]), n
    plain = copy.deepcopy(start)  # and it differs from the plain step
    fit(plain, NLL("retain"), {"retain": data}, dataclasses.replace(cfg, sam_rho=0.0), adapter=adapter, rng=np.random.default_rng(0), mask=mask)
    assert not state_equal(plain, model)


def test_sam_keeps_the_divergence_guard(causal_lm_task, target):
    out = run("sam", {"method": "grad_ascent", "params": {"steps": 100, "lr": 50.0, "batch_size": 64}, "rho": 0.05}, target, causal_lm_task)
    assert out.info["warning"].startswith("diverged")
    assert all(torch.isfinite(p).all() for p in out.model.parameters())


def test_sam_refuses_what_it_cannot_wrap():
    with pytest.raises(ConfigError, match="rho"):
        build_method("sam", {"rho": -1.0})
    with pytest.raises(ConfigError, match="cannot be sam"):
        build_method("sam", {"method": "sam"})
    with pytest.raises(ConfigError, match="Unknown parameter 'bta'"):
        build_method("sam", {"params": {"bta": 0.1}})


# ------------------------------------------------------------------------------------------------ all of them forget
@pytest.mark.parametrize("name, params", [
    ("npo", FAST), ("simnpo", FAST), ("idk_po", FAST), ("rmu", {**FAST, "retain_weight": 10.0}), ("flat", FAST), ("ihl", FAST),
    ("sam", {"method": "npo", "params": FAST, "rho": 0.05}),
])
def test_each_method_lowers_the_forget_answer_probability(name, params, causal_lm_task, target):
    """... and, except FLAT (no retain term), the forget answers' more than the retain answers' (relative to the start)."""
    retain = causal_lm_task.retain
    before, retain_before = forget_prob(target, causal_lm_task), forget_prob(target, causal_lm_task, retain)
    out = run(name, params, target, causal_lm_task)
    assert "warning" not in out.info
    kept, retained = forget_prob(target, causal_lm_task) / before, forget_prob(target, causal_lm_task, retain) / retain_before
    assert kept < 0.8
    if name != "flat":
        assert kept < retained


def test_sam_is_skipped_where_its_inner_method_cannot_run(random_task):
    from unlearnkit.methods import build_method
    from unlearnkit.methods.base import method_not_applicable

    assert "inner method 'npo'" in method_not_applicable(build_method("sam"), random_task)
    assert method_not_applicable(build_method("sam", {"method": "grad_diff"}), random_task) is None
