"""O3 (continual LM unlearning, method kind ``guard``): base weights bit-identical after two requests; request 2's
adapter orthogonal to request 1's (vs an unregularised run, recomputed with numpy); the detectors gate (forget prompts
get the adapters, retain prompts the bare model); the detector's distance against scipy; guard state stored and
reloaded; a two-request stream through the real runner; overlapping requests and bad parameters refused."""

import copy

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.data.forget import task_from_ids
from unlearnkit.errors import ConfigError
from unlearnkit.lm.guard import bare_model, is_guard, load_guard
from unlearnkit.lm.o3 import O3LM
from unlearnkit.lm.text import pad_batch
from unlearnkit.methods import build_method
from unlearnkit.methods._guards import split_prompts
from unlearnkit.objectives.orthogonal import cross_gram_norm2, orthogonality_penalty
from unlearnkit.references import References

FAST = {"epochs": 8, "batch_size": 8, "lr": 0.003}


def answer_prob(model, task, split):
    return float(np.exp(-get_adapter(task).outputs(model, split)["nll"]).mean())


@pytest.fixture(scope="module")
def second_task(profiles_source, causal_lm_task):
    """Request 2: two more profiles, from what request 1 left (the runner's method task at step 2)."""
    train = profiles_source.train
    left = train.subset(np.flatnonzero(~np.isin(train.ids, causal_lm_task.forget.ids)), train.name)
    groups = [g for g in np.unique(left.labels)][:2]
    ids = np.sort(left.ids[np.isin(left.labels, groups)])
    return task_from_ids("profiles", left, profiles_source.test, ids, forget_info={"kind": "profiles", "ids": [int(g) for g in groups]},
                         forget_label="request 2", n_classes=None, modality=profiles_source.modality, probes=profiles_source.probes)


@pytest.fixture(scope="module")
def first(causal_lm_task, causal_lm_refs):
    return build_method("o3", FAST).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(),
                                            rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def seconds(first, second_task):
    """Request 2 added to request 1's model, with the orthogonality penalty and without it (same seed)."""
    out = {}
    for name, weight in (("ortho", 5.0), ("plain", 0.0)):
        out[name] = build_method("o3", {**FAST, "ortho_weight": weight}).unlearn(copy.deepcopy(first.model), second_task, References(),
                                                                                 rng=np.random.default_rng(1))
    return out


def test_base_weights_bit_identical_and_only_the_guard_state_is_stored(causal_lm_refs, seconds):
    out = seconds["ortho"]
    model = out.model
    assert isinstance(model, O3LM) and is_guard(model) and bare_model(model) is model.inner and model.n_requests == 2
    inner, ref = model.inner.state_dict(), causal_lm_refs.original.state_dict()
    assert inner.keys() == ref.keys() and all(torch.equal(inner[k], ref[k]) for k in ref)
    assert out.changed.count() == 0 and set(out.changed) == {n for n, _ in model.named_parameters()}
    tensors, meta = model.guard_state()
    assert meta["guard"] == "o3" and not any(k.startswith("inner.") for k in tensors)
    assert {"lora_A_1_0", "lora_B_1_0", "det_mean_1", "request_ids_1"} <= set(tensors)
    assert out.info["request"] == 2 and out.info["weights"].startswith("unchanged")
    o = out.info["overhead"]  # measured: the guarded model (detectors + gated adapters) against the bare one, per token
    assert o["bare_ms_per_token"] > 0 and o["overhead_ratio"] == pytest.approx(o["guarded_ms_per_token"] / o["bare_ms_per_token"])


