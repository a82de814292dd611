"""SISA (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021): sharded, isolated, sliced, aggregated training.

The training data is split at random (from the seed) into S disjoint shards of uniform size, each shard into R slices. One
model per shard is trained incrementally: step r trains it on slices 1..r, starting from the state after step r-1, and the
state after every step is kept as a checkpoint. Predictions aggregate the shard models (majority vote or mean
probability). Deleting an example retrains only its shard, and only from the checkpoint taken before the earliest slice
that held a deleted example: the result is bit-identical (same seed, same device) to training that shard from scratch
without the deleted examples, because every random choice of step (k, r) is a function of (seed, k, r) and its data.

Choices, stated once:

- Epochs. SISA keeps the total work of one ordinary training: with e epochs for the ordinary training of a shard, each
  step trains ``2e/(R+1)`` epochs on slices 1..r (the steps see D/R, 2D/R, ..., D examples, so the passes add up to
  e·D). The count is fractional; the loop rounds each step's budget up to whole optimizer steps. A step budget
  (``steps`` in the recipe) is first turned into the epochs it amounts to over the whole training set,
  ``steps·batch_size/n``. A wall-time budget (``max_seconds``) is refused: it would make a shard's training depend on
  the machine's speed, and retraining would not reproduce it.
- Optimizer. Each step builds a fresh optimizer and learning-rate schedule (``train.fit``); a checkpoint is the model's
  state dict alone (parameters and buffers), so resuming from it is exactly what training from scratch does at that point.
- Empty data. A step whose slices 1..r hold no live example trains nothing (the checkpoint is the previous state). A
  shard with no live example left is the shard's fresh initialisation and drops out of the aggregate.

Longer than 60 lines: partition, slice-by-slice training with checkpoints, aggregation and deletion form one regime.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cost import CostMeter
from ..errors import ConfigError, ModelError, RequestRefused
from ..io import atomic_write_text, canonical_json, save_state
from ..objectives import NLL
from ..seeding import derive_seed, np_rng, torch_seed
from ..train import TrainConfig, fit
from ..types import Split
from .base import ExactModel, ids_fingerprint

AGGREGATIONS = ("vote", "mean")
LOG_FLOOR = 1e-12  # log(0) of a class no shard votes for becomes log(1e-12) ≈ -27.6
State = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------------ configuration
def check_sisa(n: int, shards: Any, slices: Any, aggregation: Any) -> None:
    """A ConfigError, before any training, for shard or slice counts that are not whole numbers >= 1, for more slices in
    all (S·R) than examples (some slice would be empty), and for an unknown aggregation."""
    for what, value in (("shards", shards), ("slices", slices)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"SISA {what} must be a whole number >= 1, got {value!r}.")
    if shards * slices > n:
        raise ConfigError(f"SISA with {shards} shards of {slices} slices needs at least {shards * slices} training examples (one per "
                          f"slice); the training data has {n}. Use fewer shards or slices.")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"SISA aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}.")


def step_config(config: TrainConfig, slices: int, n: int) -> TrainConfig:
    """The recipe of one incremental step (slices 1..r): ``2e/(R+1)`` epochs, e the recipe's epochs (or the epochs its
    step budget amounts to over the ``n`` training examples); see the module docstring."""
    if config.max_seconds is not None:
        raise ConfigError(f"SISA cannot train under a wall-time budget (max_seconds={config.max_seconds}): a shard's training "
                          "would depend on the machine's speed, and retraining it after a deletion would not reproduce it. "
                          "Give the recipe epochs or steps.")
    epochs = float(config.epochs) if config.steps is None else config.steps * config.batch_size / n  # type: ignore[arg-type]
    return dataclasses.replace(config, epochs=2.0 * epochs / (slices + 1), steps=None)


def partition(n: int, shards: int, slices: int, seed: int) -> list[list[np.ndarray]]:
    """Positions 0..n-1 split into ``shards`` disjoint shards of uniform size (sizes differ by at most one) at random from
    ``seed``, each shard into ``slices`` consecutive slices (sorted positions): ``[shard][slice] -> positions``."""
    perm = np_rng("sisa-partition", seed).permutation(n)
    return [[np.sort(s) for s in np.array_split(shard, slices)] for shard in np.array_split(perm, shards)]


# ------------------------------------------------------------------------------------------------ one shard
def fresh_shard(factory: Callable[[], nn.Module], *, seed: int, shard: int, device: str | torch.device = "cpu") -> nn.Module:
    """Shard ``shard``'s initialisation: ``factory()`` under torch's global RNG seeded from (seed, shard)."""
    with torch_seed(derive_seed(seed, "sisa-init", shard)):
        model = factory()
    return model.to(device)


def snapshot(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_shard(data: Split, slices: Sequence[np.ndarray], factory: Callable[[], nn.Module], config: TrainConfig, *, seed: int, shard: int,
                adapter: Any, device: str | torch.device = "cpu", start: int = 1, state: State | None = None,
                on_step: Callable[[int], None] | None = None) -> tuple[nn.Module, dict[int, State]]:
    """Train shard ``shard`` on ``slices`` (positions in ``data``, one array per slice) from step ``start`` (1-based) to the
    last, each step r on slices 1..r with ``config`` (a step's recipe, ``step_config``) and a generator from (seed, shard, r).
    ``state`` is the checkpoint after step ``start``-1 (None: the shard's fresh initialisation, which ``start`` = 1 needs).
    Returns the model (eval mode) and the checkpoint after each step trained, ``{r: state}``."""
    if not 1 <= start <= len(slices):
        raise ConfigError(f"A shard of {len(slices)} slices has no step {start}.")
    if start > 1 and state is None:
        raise ConfigError(f"Resuming shard {shard} at slice {start} needs the checkpoint after slice {start - 1}.")
    model = fresh_shard(factory, seed=seed, shard=shard, device=device)
    if state is not None:
        model.load_state_dict(state)
    checkpoints: dict[int, State] = {}
    for r in range(start, len(slices) + 1):
        seen = np.concatenate([np.asarray(s, dtype=np.int64) for s in slices[:r]])
        if len(seen):
            fit(model, NLL("train"), {"train": data.subset(seen)}, config, adapter=adapter, rng=np_rng("sisa-train", seed, shard, r),
                device=device, on_divergence="raise", desc=f"sisa shard {shard} slice {r}")
        model.eval()
        checkpoints[r] = snapshot(model)
        if on_step is not None:
            on_step(r)
    return model, checkpoints


# ------------------------------------------------------------------------------------------------ the regime
class SisaModel(ExactModel):
    """S shard models (an ``nn.ModuleList``) whose aggregate is the prediction: ``forward`` returns the log of the
    aggregate distribution (``softmax(forward(x))`` is that distribution, up to the floor of log 0). ``vote``: the
    fraction of live shards whose top class is each class (a shard's ties and the aggregate's ties go to the lower class
    index: ``torch.argmax`` returns the first maximum); ``mean``: the mean of the live shards' softmax probabilities."""

    regime = "sisa"
    guarantee = "exact"

    def __init__(self, data: Split, models: Sequence[nn.Module], *, parts: list[list[np.ndarray]], factory: Callable[[], nn.Module],
                 config: TrainConfig, seed: int, aggregation: str, adapter: Any, checkpoints: list[dict[int, State]],
                 checkpoint_dir: Path | None = None, training_info: dict[str, Any] | None = None) -> None:
        super().__init__(data)
        self.shards = nn.ModuleList(models)
        self.register_buffer("active", torch.ones(len(models), dtype=torch.bool))  # shards with live data (in the state dict)
        self.parts = parts
        self.factory = factory
        self.step_config = config
        self.seed = seed
        self.aggregation = aggregation
        self.adapter = adapter
        self.checkpoints = checkpoints  # [shard][slice] -> state after that slice's step (in memory)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.training_info = training_info or {}
        self._shard_of = np.empty(len(data), dtype=np.int64)
        self._slice_of = np.empty(len(data), dtype=np.int64)
        for k, shard in enumerate(parts):
            for r, pos in enumerate(shard, start=1):
                self._shard_of[pos], self._slice_of[pos] = k, r

    @property
    def n_slices(self) -> int:
        return len(self.parts[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shards": len(self.shards), "slices": self.n_slices, "aggregation": self.aggregation,
                "active_shards": int(self.active.sum())}

    # --------------------------------------------------------------------------------------------- serving
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live = [m for m, on in zip(self.shards, self.active.tolist()) if on]
        if not live:
            raise ModelError("Every SISA shard has lost all its data; there is no model to serve.")
        outs = [m(x) for m in live]
        if self.aggregation == "mean":
            agg = torch.stack([o.softmax(-1) for o in outs]).mean(0)
        else:
            n_classes = outs[0].shape[-1]
            votes = torch.stack([nn.functional.one_hot(o.argmax(-1), n_classes) for o in outs])
            agg = votes.sum(0).to(outs[0].dtype) / len(live)
        return agg.clamp_min(LOG_FLOOR).log()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shard models' penultimate features side by side (shard order; zeros for a shard that dropped out)."""
        feats = []
        for k, (m, on) in enumerate(zip(self.shards, self.active.tolist())):
            if not hasattr(m, "features"):
                raise ModelError(f"SISA shard {k} ({type(m).__name__}) has no features(x) method.")
            f = m.features(x)
            feats.append(f if on else torch.zeros_like(f))
        return torch.cat(feats, dim=-1)

    # -------------------------------------------------------------------------------------------- deletion
    def live_slices(self, shard: int, live: np.ndarray | None = None) -> list[np.ndarray]:
        """Shard ``shard``'s slices (positions in ``data``) without the deleted examples (``live``: a live mask to use)."""
        live = self._live if live is None else live
        return [pos[live[pos]] for pos in self.parts[shard]]

    def _delete(self, ids: np.ndarray, *, progress: bool) -> dict[str, Any]:
        pos = self.data.positions_of(ids)
        live = self._live.copy()
        live[pos] = False
        active = [bool(live[np.concatenate(shard)].any()) for shard in self.parts]
        if not any(active):
            raise RequestRefused(f"The request would delete every example the SISA model still depends on ({int(self._live.sum())}); "
                                 "no shard would be left to serve. Nothing was deleted.")
        start: dict[int, int] = {}
        for k, r in zip(self._shard_of[pos].tolist(), self._slice_of[pos].tolist()):
            start[k] = min(start.get(k, r), r)
        R = self.n_slices
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(R - j + 1 for j in start.values()), desc="sisa delete", leave=False, dynamic_ncols=True)
        device = self._device()
        retrained: dict[int, tuple[nn.Module, dict[int, State]]] = {}
        try:
            for k, j in sorted(start.items()):  # train everything first: a failure leaves the model as it was
                retrained[k] = train_shard(self.data, self.live_slices(k, live), self.factory, self.step_config, seed=self.seed, shard=k,
                                           adapter=self.adapter, device=device, start=j, state=self.checkpoints[k][j - 1] if j > 1 else None,
                                           on_step=None if bar is None else lambda _r: bar.update(1))
        finally:
            if bar is not None:
                bar.close()
        for k, (model, checkpoints) in retrained.items():
            self.shards[k].load_state_dict(model.state_dict())
            self.checkpoints[k].update(checkpoints)
        dropped = [k for k in sorted(start) if not active[k]]
        self.active.copy_(torch.tensor(active, dtype=torch.bool, device=self.active.device))
        if self.checkpoint_dir is not None:
            self.write_checkpoints({k: range(j, R + 1) for k, j in start.items()}, live)
        return {"shards": sorted(start), "from_slice": {str(k): j for k, j in sorted(start.items())},
                "slices_retrained": sum(R - j + 1 for j in start.values()), "dropped": dropped}

    # ------------------------------------------------------------------------------------------ checkpoints
    def write_checkpoints(self, which: dict[int, Sequence[int]], live: np.ndarray | None = None) -> None:
        """Write the checkpoints ``{shard: slices}`` as safetensors under ``checkpoint_dir`` (atomically), then the
        manifest naming every checkpoint with the fingerprint of the ids it was trained on (``live``: the live mask)."""
        assert self.checkpoint_dir is not None
        live = self._live if live is None else live
        for k, slices in which.items():
            for r in slices:
                # one metadata key: safetensors writes several in a random order, and the file's bytes would vary
                save_state(self.checkpoint_dir / _ckpt_name(k, r), self.checkpoints[k][r], {"unlearnkit": f"sisa shard {k} slice {r}"})
        entries = []
        for k in range(len(self.parts)):
            parts = self.live_slices(k, live)
            for r in range(1, self.n_slices + 1):
                entries.append({"shard": k, "slice": r, "file": _ckpt_name(k, r), "n_seen": int(sum(len(p) for p in parts[:r])),
                                "seen_fingerprint": ids_fingerprint(self.data.ids[np.concatenate(parts[:r])]),
                                "slice_fingerprint": ids_fingerprint(self.data.ids[parts[r - 1]])})
        manifest = {"regime": "sisa", "train_fingerprint": self.train_fingerprint, "seed": self.seed, "shards": len(self.parts),
                    "slices": self.n_slices, "aggregation": self.aggregation, "step_config": self.step_config.to_dict(),
                    "active": [bool(a) for a in self.active.tolist()], "live_fingerprint": ids_fingerprint(self.data.ids[live]),
                    "checkpoints": entries}
        atomic_write_text(self.checkpoint_dir / "manifest.json", canonical_json(manifest) + "\n")


def _ckpt_name(shard: int, slice_: int) -> str:
    return f"shard{shard:03d}/slice{slice_:03d}.safetensors"


def train_sisa(data: Split, factory: Callable[[], nn.Module], config: TrainConfig, *, shards: int, slices: int, aggregation: str = "vote",
               seed: int, adapter: Any, device: str = "cpu", progress: bool = False, checkpoint_dir: str | Path | None = None) -> SisaModel:
    """Train a SISA model on ``data``: ``factory()`` makes a fresh model (seeded here, per shard), ``config`` is the recipe
    of one ordinary training (turned into a step's recipe by ``step_config``). Checkpoints stay in memory and, with
    ``checkpoint_dir``, are written there as safetensors with a ``manifest.json``."""
    check_sisa(len(data), shards, slices, aggregation)
    cfg = step_config(config, slices, len(data))
    parts = partition(len(data), shards, slices, seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=shards * slices, desc="sisa", leave=False, dynamic_ncols=True)
    models, checkpoints = [], []
    try:
        with CostMeter(device) as meter:
            for k in range(shards):
                model, ckpts = train_shard(data, parts[k], factory, cfg, seed=seed, shard=k, adapter=adapter, device=device,
                                           on_step=None if bar is None else lambda _r: bar.update(1))
                models.append(model)
                checkpoints.append(ckpts)
    finally:
        if bar is not None:
            bar.close()
    assert meter.cost is not None
    info = {"shards": shards, "slices": slices, "aggregation": aggregation, "seed": seed, "epochs_per_step": cfg.epochs,
            "shard_sizes": [int(sum(len(p) for p in shard)) for shard in parts], "cost": meter.cost.to_json()}
    model = SisaModel(data, models, parts=parts, factory=factory, config=cfg, seed=seed, aggregation=aggregation, adapter=adapter,
                      checkpoints=checkpoints, checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir), training_info=info).to(device)
    if model.checkpoint_dir is not None:
        model.write_checkpoints({k: range(1, slices + 1) for k in range(shards)})
    return model
