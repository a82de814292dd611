"""Request streams (continual unlearning) and exact methods in the one flow, end to end on digits.

Two test doubles live here (never in src): ``_Shift``, an inexact method whose edit is hand-computable (it adds the
request's size to one bias), so the chain of models along a stream can be checked exactly; and ``_Regime``, an exact
method whose served model is an MLP inside an ``ExactModel`` retrained from scratch on what is live after each deletion
(a "shard-free" SISA), a new architecture whose weights do not fit the original's."""

from __future__ import annotations

import copy
import pickle
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest
import torch

from tests.conftest import state_equal
from tests.contracts.test_methods_contract import check_outside_changed, check_same_seed
from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, StoreError
from unlearnkit.exact import ExactModel
from unlearnkit.experiment import Experiment, bundled_experiment
from unlearnkit.methods.base import ExactMethod
from unlearnkit.registry import METHODS
from unlearnkit.runs import Store
from unlearnkit.runs.runner import UnlearnJob, run_experiment, unlearn_job
from unlearnkit.runs.summary import format_stream, stream_summary
from unlearnkit.seeding import torch_seed
from unlearnkit.train import train_model
from unlearnkit.types import Mask, Unlearned

EPOCHS = 3  # the exact double's training budget


class _Retrained(ExactModel):
    """An MLP trained on the live examples, retrained from scratch (same seed) after every deletion."""

    regime: ClassVar[str] = "test_regime"
    guarantee: ClassVar[str] = "exact"

    def __init__(self, data, factory, config, adapter, seed: int, device: str) -> None:
        super().__init__(data)
        self.factory, self.config, self.adapter, self.seed, self.where = factory, config, adapter, seed, device
        self.net = self._fit(data)

    def _fit(self, split):
        with torch_seed(self.seed):
            net = self.factory()
        return train_model(net, split, self.config, adapter=self.adapter, seed=self.seed, device=self.where, desc="regime")[0]

    def forward(self, x):
        return self.net(x)

    def _delete(self, ids, *, progress):
        live = self.live_ids()
        self.net = self._fit(self.data.select_ids(live[~np.isin(live, ids)]))
        return {"retrained_on": int(len(live) - len(ids))}


@dataclass(frozen=True)
class _Regime(ExactMethod):
    """Test double of an exact regime: retrain the whole served model after each deletion."""

    name: ClassVar[str] = "test_regime"
    paper: ClassVar[str] = "test double"
    version: ClassVar[str] = "1"

    def build(self, task, refs, *, seed, device, progress):
        config = replace(refs.require("train_config", by="test_regime"), epochs=EPOCHS)
        return _Retrained(task.train, refs.require("model_factory", by="test_regime"), config, get_adapter(task), seed, device)


SEEN: list[dict[str, np.ndarray]] = []  # what _Shift was given, step by step


@dataclass(frozen=True)
class _Shift:
    """Test double of an inexact method: adds the number of forget examples to the first bias of the last layer."""

    name: ClassVar[str] = "test_shift"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = "test double"
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("random", "classes", "ids")
    needs: ClassVar[frozenset[str]] = frozenset()

    def unlearn(self, model, task, refs, *, rng, device="cpu", progress=False):
        SEEN.append({"forget": task.forget.ids.copy(), "retain": task.retain.ids.copy(), "train": task.train.ids.copy()})
        name, bias = [(n, p) for n, p in model.named_parameters() if n.endswith("bias")][-1]
        with torch.no_grad():
            bias[0] += float(len(task.forget))
        changed = Mask.full(model, False)
        changed[name][0] = True
        return Unlearned(model, changed, {"added": len(task.forget)})


@pytest.fixture()
def doubles(monkeypatch):
    METHODS.names()  # load the built-in methods first
    monkeypatch.setitem(METHODS._items, "test_regime", _Regime)
    monkeypatch.setitem(METHODS._items, "test_shift", _Shift)
    SEEN.clear()
    yield
    SEEN.clear()


COUNTS = (30, 25, 40)
SPEC = {
    "name": "stream",
    "dataset": {"name": "digits"},
    "requests": [{"kind": "random", "count": c} for c in COUNTS],
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "train": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    "references": {"retrain_seeds": 2},
    "methods": [{"name": "finetune", "params": {"steps": 10}}, {"name": "grad_ascent", "params": {"steps": 5}}, "test_shift",
                "test_regime"],
    "metrics": ["accuracy", "retrain_gap", "threshold_mia", "noise_floor"],
    "seeds": [0],
}


