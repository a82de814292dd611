"""Data-parallel training and evaluation (``unlearnkit.distributed``): two CPU processes joined by gloo, as
``accelerate launch --multi_gpu --num_processes 2`` starts them on a machine without GPUs, give the one-process
numbers. grad_diff with the ``token`` reduction on the forget term and ``example`` on the retain term, and SGD: each
rank's gradient on its half of every batch (its NLL rescaled to the whole batch's answer-token or example count),
weighted by its share and summed, is the one-process gradient up to the order of float sums, so the losses and the
weights after a few steps agree to 1e-5 and the gathered per-example LM outputs (shards computed in other batches,
hence other padding) to 1e-4. SGD rather than Adam: Adam divides by the root of the squared gradient, which turns
float-order differences in near-zero gradient coordinates into differences of order lr; the gradient is what is exact."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import tiny_llama_factory
from unlearnkit import distributed
from unlearnkit.adapters import get_adapter
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.train import fit

WORLD = 2
PARAMS = {"steps": 4, "lr": 0.05, "batch_size": 8, "optimizer": "sgd", "forget_reduction": "token"}


def _task():
    s = load_dataset("profiles", scale="tiny")
    task = make_task("profiles", s.train, s.test, ForgetSpec("profiles", fraction=0.1), np.random.default_rng(0), n_classes=None,
                     modality=s.modality, probes=s.probes)
    return s, task


def _run(state_path: str, out_path: str):
    """A few grad_diff steps from the saved weights, then the outputs on the forget and retain splits."""
    torch.set_num_threads(1)
    source, task = _task()
    model = tiny_llama_factory(source)()
    model.load_state_dict(torch.load(state_path))
    method = build_method("grad_diff", PARAMS)
    adapter = get_adapter(task)
    result = fit(model, method.objective(task, None), {"forget": task.forget, "retain": task.retain}, method.train,
                 adapter=adapter, rng=np.random.default_rng(0), epoch_stream="forget")
    outs = {name: adapter.outputs(model, getattr(task, name), batch_size=5) for name in ("forget", "retain")}
    torch.save({"state": model.state_dict(), "outputs": outs, "losses": [h["loss"] for h in result.history],
                "passes": result.example_passes}, out_path)


def _worker(rank: int, port: int, state_path: str, out_dir: str):
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    _run(state_path, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_the_batch_in_order(monkeypatch):
    """Contiguous shards of 5 rows over 2 ranks: rows 0–1 and 2–4, in rank order (hand-computed)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    got = []
    for r in range(2):
        monkeypatch.setenv("RANK", str(r))
        got.append(distributed.shard_positions(5))
        batch = distributed.shard_batch({"ids": torch.arange(5), "x": torch.arange(10).view(5, 2), "tag": "t"})
        assert batch["tag"] == "t" and batch["ids"].tolist() == list(range(*got[-1]))
    assert got == [(0, 2), (2, 5)]
    monkeypatch.delenv("WORLD_SIZE")
    assert not distributed.active() and distributed.shard_positions(5) == (0, 5) and distributed.gather(3) == [3]


def test_shard_scales_make_the_whole_batch_mean(monkeypatch):
    """Rank 1 of 2 holds rows 1–2 of a 3-row batch with 1, 2 and 5 answer tokens: share 2/3; the example mean over its
    shard is multiplied by (2/3)/(2/3) = 1 and the token mean by (7/8)/(2/3) = 21/16 (hand-computed)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    batch = {"s": {"ids": torch.arange(3), "n": torch.tensor([1, 2, 5])}}
    local = distributed.shard_batch_streams(batch)
    scales = distributed.step_scales(batch, local, 2 / 3, lambda b: int(b["n"].sum()))
    assert local["s"]["ids"].tolist() == [1, 2]
    assert scales["s"]["example"] == pytest.approx(1.0) and scales["s"]["token"] == pytest.approx(21 / 16)


def test_two_processes_match_one(tmp_path, profiles_source, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)
    model = tiny_llama_factory(profiles_source)()
    torch.save(model.state_dict(), tmp_path / "start.pt")
    _run(str(tmp_path / "start.pt"), str(tmp_path / "single.pt"))
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path / "start.pt"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    start = torch.load(tmp_path / "start.pt")
    assert any(not torch.equal(start[k], single["state"][k]) for k in start)  # training moved the weights
    for got in ranks:
        assert got["passes"] == single["passes"]  # the global batch, not a rank's share
        np.testing.assert_allclose(got["losses"], single["losses"], rtol=1e-5)
        for k, v in single["state"].items():
            torch.testing.assert_close(got["state"][k], v, atol=1e-5, rtol=1e-4)
        for split, out in single["outputs"].items():
            assert got["outputs"][split].keys() == out.keys()
            for k, v in out.items():
                np.testing.assert_allclose(got["outputs"][split][k], v, atol=1e-4, rtol=1e-4, equal_nan=True)
    for k, v in ranks[0]["state"].items():  # every rank holds the same model
        assert torch.equal(ranks[1]["state"][k], v)


def _writer(rank: int, port: int, out_dir: str):
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    @distributed.main_writes
    def write(name):
        with open(os.path.join(out_dir, "log"), "a") as f:
            f.write(f"{name} by rank {distributed.rank()}\n")

    write("first")
    seen = Path(out_dir, "log").read_text()  # every rank returns only after rank 0's write
    with open(os.path.join(out_dir, f"seen{rank}"), "w") as f:
        f.write(seen)
    torch.distributed.destroy_process_group()


def test_only_rank_zero_writes_and_the_others_wait(tmp_path):
    mp.start_processes(_writer, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    assert (tmp_path / "log").read_text() == "first by rank 0\n"
    assert all((tmp_path / f"seen{r}").read_text() == "first by rank 0\n" for r in range(WORLD))


def test_sharded_launches_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP"):
        distributed.init()
