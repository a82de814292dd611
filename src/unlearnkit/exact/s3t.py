"""S3T — Sequence-aware Sharded Sliced Training (Chowdhury, Choromanski, Sehanobish, Dubey, Chaturvedi; arXiv 2406.16257).

A frozen backbone carries, on chosen Linear layers, low-rank adapters (ΔW = B·A, rank r, B zero-initialised). The
deletable data is cut into S shards of R slices each. For every shard, B orderings π of its slices (cyclic rotations)
each get a chain of R adapters: adapter i of a chain is trained on the slices π_1..π_i, with adapters 1..i−1 of the
chain frozen and active. A chain served with prefix length p therefore depends only on slices π_1..π_p (and on the
backbone). Deleting data of slice j invalidates, in every chain of its shard, the adapters at and after j's position:
they are erased (zeroed, never trained again) and the shard serves the chain with the longest still-valid prefix. No
gradient step is taken on deletion. The served prediction averages the shards' probabilities (or counts their votes);
``forward`` returns the log of that aggregate.

Own low-rank layers rather than PEFT: the same ~30 lines serve the MLP classifiers (PEFT does not know their layers as
targets by architecture) and the Llama attention projections; S·B·R adapters per layer with an explicit active prefix
(PEFT's multi-adapter activation marks every active adapter trainable, the opposite of S3T's "earlier adapters frozen
and active"); and the order of the adapter sum is fixed, so two models with the same valid adapters serve bit-identical
outputs.

Longer than 60 lines: the adapter layer, the slice plan, the training of the chains and the deletion bookkeeping belong
together (the causal-LM specifics are in ``s3t_lm``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..objectives import NLL
from ..seeding import derive_seed, np_rng, torch_seed
from ..train import TrainConfig, fit
from ..types import Split
from .base import Backbone, ExactModel

Aggregation = Literal["mean", "vote"]
Unit = Literal["example", "group"]


class SlicedLinear(nn.Module):
    """A frozen ``nn.Linear`` with ``n_chains × n_stages`` low-rank adapters. ``route = (chain, prefix)`` adds the
    chain's adapters 0..prefix−1 (in that order) to the base output; ``None`` (or prefix 0) is the bare base layer."""

    def __init__(self, base: nn.Linear, n_chains: int, n_stages: int, rank: int) -> None:
        super().__init__()
        self.base = base
        self.n_stages = n_stages
        dev, dtype = base.weight.device, base.weight.dtype
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        for _ in range(n_chains * n_stages):
            a = torch.empty(rank, base.in_features, device=dev, dtype=dtype)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # LoRA's initialisation of A; B = 0, so ΔW starts at 0
            self.a.append(nn.Parameter(a, requires_grad=False))
            self.b.append(nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dtype), requires_grad=False))
        self.route: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.route is not None:
            chain, prefix = self.route
            for i in range(chain * self.n_stages, chain * self.n_stages + prefix):
                y = y + (x @ self.a[i].T) @ self.b[i].T
        return y

    def adapter(self, chain: int, stage: int) -> tuple[nn.Parameter, nn.Parameter]:
        k = chain * self.n_stages + stage
        return self.a[k], self.b[k]


def rotations(n_slices: int, n_orderings: int) -> list[tuple[int, ...]]:
    """``n_orderings`` cyclic rotations of (0, ..., R−1), starting at evenly spaced slices round(b·R/B): every slice
    opens at most one ordering, so a deletion in any one slice leaves some ordering whose prefix avoids it as long as
    possible (with B = R, the rotation starting right after the slice keeps R−1 adapters)."""
    if not (1 <= n_orderings <= n_slices):
        raise ConfigError(f"s3t: orderings must lie in [1, slices={n_slices}] (cyclic rotations of {n_slices} slices), got {n_orderings}.")
    starts = [int(round(b * n_slices / n_orderings)) % n_slices for b in range(n_orderings)]
    return [tuple((s + k) % n_slices for k in range(n_slices)) for s in starts]


def valid_prefix(ordering: Sequence[int], deleted: set[int] | Sequence[int]) -> int:
    """How many leading slices of ``ordering`` hold no deleted data."""
    gone = set(deleted)
    return next((i for i, sl in enumerate(ordering) if sl in gone), len(ordering))


