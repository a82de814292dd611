"""Data-parallel and FSDP runs under ``accelerate launch`` (or ``torchrun``): which rank this process is, batch shards, the
gradient all-reduce of ``train.fit``, the in-order gather of per-example outputs, rank 0 as the only writer, and the
sharding of ``fit``'s model with FSDP2 (``ShardedModel``). Over 60 lines: the launch, the data-parallel scheme and the
sharded one are one protocol (the same shares and weights), kept in one place.

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

FSDP (Zhao et al., PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel, VLDB 2023), asked for by the
launch (``fsdp_settings``): ``fit`` trains a twin of the model whose weights, gradients and optimizer state are
sharded over the ranks (torch's FSDP2 ``fully_shard``, which runs on CPUs with gloo; FSDP1 refuses a CPU: "FSDP needs a
non-CPU accelerator device"). The scheme above is kept: the same batch shards and shard scales, and each rank's
gradient weighted by its share before the sum, which FSDP's reduce-scatter makes (``_WeightedSum``) instead of
``reduce_gradients``. A rank that holds no row of some stream still runs the step on a stand-in row weighted 0, since
every rank must take part in every gather of a sharded model. The whole weights go back into the model at the end.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

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
    process has not yet; nothing when not distributed. A DeepSpeed launch is refused (``fit`` shards with FSDP, not
    DeepSpeed's ZeRO)."""
    if not active() or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError("This launch asks for DeepSpeed; unlearnkit runs data-parallel or sharded with FSDP. Launch with "
                          "`accelerate launch --multi_gpu ...` or an FSDP config (`--use_fsdp`), not DeepSpeed.")
    from accelerate import PartialState

    PartialState()


def _flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes")


def shard_positions(n: int, of_rank: int | None = None) -> tuple[int, int]:
    """The contiguous rows [start, stop) of ``n`` that this rank (or rank ``of_rank``) holds (ranks 0..W−1 in order,
    sizes differ by ≤ 1)."""
    w, r = world_size(), rank() if of_rank is None else of_rank
    return r * n // w, (r + 1) * n // w


def shard_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """This rank's rows of a batch (every tensor whose first dimension is the batch's length)."""
    n = len(batch["ids"])
    start, stop = shard_positions(n)
    return {k: (v[start:stop] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n else v) for k, v in batch.items()}


