"""Data-parallel and FSDP training and evaluation (``unlearnkit.distributed``): two CPU processes joined by gloo, as
``accelerate launch --multi_gpu --num_processes 2`` (or ``--use_fsdp``) starts them on a machine without GPUs, give the
one-process numbers. grad_diff with the ``token`` reduction on the forget term and ``example`` on the retain term, and
SGD: each rank's gradient on its half of every batch (its NLL rescaled to the whole batch's answer-token or example
count), weighted by its share and summed, is the one-process gradient up to the order of float sums, so the losses and
the weights after a few steps agree to 1e-5 and the gathered per-example LM outputs (shards computed in other batches,
hence other padding) to 1e-4. SGD rather than Adam: Adam divides by the root of the squared gradient, which turns
float-order differences in near-zero gradient coordinates into differences of order lr; the gradient is what is exact.

Under FSDP (torch's FSDP2 ``fully_shard``, which runs on CPUs with gloo; FSDP1 refuses: "FSDP needs a non-CPU
accelerator device") each process holds half of every weight during training, FSDP's reduce-scatter makes the same
weighted sum shard by shard, and the whole weights come back into the model at the end: the same numbers as one process
(measured: losses equal to 2e-7, weights to 1e-8). With LoRA, a partial mask, gradient clipping, a callback that edits
the model, and a batch of one row (one rank holds none of it: it computes on a stand-in row weighted 0), FSDP gives
what the data-parallel run gives.
"""

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
from unlearnkit.models import build_model
from unlearnkit.train import TrainConfig, fit
from unlearnkit.types import Mask

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


FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true",
            "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP"}  # what `accelerate launch` sets for an FSDP2 config


class _Recording(distributed.ShardedModel):
    """The sharded model, recording what each process holds once the weights are in the shards."""

    log: list[dict] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recording.log.append({"units": self.units, "held": sum(p.to_local().numel() for p in self.module.parameters()),
                               "whole": sum(t.numel() for t in self._shards.values()),
                               "left": sum(p.numel() for _, p in self.params)})


def _worker(rank: int, port: int, state_path: str, out_dir: str, env: dict | None = None, run=None):
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="true", **(env or {}))
    distributed.ShardedModel = _Recording  # type: ignore[misc]
    (run or _run)(state_path, os.path.join(out_dir, f"rank{rank}.pt"))
    if _Recording.log:
        torch.save(_Recording.log, os.path.join(out_dir, f"shards{rank}.pt"))
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


def test_deepspeed_launches_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed"):
        distributed.init()