def choose_ordering(orderings: Sequence[Sequence[int]], deleted: set[int] | Sequence[int]) -> tuple[int, int]:
    """The ordering a shard serves after deletions in the slices ``deleted`` and its prefix length: the longest valid
    prefix, the first such ordering on a tie."""
    prefixes = [valid_prefix(o, deleted) for o in orderings]
    best = max(range(len(orderings)), key=lambda c: (prefixes[c], -c))
    return best, prefixes[best]


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    """Which shard and slice each example of the training split belongs to (−1: public, in no slice), by position in
    the split; ``ids`` are the split's ids, so that a slice's examples are always taken in id order (training then
    depends on which examples a slice holds, not on how the split happens to be stored)."""

    shard_of: np.ndarray
    slice_of: np.ndarray
    ids: np.ndarray
    shards: int
    slices: int
    unit: str

    def positions(self, shard: int, slices: Sequence[int]) -> np.ndarray:
        pos = np.flatnonzero((self.shard_of == shard) & np.isin(self.slice_of, list(slices)))
        return pos[np.argsort(self.ids[pos], kind="stable")]


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"s3t: {name} must be a whole number >= 1, got {value!r}.")
    return int(value)


def plan_slices(data: Split, public_ids: np.ndarray, shards: int, slices: int, unit: Unit, rng: np.random.Generator) -> SlicePlan:
    """Cut the deletable examples of ``data`` (all but ``public_ids``) into ``shards × slices`` disjoint parts of nearly
    equal numbers of units, at random. A unit is an example, or a group (``y``, e.g. a profile's items: one deletion
    request for a person then touches one slice)."""
    shards, slices = positive_int(shards, "shards"), positive_int(slices, "slices")
    if unit not in ("example", "group"):
        raise ConfigError(f"s3t: unit must be 'example' or 'group', got {unit!r}.")
    deletable = np.flatnonzero(~np.isin(data.ids, public_ids))
    if unit == "group":
        labels = data.labels
        if labels is None:
            raise ConfigError("s3t: unit 'group' needs a group id (y) per example; this data has none.")
        keys = np.asarray(labels)[deletable]
    else:
        keys = data.ids[deletable]
    units = np.unique(keys)
    if len(units) < shards * slices:
        raise ConfigError(f"s3t: {shards} shards × {slices} slices need at least {shards * slices} deletable {unit}s, but only "
                          f"{len(units)} are deletable; use fewer shards or slices.")
    parts = np.array_split(rng.permutation(units), shards * slices)
    part_of_unit = {int(u): k for k, part in enumerate(parts) for u in part}
    part = np.array([part_of_unit[int(k)] for k in keys], dtype=np.int64)
    shard_of = np.full(len(data), -1, dtype=np.int64)
    slice_of = np.full(len(data), -1, dtype=np.int64)
    shard_of[deletable], slice_of[deletable] = part // slices, part % slices
    return SlicePlan(shard_of, slice_of, np.asarray(data.ids), shards, slices, unit)


