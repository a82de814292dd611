"""SISA: deletions are bit-identical to training the affected shards from scratch without the deleted data, cost only the
slices after the earliest one touched, aggregate as computed by hand, refuse bad input unchanged, and checkpoint to
safetensors with a manifest."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import state_equal
from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError, EmptySelection, RequestRefused, TaskError
from unlearnkit.exact import ExactModel, SisaModel, ids_fingerprint, train_sisa
from unlearnkit.exact.sisa import LOG_FLOOR, fresh_shard, partition, step_config, train_shard
from unlearnkit.io import load_state, save_state
from unlearnkit.models import build_model
from unlearnkit.train import TrainConfig
from unlearnkit.types import Split, TensorData

CFG = TrainConfig(epochs=6, batch_size=32, optimizer="adam", lr=3e-3, schedule="cosine")
ADAPTER = ClassifierAdapter(10)


def factory():
    return build_model("mlp", (64,), 10, hidden=(32,), dropout=0.1)  # dropout: the steps' global-RNG draws are seeded too


@pytest.fixture(scope="module")
def data(digits):
    """240 digits with ids that are not positions (ids are what requests name)."""
    train = digits.train.subset(np.arange(240))
    return Split.create("train", train.data, 1000 + 3 * np.arange(240))


@pytest.fixture(scope="module")
def trained(data):
    return train_sisa(data, factory, CFG, shards=3, slices=3, aggregation="vote", seed=5, adapter=ADAPTER)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def from_scratch(model: SisaModel, data: Split, shard: int, deleted: np.ndarray) -> nn.Module:
    """Shard ``shard`` trained from a fresh initialisation on its slices without ``deleted`` (ids): the same partition,
    seed and recipe, nothing reused from ``model``'s training."""
    keep = ~np.isin(data.ids, deleted)
    slices = [pos[keep[pos]] for pos in partition(len(data), 3, 3, 5)[shard]]
    fresh, _ = train_shard(data, slices, factory, step_config(CFG, 3, len(data)), seed=5, shard=shard, adapter=ADAPTER)
    return fresh


def ids_in(model: SisaModel, data: Split, shard: int, slice_: int, n: int) -> np.ndarray:
    return data.ids[model.parts[shard][slice_ - 1][:n]]


def assert_same_tensors(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_partition_is_disjoint_uniform_and_seeded():
    parts = partition(103, 4, 3, seed=1)
    flat = np.concatenate([np.concatenate(s) for s in parts])
    assert sorted(flat.tolist()) == list(range(103))
    assert sorted(sum(len(p) for p in s) for s in parts) == [25, 26, 26, 26]
    assert all(len(p) in (8, 9) for s in parts for p in s)
    same = partition(103, 4, 3, seed=1)
    assert all(np.array_equal(p, q) for s, t in zip(parts, same) for p, q in zip(s, t))
    assert not np.array_equal(np.concatenate(parts[0]), np.concatenate(partition(103, 4, 3, seed=2)[0]))


def test_deletion_equals_training_the_shard_from_scratch(trained, data):
    model = copy.deepcopy(trained)
    before = snapshot(model)
    untouched = model.shards[2]
    ptrs = [p.data_ptr() for p in untouched.parameters()]
    first = np.concatenate([ids_in(model, data, 0, 2, 2), ids_in(model, data, 1, 1, 1), ids_in(model, data, 1, 3, 1)])
    receipt = model.delete(first)
    assert receipt.touched == {"shards": [0, 1], "from_slice": {"0": 2, "1": 1}, "slices_retrained": 2 + 3, "dropped": []}
    for k in (0, 1):
        assert_same_tensors(model.shards[k], from_scratch(model, data, k, first))
        assert not torch.equal(model.shards[k].head.weight, before[f"shards.{k}.head.weight"])  # the deletion changed it
    # the unaffected shard: the same tensors, untouched
    assert model.shards[2] is untouched and [p.data_ptr() for p in untouched.parameters()] == ptrs
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if k.startswith("shards.2."))
    # the checkpoint before the earliest touched slice is what training gave
    assert all(torch.equal(v, trained.checkpoints[0][1][k]) for k, v in model.checkpoints[0][1].items())
    # a second request goes on from the first: equal to training without both sets
    second = ids_in(model, data, 2, 3, 1)
    assert model.delete(second).touched["from_slice"] == {"2": 3}
    both = np.concatenate([first, second])
    for k in range(3):
        assert_same_tensors(model.shards[k], from_scratch(model, data, k, both))
    assert model.live_split().fingerprint == data.subset(np.flatnonzero(~np.isin(data.ids, both))).fingerprint


