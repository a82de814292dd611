"""S3T: a deletion makes the served model independent of the deleted example (an S3T trained with that example's label
changed serves bit-identical outputs afterwards), the ordering choice on hand cases, bad inputs refused before anything
changes, and the causal-LM variant (profiles, tiny Llama)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import model_factory, state_equal, tiny_llama_factory
from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, RequestRefused
from unlearnkit.exact import S3tModel
from unlearnkit.exact.s3t import choose_ordering, rotations, valid_prefix
from unlearnkit.methods import build_method
from unlearnkit.references import References
from unlearnkit.train import TrainConfig
from unlearnkit.types import Split, TensorData

FAST = TrainConfig(epochs=10, batch_size=64, optimizer="adam", lr=5e-3, schedule="cosine")  # the backbone's recipe
PARAMS = {"shards": 2, "slices": 3, "rank": 2, "epochs": 3}  # orderings: all 3 rotations


@pytest.fixture(scope="module")
def refs(digits):
    return References(train_config=FAST, model_factory=model_factory(digits))


def build(task, refs, seed=0, **kw):
    return build_method("s3t", {**PARAMS, **kw}).build(task, refs, seed=seed, device="cpu", progress=False)


@pytest.fixture(scope="module")
def s3t(random_task, refs):
    return build(random_task, refs)


def relabelled(task, example_id):
    """The task with one forget example's label changed (everything else, ids included, identical)."""
    pos = int(task.forget.positions_of([example_id])[0])
    y = task.forget.data.y.clone()
    y[pos] = (y[pos] + 1) % 10
    forget = Split.create("forget", TensorData(task.forget.data.x, y), task.forget.ids)
    return dataclasses.replace(task, forget=forget, train_split=None)


def test_after_deletion_the_served_model_does_not_depend_on_the_deleted_example(random_task, refs, s3t):
    x = random_task.test.data.x
    victim = int(random_task.forget.ids[0])
    other = build(relabelled(random_task, victim), refs)
    a = copy.deepcopy(s3t)
    with torch.no_grad():
        assert not torch.equal(a(x), other(x)), "the changed label must reach the models before the deletion"
    ra, rb = a.delete([victim]), other.delete([victim])
    assert ra.touched == rb.touched and ra.touched["deactivated"] > 0
    shard = ra.touched["shards"][0]
    assert 0 < ra.touched["served_prefix"][str(shard)] < 3  # a real chain still serves, shorter than before
    with torch.no_grad():
        assert torch.equal(a(x), other(x))
    assert state_equal(a, other)  # every kept adapter is the same; the erased ones are zero in both
    assert ra.cost.optimizer_steps == 0 and ra.live_after == len(random_task.train) - 1


def test_served_shard_uses_only_the_adapters_before_the_deleted_slice(random_task, s3t):
    """The served shard output is recomputed by hand from the base layers and the kept adapters' weights."""
    model = copy.deepcopy(s3t)
    victim = int(random_task.forget.ids[0])
    pos = model.data.positions_of([victim])[0]
    shard, sl = int(model.plan.shard_of[pos]), int(model.plan.slice_of[pos])
    model.delete([victim])
    c, p = model.served(shard)
    assert sl not in model.orderings[c][:p] and p == 2  # the rotation starting after the slice keeps R - 1 adapters
    k = model.chain(shard, c)
    x = random_task.test.data.x[:16].flatten(1)
    h = x
    linears = model.layers
    with torch.no_grad():
        for j, layer in enumerate(linears):
            w = layer.base.weight + sum(layer.b[k * 3 + i] @ layer.a[k * 3 + i] for i in range(p))
            h = h @ w.T + layer.base.bias
            if j < len(linears) - 1:
                h = torch.relu(h)
        with model.routed(k, p) as net:
            torch.testing.assert_close(net(random_task.test.data.x[:16]), h, rtol=1e-5, atol=1e-5)
        for i in range(p, 3):
            assert all(not layer.a[k * 3 + i].any() and not layer.b[k * 3 + i].any() for layer in linears)


