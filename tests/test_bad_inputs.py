"""Bad input, through the Python API and the CLI: a typed error whose message names the offending value or file, raised
before anything is written (the store is left as it was), never a raw traceback or a silently wrong result."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import unlearnkit as uk
from unlearnkit.cli import main
from unlearnkit.errors import ConfigError, TaskError, UnlearnError
from unlearnkit.runs.references import build_references
from unlearnkit.runs.summary import TaskSummary, format_tables, sanity_warning
from unlearnkit.train import TrainConfig
from tests.runs.test_runner import SPEC


def write(tmp_path: Path, spec: object, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def tiny_task(x: torch.Tensor, y: torch.Tensor, n_classes: int | None = 2) -> uk.Task:
    train = uk.Split.create("train", uk.TensorData(x[:16], y[:16]))
    test = uk.Split.create("test", uk.TensorData(x[16:], y[16:]), ids=np.arange(16, len(x)))
    return uk.Task.from_forget_ids("t", train, test, [0, 1], n_classes=n_classes)


# ------------------------------------------------------------------------------------------------ training settings
@pytest.mark.parametrize("setting, named", [({"lr": 0}, "lr"), ({"lr": 0.0}, "lr"), ({"epochs": 0}, "epochs"), ({"steps": 0}, "steps"),
                                            ({"lr": "fast"}, "lr"), ({"batch_size": 2.5}, "batch_size"), ({"epochs": float("nan")}, "epochs")])
def test_a_training_config_that_cannot_learn_is_refused(setting, named):
    with pytest.raises(ConfigError, match=named):
        TrainConfig(**setting)
    with pytest.raises(ConfigError, match=named):
        TrainConfig.from_dict(setting)


def test_a_method_with_no_budget_is_refused_not_run_as_a_no_op():
    with pytest.raises(ConfigError, match="epochs"):
        uk.build_method("finetune", {"epochs": 0})
    with pytest.raises(ConfigError, match="lr"):
        uk.build_method("grad_ascent", {"lr": 0.0})


def test_the_cli_refuses_a_zero_learning_rate_in_an_experiment_file(tmp_path, capsys):
    assert main(["validate", "--no-data", str(write(tmp_path, {**SPEC, "train": {**SPEC["train"], "lr": 0}}))]) == 2
    assert "lr must be a finite number > 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ data
def test_non_finite_inputs_are_named_by_row():
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    x[4, 1], x[17, 0] = float("nan"), float("inf")
    with pytest.raises(TaskError, match=r"2 of 20 rows, e.g. rows \[4, 17\]"):
        uk.TensorData(x, y)
    targets = torch.randn(20)
    targets[3] = float("inf")
    with pytest.raises(TaskError, match=r"labels or targets.*rows \[3\]"):
        uk.TensorData(torch.randn(20, 3), targets)


def test_float_labels_in_a_classification_task_are_refused_with_what_to_do():
    x = torch.randn(20, 3)
    with pytest.raises(TaskError, match=r"fractional values, e.g. \[0.5"):
        tiny_task(x, torch.tensor([0.5] + [1.0] * 19))
    with pytest.raises(TaskError, match=r"y.long\(\)"):
        tiny_task(x, torch.ones(20))
    assert tiny_task(x, torch.randn(20), n_classes=None).n_classes is None  # continuous targets: a regression task


def test_references_need_a_module_factory_and_a_positive_number_of_seeds():
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    task = tiny_task(x, y)
    config = TrainConfig(steps=1, batch_size=4)
    with pytest.raises(ConfigError, match="retrain_seeds must be a whole number >= 1, got -2"):
        build_references(task, lambda: torch.nn.Linear(3, 2), config, retrain_seeds=-2)
    with pytest.raises(ConfigError, match="distinct integer seeds"):
        build_references(task, lambda: torch.nn.Linear(3, 2), config, retrain_seeds=[1, 1])
    with pytest.raises(ConfigError, match="must return a torch.nn.Module, got str"):
        build_references(task, lambda: "not a model", config, retrain_seeds=2)


# ------------------------------------------------------------------------------------------------ experiment files
@pytest.mark.parametrize("case", ["directory", "binary", "syntax", "seeds_word", "negative_width", "one_seed"])
def test_a_bad_experiment_file_names_the_problem(tmp_path, capsys, case):
    if case == "directory":
        path, expect = tmp_path, "is a directory"
    elif case == "binary":
        path = tmp_path / "exp.yaml"
        path.write_bytes(bytes(range(256)))
        expect = "is not a text (UTF-8) file"
    elif case == "syntax":
        path = tmp_path / "exp.yaml"
        path.write_text("name: x\n  bad: [\n")
        expect = f"{path}, line 2, column 6: not valid YAML"
    elif case == "seeds_word":
        path, expect = write(tmp_path, {**SPEC, "references": {"retrain_seeds": "two"}}), "references.retrain_seeds: expected an integer, got 'two'"
    elif case == "negative_width":
        path, expect = write(tmp_path, {**SPEC, "model": {"name": "mlp", "params": {"hidden": [-5]}}}), "hidden=[-5]"
    else:
        path, expect = write(tmp_path, {**SPEC, "references": {"retrain_seeds": 1}}), "no spread"
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_a_bad_device_fails_before_the_store_is_touched(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "keep.txt").write_text("a finished store")
    before = snapshot(store)
    for device in ("bogus", "cuda:7" if not torch.cuda.is_available() else "bogus2"):
        assert main(["run", str(write(tmp_path, SPEC)), "--store", str(store), "--device", device, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert repr(device) in err and "Traceback" not in err
    assert snapshot(store) == before
    assert main(["validate", "--no-data", str(write(tmp_path, {**SPEC, "device": "gpu0"}))]) == 2
    assert "Unknown device 'gpu0'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the original's sanity check
def test_a_table_whose_original_passes_as_forgotten_is_marked_not_meaningful():
    def summary(label: str) -> TaskSummary:
        task = {"modality": "classifier", "splits": {"forget": {"n": 10}, "retain": {"n": 90}, "test": {"n": 50}}}
        values = {"forget": 0.8, "retain": 0.8, "test": 0.79}
        original = {"verdict": {"label": label}, "results": {"accuracy": {"values": values}}}
        return TaskSummary("random 10%", task, original, [], None, "", None)

    assert sanity_warning(summary("not forgotten")) is None
    warning = sanity_warning(summary("removed"))
    assert warning is not None and "'removed'" in warning and "memorisation gap +0.010" in warning
    text = format_tables([summary("removed")])
    assert "!! NOT MEANINGFUL" in text and "not meaningful: see the warning" in text


def test_every_error_above_is_an_unlearn_error():
    assert issubclass(ConfigError, UnlearnError) and issubclass(TaskError, UnlearnError)


# ------------------------------------------------------------------------------------------------ evidence on small tasks
def test_relearning_adapts_to_a_small_forget_set_and_a_tiny_one_is_missing_evidence(digits):
    from unlearnkit.data.forget import ForgetSpec, make_task
    from tests.conftest import model_factory

    def task_of(n_forget: int) -> uk.Task:
        ids = digits.train.ids[:n_forget]
        return make_task("digits", digits.train, digits.test, ForgetSpec("ids", ids=tuple(int(i) for i in ids)),
                         np.random.default_rng(0), n_classes=10)

    config = TrainConfig(epochs=2, batch_size=64, optimizer="adam", lr=2e-3)
    small = task_of(12)
    refs = build_references(small, model_factory(digits), config, retrain_seeds=2)
    result = uk.assess(refs.original, small, refs, metrics=["accuracy", "relearn", "noise_floor"])
    assert "relearn" in result.results and result.results["relearn"].info["slice"] == 6  # half relearned, half held out
    tiny = task_of(3)
    refs = build_references(tiny, model_factory(digits), config, retrain_seeds=2)
    result = uk.assess(refs.original, tiny, refs, metrics=["accuracy", "relearn", "noise_floor"])
    assert "relearn" not in result.results and "needs at least 4" in result.missing["relearn"]
    assert result.verdict.label == "inconclusive" and any("relearn" in m for m in result.verdict.missing)