def test_deletion_in_the_last_slice_retrains_only_that_slice(trained, data):
    model = copy.deepcopy(trained)
    receipt = model.delete(ids_in(model, data, 1, 3, 1))
    assert receipt.touched["from_slice"] == {"1": 3} and receipt.touched["slices_retrained"] == 1
    # the passes of one step over slices 1..3 of shard 1 (79 live examples), counted by hand: ceil(e' * batches per epoch)
    # steps over the epoch's batch sizes, cycled
    m, b = 80 - 1, CFG.batch_size
    sizes = [min(b, m - i * b) for i in range(math.ceil(m / b))]
    steps = math.ceil(2 * CFG.epochs / (3 + 1) * len(sizes))
    assert receipt.cost.optimizer_steps == steps
    assert receipt.cost.example_passes == sum(sizes[i % len(sizes)] for i in range(steps))
    total = trained.training_info["cost"]["example_passes"]
    assert receipt.cost.example_passes / total < 0.25  # one step of one shard of three: about a sixth of all the work
    # the recipe's total work is kept: 6 epochs over 240 examples, up to each step's rounding to whole batches
    assert abs(total - CFG.epochs * len(data)) <= 9 * b


class Fixed(nn.Module):
    """A 'model' whose logits are fixed whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def fixed_sisa(aggregation, shard_logits):
    data = Split.create("train", TensorData(torch.zeros(len(shard_logits), 2), torch.zeros(len(shard_logits), dtype=torch.long)))
    parts = partition(len(data), len(shard_logits), 1, seed=0)
    models = [Fixed(lg) for lg in shard_logits]
    return SisaModel(data, models, parts=parts, factory=lambda: Fixed([0.0, 0.0, 0.0]), config=CFG, seed=0, aggregation=aggregation,
                     adapter=ADAPTER, checkpoints=[{1: snapshot(m)} for m in models])


LOGITS = [[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]]  # votes: 0, 1, 0 (the third shard's tie goes to class 0)


def test_mean_aggregation_by_hand():
    out = fixed_sisa("mean", LOGITS)(torch.zeros(2, 2))
    soft = [[math.exp(v) / sum(math.exp(u) for u in lg) for v in lg] for lg in LOGITS]
    expected = [sum(s[c] for s in soft) / 3 for c in range(3)]
    assert out.shape == (2, 3)
    assert torch.allclose(out[0].exp(), torch.tensor(expected), atol=1e-6)
    assert torch.allclose(out.softmax(-1)[1], torch.tensor(expected), atol=1e-6)


def test_vote_aggregation_by_hand_with_ties_to_the_lower_class():
    out = fixed_sisa("vote", LOGITS)(torch.zeros(1, 2))
    assert torch.allclose(out.exp()[0], torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-9)
    assert torch.allclose(out.softmax(-1)[0], torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-9)
    assert out[0, 2].item() == pytest.approx(math.log(LOG_FLOOR))
    tie = fixed_sisa("vote", [[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])(torch.zeros(1, 2))  # one vote each for classes 1 and 0
    assert torch.allclose(tie.exp()[0], torch.tensor([0.5, 0.5, 0.0]), atol=1e-9)
    assert tie.argmax(-1).item() == 0


def test_a_shard_whose_data_is_all_deleted_drops_out(trained, data):
    model = copy.deepcopy(trained)
    shard0 = data.ids[np.concatenate(model.parts[0])]
    x = data.data.x[:50]
    receipt = model.delete(shard0)
    assert receipt.touched["dropped"] == [0] and receipt.touched["from_slice"] == {"0": 1}
    assert model.active.tolist() == [False, True, True]
    assert_same_tensors(model.shards[0], fresh_shard(factory, seed=5, shard=0))  # trained on nothing: its initialisation
    model.eval()
    with torch.no_grad():
        votes = torch.stack([nn.functional.one_hot(model.shards[k](x).argmax(-1), 10) for k in (1, 2)]).sum(0) / 2
        assert torch.allclose(model(x).exp(), votes, atol=1e-9)  # the dropped shard neither votes nor counts
        assert model.features(x).shape == (50, 3 * 32) and not model.features(x)[:, :32].any()
    with pytest.raises(RequestRefused, match="every example"):
        model.delete(model.live_ids())
    assert model.active.tolist() == [False, True, True] and len(model.live_ids()) == len(data) - len(shard0)


@pytest.mark.parametrize("kwargs, match", [
    ({"shards": 0}, "shards must be a whole number >= 1"), ({"slices": 0}, "slices must be a whole number >= 1"),
    ({"shards": 1.5}, "shards must be"), ({"slices": True}, "slices must be"),
    ({"shards": 16, "slices": 16}, "needs at least 256 training examples"), ({"aggregation": "median"}, "aggregation must be one of"),
])
def test_bad_settings_refused_before_training(data, kwargs, match):
    calls = []

    def counting():
        calls.append(1)
        return factory()

    settings = {"shards": 3, "slices": 3, "aggregation": "vote", **kwargs}
    with pytest.raises(ConfigError, match=match):
        train_sisa(data, counting, CFG, seed=0, adapter=ADAPTER, **settings)
    with pytest.raises(ConfigError, match="wall-time budget"):
        train_sisa(data, counting, TrainConfig(epochs=1, max_seconds=5.0), shards=2, slices=2, seed=0, adapter=ADAPTER)
    assert not calls


@pytest.mark.parametrize("ids, error, match", [
    ([], EmptySelection, "empty"), ([7], TaskError, "never in"), ([1000, 1000], TaskError, "repeats"),
    ("deleted", TaskError, "already deleted"),
])
def test_bad_requests_change_nothing(trained, data, ids, error, match):
    model = copy.deepcopy(trained)
    if ids == "deleted":
        model.delete([1003])
        ids = [1003, 1006]
    before, ckpts, history = snapshot(model), copy.deepcopy(model.checkpoints), len(model.history)
    with pytest.raises(error, match=match):
        model.delete(ids)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and len(model.history) == history
    assert all(torch.equal(ckpts[k][r][n], model.checkpoints[k][r][n]) for k in range(3) for r in ckpts[k] for n in ckpts[k][r])


def test_checkpoints_are_safetensors_with_a_manifest(data, tmp_path):
    model = train_sisa(data, factory, CFG, shards=2, slices=2, aggregation="mean", seed=1, adapter=ADAPTER, checkpoint_dir=tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["manifest.json"] + [f"shard{k:03d}/slice{r:03d}.safetensors" for k in range(2) for r in (1, 2)]
    for k in range(2):
        for r in (1, 2):
            disk = load_state(tmp_path / f"shard{k:03d}/slice{r:03d}.safetensors")
            assert all(torch.equal(disk[n], model.checkpoints[k][r][n]) for n in disk)
        assert_same_tensors(model.shards[k], _loaded(load_state(tmp_path / f"shard{k:03d}/slice002.safetensors")))
    gone = data.ids[model.parts[1][1][:1]]
    model.delete(gone)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["regime"], manifest["shards"], manifest["slices"], manifest["seed"]) == ("sisa", 2, 2, 1)
    entry = {(e["shard"], e["slice"]): e for e in manifest["checkpoints"]}
    seen = data.ids[np.concatenate(model.parts[1])]
    assert entry[1, 2]["seen_fingerprint"] == ids_fingerprint(seen[seen != gone[0]]) and entry[1, 2]["n_seen"] == len(seen) - 1
    assert entry[1, 1]["slice_fingerprint"] == ids_fingerprint(data.ids[model.parts[1][0]])
    assert manifest["live_fingerprint"] == ids_fingerprint(model.live_ids())
    assert torch.equal(load_state(tmp_path / "shard001/slice002.safetensors")["head.weight"], model.shards[1].head.weight)


def _loaded(state):
    m = factory()
    m.load_state_dict(state)
    return m


def test_state_dict_round_trips_through_safetensors(trained, tmp_path):
    save_state(tmp_path / "m.safetensors", trained.state_dict())
    other = copy.deepcopy(trained)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.active.fill_(False)
    other.load_state_dict(load_state(tmp_path / "m.safetensors"))
    assert state_equal(other, trained) and "active" in trained.state_dict()


def test_registered_method_builds_and_deletes_the_forget_set(random_task, random_refs):
    from unlearnkit.methods import build_method

    method = build_method("sisa", {"shards": 4, "slices": 2, "epochs": 5})
    out = method.unlearn(copy.deepcopy(random_refs.original), random_task, random_refs, rng=np.random.default_rng(0))
    assert isinstance(out.model, ExactModel) and out.model.regime == "sisa"
    assert not np.isin(random_task.forget.ids, out.model.live_ids()).any()
    assert out.info["receipt"]["n"] == len(random_task.forget) and out.info["training"]["epochs_per_step"] == pytest.approx(2 * 5 / 3)
    assert json.loads(json.dumps(out.info)) == out.info
    with pytest.raises(ConfigError, match="shards must be"):
        build_method("sisa", {"shards": 0})
    with pytest.raises(ConfigError, match="epochs must be"):
        build_method("sisa", {"epochs": -1})