def test_choose_ordering_on_hand_cases():
    assert rotations(3, 3) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert rotations(4, 2) == [(0, 1, 2, 3), (2, 3, 0, 1)]
    rot = rotations(3, 3)
    assert choose_ordering(rot, set()) == (0, 3)
    assert choose_ordering(rot, {2}) == (0, 2)  # the rotation starting after slice 2 keeps its first two adapters
    assert choose_ordering(rot, {1}) == (2, 2)
    assert choose_ordering(rot, {2, 0}) == (1, 1)  # (1, 2, 0): slice 1 only
    assert choose_ordering(rot, {0, 1, 2}) == (0, 0)  # the bare backbone
    assert [valid_prefix(o, {1}) for o in rot] == [1, 0, 2]


def test_deletions_deactivate_the_hand_counted_adapters(random_task, s3t):
    model = copy.deepcopy(s3t)
    plan = model.plan
    shard = 0
    in_slice = lambda j: [int(i) for i in model.data.ids[(plan.shard_of == shard) & (plan.slice_of == j)] if i in set(random_task.forget.ids)]
    r = model.delete(in_slice(2)[:1])
    # slice 2 sits at positions 2, 1, 0 of the rotations (0,1,2), (1,2,0), (2,0,1): 1 + 2 + 3 adapters erased
    assert r.touched["shards"] == [shard] and r.touched["deactivated"] == 6
    assert r.touched["served_prefix"] == {"0": 2, "1": 3} and r.touched["served_ordering"]["0"] == [0, 1, 2]
    r = model.delete(in_slice(0)[:1])  # now (1, 2, 0) keeps slice 1: 2 more erased, from (0, 1, 2)
    assert r.touched["deactivated"] == 2 and r.touched["served_prefix"]["0"] == 1 and r.touched["served_ordering"]["0"] == [1, 2, 0]
    r = model.delete(in_slice(1)[:1])
    assert r.touched["served_prefix"]["0"] == 0 and r.touched["bare_backbone_shards"] == [0] and r.touched["valid_adapters"] == 9
    x = random_task.test.data.x[:8]
    with torch.no_grad():
        with model.routed(None) as bare:  # shard 0 now serves the bare backbone
            z0 = bare(x)
        with model.routed(model.chain(1, 0), 3) as net:  # shard 1 is untouched: its first ordering, all 3 adapters
            z1 = net(x)
        assert torch.equal(model(x), model.aggregate([z0, z1]))


def test_aggregation_by_hand():
    model = S3tModel.__new__(S3tModel)
    a, b = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 0.0, 0.0]])
    object.__setattr__(model, "aggregation", "mean")
    mean = (torch.softmax(a, -1) + torch.softmax(b, -1)) / 2
    torch.testing.assert_close(S3tModel.aggregate(model, [a, b]), mean.log())
    object.__setattr__(model, "aggregation", "vote")
    out = S3tModel.aggregate(model, [a, b]).exp()
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.0, 0.5]]), atol=1e-30, rtol=0)
    assert torch.isfinite(S3tModel.aggregate(model, [a, b])).all()


