"""s3t: Sequence-aware Sharded Sliced Training — slice-isolated low-rank adapters over a frozen backbone
(``exact.s3t``); a deletion deactivates adapters, no retraining.

Longer than 60 lines: the per-modality defaults (backbone, shards, targets, unit) are resolved and checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ..adapters import get_adapter
from ..errors import ConfigError
from ..exact.backbone import declared_or_drawn_public, random_backbone, trained_backbone
from ..exact.s3t import S3tModel, attach_adapters, plan_slices, rotations, stage_config, target_layers
from ..exact.s3t_lm import ATTENTION, S3tCausalLM, pretrained_backbone
from ..references import References
from ..seeding import derive_seed, np_rng
from ..types import Task
from .base import ALL_FORGET_KINDS, ExactMethod, register_method


@register_method
@dataclass(frozen=True)
class S3t(ExactMethod):
    """S3T (Chowdhury et al., arXiv 2406.16257): per shard, chains of low-rank adapters trained on growing slice prefixes in several orderings; deleting from slice j deactivates the adapters from j's position on.

    Defaults per modality (``None``): classifiers get 4 shards, a backbone of the task's architecture trained on a
    public (non-deletable) ``public_fraction`` of the retain set (or the task's declared public portion, an
    experiment's ``public:``), adapters on every Linear layer (the output layer
    included), one example per unit; causal LMs get 1 shard, the pretrained model (``refs.fresh_model``) as backbone,
    adapters on the attention projections, and one group (a profile's items) per unit, so a person's deletion touches one
    slice. ``orderings`` cyclic rotations of the slices (default: all R). Each adapter trains ``steps``, else ``epochs`` over
    its stage's data (default 2e/(R+1) of the recipe's e epochs, SISA's rule), with the recipe's optimiser at learning
    rate ``lr`` and batch size ``batch_size`` (default: the recipe's)."""

    shards: int | None = None
    slices: int = 4
    orderings: int | None = None
    rank: int = 4
    backbone: Literal["public", "random", "pretrained"] | None = None
    public_fraction: float = 0.2
    aggregation: Literal["mean", "vote"] = "mean"
    epochs: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    targets: tuple[str, ...] | None = None
    unit: Literal["example", "group"] | None = None

    name: ClassVar[str] = "s3t"
    paper: ClassVar[str] = ("Chowdhury, Choromanski, Sehanobish, Dubey & Chaturvedi, Towards Scalable Exact Machine Unlearning Using "
                            "Parameter-Efficient Fine-Tuning (S3T), arXiv 2406.16257")
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS

    def __post_init__(self) -> None:
        for name in ("shards", "slices", "orderings", "rank", "steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"s3t: {name} must be a whole number >= 1, got {value!r}.")
        if self.orderings is not None and self.orderings > self.slices:
            raise ConfigError(f"s3t: orderings ({self.orderings}) are cyclic rotations of the slices; at most slices={self.slices}.")
        if not 0 < self.public_fraction < 1:
            raise ConfigError(f"s3t: public_fraction must lie strictly between 0 and 1, got {self.public_fraction}.")
        for name in ("epochs", "lr"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ConfigError(f"s3t: {name} must be a finite number > 0, got {value}.")
        if self.targets is not None and (not self.targets or not all(isinstance(t, str) and t for t in self.targets)):
            raise ConfigError(f"s3t: targets must be a non-empty list of layer names, got {self.targets!r}.")

    def build(self, task: Task, refs: References, *, seed: int, device: str, progress: bool) -> S3tModel:
        config = refs.require("train_config", by="method 's3t'")
        lm = task.modality == "causal_lm"
        if task.modality not in self.modalities:
            raise ConfigError(f"s3t works on {list(self.modalities)} tasks, this one is {task.modality!r}.")
        backbone = self.backbone or ("pretrained" if lm else "public")
        if lm and backbone != "pretrained":
            raise ConfigError(f"s3t: a language model's backbone is its pretrained model ('pretrained'), got {backbone!r}.")
        if not lm and backbone == "pretrained":
            raise ConfigError("s3t: a classifier's backbone is 'public' (trained on a public portion) or 'random'; the task's "
                              "architecture has no pretrained weights here.")
        shards = self.shards if self.shards is not None else (1 if lm else 4)
        orderings = rotations(self.slices, self.orderings if self.orderings is not None else self.slices)
        stage = stage_config(config, self.slices, epochs=self.epochs, steps=self.steps, lr=self.lr, batch_size=self.batch_size)
        adapter = get_adapter(task)
        data = task.train
        public = declared_or_drawn_public(task, self.public_fraction, np_rng("s3t-public", seed)) if backbone == "public" else None
        public_ids = np.zeros(0, np.int64) if public is None else public.ids
        plan = plan_slices(data, public_ids, shards, self.slices, self.unit or ("group" if lm else "example"), np_rng("s3t-slices", seed))
        fresh = refs.fresh_model(derive_seed(seed, "s3t-backbone"), by="method 's3t'")
        targets = self.targets if self.targets is not None else (ATTENTION if lm else None)
        info: dict[str, int] = {}
        if backbone == "pretrained":
            net, bb = pretrained_backbone(fresh, device=device)  # PEFT adapters merged away first: their layers are the targets
            target_layers(net, targets, self.rank)
        else:
            target_layers(fresh, targets, self.rank)  # bad targets or rank fail before any training
            backbone_seed = derive_seed(seed, "s3t-backbone")
            if backbone == "public":
                assert public is not None
                net, bb = trained_backbone(public, lambda: fresh, config, adapter=adapter, seed=backbone_seed, device=device,
                                           progress=progress)
                info["backbone_examples"] = len(public)
            else:
                net, bb = random_backbone(lambda: fresh, seed=backbone_seed, device=device)
        layers = attach_adapters(net, targets, shards * len(orderings), self.slices, self.rank, seed)
        cls = S3tCausalLM if lm else S3tModel
        model = cls(data, net, bb, plan, orderings, layers, rank=self.rank, aggregation=self.aggregation).to(device)
        model.training_info = {**info, **model.train_chains(stage, adapter=adapter, seed=seed, device=device, progress=progress)}
        return model
