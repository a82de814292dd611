"""Core data types: masks, datasets, splits, tasks, unlearning results, metric results."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .errors import EmptySelection, TaskError

Batch = dict[str, Any]


def _hash(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()


# --------------------------------------------------------------------------------------- masks
class Mask(Mapping[str, torch.Tensor]):
    """Which parameter coordinates may change: parameter name -> bool tensor of the parameter's shape.

    Compose with ``&``, ``|`` and ``~``. A mask that selects nothing is refused where it is used.
    """

    def __init__(self, entries: Mapping[str, torch.Tensor]) -> None:
        self._entries = {name: t.detach().to(torch.bool) for name, t in entries.items()}

    @classmethod
    def full(cls, model: nn.Module, value: bool = True) -> Mask:
        return cls({n: torch.full_like(p, value, dtype=torch.bool) for n, p in model.named_parameters()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _combine(self, other: Mask, op: Any) -> Mask:
        if set(self) != set(other):
            raise TaskError(f"Cannot combine masks over different parameters: {sorted(set(self) ^ set(other))[:5]}")
        return Mask({n: op(self[n], other[n].to(self[n].device)) for n in self})

    def __and__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_and)

    def __or__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_or)

    def __invert__(self) -> Mask:
        return Mask({n: ~t for n, t in self.items()})

    def count(self) -> int:
        return int(sum(int(t.sum()) for t in self._entries.values()))

    def total(self) -> int:
        return int(sum(t.numel() for t in self._entries.values()))

    def fraction(self) -> float:
        total = self.total()
        return self.count() / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        return {"selected": self.count(), "total": self.total(), "fraction": round(self.fraction(), 6)}

    def require_nonempty(self, who: str) -> Mask:
        if self.count() == 0:
            raise EmptySelection(f"{who} selected no parameters; nothing could change.")
        return self

    def check_model(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        unknown = sorted(set(self) - set(params))
        if unknown:
            raise TaskError(f"Mask names parameters the model does not have: {unknown[:5]}")
        for name, t in self.items():
            if tuple(t.shape) != tuple(params[name].shape):
                raise TaskError(f"Mask for {name!r} has shape {tuple(t.shape)}, parameter has {tuple(params[name].shape)}.")


# ------------------------------------------------------------------------------------ datasets
@runtime_checkable
class Batchable(Protocol):
    """What a Split holds: a dataset that returns whole batches for a tensor of positions."""

    def __len__(self) -> int: ...

    def take(self, positions: torch.Tensor) -> Batch: ...

    def subset(self, positions: np.ndarray) -> Batchable: ...

    @property
    def fingerprint(self) -> str: ...


class TensorData:
    """In-memory examples ``x`` (n, ...) with optional labels or targets ``y`` (n, ...)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, *, fingerprint: str | None = None) -> None:
        if not torch.is_tensor(x):
            x = torch.as_tensor(np.asarray(x))
        if y is not None and not torch.is_tensor(y):
            y = torch.as_tensor(np.asarray(y))
        if y is not None and len(y) != len(x):
            raise TaskError(f"Mismatched shapes: {len(x)} inputs but {len(y)} labels.")
        if fingerprint is None:  # new data (subsets and copies of checked data carry their parent's fingerprint)
            _check_finite(x, "inputs")
            if y is not None:
                _check_finite(y, "labels or targets")
        self.x = x
        self.y = y
        self._fingerprint = fingerprint

    @classmethod
    def from_dataset(cls, dataset: Any) -> TensorData:
        """Materialise a map-style dataset of ``(x, y)`` pairs (e.g. a torch ``Dataset``) in memory."""
        n = len(dataset)
        if n == 0:
            raise EmptySelection("The dataset is empty.")
        xs, ys = [], []
        for i in range(n):
            item = dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TaskError(f"Item {i} of the dataset is not an (x, y) pair; got {type(item).__name__}.")
            xs.append(torch.as_tensor(item[0]))
            ys.append(torch.as_tensor(item[1]))
        try:
            return cls(torch.stack(xs), torch.stack(ys))
        except RuntimeError as exc:
            raise TaskError(f"Dataset items have mismatched shapes: {exc}") from None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, positions: torch.Tensor) -> Batch:
        positions = positions.to(self.x.device)
        batch: Batch = {"x": self.x[positions]}
        if self.y is not None:
            batch["y"] = self.y[positions]
        return batch

    def subset(self, positions: np.ndarray) -> TensorData:
        pos = torch.as_tensor(np.asarray(positions, dtype=np.int64), device=self.x.device)
        fp = _hash("subset", self.fingerprint, np.asarray(positions, dtype=np.int64).tobytes())
        return TensorData(self.x[pos], None if self.y is None else self.y[pos], fingerprint=fp)

    @classmethod
    def concat(cls, parts: Sequence[TensorData]) -> TensorData:
        ys = [p.y for p in parts]
        y = None if any(v is None for v in ys) else torch.cat(ys)  # type: ignore[arg-type]
        fp = _hash("concat", *[p.fingerprint for p in parts])
        return cls(torch.cat([p.x for p in parts]), y, fingerprint=fp)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            parts = [str(self.x.dtype), str(tuple(self.x.shape)), self.x.detach().cpu().contiguous().numpy().tobytes()]
            if self.y is not None:
                parts += [str(self.y.dtype), self.y.detach().cpu().contiguous().numpy().tobytes()]
            self._fingerprint = _hash(*parts)
        return self._fingerprint

    def to(self, device: str | torch.device) -> TensorData:
        return TensorData(self.x.to(device), None if self.y is None else self.y.to(device), fingerprint=self.fingerprint)


