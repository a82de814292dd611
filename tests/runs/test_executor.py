"""Executors: the same jobs give the same results in-process and on a (local) Ray cluster."""

import pytest
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.experiment import Experiment
from unlearnkit.runs import Store
from unlearnkit.runs.executor import LocalExecutor, get_executor
from unlearnkit.runs.runner import run_experiment
from tests.runs.test_runner import SPEC


def square(x: int) -> int:
    return x * x


def test_local_map_and_imap_order():
    ex = LocalExecutor()
    assert ex.map(square, [1, 2, 3]) == [1, 4, 9]
    assert list(ex.imap(square, [3, 4])) == [(0, 9), (1, 16)]


def test_unknown_executor():
    with pytest.raises(ConfigError, match="Unknown executor 'dask'"):
        get_executor("dask")


@pytest.mark.slow
def test_ray_gives_the_same_runs_as_local(tmp_path):
    ray = pytest.importorskip("ray")
    from unlearnkit.runs.executor import RayExecutor

    exp = Experiment.from_dict({**SPEC, "seeds": [0, 1]})
    local = run_experiment(exp, Store(tmp_path / "local"), device="cpu", progress=False, log=lambda m: None,
                           executor=LocalExecutor(threads=1))
    executor = RayExecutor(num_cpus=2)
    try:
        assert executor.map(square, list(range(6))) == [0, 1, 4, 9, 16, 25]
        remote = run_experiment(exp, Store(tmp_path / "ray"), device="cpu", progress=False, log=lambda m: None, executor=executor)
    finally:
        executor.shutdown()
    assert not ray.is_initialized()
    assert local["runs"] == remote["runs"]  # same run ids: same keys
    for run_id in local["runs"]:
        a = Store(tmp_path / "local").load_run_model(run_id, _model())
        b = Store(tmp_path / "ray").load_run_model(run_id, _model())
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
        va = Store(tmp_path / "local").load_run(run_id)["results"]["accuracy"]["values"]
        vb = Store(tmp_path / "ray").load_run(run_id)["results"]["accuracy"]["values"]
        assert va == vb


def _model():
    from unlearnkit.models import build_model

    return build_model("mlp", (64,), 10, hidden=(32,))