@pytest.mark.parametrize("env, expected", [
    ({}, None),  # data-parallel: no FSDP asked for
    ({"ACCELERATE_USE_FSDP": "true"}, distributed.FSDPSettings(True, None, False)),  # accelerate's defaults: FSDP1 FULL_SHARD
    ({"UNLEARNKIT_FSDP": "1"}, distributed.FSDPSettings(True, None, False)),  # torchrun
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP", "FSDP_RESHARD_AFTER_FORWARD": "true"},
     distributed.FSDPSettings(False, None, False)),  # an fsdp_version 1 config: the strategy decides
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_SHARDING_STRATEGY": "FULL_SHARD", "FSDP_RESHARD_AFTER_FORWARD": "false"},
     distributed.FSDPSettings(False, None, False)),  # version 2: reshard_after_forward decides
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "2"}, distributed.FSDPSettings(False, None, False)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "NO_SHARD"}, None),  # that is the data-parallel scheme
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer, LlamaMLP", "FSDP_OFFLOAD_PARAMS": "true"},
     distributed.FSDPSettings(True, ("LlamaDecoderLayer", "LlamaMLP"), True)),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}, distributed.FSDPSettings(True, (), False)),
])
def test_fsdp_settings_from_the_launch(monkeypatch, env, expected):
    for var in ("ACCELERATE_USE_FSDP", "UNLEARNKIT_FSDP", "FSDP_VERSION", "FSDP_SHARDING_STRATEGY", "FSDP_RESHARD_AFTER_FORWARD",
                "FSDP_AUTO_WRAP_POLICY", "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_OFFLOAD_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.fsdp_settings() == expected
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.fsdp_settings() is None  # one process: nothing to shard over


@pytest.mark.parametrize("env, match", [({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "hybrid"),
                                        ({"FSDP_SHARDING_STRATEGY": "SHARDED"}, "not a sharding strategy"),
                                        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "SIZE_BASED_WRAP")])
def test_fsdp_settings_we_cannot_honour_are_refused(monkeypatch, env, match):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        distributed.fsdp_settings()


def test_fsdp_units_are_the_decoder_layers(profiles_source):
    """The units sharded on their own: the model's ``_no_split_modules`` (LlamaDecoderLayer), innermost first; or the
    classes named; an unknown class is an error naming the model's classes."""
    model = tiny_llama_factory(profiles_source)()
    assert distributed._units(model, None) == ["model.layers.1", "model.layers.0"]
    assert distributed._units(model, ("LlamaMLP",)) == ["model.layers.1.mlp", "model.layers.0.mlp"]
    assert distributed._units(model, ()) == []
    with pytest.raises(ConfigError, match="LlamaDecoderLayer"):
        distributed._units(model, ("GPT2Block",))


def test_rank_shares_and_stand_in_rows(monkeypatch):
    """7 forget and 1 retain rows over 2 ranks: rank 0 holds no retain row (share 0), rank 1 holds 4 + 1 of 8 (hand)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    batch = {"forget": {"ids": torch.arange(7)}, "retain": {"ids": torch.arange(10, 11), "x": torch.ones(1, 3)}}
    assert distributed.rank_shares(batch) == [0.0, 5 / 8]
    assert distributed.first_rows({"ids": torch.arange(3), "x": torch.arange(6).view(3, 2)})["x"].tolist() == [[0, 1]]


def test_sam_is_refused_under_fsdp(monkeypatch, causal_lm_task, profiles_source):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    config = TrainConfig(steps=1, batch_size=4, sam_rho=0.05)
    with pytest.raises(ConfigError, match="SAM"):  # before any process group is joined
        fit(tiny_llama_factory(profiles_source)(), build_method("grad_diff", PARAMS).objective(causal_lm_task, None),
            {"forget": causal_lm_task.forget, "retain": causal_lm_task.retain}, config, adapter=get_adapter(causal_lm_task),
            rng=np.random.default_rng(0), epoch_stream="forget")


def test_fsdp_refuses_trainable_parameters_of_two_dtypes(monkeypatch):
    """FSDP2 would assert at the first forward, with the weights already in shards: refused before sharding."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    with pytest.raises(ConfigError, match=r"one dtype; this model trains \['torch.float32', 'torch.float64'\]"):
        distributed.ShardedModel(model, "cpu", distributed.FSDPSettings())
    assert model[0].weight.shape == (2, 2)  # untouched


def test_fsdp_processes_match_one(tmp_path, profiles_source, monkeypatch):
    """The same run as ``test_two_processes_match_one`` with the model sharded by FSDP: each process held half of the
    weights (the decoder layers as units), the caller's model none while training; the numbers are one process's."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)
    torch.save(tiny_llama_factory(profiles_source)().state_dict(), tmp_path / "start.pt")
    _run(str(tmp_path / "start.pt"), str(tmp_path / "single.pt"))
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path / "start.pt"), str(tmp_path), FSDP_ENV), nprocs=WORLD, start_method="spawn")
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    logs = [torch.load(tmp_path / f"shards{r}.pt", weights_only=False) for r in range(WORLD)]
    for log in logs:
        assert len(log) == 1 and log[0]["units"] == ["model.layers.1", "model.layers.0"] and log[0]["left"] == 0
    assert logs[0][0]["held"] + logs[1][0]["held"] == logs[0][0]["whole"]  # the ranks' shards tile the model
    assert abs(logs[0][0]["held"] - logs[0][0]["whole"] / 2) < 0.01 * logs[0][0]["whole"]
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert got["passes"] == single["passes"]
        np.testing.assert_allclose(got["losses"], single["losses"], rtol=1e-5)
        assert got["state"].keys() == single["state"].keys()
        for k, v in single["state"].items():
            assert type(got["state"][k]) is torch.Tensor  # plain tensors again, not shards
            torch.testing.assert_close(got["state"][k], v, atol=1e-5, rtol=1e-4)
        for split, out in single["outputs"].items():
            for k, v in out.items():
                np.testing.assert_allclose(got["outputs"][split][k], v, atol=1e-4, rtol=1e-4, equal_nan=True)


def _run_lora(state_path: str, out_path: str):
    """grad_diff on LoRA adapters with half of one adapter masked, gradient clipping that binds, SGD with momentum, a
    forget stream of 8 rows in batches of 7 (the second batch has one row: rank 0 holds none of it), and a callback that
    records the whole model's sum and, at step 1, edits an adapter."""
    torch.set_num_threads(1)
    source, task = _task()
    model = build_model("tiny_llama", source.input_shape, source.n_outputs, lora_r=2)
    model.load_state_dict(torch.load(state_path))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    edited = names[0]
    mask = Mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if p.requires_grad})
    half = mask[names[1]].clone()
    half[: half.shape[0] // 2] = False
    mask = Mask({**{n: mask[n] for n in mask}, names[1]: half})
    seen = []

    def callback(step, m):
        params = dict(m.named_parameters())
        seen.append(float(sum(p.double().sum() for p in params.values())))
        if step == 1:
            with torch.no_grad():
                params[edited].add_(0.01)

    forget = task.forget.subset(np.arange(8))
    config = TrainConfig(steps=4, batch_size=7, optimizer="sgd", lr=0.05, grad_clip=0.05)
    result = fit(model, build_method("grad_diff", PARAMS).objective(task, None), {"forget": forget, "retain": task.retain}, config,
                 adapter=get_adapter(task), rng=np.random.default_rng(0), epoch_stream="forget", mask=mask, callback=callback)
    torch.save({"state": model.state_dict(), "losses": [h["loss"] for h in result.history], "seen": seen, "masked": names[1]}, out_path)


@pytest.mark.slow
def test_fsdp_with_lora_mask_clipping_and_callbacks_matches_data_parallel(tmp_path, profiles_source, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)
    model = build_model("tiny_llama", profiles_source.input_shape, profiles_source.n_outputs, lora_r=2)
    with torch.no_grad():  # LoRA's B starts at zero; give every adapter a gradient of its own
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    start = model.state_dict()
    torch.save(start, tmp_path / "start.pt")
    results = {}
    for kind, env in (("dp", {}), ("fsdp", FSDP_ENV)):
        out = tmp_path / kind
        out.mkdir()
        mp.start_processes(_worker, args=(_free_port(), str(tmp_path / "start.pt"), str(out), env, _run_lora), nprocs=WORLD,
                           start_method="spawn")
        results[kind] = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert (tmp_path / "fsdp" / "shards0.pt").exists() and not (tmp_path / "dp" / "shards0.pt").exists()
    dp = results["dp"][0]
    assert len(dp["losses"]) == 4 and len(dp["seen"]) == 4
    masked = dp["masked"]
    for got in results["fsdp"]:
        np.testing.assert_allclose(got["losses"], dp["losses"], rtol=1e-5)
        np.testing.assert_allclose(got["seen"], dp["seen"], rtol=1e-6)  # the callback saw the same whole model each step
        for k, v in dp["state"].items():
            torch.testing.assert_close(got["state"][k], v, atol=1e-6, rtol=1e-5)
            if "lora" not in k:  # frozen base weights: bit-identical to the start
                assert torch.equal(got["state"][k], start[k]), k
        rows = got["state"][masked].shape[0] // 2  # masked-out rows of the half-masked adapter: bit-identical
        assert torch.equal(got["state"][masked][:rows], start[masked][:rows])
        assert not torch.equal(got["state"][masked][rows:], start[masked][rows:])
