"""What every model that is unlearnable by design shares: the ids it was trained on, the requests it takes, the checks
that refuse a bad request before anything changes, and the receipt of what a request did and cost.

A served model (``ExactModel``) is an ``nn.Module`` whose forward pass is the prediction users get (logits for a
classifier), so the evaluation battery reads it like any other model. Its training regime (shards, slices, adapters,
an analytic head, DP-SGD) makes a deletion exact (or certified): ``delete(ids)`` removes examples and returns a
``Receipt``; regimes that can also learn new data take ``add(split)``.

Longer than 60 lines: the request checks are the one place every regime's bad-input errors come from.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn

from ..cost import Cost, CostMeter
from ..errors import ConfigError, EmptySelection, RequestRefused, TaskError
from ..types import Split

Guarantee = Literal["exact", "exact_above_backbone", "certified_dp"]

GUARANTEES: dict[str, str] = {
    "exact": "the served model is bit-identical (same seed, same device) to training this regime from scratch without the deleted data",
    "exact_above_backbone": ("everything above the frozen backbone equals training it from scratch without the deleted data; the "
                             "backbone never saw deletable data (its training data is recorded by fingerprint and protected)"),
    "certified_dp": ("the deleted data only reached the model through a differentially private base model: any output is "
                     "(epsilon, delta)-indistinguishable from one trained without a record (k*epsilon for k records)"),
}


def ids_fingerprint(ids: Sequence[int] | np.ndarray) -> str:
    """A fingerprint of a set of example ids (order-free), recorded in receipts and certificates."""
    arr = np.unique(np.asarray(ids, dtype=np.int64))
    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Receipt:
    """What one request did: the operation, the ids, what the regime touched to honour it (e.g. shards retrained,
    adapters deactivated), the guarantee that holds afterwards, and the request's cost."""

    op: Literal["delete", "add"]
    ids: tuple[int, ...]
    guarantee: Guarantee
    touched: dict[str, Any]
    cost: Cost
    live_after: int
    live_fingerprint: str  # ids_fingerprint of the examples the model depends on after the request

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "ids": list(self.ids), "n": len(self.ids), "guarantee": self.guarantee, "touched": self.touched,
                "cost": self.cost.to_json(), "live_after": self.live_after, "live_fingerprint": self.live_fingerprint}


@dataclass(frozen=True)
class Backbone:
    """A frozen feature extractor's provenance: where its weights come from and the fingerprint of the data it was
    trained on. ``protected_ids`` are task ids that data contains (a split declared non-deletable, e.g. a public
    pretraining portion); a request that touches them is refused, because deleting them would need a new backbone."""

    source: str  # e.g. "pretrained:all-MiniLM-L6-v2", "trained:public split"
    data_fingerprint: str
    protected_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "data_fingerprint": self.data_fingerprint, "n_protected": int(len(self.protected_ids)),
                "protected_fingerprint": ids_fingerprint(self.protected_ids)}