def _check_finite(t: torch.Tensor, what: str) -> None:
    """A TaskError naming the first rows of ``t`` that hold NaN or inf (floating-point tensors only)."""
    if not t.is_floating_point() or len(t) == 0:
        return
    ok = torch.isfinite(t.reshape(len(t), -1)).all(dim=1)
    if not bool(ok.all()):
        rows = torch.nonzero(~ok).flatten()
        raise TaskError(f"The {what} contain NaN or infinite values in {len(rows)} of {len(t)} rows, e.g. rows "
                        f"{rows[:5].tolist()}; clean or drop them before building a Split.")


# -------------------------------------------------------------------------------------- splits
@dataclass(frozen=True, eq=False)
class Split:
    """A named set of examples with stable integer ids (one per example) and a content fingerprint."""

    name: str
    data: Batchable
    ids: np.ndarray
    fingerprint: str

    @classmethod
    def create(cls, name: str, data: Batchable, ids: Sequence[int] | np.ndarray | None = None) -> Split:
        n = len(data)
        ids_arr = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
        if ids_arr.ndim != 1 or len(ids_arr) != n:
            raise TaskError(f"Split {name!r}: {len(ids_arr)} ids for {n} examples (mismatched shapes).")
        if ids_arr.dtype.kind not in "iu":
            raise TaskError(f"Split {name!r}: ids must be integers, got dtype {ids_arr.dtype}.")
        ids_arr = ids_arr.astype(np.int64)
        uniq, counts = np.unique(ids_arr, return_counts=True)
        if len(uniq) != n:
            raise TaskError(f"Split {name!r} has duplicate ids, e.g. {uniq[counts > 1][:5].tolist()}.")
        ids_arr.setflags(write=False)
        return cls(name, data, ids_arr, _hash("split", data.fingerprint, ids_arr.tobytes()))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray | None:
        y = getattr(self.data, "y", None)
        return None if y is None else y.detach().cpu().numpy()

    def positions_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in this split; unknown ids raise naming a few of them."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        where = np.searchsorted(sorted_ids, ids)
        where = np.clip(where, 0, len(sorted_ids) - 1)
        found = sorted_ids[where] == ids
        if not found.all():
            raise TaskError(
                f"{int((~found).sum())} id(s) are not in split {self.name!r} ({len(self)} examples), "
                f"e.g. {ids[~found][:5].tolist()}."
            )
        return order[where]

    def subset(self, positions: np.ndarray, name: str | None = None) -> Split:
        positions = np.asarray(positions, dtype=np.int64)
        return Split.create(name or self.name, self.data.subset(positions), self.ids[positions])

    def select_ids(self, ids: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        return self.subset(self.positions_of(ids), name)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> Iterator[Batch]:
        """Batches (dicts with the dataset's fields plus ``ids``), in order or shuffled by ``generator``."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            pos = order[start : start + batch_size]
            batch = self.data.take(pos)
            batch["ids"] = torch.as_tensor(self.ids[pos.numpy()])
            yield to_device(batch, device) if device is not None else batch


def to_device(batch: Batch, device: str | torch.device) -> Batch:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------- task
@dataclass(frozen=True, eq=False)
class Task:
    """What to forget and what to keep: forget, retain and test splits (+ optional holdout, probes).

    The model under study was trained on ``train`` = forget ∪ retain. Forget and retain must be
    non-empty and disjoint; test and holdout must not overlap the training data.
    """

    name: str
    forget: Split
    retain: Split
    test: Split
    holdout: Split | None = None
    probes: Mapping[str, Split] = field(default_factory=dict)
    n_classes: int | None = None
    version: str = "1"
    modality: str = "classifier"
    info: Mapping[str, Any] = field(default_factory=dict)
    train_split: Split | None = None  # forget ∪ retain as one split, if the caller has it
    # training ids declared non-deletable (an experiment's ``public:``): no request selects them, and the regimes with a
    # frozen backbone (S3T, ACU) train it on them; they must lie in the retain set
    public_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.forget) == 0:
            raise EmptySelection(f"Task {self.name!r}: the forget set is empty.")
        if len(self.retain) == 0:
            raise EmptySelection(
                f"Task {self.name!r}: the retain set is empty (the forget set is the whole training set)."
            )
        self._disjoint(self.forget, self.retain)
        for other in [self.test] + ([self.holdout] if self.holdout is not None else []):
            self._disjoint(self.forget, other)
            self._disjoint(self.retain, other)
        if self.n_classes is not None:
            for split in self.splits().values():
                labels = split.labels
                if labels is None or labels.ndim != 1:
                    continue
                if labels.dtype.kind not in "iu":
                    frac = labels[labels != np.round(labels)] if labels.dtype.kind == "f" else labels[:0]
                    raise TaskError(
                        f"Task {self.name!r}: a classification task (n_classes={self.n_classes}) needs integer class labels; "
                        f"split {split.name!r} has dtype {labels.dtype}"
                        + (f" with fractional values, e.g. {frac[:3].tolist()}" if len(frac) else
                           " (whole numbers: convert them with y.long())")
                        + ". For continuous targets use n_classes=None (a regression task).")
                bad = (labels < 0) | (labels >= self.n_classes)
                if bad.any():
                    raise TaskError(
                        f"Task {self.name!r}: split {split.name!r} has labels outside [0, {self.n_classes}), "
                        f"e.g. {np.unique(labels[bad])[:5].tolist()}."
                    )
        if self.public_ids is not None:
            public = np.asarray(self.public_ids, dtype=np.int64)
            touched = np.intersect1d(public, self.forget.ids)
            if len(touched):
                raise TaskError(f"Task {self.name!r}: the forget set holds {len(touched)} id(s) declared public (non-deletable), "
                                f"e.g. {touched[:5].tolist()}.")
            outside = np.setdiff1d(public, self.retain.ids)
            if len(outside) or len(public) == 0:
                raise TaskError(f"Task {self.name!r}: the declared public ids must be a non-empty part of the retain set; "
                                f"{len(outside)} are not training ids of this task, e.g. {outside[:5].tolist()}.")
            object.__setattr__(self, "public_ids", np.unique(public))
        if self.train_split is not None:
            want = np.sort(np.concatenate([self.forget.ids, self.retain.ids]))
            if not np.array_equal(np.sort(self.train_split.ids), want):
                raise TaskError(f"Task {self.name!r}: train_split must hold exactly forget ∪ retain.")

    def _disjoint(self, a: Split, b: Split) -> None:
        both = np.intersect1d(a.ids, b.ids)
        if len(both):
            raise TaskError(
                f"Task {self.name!r}: splits {a.name!r} and {b.name!r} overlap in {len(both)} id(s), "
                f"e.g. {both[:5].tolist()}."
            )

    def whole_classes(self) -> list[int] | None:
        """The classes of a task that forgets whole classes (forget spec ``kind: classes`` without a ``fraction`` below
        1), else None."""
        spec = self.info.get("forget", {})
        if spec.get("kind") == "classes" and spec.get("fraction") in (None, 1.0):
            return [int(c) for c in spec.get("classes", [])]
        return None

    def splits(self) -> dict[str, Split]:
        out = {"forget": self.forget, "retain": self.retain, "test": self.test}
        if self.holdout is not None:
            out["holdout"] = self.holdout
        out.update({f"probe:{k}": v for k, v in self.probes.items()})
        return out

    @property
    def train(self) -> Split:
        """forget ∪ retain (what the original model was trained on)."""
        if self.train_split is not None:
            return self.train_split
        cached = self.__dict__.get("_train")
        if cached is None:
            if not (isinstance(self.forget.data, TensorData) and isinstance(self.retain.data, TensorData)):
                raise TaskError("Task.train needs TensorData splits or an explicit train_split.")
            data = TensorData.concat([self.forget.data, self.retain.data])
            cached = Split.create("train", data, np.concatenate([self.forget.ids, self.retain.ids]))
            object.__setattr__(self, "_train", cached)
        return cached

    @property
    def fingerprint(self) -> str:
        parts = [self.name, self.version, self.modality, str(self.n_classes)]
        parts += [f"{k}={v.fingerprint}" for k, v in sorted(self.splits().items())]
        parts += [f"{k}:records={v.data.records_fingerprint}" for k, v in sorted(self.splits().items()) if hasattr(v.data, "records_fingerprint")]
        if self.public_ids is not None:
            parts.append("public=" + self.public_fingerprint)
        return _hash(*parts)

    @property
    def public_fingerprint(self) -> str | None:
        """A digest of the declared public ids (None when the task declares none)."""
        return None if self.public_ids is None else _hash(np.asarray(self.public_ids, dtype=np.int64).tobytes())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "modality": self.modality,
            "n_classes": self.n_classes,
            "fingerprint": self.fingerprint,
            "train_fingerprint": self.train.fingerprint,
            "splits": {k: {"n": len(v), "fingerprint": v.fingerprint} for k, v in self.splits().items()},
            "info": dict(self.info),
            **({} if self.public_ids is None else {"public": {"n": int(len(self.public_ids)), "fingerprint": self.public_fingerprint}}),
        }

    @classmethod
    def from_forget_ids(
        cls,
        name: str,
        train: Split,
        test: Split,
        forget_ids: Sequence[int] | np.ndarray,
        *,
        n_classes: int | None = None,
        holdout: Split | None = None,
        version: str = "1",
        info: Mapping[str, Any] | None = None,
        modality: str = "classifier",
    ) -> Task:
        """Split ``train`` into forget (the given ids) and retain (the rest)."""
        forget_ids = np.asarray(forget_ids)
        if forget_ids.size == 0:
            raise EmptySelection(f"Task {name!r}: the forget set is empty.")
        if forget_ids.dtype.kind not in "iu":
            raise TaskError(f"Task {name!r}: forget ids must be integers, got dtype {forget_ids.dtype}.")
        uniq, counts = np.unique(forget_ids, return_counts=True)
        if len(uniq) != len(forget_ids):
            raise TaskError(f"Task {name!r}: duplicate forget ids, e.g. {uniq[counts > 1][:5].tolist()}.")
        forget_pos = train.positions_of(forget_ids)  # raises on ids not in the training set
        if len(forget_pos) == len(train):
            raise EmptySelection(
                f"Task {name!r}: the forget set is the whole training set ({len(train)} examples); "
                "nothing would be retained."
            )
        keep = np.ones(len(train), dtype=bool)
        keep[forget_pos] = False
        return cls(
            name=name,
            forget=train.subset(np.sort(forget_pos), "forget"),
            retain=train.subset(np.flatnonzero(keep), "retain"),
            test=test,
            holdout=holdout,
            n_classes=n_classes,
            version=version,
            modality=modality,
            info=dict(info or {}),
            train_split=train,
        )


# ------------------------------------------------------------------------------------ results
@dataclass
class Unlearned:
    """The output of ``Method.unlearn``: the model, which coordinates may have changed, and notes."""

    model: nn.Module
    changed: Mask
    info: dict[str, Any] = field(default_factory=dict)


Role = Literal["forget", "utility", "robustness"]


@dataclass(frozen=True)
class Evidence:
    """One scalar the verdict compares against the retrain band.

    ``remembers`` says which direction means "the data is still there" (for forget and robustness
    evidence) or "utility is better" (for utility evidence): ``"higher"`` or ``"lower"``.
    ``floor`` is the smallest half-width the band may have; ``resolution`` is the smallest step the value can take (1/n
    for a fraction of n examples: one example more or less), and the band is never narrower than that either, so a
    retrain that differs from the others by one example is not an alarm. ``bounds`` is the range the value can take
    (a band is cut to it, and a band that covers all of it decides nothing). ``strong`` marks evidence from attacks that
    weak evaluation misses (per-example or shadow-model attacks, relearning, representation probes).
    By default the band comes from the retrained seeds (the noise floor); evidence that cannot be
    re-measured per retrained seed carries its own null distribution instead (``null_mean``,
    ``null_sd``), e.g. an attack AUC's 0.5 and its Mann–Whitney standard deviation.
    ``reported_only`` (a reason) keeps evidence out of the verdict: it is shown next to its band, but it is no member of
    the Bonferroni family and decides nothing — for evidence whose calibration or power was measured and found wanting
    (benchmarks/verdict_calibration.py), so that it cannot raise false alarms or dilute the family for nothing.
    """

    key: str
    value: float
    role: Role
    remembers: Literal["higher", "lower"] = "higher"
    floor: float = 0.01
    strong: bool = False
    null_mean: float | None = None
    null_sd: float | None = None
    resolution: float = 0.0
    bounds: tuple[float, float] | None = None  # the values the evidence can take at all, e.g. (0, 1) for an AUC
    reported_only: str | None = None  # why this evidence is shown but does not feed the verdict; None: it decides

    @property
    def min_half_width(self) -> float:
        """The narrowest band this evidence may be compared with: its floor, and at least one step of its resolution."""
        return max(self.floor, self.resolution)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "role": self.role, "remembers": self.remembers, "floor": self.floor,
                "strong": self.strong, "null_mean": self.null_mean, "null_sd": self.null_sd, "resolution": self.resolution,
                "bounds": None if self.bounds is None else list(self.bounds), "reported_only": self.reported_only}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Evidence:
        def num(v: Any) -> float | None:
            return None if v is None else float(v)

        value = d["value"]
        return cls(key=d["key"], value=float("nan") if value is None else float(value), role=d["role"], remembers=d["remembers"],
                   floor=float(d["floor"]), strong=bool(d.get("strong", False)), null_mean=num(d.get("null_mean")), null_sd=num(d.get("null_sd")),
                   resolution=float(d.get("resolution", 0.0)), bounds=None if d.get("bounds") is None else tuple(map(float, d["bounds"])),
                   reported_only=d.get("reported_only"))


@dataclass(frozen=True)
class MetricResult:
    """What a metric returns: scalars, per-example arrays aligned to split ids, curves, evidence."""

    name: str
    values: Mapping[str, float]
    higher_is_better: bool | None = None
    per_example: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (ids, values)
    curves: Mapping[str, Mapping[str, list[float]]] = field(default_factory=dict)
    evidence: tuple[Evidence, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-able record; per-example arrays are inlined as lists (the store writes them as .npy)."""
        from .io import to_jsonable

        return {
            "name": self.name,
            "values": to_jsonable(dict(self.values)),
            "higher_is_better": self.higher_is_better,
            "per_example": {k: {"ids": to_jsonable(i), "values": to_jsonable(v)} for k, (i, v) in self.per_example.items()},
            "curves": to_jsonable({k: dict(v) for k, v in self.curves.items()}),
            "evidence": [e.to_json() for e in self.evidence],
            "info": to_jsonable(dict(self.info)),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MetricResult:
        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(
            name=d["name"],
            values={k: num(v) for k, v in d["values"].items()},
            higher_is_better=d.get("higher_is_better"),
            per_example={
                k: (np.asarray(v["ids"], dtype=np.int64), np.asarray([num(x) for x in v["values"]], dtype=np.float64))
                for k, v in d.get("per_example", {}).items()
            },
            curves={k: {kk: [num(x) for x in vv] for kk, vv in v.items()} for k, v in d.get("curves", {}).items()},
            evidence=tuple(Evidence.from_json(e) for e in d.get("evidence", [])),
            info=dict(d.get("info", {})),
        )