@pytest.mark.parametrize("params, match", [
    ({"shards": 0}, "shards must be a whole number >= 1"),
    ({"slices": 0}, "slices must be a whole number >= 1"),
    ({"rank": 0}, "rank must be a whole number >= 1"),
    ({"orderings": 4, "slices": 3}, r"at most slices=3"),
    ({"public_fraction": 1.0}, "public_fraction"),
    ({"epochs": 0}, "epochs must be a finite number > 0"),
    ({"steps": 0}, "steps must be a whole number >= 1"),
    ({"aggregation": "median"}, "must be one of"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("s3t", params)


@pytest.mark.parametrize("params, match", [
    ({"shards": 300, "slices": 4}, r"need at least 1200 deletable examples"),
    ({"rank": 11}, r"rank 11 exceeds .*head"),
    ({"backbone": "pretrained"}, "no pretrained weights"),
])
def test_too_large_or_unfit_settings_fail_before_training(random_task, refs, params, match):
    with pytest.raises(ConfigError, match=match):
        build(random_task, refs, **params)


def test_request_touching_the_public_portion_is_refused_and_changes_nothing(random_task, s3t):
    model = copy.deepcopy(s3t)
    before, live = copy.deepcopy(model.state_dict()), model.live_ids().copy()
    public = model.backbone.protected_ids
    assert len(public) == round(0.2 * len(random_task.retain)) and not np.isin(public, random_task.forget.ids).any()
    with pytest.raises(RequestRefused, match="frozen backbone"):
        model.delete([int(random_task.forget.ids[0]), int(public[0])])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert np.array_equal(model.live_ids(), live) and model.history == []
    assert s3t.describe()["guarantee"] == "exact_above_backbone"


def test_random_backbone_and_vote(random_task, refs):
    model = build(random_task, refs, backbone="random", aggregation="vote", shards=1, slices=2, epochs=1)
    assert model.backbone.protected_ids.size == 0 and "random initialisation" in model.backbone.source
    out = model.delete(random_task.forget.ids)  # no public portion: every example is deletable
    assert out.touched["shards"] == [0]
    with torch.no_grad():
        assert torch.isfinite(model(random_task.test.data.x)).all()


# ---------------------------------------------------------------------------------------------- causal LM
LM_FAST = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine")


@pytest.fixture(scope="module")
def lm_refs(profiles_source):
    return References(train_config=LM_FAST, model_factory=tiny_llama_factory(profiles_source))


def test_lm_builds_deletes_a_profile_serves_and_is_deterministic(causal_lm_task, lm_refs):
    params = {"slices": 2, "rank": 2, "epochs": 1}
    method = build_method("s3t", params)
    a = method.build(causal_lm_task, lm_refs, seed=3, device="cpu", progress=False)
    b = method.build(causal_lm_task, lm_refs, seed=3, device="cpu", progress=False)
    assert state_equal(a, b) and a.plan.shards == 1 and a.backbone.source.startswith("pretrained:")
    assert a.backbone.protected_ids.size == 0
    # one slice per profile: every item of a profile sits in one slice
    groups = a.data.labels
    for g in np.unique(groups):
        assert len(np.unique(a.plan.slice_of[groups == g])) == 1
    person = int(causal_lm_task.forget.labels[0])
    ids = causal_lm_task.forget.ids[causal_lm_task.forget.labels == person]
    sl = int(a.plan.slice_of[a.data.positions_of(ids[:1])][0])
    ra, rb = a.delete(ids), b.delete(ids)
    assert ra.touched == rb.touched and ra.touched["served_prefix"] == {"0": 1}
    assert ra.touched["served_ordering"]["0"] == [1 - sl, sl]
    adapter = get_adapter(causal_lm_task)
    oa, ob = adapter.outputs(a, causal_lm_task.test), adapter.outputs(b, causal_lm_task.test)
    assert np.isfinite(oa["nll"]).all() and np.array_equal(oa["nll"], ob["nll"])
    adapter.check(a, causal_lm_task)


def test_lm_generation_with_two_shards_matches_greedy_without_cache(causal_lm_task, lm_refs):
    """Two shards: the per-shard cache gives the same greedy tokens as re-running the whole prefix every step."""
    model = build_method("s3t", {"shards": 2, "slices": 1, "rank": 2, "epochs": 1}).build(causal_lm_task, lm_refs, seed=0, device="cpu",
                                                                                         progress=False)
    adapter = get_adapter(causal_lm_task)
    prompt = causal_lm_task.test.data.x[0][: int(causal_lm_task.test.data.labels[0].ne(-100).int().argmax())].tolist()
    got = adapter.generate(model, [prompt], max_new_tokens=6)[0]
    ids, want = list(prompt), []
    with torch.no_grad():
        for _ in range(len(got)):
            nxt = int(model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0, -1].argmax())
            want.append(nxt)
            ids.append(nxt)
    assert got == want and len(got) > 0