def target_layers(net: nn.Module, targets: Sequence[str] | None, rank: int) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of ``net`` to adapt (every ``nn.Linear`` when ``targets`` is None, else those whose last name
    part is listed), in module order, after checking that ``rank`` fits every one of them. Changes nothing."""
    rank = positive_int(rank, "rank")
    found = [(name, m) for name, m in net.named_modules()
             if isinstance(m, nn.Linear) and (targets is None or name.rsplit(".", 1)[-1] in targets)]
    if not found:
        raise ModelError(f"s3t: the backbone ({type(net).__name__}) has no Linear layer named {list(targets or [])} to adapt.")
    too_small = [(name, m.in_features, m.out_features) for name, m in found if rank > min(m.in_features, m.out_features)]
    if too_small:
        raise ConfigError(f"s3t: rank {rank} exceeds the size of adapted layer(s) {too_small[:3]} (name, in, out); a low-rank "
                          f"adapter needs rank <= min(in, out) = {min(min(i, o) for _, i, o in too_small)}.")
    return found


def attach_adapters(net: nn.Module, targets: Sequence[str] | None, n_chains: int, n_stages: int, rank: int, seed: int) -> list[SlicedLinear]:
    """Replace the target layers of ``net`` (``target_layers``) by ``SlicedLinear`` layers, seeded, in module order."""
    layers = []
    with torch_seed(derive_seed(seed, "s3t-adapters")):
        for name, m in target_layers(net, targets, rank):
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            layer = SlicedLinear(m, n_chains, n_stages, rank)
            setattr(parent, name.rsplit(".", 1)[-1], layer)
            layers.append(layer)
    return layers


def stage_config(recipe: TrainConfig, slices: int, *, epochs: float | None = None, steps: int | None = None, lr: float | None = None,
                 batch_size: int | None = None) -> TrainConfig:
    """Each adapter's training: the recipe's optimiser, ``steps`` per adapter if given, else ``epochs`` over the stage's
    data (default 2e/(R+1), SISA's rule: a chain's R stages then cost about the recipe's e epochs over the shard), and
    ``lr`` and ``batch_size`` where given (else the recipe's)."""
    if steps is None and epochs is None:
        if recipe.epochs is None:
            raise ConfigError("s3t: the training recipe gives steps, not epochs; give s3t's epochs or steps (per adapter) explicitly.")
        epochs = 2.0 * float(recipe.epochs) / (slices + 1)
    return dataclasses.replace(recipe, epochs=None if steps is not None else float(epochs), steps=steps,  # type: ignore[arg-type]
                               lr=float(lr) if lr is not None else recipe.lr,
                               batch_size=int(batch_size) if batch_size is not None else recipe.batch_size)


class S3tModel(ExactModel):
    """The served S3T model (a classifier: ``forward(x)`` = log of the shards' aggregated class probabilities).

    ``valid[s, c, i]``: adapter i of ordering c in shard s depends on no deleted example; ``deleted_slices[s, j]``: slice
    j of shard s lost data. Both are buffers, so the state dict is the whole served state. A shard whose every ordering
    lost its first slice serves the bare backbone: its prediction then depends on none of its data, which is still exact;
    receipts list such shards."""

    regime = "s3t"
    guarantee = "exact_above_backbone"

    def __init__(self, data: Split, net: nn.Module, backbone: Backbone, plan: SlicePlan, orderings: Sequence[Sequence[int]],
                 layers: Sequence[SlicedLinear], *, rank: int, aggregation: Aggregation) -> None:
        super().__init__(data, backbone=backbone)
        if aggregation not in ("mean", "vote"):
            raise ConfigError(f"s3t: aggregation must be 'mean' or 'vote', got {aggregation!r}.")
        self.net = net
        self.plan = plan
        self.orderings = [tuple(int(s) for s in o) for o in orderings]
        self.layers = list(layers)  # the SlicedLinear modules of ``net`` (not registered twice)
        self.rank = rank
        self.aggregation = aggregation
        S, B, R = plan.shards, len(self.orderings), plan.slices
        self.register_buffer("valid", torch.ones(S, B, R, dtype=torch.bool))
        self.register_buffer("deleted_slices", torch.zeros(S, R, dtype=torch.bool))
        self.training_info: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- structure
    @property
    def n_orderings(self) -> int:
        return len(self.orderings)

    def chain(self, shard: int, ordering: int) -> int:
        return shard * self.n_orderings + ordering

    def served(self, shard: int) -> tuple[int, int]:
        """(ordering, prefix length) the shard serves now."""
        deleted = set(np.flatnonzero(self.deleted_slices[shard].cpu().numpy()).tolist())
        return choose_ordering(self.orderings, deleted)

    @contextlib.contextmanager
    def routed(self, chain: int | None, prefix: int = 0) -> Iterator[nn.Module]:
        """``net`` with the chain's first ``prefix`` adapters active (None: the bare backbone)."""
        for layer in self.layers:
            layer.route = None if chain is None else (chain, prefix)
        try:
            yield self.net
        finally:
            for layer in self.layers:
                layer.route = None

    # ------------------------------------------------------------------------------------------- training
    def train_chains(self, config: TrainConfig, *, adapter: Any, seed: int, device: str, progress: bool = False) -> dict[str, Any]:
        """Train every chain: adapter i of ordering π on the shard's slices π_1..π_i, the earlier adapters active and
        frozen, through ``train.fit`` with the plain NLL objective (``train.train_model``'s). Each adapter's randomness is
        derived from (seed, shard, ordering, stage) alone, so it is a function of its own data."""
        S, R = self.plan.shards, self.plan.slices
        for p in self.parameters():  # only the adapter in training is switched on, stage by stage
            p.requires_grad_(False)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=S * self.n_orderings * R, desc="s3t adapters", leave=False, dynamic_ncols=True)
        steps = passes = 0
        seconds = 0.0
        try:
            for s in range(S):
                for c, order in enumerate(self.orderings):
                    k = self.chain(s, c)
                    for i in range(R):
                        split = self.data.subset(self.plan.positions(s, order[: i + 1]), f"s3t shard {s} slices {list(order[: i + 1])}")
                        trainable = [p for layer in self.layers for p in layer.adapter(k, i)]
                        for p in trainable:
                            p.requires_grad_(True)
                        try:
                            with self.routed(k, i + 1) as net:
                                result = fit(net, NLL("train"), {"train": split}, config, adapter=adapter,
                                             rng=np_rng("s3t", seed, s, c, i), device=device, on_divergence="raise",
                                             desc=f"s3t shard {s} ordering {c} adapter {i}")
                        finally:
                            for p in trainable:
                                p.requires_grad_(False)
                        steps, passes, seconds = steps + result.steps, passes + result.example_passes, seconds + result.seconds
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        for p in self.parameters():  # served like any model: what a caller fine-tunes (a relearning attack) is its own business
            p.requires_grad_(True)
        self.eval()
        return {"adapters": S * self.n_orderings * R, "steps": steps, "example_passes": passes, "seconds": round(seconds, 4),
                "stage_config": config.to_dict()}

    # ------------------------------------------------------------------------------------------- serving
    def shard_outputs(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Each shard's raw output under its served ordering and prefix (shards on the bare backbone included)."""
        for s in range(self.plan.shards):
            c, p = self.served(s)
            with self.routed(self.chain(s, c), p) as net:
                yield net(*args, **kwargs)

    def aggregate(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """log of the mean of the shards' softmax probabilities (``mean``) or of their vote shares (``vote``), floored
        at the smallest positive float so that log never gives −inf."""
        if self.aggregation == "mean":
            agg = torch.stack([torch.softmax(z.float(), dim=-1) for z in logits]).mean(0)
        else:
            n = logits[0].shape[-1]
            agg = torch.stack([nn.functional.one_hot(z.argmax(-1), n).float() for z in logits]).mean(0)
        return torch.log(agg.clamp_min(torch.finfo(agg.dtype).tiny))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregate(list(self.shard_outputs(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shards' penultimate features side by side (what the aggregate reads), when the backbone has ``features``."""
        if not hasattr(self.net, "features"):
            raise ModelError(f"s3t: the backbone {type(self.net).__name__} has no features(x) method.")
        out = []
        for s in range(self.plan.shards):
            c, p = self.served(s)
            with self.routed(self.chain(s, c), p) as net:
                out.append(net.features(x))
        return torch.cat(out, dim=-1)

    # ------------------------------------------------------------------------------------------- requests
    @torch.no_grad()
    def _delete(self, ids: np.ndarray, *, progress: bool) -> dict[str, Any]:
        pos = self.data.positions_of(ids)
        shards, slices = self.plan.shard_of[pos], self.plan.slice_of[pos]
        if (shards < 0).any():  # pragma: no cover - public ids are refused by check_request
            raise ModelError("s3t: a deleted example is in no slice.")
        touched = sorted({int(s) for s in shards})
        deactivated = 0
        for s in touched:
            self.deleted_slices[s, torch.as_tensor(np.unique(slices[shards == s]))] = True
            deleted = set(np.flatnonzero(self.deleted_slices[s].cpu().numpy()).tolist())
            for c, order in enumerate(self.orderings):
                for i in range(valid_prefix(order, deleted), len(order)):
                    if bool(self.valid[s, c, i]):
                        for layer in self.layers:  # erased: the weights that saw the deleted data are not kept
                            for p in layer.adapter(self.chain(s, c), i):
                                p.zero_()
                        self.valid[s, c, i] = False
                        deactivated += 1
        served = {s: self.served(s) for s in range(self.plan.shards)}
        return {"shards": touched, "deactivated": deactivated,
                "served_prefix": {str(s): p for s, (_, p) in served.items()},
                "served_ordering": {str(s): list(self.orderings[c]) for s, (c, _) in served.items()},
                "bare_backbone_shards": [s for s, (_, p) in served.items() if p == 0],
                "valid_adapters": int(self.valid.sum())}

    def describe(self) -> dict[str, Any]:
        served = [self.served(s) for s in range(self.plan.shards)]
        return {**super().describe(), "shards": self.plan.shards, "slices": self.plan.slices, "unit": self.plan.unit,
                "orderings": [list(o) for o in self.orderings], "rank": self.rank, "aggregation": self.aggregation,
                "served_prefix": [p for _, p in served], "served_ordering": [c for c, _ in served],
                "valid_adapters": int(self.valid.sum()), "adapters": int(self.valid.numel())}
