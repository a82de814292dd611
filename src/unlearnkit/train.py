"""The one training loop. Every gradient method, reference model and attack trains through it."""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import cost, distributed
from .errors import ConfigError, DivergenceError
from .objectives import NLL
from .objectives.base import Loss, StepContext
from .params import build_component
from .registry import suggest
from .seeding import derive_seed, np_rng, torch_gen, torch_seed
from .types import Batch, Mask, Split

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")
OptimizerName = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "linear"]


@dataclass(frozen=True)
class TrainConfig:
    """Budget and optimiser. The budget is ``steps`` if given, else ``epochs`` over the epoch stream;
    ``max_seconds`` stops early on wall time. Schedules decay the learning rate to zero at the end.
    ``sam_rho`` > 0 makes every step a sharpness-aware step (Foret et al., ICLR 2021): the gradient is taken at
    θ + ρ·g/‖g‖ (g the masked gradient at θ, on the same batch), then applied at θ. It is left out of
    ``to_dict`` when 0, so configs without SAM keep their keys."""

    epochs: float | None = 1.0
    steps: int | None = None
    max_seconds: float | None = None
    batch_size: int = 128
    optimizer: OptimizerName = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    sam_rho: float = 0.0

    def __post_init__(self) -> None:
        for name, kind in (("epochs", float), ("steps", int), ("max_seconds", float), ("batch_size", int), ("lr", float),
                           ("momentum", float), ("weight_decay", float), ("warmup_steps", int), ("grad_clip", float), ("sam_rho", float)):
            value = getattr(self, name)
            number = isinstance(value, numbers.Real) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
            if not (number or (value is None and name in ("epochs", "steps", "max_seconds", "grad_clip"))):
                raise ConfigError(f"Training setting {name} must be {'a number' if kind is float else 'a whole number'}, got {value!r}.")
        if not (math.isfinite(self.sam_rho) and self.sam_rho >= 0):
            raise ConfigError(f"sam_rho must be a finite number >= 0, got {self.sam_rho}.")
        if self.steps is None and self.epochs is None:
            raise ConfigError("Training budget: give epochs or steps.")
        # a zero budget or learning rate trains nothing: references that never learned, or a method that is a no-op,
        # would then pass as "removed"
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1 (no step trains nothing), got {self.steps}.")
        if self.steps is None and not (self.epochs is not None and math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs must be a finite number > 0 (no epoch trains nothing), got {self.epochs}.")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.{suggest(str(self.optimizer), set(OPTIMIZERS))}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.{suggest(str(self.schedule), set(SCHEDULES))}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a finite number > 0 (a zero learning rate trains nothing), got {self.lr}.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "train") -> TrainConfig:
        return build_component(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["sam_rho"] == 0:
            del d["sam_rho"]  # every key of a run or reference without SAM stays as it was
        return d

    def n_steps(self, epoch_examples: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return int(math.ceil(float(self.epochs or 0.0) * math.ceil(epoch_examples / self.batch_size)))


@dataclass
class TrainResult:
    steps: int
    example_passes: int
    seconds: float
    history: list[dict[str, float]]
    stopped: str | None = None  # why training stopped early (divergence, time budget), else None

    @property
    def seconds_per_step(self) -> float | None:
        """Steady-state step time: from the end of the first step to the end of the last, per step, so the first step's
        one-off costs (lazy initialisation, allocator warm-up) are left out. None with fewer than two steps."""
        ends = [h["elapsed"] for h in self.history if "elapsed" in h]
        return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) >= 2 else None

    def to_json(self) -> dict[str, Any]:
        per_step = self.seconds_per_step
        return {
            "steps": self.steps,
            "example_passes": self.example_passes,
            "seconds": round(self.seconds, 4),
            "seconds_per_step": None if per_step is None else round(per_step, 4),
            "stopped": self.stopped,
            "final_loss": self.history[-1]["loss"] if self.history else None,
        }


def _cycle(split: Split, batch_size: int, gen: torch.Generator, device: str | torch.device) -> Iterator[Batch]:
    while True:
        yield from split.batches(batch_size, shuffle=True, generator=gen, device=device)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW with PyTorch's fused kernels (the whole update in one pass over each tensor; on CPU ~3× faster
    than ``foreach`` for Adam), or ``foreach`` where a device or dtype has no fused kernel and for FSDP shards."""
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        cls: type[torch.optim.Optimizer] = torch.optim.SGD
        kwargs["momentum"] = cfg.momentum
    else:
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    if any(hasattr(p, "placements") for p in params):  # FSDP shards (DTensors): no sharding rule for the fused kernels
        return cls(params, foreach=True, **kwargs)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device/dtype
        return cls(params, foreach=True, **kwargs)


def lr_factor(cfg: TrainConfig, step: int, n_steps: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, n_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == "linear":
        return 1.0 - t
    return 1.0


def freeze_running_stats(model: nn.Module, trainable: Sequence[nn.Parameter], *, restricted: bool) -> list[nn.Module]:
    """Put into eval mode the normalisation layers with running statistics (BatchNorm) none of whose parameters train,
    so frozen parts of the model stay frozen in what they compute, not only in their parameters; a layer without
    parameters counts as frozen when training is ``restricted`` by a mask. Returns the layers switched."""
    live = {id(p) for p in trainable}
    switched = []
    for module in model.modules():
        if not (getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None):
            continue
        own = list(module.parameters(recurse=False))
        if (own and not any(id(p) in live for p in own)) or (not own and restricted):
            module.eval()
            switched.append(module)
    return switched


class _MaskGuard:
    """Enforces a mask: masked-out gradients are zeroed before the step, and after the step the
    masked-out coordinates are reset to their starting values (undoing weight decay and momentum)
    and their optimizer state is zeroed. Masked-out parameters therefore stay bit-identical."""

    def __init__(self, model: nn.Module, mask: Mask | None) -> None:
        self.partial: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        self.trainable: list[nn.Parameter] = []
        self.frozen: list[nn.Parameter] = []
        params = dict(model.named_parameters())
        if mask is not None:
            mask.check_model(model)
        for name, p in params.items():
            if not p.requires_grad:
                continue
            m = None if mask is None else mask.get(name)
            if m is None:
                if mask is not None:  # a mask that does not name a parameter freezes it
                    self.frozen.append(p)
                    continue
                self.trainable.append(p)
                continue
            m = m.to(p.device)
            if not bool(m.any()):
                self.frozen.append(p)
            elif bool(m.all()):
                self.trainable.append(p)
            else:
                self.trainable.append(p)
                self.partial.append((p, _like(m, p), p.detach().clone()))
        self._saved = [p.requires_grad for p in self.frozen]
        for p in self.frozen:
            p.requires_grad_(False)

    def mask_grads(self) -> None:
        for p, m, _ in self.partial:
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        for p, m, start in self.partial:
            p.copy_(torch.where(m, p, start))
            state = optimizer.state.get(p, {})
            for value in state.values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m)

    def release(self) -> None:
        for p, flag in zip(self.frozen, self._saved):
            p.requires_grad_(flag)


def _like(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``mask`` laid out as the parameter ``p``: this rank's rows of it when ``p`` is an FSDP shard (a DTensor)."""
    if hasattr(p, "device_mesh") and hasattr(p, "placements"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(mask, p.device_mesh, p.placements, src_data_rank=None)  # every rank holds the same mask
    return mask


class Snapshot:
    """The last good values of what training can change — the trainable parameters and the buffers (e.g. batch-norm
    statistics) — in preallocated copies (an in-place copy per save, no allocation). Frozen parameters are never
    copied: for a LoRA-adapted model that is the difference between a few MB and a second copy of the whole model.
    Weights are "good" when the loss computed from them was finite and within the limit."""

    def __init__(self, model: nn.Module, trainable: list[nn.Parameter]) -> None:
        keep = {id(p) for p in trainable}
        self.live = [p for p in model.parameters() if id(p) in keep] + list(model.buffers())
        self.saved = [t.detach().clone() for t in self.live]
        self.step = 0

    @torch.no_grad()
    def save(self, step: int) -> None:
        for saved, t in zip(self.saved, self.live):
            saved.copy_(t)
        self.step = step

    @torch.no_grad()
    def restore(self) -> None:
        for saved, t in zip(self.saved, self.live):
            t.copy_(saved)

    def finite(self) -> bool:
        """Whether every value training can change is finite (of an FSDP shard, this rank's rows)."""
        return all(bool(torch.isfinite(t.to_local() if hasattr(t, "to_local") else t).all()) for t in self.live if t.is_floating_point())


def loss_and_gradient(objective: Callable[..., Loss], model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> tuple[Loss, bool]:
    """The objective's loss on ``batch`` (detached) with its gradient accumulated into the parameters' ``.grad``, and
    whether there was a gradient at all. An objective with ``backward_terms`` (``objectives.Weighted``) backpropagates
    one term at a time, each term's graph freed before the next term's forward: the same gradient as the sum's, with the
    activation memory of the largest term instead of all terms together (a forget and a retain batch, say)."""
    each = getattr(objective, "backward_terms", None)
    if each is not None:
        return each(model, batch, ctx)
    loss = objective(model, batch, ctx)
    if not loss.value.requires_grad:
        return loss, False
    loss.value.backward()
    return Loss(loss.value.detach(), loss.parts), True


def _sam_gradient(model: nn.Module, objective: Callable[..., Loss], batch: dict[str, Batch], ctx: StepContext, guard: _MaskGuard,
                  optimizer: torch.optim.Optimizer, rho: float, gen_state: torch.Tensor, share: float | None = None) -> float | None:
    """Replace the (masked) gradient g at θ by the gradient at θ + ρ·g/‖g‖ on the same batch and the same draws from the
    step's generator (dropout masks, from the seeded global RNG, are drawn afresh), then put θ back exactly. Returns the loss at the perturbed point, or None (plain step) when g is zero or not finite.
    In a data-parallel launch (``share``: this rank's share of the step's examples) both gradients and the loss are summed
    over the ranks, so g, its norm and the perturbation are the global ones."""
    params = [p for p in guard.trainable if p.grad is not None]
    if not params:
        return None
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))  # type: ignore[arg-type]
    if not (bool(torch.isfinite(norm)) and float(norm) > 0):
        return None
    scale = rho / norm
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(p.grad * scale)  # type: ignore[operator]
    optimizer.zero_grad(set_to_none=True)
    ctx.generator.set_state(gen_state)
    try:
        if share is None:
            value = float(loss_and_gradient(objective, model, batch, ctx)[0].value)
        else:  # ``batch`` is this rank's shard, ``ctx`` carries its scales
            value = float(loss_and_gradient(objective, model, batch, ctx)[0].value) if share > 0 else 0.0
            distributed.reduce_gradients(params, share)
            value = sum(distributed.gather(share * value))
    finally:
        with torch.no_grad():
            for p, start in zip(params, saved):
                p.copy_(start)
    guard.mask_grads()
    return value


def _shard_step(batch: dict[str, Batch], ctx: StepContext, n_examples: int, sharded: bool = False) -> tuple[dict[str, Batch], float, StepContext]:
    """This rank's shard of a step's batches, its share of the step's examples (0 when it holds no row of some stream)
    and the step context carrying the shard scales (``distributed.step_scales``). A rank with share 0 of a ``sharded``
    (FSDP) model still computes, on the first rows of the streams it lacks (weighted 0): every rank must take part in
    every forward and backward of a sharded model."""
    local = distributed.shard_batch_streams(batch)
    if not all(len(b["ids"]) for b in local.values()):  # a batch shorter than the launch: this rank holds none of it
        if sharded:
            local = {s: b if len(b["ids"]) else distributed.first_rows(batch[s]) for s, b in local.items()}
        return local, 0.0, ctx
    share = sum(len(b["ids"]) for b in local.values()) / n_examples
    scales = distributed.step_scales(batch, local, share, getattr(ctx.adapter, "n_targets", None))
    return local, share, dataclasses.replace(ctx, extra={**ctx.extra, distributed.SCALES: scales})


def _parallel_loss_and_gradient(objective: Callable[..., Loss], model: nn.Module, local: dict[str, Batch], ctx: StepContext,
                                trainable: Sequence[nn.Parameter], share: float, shards: distributed.ShardedModel | None = None,
                                total: float | None = None) -> tuple[Loss, bool, float]:
    """``loss_and_gradient`` in a data-parallel launch: this rank's loss and gradient on its shard of every stream's batch
    (``_shard_step``), the gradient then weighted by the rank's ``share`` of the step's examples and summed over ranks
    (``distributed.reduce_gradients``), and the loss and its parts combined the same way, so every rank holds the same
    gradient, loss and decision. Returns them and this rank's weight in the sum. With ``shards`` (FSDP; ``total``: the
    sum of every rank's share) the weight is set before the backward and FSDP's reduce-scatter makes the weighted sum,
    each rank keeping its rows of the summed gradient; every rank computes, a rank of share 0 with weight 0."""
    if shards is not None:
        shards.weight = share / total  # type: ignore[operator]
        loss, has_grad = loss_and_gradient(objective, model, local, ctx)
        entry = (share, float(loss.value), {k: float(v) for k, v in loss.parts.items()}, has_grad)
    elif share > 0:
        loss, has_grad = loss_and_gradient(objective, model, local, ctx)
        entry = (share, float(loss.value), {k: float(v) for k, v in loss.parts.items()}, has_grad)
    else:
        entry = (0.0, 0.0, {}, False)
    entries = distributed.gather(entry)
    total = sum(e[0] for e in entries)
    weighted = [(e[0], e[1], e[2] if e[0] > 0 else {}, e[3]) for e in entries]
    value = Loss(torch.tensor(sum(e[0] * e[1] for e in weighted) / total), _combine_parts(weighted, total))
    if not any(e[3] for e in entries):
        return value, False, share
    if shards is None:
        distributed.reduce_gradients(trainable, share / total)
    return value, True, share / total


def _combine_parts(entries: list[tuple[float, float, dict[str, float], bool]], total: float) -> dict[str, float]:
    keys = dict.fromkeys(k for e in entries for k in e[2])
    return {k: sum(e[0] * e[2][k] for e in entries if k in e[2]) / total for k in keys}


def fit(
    model: nn.Module,
    objective: Callable[[nn.Module, dict[str, Batch], StepContext], Loss],
    streams: Mapping[str, Split],
    config: TrainConfig,
    *,
    adapter: Any,
    rng: np.random.Generator,
    device: str | torch.device = "cpu",
    mask: Mask | None = None,
    epoch_stream: str | None = None,
    extra: Mapping[str, Any] | None = None,
    on_divergence: Literal["restore", "raise"] = "restore",
    loss_limit: float = 1e4,
    snapshot_every: int | None = None,
    progress: bool = False,
    desc: str = "train",
    callback: Callable[[int, nn.Module], str | None] | None = None,
) -> TrainResult:
    """Minimise ``objective`` on batches drawn from ``streams`` (one cycling shuffled loader each).

    The divergence guard keeps the last good weights — those whose loss was finite and within
    ``loss_limit`` (saved every ``snapshot_every`` steps; raise it for very large models) — and a
    non-finite or exploding loss, or non-finite final weights, stops training and restores them (``on_divergence="raise"``
    then raises DivergenceError). ``callback(step, model)`` runs after every step; a non-empty string it returns
    stops training there (an early stop: the weights are kept and the string is the result's ``stopped``). With
    ``config.sam_rho`` > 0 each step is a SAM step (two forward/backward passes, the mask applied to both gradients
    and to the perturbation; a non-finite loss at the perturbed weights is a divergence too). The steps run with torch's
    global RNG seeded from ``rng`` (what the model draws from it, e.g. dropout masks, is a function of the seed) and the
    caller's global RNG state is restored afterwards.
    """
    needed = tuple(getattr(objective, "streams", tuple(streams)))
    missing = [s for s in needed if s not in streams]
    if missing:
        raise ConfigError(f"The objective needs data streams {missing}; given {sorted(streams)}.")
    if not needed:
        raise ConfigError("The objective uses no data stream.")
    for s in needed:
        if len(streams[s]) == 0:
            raise ConfigError(f"Data stream {s!r} is empty.")
    epoch_stream = epoch_stream or needed[0]
    n_steps = config.n_steps(len(streams[epoch_stream]))
    parallel = distributed.active()  # data-parallel launch: shards of every batch, gradients summed over ranks
    if parallel and config.batch_size < distributed.world_size():
        raise ConfigError(f"batch_size {config.batch_size} is smaller than the {distributed.world_size()} processes of the launch; "
                          "every process needs a share of each batch.")
    settings = distributed.fsdp_settings()  # FSDP: the model trained as shards (None: whole on every process, or one process)
    if settings is not None and config.sam_rho > 0:
        raise ConfigError("SAM (sam_rho > 0) is not supported when FSDP shards the model: its perturbation needs the norm of "
                          "the whole gradient; launch without FSDP (data-parallel) for SAM.")
    if parallel:
        distributed.init()  # joins the launch's process group (a clear error for a launch this loop cannot serve)
    if settings is not None:  # the errors _fit_steps would raise, before the model's weights move into shards
        if mask is not None:
            mask.check_model(model)
        if n_steps > 0 and not any(p.requires_grad and (mask is None or (name in mask and bool(mask[name].any())))
                                   for name, p in model.named_parameters()):
            raise ConfigError("Nothing to train: every parameter is frozen by the mask.")
    shards = distributed.ShardedModel(model, device, settings) if settings is not None else None
    trained = model if shards is None else shards.module  # what the steps train: the model, or its FSDP twin
    try:
        return _fit_steps(model, trained, shards, objective, streams, config, adapter=adapter, rng=rng, device=device, mask=mask,
                          epoch_stream=epoch_stream, n_steps=n_steps, extra=extra, on_divergence=on_divergence, loss_limit=loss_limit,
                          snapshot_every=snapshot_every, progress=progress, desc=desc, callback=callback)
    except DivergenceError:  # raised after the weights were gathered back
        raise
    except BaseException:
        if shards is not None:  # no collective here: another rank may be elsewhere, and waiting for it could hang the launch
            warnings.warn("Training failed under FSDP: the model's weights stayed in the shards and are lost.", stacklevel=2)
        raise


def _fit_steps(outer: nn.Module, model: nn.Module, shards: distributed.ShardedModel | None, objective: Callable[..., Loss],
               streams: Mapping[str, Split], config: TrainConfig, *, adapter: Any, rng: np.random.Generator, device: str | torch.device,
               mask: Mask | None, epoch_stream: str, n_steps: int, extra: Mapping[str, Any] | None, on_divergence: str,
               loss_limit: float, snapshot_every: int | None, progress: bool, desc: str,
               callback: Callable[[int, nn.Module], str | None] | None) -> TrainResult:
    """``fit``'s steps on ``model``: the caller's model ``outer``, or its FSDP twin ``shards.module``, whose whole weights go
    back into ``outer`` at the end and around each ``callback``, which always sees ``outer``."""
    parallel = distributed.active()
    needed = tuple(getattr(objective, "streams", tuple(streams)))
    iters = {s: _cycle(streams[s], config.batch_size, torch_gen(rng), device) for s in needed}
    step_gen = torch_gen(rng, device if torch.device(device).type != "mps" else "cpu")

    guard = _MaskGuard(model, mask)
    optimizer = make_optimizer(guard.trainable, config) if guard.trainable else None
    if optimizer is None and n_steps > 0:
        guard.release()
        raise ConfigError("Nothing to train: every parameter is frozen by the mask.")
    snapshot_every = snapshot_every or 1
    snapshot = Snapshot(model, guard.trainable)
    history: list[dict[str, float]] = []
    stopped: str | None = None
    passes = 0
    was_training = model.training
    model.train()
    freeze_running_stats(model, guard.trainable, restricted=mask is not None)
    t0 = time.perf_counter()
    bar = None
    if progress and n_steps > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=desc, leave=False, dynamic_ncols=True)
    try:
        with torch_seed(derive_seed(step_gen.initial_seed(), "torch-global"), device):  # e.g. dropout masks; rng not advanced
            for step in range(n_steps):
                over_time = config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds
                if over_time if not parallel else distributed.from_main(over_time):
                    stopped = f"time budget of {config.max_seconds}s reached at step {step}"
                    break
                batch = {s: next(it) for s, it in iters.items()}
                ctx = StepContext(step, n_steps, step_gen, adapter, dict(extra or {}))
                for group in optimizer.param_groups:  # type: ignore[union-attr]
                    group["lr"] = config.lr * lr_factor(config, step, n_steps)
                gen_state = step_gen.get_state() if config.sam_rho > 0 else None  # SAM re-draws the same randomness
                optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
                n_examples = sum(len(b["ids"]) for b in batch.values())
                if parallel:
                    local, share, ctx = _shard_step(batch, ctx, n_examples, sharded=shards is not None)
                    total = sum(distributed.rank_shares(batch)) if shards is not None else None
                    loss, has_grad, share = _parallel_loss_and_gradient(objective, model, local, ctx, guard.trainable, share, shards, total)
                else:
                    loss, has_grad = loss_and_gradient(objective, model, batch, ctx)
                value = float(loss.value)
                passes += n_examples
                cost.record(steps=1, passes=n_examples)
                if not math.isfinite(value) or abs(value) > loss_limit:
                    stopped = (
                        f"diverged at step {step}: loss={value:.4g} "
                        f"({'non-finite' if not math.isfinite(value) else f'|loss| > {loss_limit:g}'}); "
                        f"restored the weights of step {snapshot.step}"
                    )
                    break
                if step % snapshot_every == 0:
                    snapshot.save(step)  # these weights just gave a finite, bounded loss
                if has_grad:
                    guard.mask_grads()
                    if config.sam_rho > 0:
                        sam_value = _sam_gradient(model, objective, local if parallel else batch, ctx, guard, optimizer,  # type: ignore[arg-type]
                                                  config.sam_rho, gen_state, share if parallel else None)
                        passes += n_examples
                        cost.record(passes=n_examples)
                        if sam_value is not None and (not math.isfinite(sam_value) or abs(sam_value) > loss_limit):
                            stopped = (f"diverged at step {step}: loss at the SAM-perturbed weights={sam_value:.4g}; "
                                       f"restored the weights of step {snapshot.step}")
                            break
                    if config.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(guard.trainable, config.grad_clip)
                    optimizer.step()  # type: ignore[union-attr]
                    guard.restore(optimizer)  # type: ignore[arg-type]
                history.append({"step": step, "loss": value, **loss.parts})
                reason = callback(step, model) if callback is not None and shards is None else None
                if callback is not None and shards is not None:  # the callback sees the caller's model, whole
                    shards.gather()
                    try:
                        reason = callback(step, outer)
                    finally:
                        shards.scatter()  # what the callback changed goes back into the shards
                if parallel:
                    reason = distributed.from_main(reason)
                history[-1]["elapsed"] = time.perf_counter() - t0  # seconds since the start, at the end of this step
                if reason:
                    stopped = reason
                    if bar is not None:
                        bar.update(1)
                    break
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{value:.4f}")
        finite = snapshot.finite() if shards is None else all(distributed.gather(snapshot.finite()))
        if not (stopped or "").startswith("diverged") and history and not finite:  # the last update was never checked
            stopped = f"diverged at step {len(history) - 1}: non-finite weights; restored the weights of step {snapshot.step}"
    finally:
        if bar is not None:
            bar.close()
        guard.release()
        model.train(was_training)
    if stopped is not None and stopped.startswith("diverged"):
        snapshot.restore()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)  # the diverging step's gradient, never applied
    if shards is not None:
        shards.gather()  # the trained (or restored) weights, whole, in the caller's model on every rank
    if stopped is not None and stopped.startswith("diverged"):
        if on_divergence == "raise":
            raise DivergenceError(f"{desc}: {stopped}.")
    return TrainResult(len(history), passes, time.perf_counter() - t0, history, stopped)


def train_model(
    model: nn.Module,
    split: Split,
    config: TrainConfig,
    *,
    adapter: Any,
    seed: int,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "train",
) -> tuple[nn.Module, cost.Cost, TrainResult]:
    """Train ``model`` on ``split`` by plain cross-entropy (how originals and retrains are made)."""
    model.to(device)
    with cost.CostMeter(device) as meter:
        result = fit(
            model, NLL("train"), {"train": split}, config, adapter=adapter, rng=np_rng("train", seed),
            device=device, progress=progress, desc=desc, on_divergence="raise",
        )
    model.eval()
    assert meter.cost is not None
    return model, meter.cost, result