class ExactModel(nn.Module, abc.ABC):
    """A servable model trained by a regime that makes deletion exact or certified.

    Subclasses set ``regime`` and ``guarantee``, call ``super().__init__(data)`` with the split they were trained on
    (and ``backbone=`` when a frozen backbone sits below them), and implement ``_delete(ids)`` (and ``_add(split)`` when
    they take additions), returning what they touched. ``delete``/``add`` check the request first, so a refused request
    changes nothing."""

    regime: ClassVar[str]
    guarantee: ClassVar[Guarantee]

    def __init__(self, data: Split, *, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.data = data  # every example the regime was trained on, deleted or not (ids are stable)
        self.train_fingerprint = data.fingerprint  # the training split this model was built from
        self.backbone = backbone
        self._live = np.ones(len(data), dtype=bool)
        self.history: list[Receipt] = []

    # ---------------------------------------------------------------------------------------------- state
    def live_ids(self) -> np.ndarray:
        """Ids of the examples the model currently depends on (trained on and not deleted), sorted."""
        return np.sort(self.data.ids[self._live])

    def live_split(self) -> Split:
        return self.data.subset(np.flatnonzero(self._live))

    def describe(self) -> dict[str, Any]:
        return {"regime": self.regime, "guarantee": self.guarantee, "statement": GUARANTEES[self.guarantee],
                "train_fingerprint": self.train_fingerprint, "live": int(self._live.sum()),
                "live_fingerprint": ids_fingerprint(self.live_ids()), "requests": len(self.history),
                "backbone": None if self.backbone is None else self.backbone.to_json()}

    # ------------------------------------------------------------------------------------------- requests
    def check_request(self, ids: Any, *, train_fingerprint: str | None = None) -> np.ndarray:
        """The request's ids as a sorted int64 array, or a clear error (nothing changed) for: an empty request, ids
        that are not integers or repeat, ids of a different task (``train_fingerprint`` given and not this model's),
        ids this model was never trained on or has already deleted, and ids a frozen backbone was trained on."""
        if train_fingerprint is not None and train_fingerprint != self.train_fingerprint:
            raise TaskError(f"The request is for training data {train_fingerprint[:12]}…, but this {self.regime} model was trained on "
                            f"{self.train_fingerprint[:12]}… (a different task or dataset); nothing was deleted.")
        arr = np.asarray(ids)
        if arr.size == 0:
            raise EmptySelection(f"The deletion request is empty; nothing was deleted from the {self.regime} model.")
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TaskError(f"A request's ids must be a flat list of integers, got dtype {arr.dtype} with shape {arr.shape}.")
        arr = arr.astype(np.int64)
        uniq, counts = np.unique(arr, return_counts=True)
        if len(uniq) != len(arr):
            raise TaskError(f"The request repeats ids, e.g. {uniq[counts > 1][:5].tolist()}; nothing was deleted.")
        known = np.isin(uniq, self.data.ids)
        if not known.all():
            raise TaskError(f"{int((~known).sum())} id(s) of the request were never in this {self.regime} model's training data "
                            f"({len(self.data)} examples), e.g. {uniq[~known][:5].tolist()}; nothing was deleted.")
        gone = ~np.isin(uniq, self.live_ids())
        if gone.any():
            raise TaskError(f"{int(gone.sum())} id(s) of the request were already deleted, e.g. {uniq[gone][:5].tolist()}; "
                            "nothing was deleted.")
        if self.backbone is not None and len(self.backbone.protected_ids):
            hit = np.isin(uniq, self.backbone.protected_ids)
            if hit.any():
                raise RequestRefused(
                    f"{int(hit.sum())} id(s) of the request are in the data the frozen backbone was trained on "
                    f"({self.backbone.source}), e.g. {uniq[hit][:5].tolist()}: a {self.regime} deletion is exact only above the "
                    "backbone, so it cannot remove them; retrain the backbone without them (or use a regime without a frozen "
                    "backbone). Nothing was deleted.")
        return uniq

    def delete(self, ids: Any, *, train_fingerprint: str | None = None, progress: bool = False) -> Receipt:
        """Remove the examples ``ids`` from the model; the receipt says what was touched and what it cost."""
        arr = self.check_request(ids, train_fingerprint=train_fingerprint)
        with CostMeter(self._device()) as meter:
            touched = self._delete(arr, progress=progress)
        self._live[self.data.positions_of(arr)] = False
        return self._receipt("delete", arr, touched, meter)

    def add(self, split: Split, *, progress: bool = False) -> Receipt:
        """Learn the new examples of ``split`` (ids not yet in the model). Regimes that cannot add refuse."""
        clash = np.intersect1d(split.ids, self.data.ids)
        if len(split) == 0:
            raise EmptySelection(f"The addition request is empty; nothing was added to the {self.regime} model.")
        if len(clash):
            raise TaskError(f"{len(clash)} id(s) of the addition are already in this model's data, e.g. {clash[:5].tolist()}; "
                            "ids are stable, give new ones. Nothing was added.")
        from ..types import TensorData

        if not (isinstance(self.data.data, TensorData) and isinstance(split.data, TensorData)):
            raise TaskError("Additions need in-memory (TensorData) splits; nothing was added.")
        with CostMeter(self._device()) as meter:
            touched = self._add(split, progress=progress)
        merged = Split.create(self.data.name, TensorData.concat([self.data.data, split.data]), np.concatenate([self.data.ids, split.ids]))
        self.data = merged
        self._live = np.concatenate([self._live, np.ones(len(split), dtype=bool)])
        return self._receipt("add", np.asarray(split.ids, dtype=np.int64), touched, meter)

    @abc.abstractmethod
    def _delete(self, ids: np.ndarray, *, progress: bool) -> dict[str, Any]:
        """Remove the (checked) ids from the regime's state; return what was touched. A regime without it cannot be built."""

    def _add(self, split: Split, *, progress: bool) -> dict[str, Any]:
        raise ConfigError(f"A {self.regime} model does not take additions (requests to learn new data).")

    def _receipt(self, op: Literal["delete", "add"], ids: np.ndarray, touched: dict[str, Any], meter: CostMeter) -> Receipt:
        assert meter.cost is not None
        live = self.live_ids()
        receipt = Receipt(op, tuple(int(i) for i in ids), self.guarantee, touched, meter.cost, len(live), ids_fingerprint(live))
        self.history.append(receipt)
        return receipt

    def _device(self) -> str:
        p = next(self.parameters(), None)
        return "cpu" if p is None else str(p.device)


def delete(model: Any, ids: Any, *, train_fingerprint: str | None = None, progress: bool = False) -> Receipt:
    """Honour a deletion request on a model trained by an exact regime: its receipt, or a clear error (nothing changed)
    for a model trained the usual way and for every bad request ``ExactModel.check_request`` names."""
    return require_exact(model, "An exact deletion").delete(ids, train_fingerprint=train_fingerprint, progress=progress)


def require_exact(model: Any, who: str) -> ExactModel:
    """``model`` as an ExactModel, or a clear error: an exact-only operation was given a model trained the usual way."""
    if not isinstance(model, ExactModel):
        raise ConfigError(f"{who} needs a model trained by an exact-unlearning regime (sisa, s3t, acu, dp2unlearning); got a "
                          f"{type(model).__name__}, whose training data cannot be removed exactly. Train it with one of those "
                          "methods, or unlearn it with an approximate method.")
    return model
