"""Executors: the same jobs give the same results in-process, in fresh processes and on a (local) Ray cluster."""

import os

import pytest
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.experiment import Experiment
from unlearnkit.runs import Store
from unlearnkit.executor import LocalExecutor, ProcessExecutor, get_executor
from unlearnkit.runs.runner import run_experiment
from tests.runs.test_runner import SPEC


def square(x: int) -> int:
    return x * x


def test_local_map_and_imap_order():
    ex = LocalExecutor()
    assert ex.map(square, [1, 2, 3]) == [1, 4, 9]
    assert list(ex.imap(square, [3, 4])) == [(0, 9), (1, 16)]


def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def die(x: int) -> int:
    if x == 1:
        os._exit(3)  # the process vanishes without returning, like an out-of-memory kill
    return x


def test_unknown_executor():
    with pytest.raises(ConfigError, match="Unknown executor 'dask'"):
        get_executor("dask")
    for bad in ("process:0", "process:two"):
        with pytest.raises(ConfigError, match="whole number of workers"):
            get_executor(bad)
    assert get_executor("process:2").workers == 2


def test_process_executor_runs_each_job_in_its_own_fresh_process():
    out = ProcessExecutor(workers=2).map(pid_of, [0, 1, 2])
    assert [x for x, _ in out] == [0, 1, 2]  # results in item order
    pids = {pid for _, pid in out}
    assert len(pids) == 3 and os.getpid() not in pids


def test_process_executor_starts_the_next_job_only_when_the_caller_asks():
    import multiprocessing

    jobs = ProcessExecutor(workers=1).imap(pid_of, [0, 1])
    assert next(jobs)[0] == 0
    assert not multiprocessing.active_children()  # nothing competes with the caller's work on result 0
    assert [i for i, _ in jobs] == [1]


def test_process_executor_names_a_job_whose_process_died():
    with pytest.raises(RuntimeError, match="Job 1 .*process died"):
        ProcessExecutor().map(die, [0, 1, 2], desc="dying")


@pytest.mark.slow
def test_ray_gives_the_same_runs_as_local(tmp_path):
    ray = pytest.importorskip("ray")
    from unlearnkit.executor import RayExecutor

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
    assert_same_runs(tmp_path, local, "local", remote, "ray")


def test_fresh_processes_give_the_same_runs_as_local(tmp_path):
    exp = Experiment.from_dict(SPEC)
    local = run_experiment(exp, Store(tmp_path / "local"), device="cpu", progress=False, log=lambda m: None,
                           executor=LocalExecutor(threads=1))
    fresh = run_experiment(exp, Store(tmp_path / "process"), device="cpu", progress=False, log=lambda m: None,
                           executor=ProcessExecutor(workers=2, threads=1))
    assert_same_runs(tmp_path, local, "local", fresh, "process")


def assert_same_runs(root, a_record, a_name, b_record, b_name):
    assert a_record["runs"] == b_record["runs"]  # same run ids: same keys
    for run_id in a_record["runs"]:
        a = Store(root / a_name).load_run_model(run_id, _model())
        b = Store(root / b_name).load_run_model(run_id, _model())
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
        va = Store(root / a_name).load_run(run_id)["results"]["accuracy"]["values"]
        vb = Store(root / b_name).load_run(run_id)["results"]["accuracy"]["values"]
        assert va == vb


def _model():
    from unlearnkit.models import build_model

    return build_model("mlp", (64,), 10, hidden=(32,))