def shard_batch_streams(batches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """This rank's rows of every stream's batch of a training step."""
    return {name: shard_batch(b) for name, b in batches.items()}


def rank_shares(batches: dict[str, dict[str, Any]]) -> list[float]:
    """Every rank's share of a step's examples (rows it holds / rows of all streams' batches), 0 for a rank that holds no
    row of some stream (it sits the step out). Every rank holds the whole batch, so no communication is needed."""
    n = sum(len(b["ids"]) for b in batches.values())
    out = []
    for r in range(world_size()):
        rows = [(lambda span: span[1] - span[0])(shard_positions(len(b["ids"]), r)) for b in batches.values()]
        out.append(sum(rows) / n if all(rows) else 0.0)
    return out


def first_rows(batch: dict[str, Any]) -> dict[str, Any]:
    """The first row of a batch: what a rank that holds none of a stream computes on under FSDP, weighted 0, because
    every rank must take part in every forward and backward of a sharded model."""
    n = len(batch["ids"])
    return {k: (v[:1] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n else v) for k, v in batch.items()}


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


# ------------------------------------------------------------------------------------------------ FSDP (sharded models)
@dataclass(frozen=True)
class FSDPSettings:
    """How ``fit`` shards a model with FSDP2 (``torch.distributed.fsdp.fully_shard``).

    ``reshard_after_forward``: free the gathered weights of a unit after its forward (FULL_SHARD, ZeRO-3) or keep them
    until its backward (SHARD_GRAD_OP, ZeRO-2); ``wrap``: class names of the modules sharded as units of their own
    (each gathered and freed on its own), None for the model's ``_no_split_modules`` (a Hugging Face model's decoder
    layers), () for one unit, the whole model; ``offload``: keep the shards and the optimizer state in CPU memory
    (FSDP2's ``CPUOffloadPolicy``, for accelerator devices)."""

    reshard_after_forward: bool = True
    wrap: tuple[str, ...] | None = None
    offload: bool = False


_STRATEGIES = {"FULL_SHARD": True, "1": True, "TRUE": True, "SHARD_GRAD_OP": False, "2": False, "FALSE": False,
               "NO_SHARD": None, "3": None}


def fsdp_settings() -> FSDPSettings | None:
    """The FSDP settings of this launch, or None when the model is not sharded (not distributed, no FSDP asked for, or
    FSDP's NO_SHARD strategy, which is the data-parallel scheme).

    FSDP is asked for by ``accelerate launch --use_fsdp`` or an accelerate config with ``distributed_type: FSDP`` (both
    set ``ACCELERATE_USE_FSDP``), or, under any launcher (``torchrun``), by ``UNLEARNKIT_FSDP=1``. Read from accelerate's
    variables: ``FSDP_SHARDING_STRATEGY`` (an ``fsdp_version: 1`` config) or ``FSDP_RESHARD_AFTER_FORWARD`` (version 2),
    ``FSDP_AUTO_WRAP_POLICY`` with ``FSDP_TRANSFORMER_CLS_TO_WRAP``, ``FSDP_OFFLOAD_PARAMS``. The model is always
    sharded with FSDP2 (``fully_shard``), whichever ``fsdp_version`` the config names: FSDP1 needs an accelerator and
    FSDP2 runs on CPUs too. Hybrid sharding and size-based wrapping are refused; accelerate's other FSDP settings
    (prefetching, activation checkpointing, state-dict type, mixed precision) are not read (a warning names them)."""
    if not active() or not (_flag("ACCELERATE_USE_FSDP") or _flag("UNLEARNKIT_FSDP")):
        return None
    version = os.environ.get("FSDP_VERSION", "1").strip()
    names = ("FSDP_SHARDING_STRATEGY", "FSDP_RESHARD_AFTER_FORWARD") if version == "1" else ("FSDP_RESHARD_AFTER_FORWARD",)
    var, value = next(((v, os.environ[v]) for v in names if os.environ.get(v, "").strip()), ("", "FULL_SHARD"))
    key = value.strip().upper()
    if key in ("HYBRID_SHARD", "HYBRID_SHARD_ZERO2", "4", "5"):
        raise ConfigError(f"{var}={value}: hybrid sharding is not supported; use FULL_SHARD or SHARD_GRAD_OP "
                          "(fsdp_reshard_after_forward: true or false).")
    if key not in _STRATEGIES:
        raise ConfigError(f"{var}={value!r} is not a sharding strategy: use one of FULL_SHARD, SHARD_GRAD_OP, NO_SHARD "
                          "(or true / false for fsdp_reshard_after_forward).")
    if _STRATEGIES[key] is None:
        return None
    policy = os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper()
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise ConfigError(f"FSDP_AUTO_WRAP_POLICY={policy}: unlearnkit wraps transformer layers (TRANSFORMER_BASED_WRAP, "
                          "the model's _no_split_modules or fsdp_transformer_layer_cls_to_wrap) or nothing (NO_WRAP).")
    classes = tuple(c.strip() for c in os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    wrap = () if policy == "NO_WRAP" else (classes or None)
    unread = [v for v in ("FSDP_ACTIVATION_CHECKPOINTING", "FSDP_CPU_RAM_EFFICIENT_LOADING") if _flag(v)]
    if unread:
        warnings.warn(f"FSDP settings not used by unlearnkit: {', '.join(unread)} (the model is sharded with fully_shard; "
                      "activations are kept and each process loads the whole model before sharding).", stacklevel=2)
    return FSDPSettings(reshard_after_forward=bool(_STRATEGIES[key]), wrap=wrap, offload=_flag("FSDP_OFFLOAD_PARAMS"))


class _WeightedSum:
    """FSDP2's gradient reduce-scatter (``FSDPModule.set_custom_reduce_scatter``) as a weighted sum: this rank's gradient
    is multiplied by ``weight`` (its share of the step's examples) before the sum over ranks, which is
    ``reduce_gradients``'s all-reduce done shard by shard. FSDP's own reductions (the mean, or NCCL's PREMUL_SUM) cannot
    weight ranks differently on every backend."""

    def __init__(self) -> None:
        self.weight = 1.0

    def allocate(self, size: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: Any, op: Any, async_op: bool = False) -> Any:
        if op != torch.distributed.ReduceOp.SUM:  # set_force_sum_reduction_for_comms and a divide factor of 1 give SUM
            raise RuntimeError(f"FSDP asked for a {op} reduction; the weighted sum expects SUM.")
        if self.weight != 1.0:
            input_tensor.mul_(self.weight)
        scatter = getattr(torch.distributed, "reduce_scatter_single", None) or torch.distributed.reduce_scatter_tensor  # renamed in torch 2.12
        return scatter(output_tensor, input_tensor, op=torch.distributed.ReduceOp.SUM, group=group, async_op=async_op)


class ShardedModel:
    """``model`` trained as FSDP2 shards by ``train.fit``: ``module`` is a twin of ``model`` that shares its parameter
    objects until ``fully_shard`` replaces the twin's with this rank's shards (DTensors); ``model``'s own weights are
    then emptied, so each process holds 1/W of the weights, gradients and optimizer state between a unit's forward and
    backward. ``gather`` puts the whole trained weights back into ``model``'s parameter objects on every rank (what the
    rest of the run — evaluation, saving — uses, as in a data-parallel run), ``scatter`` copies them into the shards
    (after a callback that may have changed them) and empties ``model`` again. ``model`` itself is never wrapped: no
    hook, class change or DTensor outlives training. ``weight`` is this rank's weight in the next backward's
    gradient sum (``_WeightedSum``)."""

    def __init__(self, model: nn.Module, device: str | torch.device, settings: FSDPSettings) -> None:
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, fully_shard
        except ImportError as e:  # pragma: no cover - torch < 2.6
            raise ConfigError(f"FSDP needs torch >= 2.6 (torch.distributed.fsdp.fully_shard): {e}") from None
        dtypes = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})
        if len(dtypes) > 1:  # FSDP2 asserts one dtype per unit at the first forward, when the weights are already sharded
            raise ConfigError(f"FSDP needs the trainable parameters in one dtype; this model trains {dtypes}. Load it in one dtype "
                              "(unlearnkit loads float32) or launch without FSDP.")
        init()
        kind = torch.device(device).type
        if kind == "cuda" and torch.device(device).index is not None:
            torch.cuda.set_device(torch.device(device))
        self.params = list(model.named_parameters())  # the caller's parameter objects, emptied while the shards train
        units = _units(model, settings.wrap)
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        twin = copy.deepcopy(model, shared)  # new modules holding the same parameter and buffer objects
        by_name = dict(twin.named_modules())
        mesh = init_device_mesh(kind, (world_size(),))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": settings.reshard_after_forward}
        if settings.offload and kind != "cpu":
            options["offload_policy"] = CPUOffloadPolicy()
        for name in units:  # innermost first
            fully_shard(by_name[name], **options)
        fully_shard(twin, **options)
        self.comm = _WeightedSum()
        for m in twin.modules():
            if isinstance(m, FSDPModule):
                m.set_gradient_divide_factor(1.0)
                m.set_force_sum_reduction_for_comms(True)
                m.set_custom_reduce_scatter(self.comm)  # type: ignore[arg-type]
        self.module = twin
        self.units = units
        self._shards = dict(twin.named_parameters())
        self._empty()

    @property
    def weight(self) -> float:
        return self.comm.weight

    @weight.setter
    def weight(self, value: float) -> None:
        self.comm.weight = float(value)

    def _empty(self) -> None:
        for _, p in self.params:
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def gather(self) -> None:
        """The whole weights, gathered from every rank's shards, into ``model``'s parameters on every rank."""
        for name, p in self.params:
            shard = self._shards[name]  # every parameter is in a unit (the root's, at least): a DTensor
            p.data = shard.full_tensor().detach().to(p.device)

    @torch.no_grad()
    def scatter(self) -> None:
        """This rank's rows of ``model``'s (whole) weights copied into its shards; ``model``'s weights emptied again."""
        from torch.distributed.tensor import distribute_tensor

        for name, p in self.params:
            shard = self._shards[name]
            mine = distribute_tensor(p.data, shard.device_mesh, shard.placements, src_data_rank=None)  # local rows, no communication
            shard.to_local().copy_(mine.to_local())
        self._empty()


def _units(model: nn.Module, wrap: tuple[str, ...] | None) -> list[str]:
    """Names of the modules of ``model`` sharded as units of their own, innermost first (the root is the last unit and
    is not listed): those whose class is named in ``wrap``, or in a ``_no_split_modules`` of the model when None."""
    if wrap is None:
        wanted = {c for m in model.modules() for c in (getattr(m, "_no_split_modules", None) or ())}
    else:
        wanted = set(wrap)
        present = {type(m).__name__ for m in model.modules()}
        if wanted and not wanted & present:
            raise ConfigError(f"FSDP_TRANSFORMER_CLS_TO_WRAP names {sorted(wanted)}, none of which is a module of the model; "
                              f"its module classes are {sorted(present)}.")
    return [name for name, m in reversed(list(model.named_modules())) if name and type(m).__name__ in wanted]