def _forget_ids(store, run_id):
    return np.sort(store.load_run_array(run_id, "accuracy.correct.forget.ids"))


def test_stream_steps_chain_and_exact_models(tmp_path, doubles, digits):
    store = Store(tmp_path)
    logs: list[str] = []
    t0 = time.perf_counter()
    record = run_experiment(Experiment.from_dict(SPEC), store, device="cpu", progress=False, log=logs.append)
    seconds = time.perf_counter() - t0
    assert record["status"] == "complete" and not record["failures"], record["failures"]
    assert seconds < 60, seconds
    runs = record["stream"]["runs"]
    assert set(runs) == {"finetune", "grad_ascent", "test_shift", "test_regime"} and all(len(r["0"]) == 3 for r in runs.values())
    n_train = len(digits.train)

    # the evaluation at step k forgets everything requests 1..k deleted: each step adds a disjoint request of its size
    chain = runs["finetune"]["0"]
    deleted = [_forget_ids(store, r) for r in chain]
    assert [len(d) for d in deleted] == list(np.cumsum(COUNTS))
    for k in range(1, 3):
        assert np.isin(deleted[k - 1], deleted[k]).all()
    for name in runs:  # every method of a step is evaluated on the same task
        assert all(np.array_equal(_forget_ids(store, r), d) for r, d in zip(runs[name]["0"], deleted))
    requests = [deleted[0]] + [np.setdiff1d(deleted[k], deleted[k - 1]) for k in (1, 2)]

    # the method's task at step k: forget request k; train everything not deleted before; retain the rest
    assert len(SEEN) == 3
    everything = np.sort(digits.train.ids)
    for k, seen in enumerate(SEEN):
        before = deleted[k - 1] if k else np.zeros(0, dtype=np.int64)
        assert np.array_equal(np.sort(seen["forget"]), requests[k])
        assert np.array_equal(np.sort(seen["train"]), np.setdiff1d(everything, before))
        assert np.array_equal(np.sort(seen["retain"]), np.setdiff1d(everything, deleted[k]))

    # step k starts from step k-1's model: the shifted bias carries the sum of the request sizes (hand-computed)
    original = store.load_run_model(record["tasks"][0]["original_run"], _mlp(digits))
    bias_name = [n for n, _ in original.named_parameters() if n.endswith("bias")][-1]
    for k, run_id in enumerate(runs["test_shift"]["0"]):
        model = store.load_run_model(run_id, _mlp(digits))
        got = dict(model.named_parameters())[bias_name].detach()
        want = dict(original.named_parameters())[bias_name].detach().clone()
        for count in COUNTS[: k + 1]:  # one float32 addition per request, as the chain did them
            want[0] += float(count)
        assert torch.equal(got, want)

    # the exact regime: trained once (metered apart), then a deletion per request, each its run's whole cost
    exact = [store.load_run(r) for r in runs["test_regime"]["0"]]
    for k, rec in enumerate(exact):
        assert rec["model"]["original_architecture"] is False and rec["model"]["regime"] == "test_regime"
        live = n_train - int(sum(COUNTS[: k + 1]))
        assert rec["unlearn_info"]["receipt"]["live_after"] == live
        assert rec["cost"]["example_passes"] == EPOCHS * live  # the deletion retrains on what is live, nothing else
        with pytest.raises(StoreError, match="exact-unlearning regime's own model"):
            store.load_run_model(rec["run_id"], _mlp(digits))
    assert exact[0]["unlearn_info"]["training_cost"]["example_passes"] == EPOCHS * n_train
    assert exact[1]["unlearn_info"]["training_cost"] is None and "previous request" in exact[1]["unlearn_info"]["served"]
    inexact = store.load_run(runs["finetune"]["0"][0])
    assert inexact["model"]["original_architecture"] is True and "training_cost" not in inexact["unlearn_info"]

    # what the CLI and the report show
    text = format_stream(stream_summary(store, record))
    assert "test_regime" in text and "request 3" in text and "trained once before the first request" in text
    from unlearnkit.report import render_report

    html = render_report(store, record)
    assert "Request stream" in html and html.count("data:image/png") >= 5  # 4 evidence plots + the cost plot (+ per-step plots)
    assert any("test_regime" in line and "deleted 30" in line and "trained once" in line for line in logs)


