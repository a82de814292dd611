"""Data-parallel runs under ``accelerate launch`` (or ``torchrun``): which rank this process is, batch shards, the gradient
all-reduce of ``train.fit``, the in-order gather of per-example outputs, and rank 0 as the only writer.

A process is distributed when the launcher set ``WORLD_SIZE`` > 1. Otherwise every function here is a no-op that reads
one environment variable, so one-process runs compute exactly what they did and never import ``accelerate``.

The data-parallel scheme (Li et al., PyTorch Distributed: Experiences on Accelerating Data Parallel Training, VLDB 2020):
every rank draws the same global batch of ``batch_size`` examples from each stream (the same seeded generators) and
keeps its contiguous share of the rows (``shard_batch``); each rank's gradient is weighted by its share of the step's
examples and the weighted gradients are summed over ranks (``reduce_gradients``). The NLL and ascent terms rescale
their shard means (``step_scales``, read by ``objectives.shard_scaled``) to the whole batch's example count or, for
the ``token`` reduction, its answer-token count, so for them and any sum of them (grad_diff, retain terms) the summed
gradient and loss are the one-process ones up to the order of floating-point sums. Where it cannot be: other
objectives' means over a stream (NPO, SimNPO, RMU ...) are exact when every stream's batch is split in the same
proportions (equal batch lengths, e.g. every full batch), and approximate on a step whose streams' batch lengths
split differently (a short last batch of odd length); objectives that draw from the step's generator per example
(random labels) draw for the rank's shard, not the whole batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from .errors import ConfigError

T = TypeVar("T")


def world_size() -> int:
    """Number of processes of the launch (``WORLD_SIZE``; 1 when not launched by accelerate or torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be a whole number, got {os.environ.get('WORLD_SIZE')!r}.") from None


def active() -> bool:
    """Whether this process is one of several of a data-parallel launch."""
    return world_size() > 1


def rank() -> int:
    """This process's rank (``RANK``; 0 when not distributed)."""
    return int(os.environ.get("RANK", "0")) if active() else 0


def is_main() -> bool:
    """Whether this process writes (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed launch, anything else is kept."""
    if active() and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init() -> None:
    """Join the launch's process group (through ``accelerate``'s ``PartialState``: NCCL on GPUs, gloo on CPUs) if this
    process has not yet; nothing when not distributed."""
    if not active() or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    sharded = [name for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
               if os.environ.get(var, "").lower() in ("1", "true", "yes")]
    if sharded:
        raise ConfigError(f"This launch asks for {sharded[0]}; unlearnkit runs data-parallel only (every process holds the whole "
                          "model). Launch without the FSDP/DeepSpeed config (accelerate launch --multi_gpu ...).")
    from accelerate import PartialState

    PartialState()


def shard_positions(n: int) -> tuple[int, int]:
    """The contiguous rows [start, stop) of ``n`` that this rank holds (ranks 0..W−1 in order, sizes differ by ≤ 1)."""
    w, r = world_size(), rank()
    return r * n // w, (r + 1) * n // w


def shard_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """This rank's rows of a batch (every tensor whose first dimension is the batch's length)."""
    n = len(batch["ids"])
    start, stop = shard_positions(n)
    return {k: (v[start:stop] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n else v) for k, v in batch.items()}


def shard_batch_streams(batches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """This rank's rows of every stream's batch of a training step."""
    return {name: shard_batch(b) for name, b in batches.items()}


SCALES = "distributed_scales"
"""The ``StepContext.extra`` key of a data-parallel step's ``{stream: {"example": a, "token": b}}``: what a mean over this
rank's shard of the stream is multiplied by so the share-weighted sum over ranks is the mean over the whole batch."""


def step_scales(batches: dict[str, dict[str, Any]], local: dict[str, dict[str, Any]], share: float,
                count_targets: Callable[[dict[str, Any]], int] | None) -> dict[str, dict[str, float]]:
    """Per stream: (rows here / rows in the batch) / ``share`` for the mean over examples, and (targets here / targets in
    the batch) / ``share`` for the mean over targets (``count_targets``: a causal LM's answer tokens; examples when None).
    Every rank holds the whole batch, so the global counts need no communication."""
    out = {}
    for name, b in batches.items():
        rows = len(local[name]["ids"]) / len(b["ids"])
        targets = rows if count_targets is None else count_targets(local[name]) / max(1, count_targets(b))
        out[name] = {"example": rows / share, "token": targets / share}
    return out


def gather(value: T) -> list[T]:
    """``value`` of every rank, in rank order, on every rank (one-element list when not distributed)."""
    if not active():
        return [value]
    init()
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def gather_concat(rows: Sequence[T]) -> list[T]:
    """Every rank's ``rows`` concatenated in rank order: with ``shard_positions`` shards, the rows of the whole in order."""
    return [row for part in gather(list(rows)) for row in part]


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (decisions all ranks must agree on: a time budget, an early stop)."""
    if not active():
        return value
    init()
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing when not distributed)."""
    if active():
        init()
        torch.distributed.barrier()


@torch.no_grad()
def reduce_gradients(params: Iterable[torch.nn.Parameter], share: float) -> None:
    """Replace every parameter's gradient g_r by Σ_r share_r · g_r over the ranks (``share`` = this rank's fraction of
    the step's examples; a missing gradient counts as zero). All ranks then hold the same gradient."""
    init()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.mul_(share)
        torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)


def main_writes(write: Callable[..., T]) -> Callable[..., T | None]:
    """Decorate a store write: in a distributed launch every rank waits until all ranks reach it (so none reads the
    store for an entry another is about to write), rank 0 alone writes, and all wait for the write to finish."""
    import functools

    @functools.wraps(write)
    def wrapped(*args: Any, **kwargs: Any) -> T | None:
        if not active():
            return write(*args, **kwargs)
        barrier()
        try:
            return write(*args, **kwargs) if is_main() else None
        finally:
            barrier()

    return wrapped
