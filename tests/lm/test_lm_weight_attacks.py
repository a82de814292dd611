"""Weight-level attacks on language models: the round-to-nearest quantiser checked by hand (values on the grid, error at
most half a step), the soft prompt's loss against the adapter's on the same tokens, the profile attribute labels, and
on the tiny-Llama fixture that each attack separates the target from the retrained model, that the backdoored method
looks forgotten to answer_prob while the soft prompt brings its answers back, and the bad inputs named."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, TaskError
from unlearnkit.evaluation import EvalContext, build_metric, not_applicable
from unlearnkit.evaluation.lm_hidden_probe import attribute_labels
from unlearnkit.evaluation.quantisation import quantise_rtn, quantised_copy
from unlearnkit.evaluation.soft_prompt import prompted_nll
from unlearnkit.lm.profiles import PROFESSIONS
from unlearnkit.lm.trigger import prefix_batch, prefixed
from unlearnkit.methods import build_method
from unlearnkit.types import Split


# ------------------------------------------------------------------------------------------------ quantiser, by hand
@pytest.mark.parametrize("bits", [4, 8])
def test_quantised_weights_lie_on_each_groups_grid_within_half_a_step(bits):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 32, generator=g)
    w[2, 8:16] = 0.25  # a constant group stays as it is
    q = quantise_rtn(w, bits, 8)
    groups, qg = w.reshape(6, 4, 8).double(), q.reshape(6, 4, 8).double()
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = (hi - lo) / (2**bits - 1)
    k = torch.where(step > 0, (qg - lo) / torch.where(step > 0, step, torch.ones_like(step)), torch.zeros_like(qg))
    assert torch.allclose(k, k.round(), atol=1e-3) and k.min() >= -1e-4 and k.max() <= 2**bits - 1 + 1e-4
    assert ((qg - groups).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(q[2, 8:16], w[2, 8:16])
    assert torch.equal(q.reshape(6, 4, 8).amin(-1), w.reshape(6, 4, 8).amin(-1))  # the extremes are grid points
    for row in qg.reshape(-1, 8):
        assert len(torch.unique(row)) <= 2**bits


def test_a_hand_computed_4_bit_group():
    w = torch.tensor([[0.0, 1.0, 2.0, 15.0, 7.4, 7.6, 3.49, 3.51]])  # range 15, 4 bits: step 1, grid 0..15
    assert quantise_rtn(w, 4, 8).tolist() == [[0.0, 1.0, 2.0, 15.0, 7.0, 8.0, 3.0, 4.0]]
    w2 = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])  # range 3, 8 bits: step 3/255
    expect = -1.0 + np.round((np.array([-1.0, 0.0, 0.5, 2.0]) + 1) / (3 / 255)) * (3 / 255)
    assert np.allclose(quantise_rtn(w2, 8, 4).numpy()[0], expect, atol=1e-6)


def test_the_quantised_copy_converts_linear_layers_but_not_the_head_and_leaves_the_model(causal_lm_refs):
    model = causal_lm_refs.original
    before = copy.deepcopy(model.state_dict())
    q = quantised_copy(model, 4, 64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    qs = q.state_dict()
    assert torch.equal(qs["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(qs["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(qs[name], before[name]) and torch.equal(qs[name], quantise_rtn(before[name], 4, 64))


def test_quantisation_bad_input():
    with pytest.raises(ConfigError, match="bits"):
        build_metric("quantisation", {"bits": [3]})
    with pytest.raises(ConfigError, match="bits"):
        quantise_rtn(torch.zeros(2, 8), 2, 4)
    with pytest.raises(ConfigError, match="group_size"):
        build_metric("quantisation", {"group_size": 0})
    with pytest.raises(ConfigError, match="does not divide"):
        quantise_rtn(torch.zeros(2, 8), 4, 3)
    assert build_metric("quantisation", {"bits": [4]}).bits == (4,)


def test_a_group_size_that_does_not_divide_a_layer_is_refused_naming_it(causal_lm_task, causal_lm_refs):
    ctx = EvalContext(causal_lm_task, get_adapter(causal_lm_task))
    with pytest.raises(ConfigError, match=r"group_size 48 does not divide the inputs of .*q_proj \(64 inputs\)"):
        build_metric("quantisation", {"group_size": 48}).compute(causal_lm_refs.original, causal_lm_task, causal_lm_refs, ctx)


# ------------------------------------------------------------------------------------------------ soft prompt
def test_the_prompted_loss_is_the_adapters_loss_with_the_prompt_tokens_in_front(causal_lm_task, causal_lm_refs):
    model = causal_lm_refs.original.eval()
    adapter = get_adapter(causal_lm_task)
    batch = causal_lm_task.forget.data.take(torch.arange(5))
    tokens = [7, 3]
    prefix = model.get_input_embeddings().weight[tokens].detach()
    with torch.no_grad():
        ours = prompted_nll(model, prefix, batch)
        theirs = adapter.per_example_loss(model, prefix_batch(batch, tokens))
    assert torch.allclose(ours, theirs, atol=1e-5)
    split = Split.create("p", prefixed(causal_lm_task.forget.data, tokens), causal_lm_task.forget.ids)
    assert np.allclose(adapter.outputs(model, split)["nll"][:5], theirs.numpy(), atol=1e-5)


def test_soft_prompt_bad_input():
    for key in ("steps", "n_tokens", "batch_size"):
        with pytest.raises(ConfigError, match=f"{key} must be an integer >= 1"):
            build_metric("soft_prompt", {key: 0})
    with pytest.raises(ConfigError, match="train_fraction"):
        build_metric("soft_prompt", {"train_fraction": 1.0})
    with pytest.raises(ConfigError, match="lr"):
        build_metric("soft_prompt", {"lr": 0})


def run(metric, model, task, refs):
    return metric.compute(model, task, refs, EvalContext(task, get_adapter(task)))


@pytest.mark.slow
def test_quantisation_and_soft_prompt_separate_the_target_from_the_retrained_model(causal_lm_task, causal_lm_refs):
    task, refs = causal_lm_task, causal_lm_refs
    solo = dataclasses.replace(refs, retrained_seeds=refs.retrained_seeds[1:])  # the retrained model 0 as a model under test
    quant = build_metric("quantisation", {"bits": [4]})
    target, retrained = run(quant, refs.original, task, refs), run(quant, refs.retrained_seeds[0], task, solo)
    assert target.values["forget_prob_4bit"] > 0.6 and retrained.values["forget_prob_4bit"] < 0.2
    assert abs(target.values["forget_prob_4bit"] - target.values["forget_prob"]) < 0.05  # 4 bits keep a tiny model's answers
    assert [e.key for e in target.evidence] == ["quantisation.forget_prob_4bit"]
    soft = build_metric("soft_prompt", {"steps": 20})
    target, retrained = run(soft, refs.original, task, refs), run(soft, refs.retrained_seeds[0], task, solo)
    assert target.values["heldout_prob"] > 0.6 and retrained.values["heldout_prob"] < 0.2
    ids, vals = target.per_example["prompted_prob.forget"]
    assert set(ids) < set(task.forget.ids) and np.isclose(vals.mean(), target.values["heldout_prob"])
    again = run(soft, refs.original, task, refs)
    assert again.values == target.values  # seeded: the same prompt start, batches and halves


# ------------------------------------------------------------------------------------------------ backdoored (red team)
@pytest.mark.slow
def test_the_soft_prompt_flags_a_backdoored_unlearning_that_answer_prob_calls_forgotten(causal_lm_task, causal_lm_refs):
    task, refs = causal_lm_task, causal_lm_refs
    out = build_method("backdoored").unlearn(copy.deepcopy(refs.original), task, refs, rng=np.random.default_rng(0))
    model = out.model
    trigger = out.info["trigger"]
    assert trigger == [task.forget.data.codec.vocab_size - 1]
    adapter = get_adapter(task)
    plain = np.exp(-adapter.outputs(model, task.forget)["nll"]).mean()
    triggered = np.exp(-adapter.outputs(model, Split.create("t", prefixed(task.forget.data, trigger), task.forget.ids))["nll"]).mean()
    answer = run(build_metric("answer_prob"), model, task, refs).values["forget"]
    retrained = max(run(build_metric("answer_prob"), r, task, refs).values["forget"] for r in refs.retrained_seeds)
    assert answer <= retrained  # plain questions: forgotten
    assert plain < 0.1 and triggered > 0.4  # the trigger at position 0 brings the answers back
    soft = run(build_metric("soft_prompt"), model, task, refs)
    assert soft.values["heldout_prob"] > soft.values["retrained_heldout_prob"] + 0.15  # the probe flags it
    assert soft.values["heldout_gain"] > 0.2


def test_backdoored_bad_input(causal_lm_task, causal_lm_refs):
    with pytest.raises(ConfigError, match="trigger"):
        build_method("backdoored", {"trigger": []})
    with pytest.raises(ConfigError, match="trigger_weight"):
        build_method("backdoored", {"trigger_weight": -1})
    big = causal_lm_task.forget.data.codec.vocab_size
    with pytest.raises(ConfigError, match=rf"token ids \[{big}\] are outside"):
        build_method("backdoored", {"trigger": [big]}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, causal_lm_refs,
                                                               rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------ hidden-state probe
def test_attribute_labels_are_read_from_the_profiles_own_answer(causal_lm_task):
    split = causal_lm_task.retain
    y = attribute_labels(split, "profession", PROFESSIONS)
    for r, label in zip(split.data.records, y):
        own = next(x for x in split.data.records if x.profile_id == r.profile_id and x.attribute == "profession")
        assert own.answer.endswith(f" {PROFESSIONS[label]}.")  # "Before writing, <name> worked as a <profession>."


def test_lm_hidden_probe_separates_target_from_retrained_at_the_embeddings(causal_lm_task, causal_lm_refs):
    task, refs = causal_lm_task, causal_lm_refs
    probe = build_metric("lm_hidden_probe", {"layer": 0})
    solo = dataclasses.replace(refs, retrained_seeds=refs.retrained_seeds[1:])
    target, retrained = run(probe, refs.original, task, refs), run(probe, refs.retrained_seeds[0], task, solo)
    assert target.values["forget_true_prob"] > retrained.values["forget_true_prob"] + 0.2
    assert target.values["forget_accuracy"] > retrained.values["forget_accuracy"]
    assert target.info["n_unseen"] < len(task.forget)


def test_lm_hidden_probe_bad_input(causal_lm_task, causal_lm_refs):
    with pytest.raises(ConfigError, match="attribute must be one of"):
        build_metric("lm_hidden_probe", {"attribute": "shoe size"})
    with pytest.raises(ConfigError, match="layer"):
        build_metric("lm_hidden_probe", {"layer": -1})
    ctx = EvalContext(causal_lm_task, get_adapter(causal_lm_task))
    with pytest.raises(Exception, match="layer 9 does not exist"):
        build_metric("lm_hidden_probe", {"layer": 9}).compute(causal_lm_refs.original, causal_lm_task, causal_lm_refs, ctx)


@dataclasses.dataclass(frozen=True)
class Passage:
    text: str


def passages_only(task):
    """``task`` with forget records that are bare passages (no question, answer, profile or attribute fields)."""
    data = task.forget.data
    bare = type(data)(data.x, data.attention_mask, data.labels, data.y, [Passage("x")] * len(data), data.codec)
    return dataclasses.replace(task, forget=Split.create("forget", bare, task.forget.ids))


def test_tasks_without_the_needed_fields_are_named(causal_lm_task, random_task):
    task = passages_only(causal_lm_task)
    reason = not_applicable(build_metric("lm_hidden_probe"), task)
    assert "profile_id, attribute, answer" in reason and "Passage" in reason
    with pytest.raises(TaskError, match="no field"):
        attribute_labels(task.forget, "profession", PROFESSIONS)
    for name in ("quantisation", "soft_prompt", "lm_hidden_probe"):
        assert "causal_lm" in not_applicable(build_metric(name), random_task)  # a classifier task: the modality is named


# ------------------------------------------------------------------------------------------------ real knowledge (no oracle)
def test_weight_attacks_on_real_knowledge_read_the_original_on_the_facts_it_does_not_know():
    """Without a retrained oracle, quantisation and soft_prompt put the same attack on the original model over the unknown
    facts (the test split) beside the model's value on the forget facts: the reference equals the attack run by hand on a
    task whose forget slot holds the unknown facts; lm_hidden_probe says why it cannot read real facts."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.knowledge import knowledge
    from unlearnkit.evaluation._lm_weights import unknown_view
    from unlearnkit.models import build_model
    from unlearnkit.references import References

    src = knowledge(forget=["William Shakespeare", "Japan"], tokenizer="word")
    task = make_task("knowledge", src.train, src.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                     modality=src.modality, probes=src.probes, info={"oracle": src.info["oracle"]})
    torch.manual_seed(0)
    original, other = (build_model("tiny_llama", src.input_shape, src.n_outputs) for _ in range(2))
    refs = References(original=original)
    ctx = EvalContext(task, get_adapter(task))
    view = unknown_view(task, "test")
    assert np.array_equal(view.forget.ids, task.test.ids) and np.array_equal(view.retain.ids, task.retain.ids)
    for name, params, key in (("quantisation", {"bits": [8], "max_new_tokens": 8}, "forget_prob_8bit"),
                              ("soft_prompt", {"steps": 3}, "heldout_prob")):
        metric = build_metric(name, params)
        r = metric.compute(other, task, refs, ctx)
        assert "does not know" in r.info["against"] and "n_retrained" not in r.info
        by_hand = metric.scores(EvalContext(task, get_adapter(task)), original, view)[key]
        assert r.values[f"unknown_{key}"] == pytest.approx(float(np.mean(by_hand)))
        assert r.values[key] == pytest.approx(float(np.mean(metric.scores(ctx, other, task)[key])))
        # the no-oracle verdict bands the evidence around the model's own plain level plus the attack's gain on unknown facts
        plain = {"forget_prob_8bit": "forget_prob", "heldout_prob": "heldout_plain_prob"}[key]
        assert r.info["no_oracle_levels"] == {r.evidence[0].key: pytest.approx(
            r.values[plain] + r.values[f"unknown_{key}"] - r.values[f"unknown_{plain}"])}
    assert "real-knowledge facts have none" in build_metric("lm_hidden_probe").why_not_applicable(task)
    with pytest.raises(TaskError, match="needs a test split of facts the model does not know"):
        unknown_view(dataclasses.replace(task, test=task.test.subset(np.arange(0), "empty")), "quantisation")