def _mlp(digits):
    from unlearnkit.models import build_model

    return build_model("mlp", digits.input_shape, digits.n_classes, hidden=(32,))


def test_stream_resumes_from_stored_and_rebuilt_models(tmp_path, doubles):
    """Runs of the last request lost: the inexact method continues from its stored weights, the exact one rebuilds its
    model by its earlier requests; both give the runs they gave the first time, bit for bit."""
    spec = {**SPEC, "methods": ["test_shift", "test_regime"], "requests": SPEC["requests"][:2]}
    store = Store(tmp_path)
    first = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    last = [ids["0"][-1] for ids in first["stream"]["runs"].values()]
    weights = {r: (tmp_path / "runs" / r / "model.safetensors").read_bytes() for r in last}
    import shutil

    for r in last:
        shutil.rmtree(tmp_path / "runs" / r)
    logs: list[str] = []
    again = run_experiment(Experiment.from_dict(spec), Store(tmp_path), device="cpu", progress=False, log=logs.append)
    assert again["stream"]["runs"] == first["stream"]["runs"]
    assert {r: (tmp_path / "runs" / r / "model.safetensors").read_bytes() for r in last} == weights
    assert sum("rebuilding its model" in line for line in logs) == 1  # the exact one only
    assert sum("cached run" in line for line in logs) == 2  # the first request of each


def test_exact_job_meters_training_apart_and_returns_the_module(doubles, digits, random_task, random_refs):
    from functools import partial

    from unlearnkit.models import build_model

    method = _Regime()
    random_refs = replace(random_refs, model_factory=partial(build_model, "mlp", digits.input_shape, digits.n_classes, hidden=(16,)))
    out = unlearn_job(UnlearnJob(method, random_refs, random_task, 0, "cpu"))
    assert "state" not in out and isinstance(out["model"], _Retrained)
    assert out["info"]["training_cost"]["example_passes"] == EPOCHS * len(random_task.train)
    assert out["cost"]["example_passes"] == EPOCHS * len(random_task.retain)  # the deletion alone
    assert np.array_equal(out["model"].live_ids(), np.sort(random_task.retain.ids))
    direct = method.unlearn(copy.deepcopy(random_refs.original), random_task, random_refs, rng=np.random.default_rng(0))
    again = unlearn_job(UnlearnJob(method, random_refs, random_task, 0, "cpu"))
    assert state_equal(out["model"], again["model"]) and not state_equal(out["model"], direct.model)  # seeded by the run's seed
    crossed = pickle.loads(pickle.dumps(out))  # what the process and Ray executors do, in memory
    assert state_equal(crossed["model"], out["model"]) and np.array_equal(crossed["model"].live_ids(), out["model"].live_ids())


def test_contract_checks_hold_for_a_new_module(doubles, random_task, random_refs, original):
    check_same_seed(_Regime(), random_task, random_refs, original)
    check_outside_changed(_Regime(), random_task, random_refs, copy.deepcopy(original))


def _spec(**changes):
    return {**{k: v for k, v in SPEC.items() if k != "methods"}, "methods": [{"name": "finetune", "params": {"steps": 2}}], **changes}


@pytest.mark.parametrize("requests, message", [
    ([], r"requests: give at least one deletion request"),
    ([{"kind": "ids", "ids": [1, 2, 3]}, {"kind": "ids", "ids": [3, 4]}], r"request 2 of 2 \(ids \(2\)\): ids \[3\] already deleted by request 1"),
    ([{"kind": "classes", "classes": [3]}, {"kind": "random", "fraction": 0.1}, {"kind": "classes", "classes": [3]}],
     r"request 3 of 3 \(class 3\): classes \[3\] already deleted by request 1"),
    ([{"kind": "corrupted", "fraction": 0.5}], r"request 1 of 1 \(corrupted 50%\): a request of a stream is one of"),
    ([{"kind": "random", "fraction": 0.1, "repeat": 0}], r"requests\[0\]: repeat must be a whole number >= 1"),
    ({"kind": "random", "fraction": 0.1}, r"requests: give a list"),
])
def test_bad_request_lists_fail_when_parsed(requests, message):
    with pytest.raises(ConfigError, match=message):
        Experiment.from_dict(_spec(requests=requests))