def test_request_two_adapter_is_orthogonal_to_request_one_unlike_an_unregularised_run(seconds):
    def numpy_cross_gram(model):  # Σ_layers ‖A_1 A_2ᵀ‖²_F, recomputed from the stored buffers with numpy
        total = 0.0
        for i in range(len(model.targets)):
            a1 = getattr(model, f"lora_A_0_{i}").double().numpy()
            a2 = getattr(model, f"lora_A_1_{i}").double().numpy()
            total += float(np.sum((a1 @ a2.T) ** 2))
        return total

    reg, plain = numpy_cross_gram(seconds["ortho"].model), numpy_cross_gram(seconds["plain"].model)
    assert seconds["ortho"].info["orthogonality"]["cross_gram_norm2"]["request_1"] == pytest.approx(reg, rel=1e-4)
    assert seconds["plain"].info["orthogonality"]["cross_gram_norm2"]["request_1"] == pytest.approx(plain, rel=1e-4)
    assert reg < 0.25 * plain, (reg, plain)
    # request 1's adapter is untouched by request 2's training
    a_before = seconds["plain"].model.lora_A_0_0
    assert torch.equal(seconds["ortho"].model.lora_A_0_0, a_before)


def test_orthogonality_penalty_hand_case():
    prev = torch.tensor([[1.0, 0.0, 0.0]])
    assert float(orthogonality_penalty([([prev], torch.tensor([[0.0, 2.0, 0.0]]))])) == 0.0  # orthogonal rows
    new = torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 5.0]], requires_grad=True)
    value = orthogonality_penalty([([prev], new), ([prev, 2 * prev], new)])
    assert float(value.detach()) == pytest.approx((9 + 1) + (9 + 1) + (36 + 4))  # (a·n)² summed over rows and earlier adapters
    assert float(cross_gram_norm2(prev, new)) == pytest.approx(10.0)
    value.backward()
    assert new.grad is not None and float(new.grad[:, 1:].abs().sum()) == 0.0  # only the shared direction is pushed


