"""Slow end-to-end check on real Fashion-MNIST data (a 12k-example subset): the original memorises
its training data, and the experiment runs through the CLI into a report."""

import pytest
import yaml

from unlearnkit.cli import main
from unlearnkit.data.sources import find_fashion_mnist
from unlearnkit.errors import DataUnavailable
from unlearnkit.runs import Store


def have_fashion() -> bool:
    try:
        find_fashion_mnist(None, download=False)
        return True
    except DataUnavailable:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not have_fashion(), reason="Fashion-MNIST not installed (make data installs it)")
def test_fashion_subset_end_to_end(tmp_path, capsys):
    spec = {
        "name": "fashion_subset",
        "dataset": {"name": "fashion_mnist", "params": {"train_subset": 12000, "test_subset": 4000}},
        "forget": [{"kind": "random", "fraction": 0.1}, {"kind": "classes", "classes": [0]}],
        "model": {"name": "mlp", "params": {"hidden": [256, 256]}},
        "train": {"epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
        "references": {"retrain_seeds": 3},
        "methods": ["retrain", "finetune", "salun", "ssd"],
    }
    path = tmp_path / "fashion.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--store", str(tmp_path / "s"), "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    store = Store(tmp_path / "s")
    record = store.load_experiment(store.experiments()[0]["exp_id"])
    for task in record["tasks"]:
        original = store.load_run(task["original_run"])
        assert original["verdict"]["label"] == "not forgotten"
        acc = original["results"]["accuracy"]["values"]
        assert acc["retain"] - acc["test"] > 0.05  # memorised: train accuracy well above test
        retrain = store.load_run(task["runs"]["retrain"][0])
        assert retrain["verdict"]["label"] == "removed"