def test_forget_and_requests_together():
    """Both in one experiment (MUSE's scalability and sustainability): the forget sets and the stream, written back as both;
    a public portion with forget sets is refused (it belongs to the stream, the forget sets draw from all the data)."""
    exp = Experiment.from_dict(_spec(forget=[{"kind": "random", "fraction": 0.1}]))
    assert exp.forget[0].fraction == 0.1 and exp.requests
    back = exp.to_dict()
    assert back["forget"] == [{"kind": "random", "fraction": 0.1}] and back["requests"]
    assert "forget" not in Experiment.from_dict(_spec()).to_dict()
    with pytest.raises(ConfigError, match="public: .*forget sets"):
        Experiment.from_dict(_spec(forget=[{"kind": "random", "fraction": 0.1}], public={"fraction": 0.2}))
    with pytest.raises(ConfigError, match="missing 'forget' .* or 'requests'"):
        Experiment.from_dict({k: v for k, v in _spec().items() if k != "requests"})


@pytest.mark.parametrize("requests, message", [
    # class 3 wholly deleted, then ids naming one of its examples (found below): already deleted
    (lambda d: [{"kind": "classes", "classes": [3]}, {"kind": "ids", "ids": [int(d.train.ids[d.train.labels == 3][0])]}],
     r"request 2 of 2 \(ids \(1\)\): 1 of its ids were already deleted by an earlier request"),
    # class 3 wholly deleted, then half of it: nothing left to select
    (lambda d: [{"kind": "classes", "classes": [3]}, {"kind": "classes", "classes": [3], "fraction": 0.5}],
     r"request 2 of 2 \(class 3 \(50%\)\): .*no training example has class \[3\].*among the \d+ examples earlier requests left"),
    (lambda d: [{"kind": "random", "fraction": 0.6}, {"kind": "random", "fraction": 0.5}],
     r"request 2 of 2 \(random 50%\): selects \d+ examples, but only \d+ are not yet deleted"),
])
def test_bad_requests_fail_before_anything_runs(tmp_path, digits, requests, message):
    exp = Experiment.from_dict(_spec(requests=requests(digits)))
    store = Store(tmp_path)
    with pytest.raises(ConfigError, match=message):
        run_experiment(exp, store, device="cpu", progress=False, log=lambda m: None)
    assert not store.runs() and not list((tmp_path / "refs").iterdir())  # nothing trained, nothing stored


def test_bundled_requests_experiment_validates(capsys):
    from unlearnkit.cli import main

    path = bundled_experiment("requests_digits")
    exp = Experiment.from_dict(__import__("yaml").safe_load(path.read_text()))
    assert len(exp.requests) >= 3 and not exp.forget and {m.name for m in exp.methods} >= {"finetune", "grad_ascent"}
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"a stream of {len(exp.requests)} deletion request(s)" in out and f"request {len(exp.requests)}/{len(exp.requests)}" in out


# ------------------------------------------------------------------------------------------------ public: (non-deletable)
def test_public_is_a_streams_declaration_with_a_fraction():
    exp = Experiment.from_dict({**_spec(), "public": {"fraction": 0.25}})
    assert exp.public_fraction == 0.25 and exp.to_dict()["public"] == {"fraction": 0.25}
    assert "public" not in Experiment.from_dict(_spec()).to_dict()  # experiments without it keep their ids
    for bad in (0, 1, 1.5, True, "x", None):
        with pytest.raises(ConfigError, match="public.fraction .* strictly between 0 and 1"):
            Experiment.from_dict({**_spec(), "public": {"fraction": bad}})
    with pytest.raises(ConfigError, match=r"Unknown key 'ids' in public"):
        Experiment.from_dict({**_spec(), "public": {"ids": [1]}})
    forget = {k: v for k, v in _spec().items() if k != "requests"}
    with pytest.raises(ConfigError, match="public: declares the non-deletable part .* of a request stream"):
        Experiment.from_dict({**forget, "forget": [{"kind": "random", "fraction": 0.1}], "public": {"fraction": 0.2}})