def test_detectors_gate_forget_prompts_to_the_adapters_and_retain_prompts_to_the_bare_model(causal_lm_task, causal_lm_refs, second_task,
                                                                                            seconds):
    model, original = seconds["ortho"].model, causal_lm_refs.original
    for k, task in enumerate((causal_lm_task, second_task)):  # both requests forgotten through the one model
        assert answer_prob(model, task, task.forget) < 0.6 * answer_prob(original, task, task.forget)
    retain = second_task.retain  # neither request's data
    assert answer_prob(model, second_task, retain) == pytest.approx(answer_prob(original, second_task, retain), abs=0.02)
    adapter, pad = get_adapter(causal_lm_task), causal_lm_task.forget.data.codec.pad_id
    gates = []
    for split in (causal_lm_task.forget, second_task.forget, retain):
        x, m = pad_batch(split_prompts(split), pad)
        with torch.no_grad():
            model(input_ids=x, attention_mask=m)
        gates.append(model.last_gates.numpy())
    assert gates[0][:, 0].mean() > 0.8 and gates[1][:, 1].mean() > 0.8  # each request's prompts open its own adapter
    assert gates[2].max(1).mean() < 0.2  # retain prompts mostly keep the bare model
    det = seconds["ortho"].info["detector"]
    assert {"tpr_forget_heldout", "fpr_retain_heldout", "fpr_retain", "fpr_neighbours", "threshold"} <= set(det)
    # hard gating: prompts no detector fires on generate exactly what the bare model does; forget prompts do not
    hard = copy.deepcopy(model)
    hard.gating = "hard"
    rp = split_prompts(retain)[:16]
    with torch.no_grad():
        x, m = pad_batch(rp, pad)
        hard(input_ids=x, attention_mask=m)
    silent = [p for p, g in zip(rp, hard.last_gates.numpy()) if g.max() == 0]
    assert len(silent) >= 12
    assert adapter.generate(hard, silent, max_new_tokens=8) == adapter.generate(original, silent, max_new_tokens=8)
    fp = split_prompts(causal_lm_task.forget)
    assert adapter.generate(hard, fp, max_new_tokens=8) != adapter.generate(original, fp, max_new_tokens=8)
    # force=False closes every gate: exactly the bare model's logits
    hard.force = False
    batch = next(iter(causal_lm_task.forget.batches(8)))
    with torch.no_grad():
        assert torch.equal(hard(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits,
                           original(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits)


def test_detector_distance_and_calibration_against_scipy(causal_lm_task, first):
    from scipy.spatial.distance import mahalanobis

    model = first.model
    feats = model.prompt_features_of(split_prompts(causal_lm_task.forget)[:3] + split_prompts(causal_lm_task.retain)[:3],
                                     pad_id=causal_lm_task.forget.data.codec.pad_id)
    mean, prec = model.det_mean_0.double().numpy(), model.det_precision_0.double().numpy()
    a, b = model.det_calibration_0.tolist()
    want = 1 / (1 + np.exp(-(a * np.array([mahalanobis(f, mean, prec) for f in feats]) + b)))
    got = model.probabilities(torch.as_tensor(feats, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    assert a < 0  # farther from the forget prompts = less in-distribution


def test_guard_state_reloads_to_the_same_outputs(causal_lm_task, causal_lm_refs, seconds):
    model = seconds["ortho"].model
    tensors, meta = model.guard_state()
    again = load_guard(copy.deepcopy(causal_lm_refs.original), tensors, meta)
    assert isinstance(again, O3LM) and again.n_requests == 2
    batch = next(iter(causal_lm_task.retain.batches(8)))
    with torch.no_grad():
        x = model(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
        y = again(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(x, y, atol=1e-6)


def test_an_overlapping_request_is_refused_naming_the_ids(causal_lm_task, first):
    with pytest.raises(ConfigError, match=r"overlaps request 1 .*ids \[") as err:
        build_method("o3", FAST).unlearn(copy.deepcopy(first.model), causal_lm_task, References(), rng=np.random.default_rng(0))
    assert str(int(causal_lm_task.forget.ids[0])) in str(err.value) and "profiles/groups" in str(err.value)


def test_settings_must_match_the_earlier_requests(second_task, first):
    with pytest.raises(ConfigError, match="rank"):
        build_method("o3", {**FAST, "rank": 4}).unlearn(copy.deepcopy(first.model), second_task, References(), rng=np.random.default_rng(0))


@pytest.mark.parametrize("params, match", [
    ({"ortho_weight": -1.0}, "ortho_weight"), ({"retain_weight": -0.5}, "retain_weight"), ({"forget_weight": 0.0}, "forget_weight"),
    ({"threshold": 0.0}, "between 0 and 1"), ({"threshold": 1.0}, "between 0 and 1"), ({"threshold": 1.5}, "between 0 and 1"),
    ({"rank": 0}, "rank"), ({"gating": "sometimes"}, "gating"), ({"loss": "kl"}, "loss"), ({"holdout_fraction": 1.0}, "holdout_fraction"),
    ({"beta": 0.0}, "beta"), ({"targets": []}, "targets"), ({"latency_tokens": 0}, "latency_tokens"),
])
def test_bad_parameters_are_refused(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("o3", params)


def test_unknown_target_layers_are_refused(causal_lm_task, causal_lm_refs):
    with pytest.raises(ConfigError, match="no linear layer named"):
        build_method("o3", {**FAST, "targets": ["nope_proj"]}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(),
                                                                       rng=np.random.default_rng(0))


@pytest.mark.slow
def test_two_request_stream_through_the_runner(tmp_path):
    """Two profile requests in order through ``run_experiment``: O3's second step starts from its first step's model (one
    adapter per request) and both steps score the forget answers below the original's."""
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs import Store
    from unlearnkit.runs.runner import run_experiment

    spec = {"name": "o3_stream", "dataset": {"name": "profiles", "params": {"scale": "tiny"}},
            "requests": [{"kind": "profiles", "fraction": 0.1}, {"kind": "profiles", "fraction": 0.1}],
            "model": {"name": "tiny_llama"},
            "train": {"epochs": 30, "batch_size": 16, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
            "references": {"retrain_seeds": 2}, "methods": [{"name": "o3", "params": FAST}],
            "metrics": ["answer_prob"], "seeds": [0]}
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    assert record["status"] == "complete" and not record["failures"], record["failures"]
    chain = record["stream"]["runs"]["o3"]["0"]
    assert len(chain) == 2
    for k, (run_id, task_rec) in enumerate(zip(chain, record["tasks"])):
        run, original = store.load_run(run_id), store.load_run(task_rec["original_run"])
        assert run["model"]["guard"] == "o3" and run["unlearn_info"]["request"] == k + 1
        assert run["results"]["answer_prob"]["values"]["forget"] < original["results"]["answer_prob"]["values"]["forget"]
