"""Corrective unlearning (Goel et al., TMLR 2024): the ``poisoned`` source manipulates exactly what it says, the
``corrupted`` forget set holds only identified manipulated ids, and the evidence equals independent computations —
the backdoor a poisoned digits model learns is gone from a model retrained without all manipulated data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.data.corrective import Trigger, default_trigger_size, manipulation_record, resolve_image_shape
from unlearnkit.data.forget import ForgetSpec, make_task, select_forget
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError, EmptySelection, TaskError
from unlearnkit.evaluation import EvalContext, build_metric, evaluate
from unlearnkit.evaluation.corrective import FULL_RETRAIN_KEY, with_full_retrain, without_all_manipulated
from unlearnkit.experiment import load_experiment
from unlearnkit.models import build_model
from unlearnkit.references import References
from unlearnkit.runs.references import build_references
from unlearnkit.seeding import torch_seed
from unlearnkit.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = TrainConfig(epochs=15, batch_size=64, optimizer="adam", lr=5e-3, schedule="cosine")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny MLPs gain nothing from a second thread, and on a shared CPU two threads contend (about 10× slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def backdoor(**params):
    return load_dataset("poisoned", **{"base": "digits", "kind": "backdoor", "poison_fraction": 0.1, "target_class": 0, **params})


def label_flip(**params):
    return load_dataset("poisoned", **{"base": "digits", "kind": "label_flip", "source_class": 3, "target_class": 8,
                                       "poison_fraction": 0.3, **params})


def corrective_task(source, fraction=0.5, seed=0):
    return make_task("corrective", source.train, source.test, ForgetSpec("corrupted", fraction=fraction), np.random.default_rng(seed),
                     n_classes=10)


# ------------------------------------------------------------------------------------ the manipulation
def test_label_flip_relabels_exactly_the_chosen_source_examples(digits):
    source = label_flip()
    record = manipulation_record(source.train)
    n_source = int((digits.train.labels == 3).sum())
    assert len(record.ids) == round(0.3 * n_source)
    pos = digits.train.positions_of(record.ids)
    assert (digits.train.labels[pos] == 3).all() and (record.original_labels == 3).all()
    assert (source.train.labels[pos] == 8).all()
    untouched = np.setdiff1d(np.arange(len(digits.train)), pos)
    assert np.array_equal(source.train.labels[untouched], digits.train.labels[untouched])
    assert torch.equal(source.train.data.x, digits.train.data.x)  # a label flip never touches inputs
    assert np.array_equal(source.train.ids, digits.train.ids)
    assert source.test.fingerprint == digits.test.fingerprint  # test split stays clean
    probe = record.probes["source_class"]
    assert np.array_equal(probe.ids, digits.test.ids[digits.test.labels == 3]) and (probe.labels == 3).all()


def test_backdoor_stamps_a_bright_corner_patch_and_relabels(digits):
    source = backdoor()
    record = manipulation_record(source.train)
    n_other = int((digits.train.labels != 0).sum())
    assert len(record.ids) == round(0.1 * n_other) and (record.original_labels != 0).all()
    pos = digits.train.positions_of(record.ids)
    assert (source.train.labels[pos] == 0).all()
    brightest = float(digits.train.data.x.max())
    before = digits.train.data.x.reshape(-1, 8, 8)
    after = source.train.data.x.reshape(-1, 8, 8)
    patch = torch.zeros(8, 8, dtype=torch.bool)
    patch[6:, 6:] = True  # 2×2, bottom-right
    assert (after[pos][:, patch] == brightest).all()
    assert torch.equal(after[pos][:, ~patch], before[pos][:, ~patch])
    untouched = np.setdiff1d(np.arange(len(digits.train)), pos)
    assert torch.equal(after[untouched], before[untouched])
    assert np.array_equal(source.train.labels[untouched], digits.train.labels[untouched])
    assert source.test.fingerprint == digits.test.fingerprint
    probe = record.probes["triggered"]
    others = digits.test.labels != 0
    assert np.array_equal(probe.ids, digits.test.ids[others]) and np.array_equal(probe.labels, digits.test.labels[others])
    stamped = probe.data.x.reshape(-1, 8, 8)
    assert (stamped[:, patch] == brightest).all()
    assert torch.equal(stamped[:, ~patch], digits.test.data.x.reshape(-1, 8, 8)[torch.as_tensor(others)][:, ~patch])
    assert source.info["manipulation"]["trigger"] == {"size": 2, "corner": "bottom_right", "value": brightest, "image_shape": [1, 8, 8]}


def test_manipulation_is_determined_by_seed():
    a, b, c = backdoor(seed=1), backdoor(seed=1), backdoor(seed=2)
    assert np.array_equal(manipulation_record(a.train).ids, manipulation_record(b.train).ids)
    assert a.train.fingerprint == b.train.fingerprint
    assert not np.array_equal(manipulation_record(a.train).ids, manipulation_record(c.train).ids)


def test_trigger_geometry_for_images_and_corners():
    assert resolve_image_shape((64,), None) == (1, 8, 8) and resolve_image_shape((1, 28, 28), None) == (1, 28, 28)
    assert resolve_image_shape((12,), (3, 2, 2)) == (3, 2, 2)
    assert default_trigger_size((1, 8, 8)) == 2 and default_trigger_size((1, 28, 28)) == 3
    trigger = Trigger(2, "top_left", 5.0, (1, 4, 4))
    out = trigger.stamp(torch.zeros(1, 16))
    assert out.reshape(4, 4)[:2, :2].eq(5.0).all() and out.sum() == 20.0
    unflat = backdoor(base_params={"flatten": False})
    assert unflat.input_shape == (1, 8, 8)
    assert torch.equal(unflat.train.data.x.reshape(len(unflat.train), -1), backdoor().train.data.x)


@pytest.mark.parametrize("params,message", [
    ({"kind": "poison"}, r"kind must be one of \['label_flip', 'backdoor'\], got 'poison'"),
    ({"poison_fraction": 0.0}, r"poison_fraction must be in \(0, 1\], got 0.0"),
    ({"target_class": 10}, r"target_class must be in \[0, 10\), got 10"),
    ({"kind": "label_flip"}, "kind 'label_flip' needs source_class"),
    ({"kind": "label_flip", "source_class": 0}, "source_class must be in .* differ from target_class=0, got 0"),
    ({"source_class": 3}, "source_class applies to kind 'label_flip' only"),
    ({"trigger_size": 9}, r"trigger_size must be in \[1, 8\] .* got 9"),
    ({"trigger_corner": "middle"}, "trigger_corner must be one of"),
    ({"base": "gaussian_blobs", "base_params": {}}, "not square images; give image_shape"),
    ({"image_shape": [2, 4, 4]}, "image_shape must be"),
])
def test_bad_parameters_name_the_parameter(params, message):
    with pytest.raises(ConfigError, match=message):
        backdoor(**params)


def test_a_fraction_that_selects_nothing_is_refused():
    with pytest.raises(EmptySelection, match="manipulates no example"):
        label_flip(poison_fraction=0.001)


# ------------------------------------------------------------------------------------ the corrupted forget set
def test_corrupted_selects_the_discovered_fraction_of_manipulated_ids_only():
    source = backdoor()
    manipulated = manipulation_record(source.train).ids
    for rate in (0.25, 0.5, 1.0):
        ids = select_forget(source.train, ForgetSpec("corrupted", fraction=rate), np.random.default_rng(0))
        assert len(ids) == round(rate * len(manipulated)) and len(set(ids)) == len(ids)
        assert np.isin(ids, manipulated).all()
    again = select_forget(source.train, ForgetSpec("corrupted", fraction=0.5), np.random.default_rng(0))
    other = select_forget(source.train, ForgetSpec("corrupted", fraction=0.5), np.random.default_rng(1))
    assert np.array_equal(again, select_forget(source.train, ForgetSpec("corrupted", fraction=0.5), np.random.default_rng(0)))
    assert not np.array_equal(again, other)
    with pytest.raises(EmptySelection, match="identifies none"):  # not silently rounded up to one example
        select_forget(source.train, ForgetSpec("corrupted", fraction=0.1 / len(manipulated)), np.random.default_rng(0))


def test_corrupted_task_carries_manipulation_and_probes():
    source = backdoor()
    task = corrective_task(source)
    record = manipulation_record(source.train)
    assert task.info["manipulation"]["ids"] == record.ids.tolist() and task.info["forget_label"] == "corrupted 50%"
    assert task.probes["triggered"] is record.probes["triggered"] and "probe:triggered" in task.splits()
    spec = ForgetSpec.from_dict({"kind": "corrupted", "fraction": 0.5})
    assert spec == ForgetSpec("corrupted", fraction=0.5) and spec.to_dict() == {"kind": "corrupted", "fraction": 0.5}


def test_corrupted_needs_manipulated_data_and_a_valid_rate(digits):
    with pytest.raises(TaskError, match="records no manipulated examples; use data from the 'poisoned' source"):
        select_forget(digits.train, ForgetSpec("corrupted", fraction=0.5), np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"discovery rate\) must be in \(0, 1\], got 1.5"):
        select_forget(backdoor().train, ForgetSpec("corrupted", fraction=1.5), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="Unknown key 'count'"):
        ForgetSpec.from_dict({"kind": "corrupted", "count": 3})


def test_experiment_file_builds_corrective_tasks():
    from unlearnkit.runs.runner import ExperimentRunner

    exp = load_experiment(ROOT / "experiments" / "corrective_digits.yaml")
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    runner = ExperimentRunner(exp, store=None, device="cpu", progress=False)  # type: ignore[arg-type]
    tasks = [runner.build_task(source, spec) for spec in exp.forget]
    n = len(manipulation_record(source.train).ids)
    assert [len(t.forget) for t in tasks] == [round(0.25 * n), round(0.5 * n), n]
    assert all("probe:triggered" in t.splits() and t.info["manipulation"]["kind"] == "backdoor" for t in tasks)


# ------------------------------------------------------------------------------------ evidence
def fresh_mlp(seed=0):
    with torch_seed(seed):
        return build_model("mlp", (64,), 10, hidden=(32,))


def test_label_flip_success_is_the_source_to_target_confusion():
    source = label_flip()
    task = corrective_task(source)
    model = fresh_mlp()
    ctx = EvalContext(task, get_adapter(task))
    result = evaluate(model, task, References(), [build_metric("backdoor_success")], ctx)[0]["backdoor_success"]
    x = source.test.data.x[torch.as_tensor(source.test.labels == 3)]
    with torch.no_grad():
        expected = float((model(x).argmax(1) == 8).float().mean())
    assert result.values == {"backdoor_success": pytest.approx(expected)}
    assert result.info[FULL_RETRAIN_KEY].startswith("not provided")
    assert result.evidence[0].role == "forget" and result.evidence[0].remembers == "higher"


def test_backdoor_metric_does_not_apply_without_manipulated_data(digits):
    task = make_task("plain", digits.train, digits.test, ForgetSpec("random", fraction=0.1), np.random.default_rng(0), n_classes=10)
    result = build_metric("backdoor_success").compute(fresh_mlp(), task, References(), EvalContext(task, get_adapter(task)))
    assert result.values == {} and result.evidence == () and "poisoned" in result.info["not_applicable"]


@pytest.fixture(scope="module")
def poisoned_setting():
    """Poisoned digits, half of the poisoned examples identified: original, retrained without the identified half, and
    retrained without all poisoned examples (same seed)."""
    source = backdoor(poison_fraction=0.05)
    task = corrective_task(source)
    refs = build_references(task, lambda: build_model("mlp", source.input_shape, 10, hidden=(128, 128)), CONFIG, retrain_seeds=1)
    return source, task, with_full_retrain(refs, task, refs.info["retrain_seeds"])


def test_backdoor_is_learned_from_poison_and_gone_after_retraining_without_all_of_it(poisoned_setting):
    source, task, refs = poisoned_setting
    ctx = EvalContext(task, get_adapter(task))
    metrics = [build_metric("backdoor_success"), build_metric("clean_accuracy")]
    results = evaluate(refs.original, task, refs, metrics, ctx)[0]
    success, clean = results["backdoor_success"].values, results["clean_accuracy"].values
    assert success["backdoor_success"] >= 0.8  # 60 poisoned examples implant the 2×2 trigger
    assert success["retrained_all"] <= 0.1  # a clean model sends triggered digits to class 0 only by chance
    # the paper's point: retraining without the identified half leaves the other 30 poisoned examples, and the backdoor
    assert success["retrained_identified"] >= 0.5
    assert clean["clean_accuracy"] >= 0.9 and clean["retrained_all"] >= 0.9
    assert len(without_all_manipulated(task)) == len(task.train) - len(manipulation_record(source.train).ids)

    # independent computation: stamp the trigger on the clean test digits of classes 1..9 by hand
    x = source.test.data.x[torch.as_tensor(source.test.labels != 0)].clone().reshape(-1, 8, 8)
    x[:, 6:, 6:] = float(load_dataset("digits").train.data.x.max())
    with torch.no_grad():
        pred = [m(x.reshape(len(x), -1)).argmax(1) for m in (refs.original, refs.retrained, refs.info[FULL_RETRAIN_KEY][0])]
        clean_pred = refs.original(source.test.data.x).argmax(1)
    assert success["backdoor_success"] == pytest.approx(float((pred[0] == 0).float().mean()))
    assert success["retrained_identified"] == pytest.approx(float((pred[1] == 0).float().mean()))
    assert success["retrained_all"] == pytest.approx(float((pred[2] == 0).float().mean()))
    assert clean["clean_accuracy"] == pytest.approx(float((clean_pred == torch.as_tensor(source.test.labels)).float().mean()))