def test_requests_are_drawn_outside_the_public_portion_and_may_not_name_it(digits):
    from unlearnkit.data.forget import ForgetSpec, draw_public, select_requests

    train = digits.train
    public = draw_public(train, 0.3, np.random.default_rng(0))
    assert len(public) == round(0.3 * len(train)) and np.isin(public, train.ids).all()
    specs = [ForgetSpec("random", fraction=0.1)] * 5
    got = select_requests(train, specs, [np.random.default_rng(i) for i in range(5)], 10, public=public)
    assert sum(map(len, got)) == 5 * round(0.1 * len(train)) and not np.isin(np.concatenate(got), public).any()
    with pytest.raises(ConfigError, match=r"request 1 of 1 \(ids \(2\)\): 1 of its ids are declared public .* e.g. \[%d\]" % public[0]):
        select_requests(train, [ForgetSpec("ids", ids=(int(public[0]), int(np.setdiff1d(train.ids, public)[0])))],
                        [np.random.default_rng(0)], 10, public=public)
    with pytest.raises(ConfigError, match=r"request 1 of 1 \(class 3\): the declared public portion holds examples of the class"):
        select_requests(train, [ForgetSpec("classes", classes=(3,))], [np.random.default_rng(0)], 10, public=public)
    with pytest.raises(ConfigError, match="selects .* outside the declared public portion"):
        select_requests(train, [ForgetSpec("random", fraction=0.8)], [np.random.default_rng(0)], 10, public=public)
    with pytest.raises(ConfigError, match="nothing would be deletable"):
        draw_public(train, 0.99999, np.random.default_rng(0))


def test_a_task_refuses_a_forget_set_inside_its_public_portion(random_task):
    from unlearnkit.errors import TaskError

    with pytest.raises(TaskError, match="forget set holds 1 id\\(s\\) declared public"):
        replace(random_task, public_ids=random_task.forget.ids[:1])
    with pytest.raises(TaskError, match="non-empty part of the retain set"):
        replace(random_task, public_ids=np.array([10**9]))
    task = replace(random_task, public_ids=random_task.retain.ids[:50])
    assert task.fingerprint != random_task.fingerprint and task.describe()["public"]["n"] == 50


def test_frozen_backbone_regimes_run_a_whole_random_stream_on_the_declared_public_portion(tmp_path, digits):
    """Without public:, random requests may hit the examples an ACU backbone was trained on (refused, its stream stops);
    with it, requests are drawn outside that portion, the backbone is trained on exactly it, and every request is served."""
    spec = {**_spec(requests=[{"kind": "random", "fraction": 0.05, "repeat": 3}]), "public": {"fraction": 0.3},
            "methods": [{"name": "acu", "params": {"buffer": 64}}]}
    store = Store(tmp_path)
    record = run_experiment(Experiment.from_dict(spec), store, device="cpu", progress=False, log=lambda m: None)
    s = stream_summary(store, record)
    (chain,) = s.chains
    assert len(chain.runs) == 3 and not record.get("failures")
    assert record["stream"]["public"]["n"] == round(0.3 * len(digits.train))
    backbone = chain.runs[0]["unlearn_info"]["regime"]["backbone"]
    assert backbone["n_protected"] == record["stream"]["public"]["n"]
    assert backbone["protected_fingerprint"] == record["stream"]["public"]["fingerprint"]
    bare = {k: v for k, v in spec.items() if k != "public"}
    record = run_experiment(Experiment.from_dict(bare), Store(tmp_path / "bare"), device="cpu", progress=False, log=lambda m: None)
    (failure,) = record["failures"]
    assert failure["method"] == "acu" and "RequestRefused" in failure["error"] and "frozen backbone was trained on" in failure["error"]


def test_an_experiment_reads_back_what_to_dict_wrote():
    """A stored experiment (its to_dict) must parse again: the standard battery is written as "default"."""
    for spec in (_spec(), {k: v for k, v in _spec().items() if k != "metrics"}, {**_spec(), "public": {"fraction": 0.2}}):
        exp = Experiment.from_dict(spec)
        again = Experiment.from_dict(exp.to_dict())
        assert again.to_dict() == exp.to_dict() and again.exp_id() == exp.exp_id()
