"""Forget-set selection: a random fraction, listed classes, explicit ids (inline or from a file), or the identified part
of manipulated training data (corrective unlearning); and streams of deletion requests (``select_requests``), each
request chosen from the training data the earlier ones left.

Longer than 60 lines: every kind of forget set has its own checks, and each bad selection its own error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, EmptySelection, TaskError
from ..params import coerce
from ..registry import suggest
from ..seeding import np_rng
from ..types import Split, Task
from .corrective import manipulation_record

Kind = Literal["random", "classes", "ids", "corrupted", "profiles", "benchmark"]
_FIELDS = {"random": {"kind", "fraction", "count"}, "classes": {"kind", "classes", "fraction"}, "ids": {"kind", "ids", "file"},
           "corrupted": {"kind", "fraction"}, "profiles": {"kind", "fraction", "ids"}, "benchmark": {"kind"}}


@dataclass(frozen=True)
class ForgetSpec:
    """How to choose the forget set.

    - ``random``: ``fraction`` (0, 1) or ``count`` examples drawn uniformly from the training set;
    - ``classes``: every training example of the listed ``classes`` (optionally a ``fraction`` of them);
    - ``ids``: the listed ``ids``, or ids read from ``file`` (one integer per line, ``#`` comments);
    - ``corrupted``: a random ``fraction`` (0, 1] of the manipulated training examples — the identified part, whose
      fraction is the discovery rate of corrective unlearning (Goel et al., TMLR 2024); needs a training split from
      the ``poisoned`` source, which records the manipulated ids;
    - ``profiles``: every example of a ``fraction`` of the groups (the people of a fictitious-profile task; a
      group is an example's label), or of the listed profile ``ids``;
    - ``benchmark``: the forget set a benchmark defines (TOFU's forget01/05/10, MUSE's forget corpus, WMDP's forget
      corpus), as the data source marks it on its training records (``benchmark_forget``).
    """

    kind: Kind
    fraction: float | None = None
    count: int | None = None
    classes: tuple[int, ...] = ()
    ids: tuple[int, ...] = ()
    file: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForgetSpec:
        if not isinstance(d, Mapping):
            raise ConfigError(f"forget: expected a mapping like {{kind: random, fraction: 0.1}}, got {d!r}.")
        kind = d.get("kind")
        if kind not in _FIELDS:
            raise ConfigError(f"forget.kind must be one of {sorted(_FIELDS)}, got {kind!r}.{suggest(str(kind), set(_FIELDS))}")
        unknown = set(d) - _FIELDS[kind]
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"Unknown key {key!r} in forget ({kind}).{suggest(key, _FIELDS[kind])} Allowed: {sorted(_FIELDS[kind])}.")
        where = f"forget ({kind})"
        return cls(
            kind=kind,
            fraction=coerce(d.get("fraction"), float | None, f"{where}: fraction"),
            count=coerce(d.get("count"), int | None, f"{where}: count"),
            classes=coerce(_as_list(d.get("classes", ())), tuple[int, ...], f"{where}: classes"),
            ids=coerce(_as_list(d.get("ids", ())), tuple[int, ...], f"{where}: ids"),
            file=d.get("file"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}  # plain Python numbers: equal specs give equal dicts (and seeds)
        if self.fraction is not None:
            out["fraction"] = float(self.fraction)
        if self.count is not None:
            out["count"] = int(self.count)
        if self.classes:
            out["classes"] = [int(c) for c in self.classes]
        if self.ids:
            out["ids"] = [int(i) for i in self.ids]
        if self.file:
            out["file"] = self.file
        return out

    def label(self) -> str:
        if self.kind == "random":
            return f"random {self.fraction:.0%}" if self.fraction is not None else f"random {self.count}"
        if self.kind == "classes":
            frac = "" if self.fraction is None else f" ({self.fraction:.0%})"
            return f"class {','.join(map(str, self.classes))}{frac}"
        if self.kind == "corrupted":
            return f"corrupted {self.fraction:.0%}" if self.fraction is not None else "corrupted"
        if self.kind == "benchmark":
            return "benchmark"
        if self.kind == "profiles":
            return f"profiles {self.fraction:.0%}" if self.fraction is not None else f"profiles {','.join(map(str, self.ids))}"
        return f"ids ({Path(self.file).name if self.file else len(self.ids)})"

    def slug(self) -> str:
        return self.label().replace(" ", "").replace("%", "pct").replace(",", "-").replace("(", "_").replace(")", "")


def _as_list(values: Any) -> Any:
    """A single integer as a list of one, an array as a list; anything else as given (``coerce`` checks it)."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        return [values]
    return values.tolist() if isinstance(values, np.ndarray) else values


def read_id_file(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Forget id file {path} does not exist.")
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        for tok in line.replace(",", " ").split():
            try:
                ids.append(int(tok))
            except ValueError:
                raise ConfigError(f"{path}:{lineno}: {tok!r} is not an integer id.") from None
    return np.asarray(ids, dtype=np.int64)


def select_corrupted(train: Split, fraction: float | None, rng: np.random.Generator) -> np.ndarray:
    """A random ``fraction`` (the discovery rate) of the manipulated training ids that ``train`` records, sorted."""
    record = manipulation_record(train)
    if record is None:
        raise TaskError("forget (corrupted): the training split records no manipulated examples; use data from the 'poisoned' "
                        "source, e.g. dataset: {name: poisoned, params: {base: digits, kind: backdoor}}.")
    if fraction is None or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"forget (corrupted): fraction (the discovery rate) must be in (0, 1], got {fraction}.")
    k = int(round(fraction * len(record.ids)))
    if k == 0:
        raise EmptySelection(f"forget (corrupted): a discovery rate of {fraction} of the {len(record.ids)} manipulated examples "
                             "identifies none; raise the fraction.")
    return np.sort(rng.choice(record.ids, size=k, replace=False))


def select_profiles(train: Split, spec: ForgetSpec, rng: np.random.Generator) -> np.ndarray:
    """Every example of a random ``fraction`` of the groups (at least one), or of the listed group ids, sorted."""
    groups = train.labels
    if groups is None:
        raise TaskError("forget (profiles): the training split has no group (profile) ids.")
    present = np.unique(groups)
    if (spec.fraction is None) == (not spec.ids):
        raise ConfigError("forget (profiles): give exactly one of fraction or ids.")
    if spec.ids:
        unknown = sorted(set(spec.ids) - set(present.tolist()))
        if unknown:
            raise TaskError(f"forget (profiles): profile id(s) {unknown[:5]} do not exist in the training set "
                            f"(it has {len(present)} profiles, ids {int(present.min())}..{int(present.max())}).")
        chosen = np.asarray(sorted(set(spec.ids)), dtype=np.int64)
    else:
        assert spec.fraction is not None
        if not 0.0 < spec.fraction < 1.0:
            raise ConfigError(f"forget (profiles): fraction must be in (0, 1), got {spec.fraction}.")
        k = max(1, int(round(spec.fraction * len(present))))
        chosen = rng.choice(present, size=k, replace=False)
    if len(chosen) >= len(present):
        raise EmptySelection(f"forget (profiles): selects all {len(present)} profiles; nothing would be retained.")
    return np.sort(train.ids[np.isin(groups, chosen)])


def select_benchmark(train: Split) -> np.ndarray:
    """The ids of the training examples whose records the data source marked as the benchmark's forget set, sorted."""
    records = getattr(train.data, "records", None)
    if not records or not any(hasattr(r, "benchmark_forget") for r in records):
        raise TaskError("forget (benchmark): this training data defines no forget set of its own; the benchmark data sources "
                        "(tofu, muse, wmdp) do. Choose the forget set with kind random, ids or profiles instead.")
    chosen = train.ids[np.asarray([bool(getattr(r, "benchmark_forget", False)) for r in records])]
    if len(chosen) == 0:
        raise EmptySelection("forget (benchmark): the data source marked no training example as forget data.")
    return np.sort(chosen)


def select_forget(train: Split, spec: ForgetSpec, rng: np.random.Generator, n_classes: int | None = None) -> np.ndarray:
    """The ids of the forget set chosen by ``spec`` from ``train``."""
    n = len(train)
    if spec.kind == "benchmark":
        return select_benchmark(train)
    if spec.kind == "profiles":
        return select_profiles(train, spec, rng)
    if spec.kind == "corrupted":
        return select_corrupted(train, spec.fraction, rng)
    if spec.kind == "random":
        if (spec.fraction is None) == (spec.count is None):
            raise ConfigError("forget (random): give exactly one of fraction or count.")
        if spec.fraction is not None and not 0.0 < spec.fraction < 1.0:
            raise ConfigError(f"forget (random): fraction must be in (0, 1), got {spec.fraction}.")
        k = int(round(spec.fraction * n)) if spec.fraction is not None else int(spec.count or 0)
        if k <= 0:
            raise EmptySelection(f"forget (random): selects 0 of {n} examples.")
        if k >= n:
            raise EmptySelection(f"forget (random): selects all {n} training examples; nothing would be retained.")
        return np.sort(rng.choice(train.ids, size=k, replace=False))
    if spec.kind == "classes":
        labels = train.labels
        if labels is None:
            raise TaskError("forget (classes): the training split has no labels.")
        if not spec.classes:
            raise EmptySelection("forget (classes): no classes listed.")
        n_cls = n_classes if n_classes is not None else int(labels.max()) + 1
        bad = [c for c in spec.classes if not 0 <= c < n_cls]
        if bad:
            raise TaskError(f"forget (classes): class id(s) {bad} out of range [0, {n_cls}).")
        chosen = train.ids[np.isin(labels, spec.classes)]
        if len(chosen) == 0:
            raise EmptySelection(f"forget (classes): no training example has class {list(spec.classes)}.")
        if spec.fraction is not None:
            if not 0.0 < spec.fraction <= 1.0:
                raise ConfigError(f"forget (classes): fraction must be in (0, 1], got {spec.fraction}.")
            k = int(round(spec.fraction * len(chosen)))
            if k == 0:
                raise EmptySelection(f"forget (classes): a fraction of {spec.fraction} of the {len(chosen)} examples of class "
                                     f"{list(spec.classes)} selects none; raise the fraction.")
            chosen = rng.choice(chosen, size=k, replace=False)
        return np.sort(chosen)
    ids = np.asarray(spec.ids, dtype=np.int64) if spec.ids else None
    if spec.file:
        if ids is not None:
            raise ConfigError("forget (ids): give ids or file, not both.")
        ids = read_id_file(spec.file)
    if ids is None or len(ids) == 0:
        raise EmptySelection("forget (ids): no ids given.")
    return ids  # validated (known, unique, not everything) by Task.from_forget_ids


def make_task(
    name: str,
    train: Split,
    test: Split,
    spec: ForgetSpec,
    rng: np.random.Generator,
    *,
    n_classes: int | None,
    version: str = "1",
    info: Mapping[str, Any] | None = None,
    probes: Mapping[str, Split] | None = None,
    modality: str = "classifier",
    eval_retain_groups: int | None = None,
) -> Task:
    """A task whose forget set is chosen by ``spec``, with the given ``probes`` splits. If the training split records
    a manipulation (data from the ``poisoned`` source), its description goes into ``info["manipulation"]`` and its
    probe splits (e.g. the triggered test set) into the task's probes. ``eval_retain_groups`` = k adds the probe
    ``retain_eval``: every retained example of the k retained groups (profiles) with the smallest ids, a fixed subset
    the retain-side language-model metrics score instead of the whole retain set (TOFU's fixed retain evaluation set)."""
    ids = select_forget(train, spec, rng, n_classes)
    return task_from_ids(name, train, test, ids, forget_info=spec.to_dict(), forget_label=spec.label(), n_classes=n_classes,
                         version=version, info=info, probes=probes, modality=modality, eval_retain_groups=eval_retain_groups)


def task_from_ids(
    name: str,
    train: Split,
    test: Split,
    ids: np.ndarray,
    *,
    forget_info: Mapping[str, Any],
    forget_label: str,
    n_classes: int | None,
    version: str = "1",
    info: Mapping[str, Any] | None = None,
    probes: Mapping[str, Split] | None = None,
    modality: str = "classifier",
    eval_retain_groups: int | None = None,
    public_ids: np.ndarray | None = None,
) -> Task:
    """``make_task`` for a forget set already chosen (``ids``), described by ``forget_info`` (the task's
    ``info["forget"]``, which metrics and methods read: its ``kind``) and ``forget_label``; ``public_ids``: training ids
    declared non-deletable (``Task.public_ids``)."""
    meta = {"forget": dict(forget_info), "forget_label": forget_label, **dict(info or {})}
    all_probes = dict(probes or {})
    record = manipulation_record(train)
    if record is not None:
        meta["manipulation"] = record.to_info()
        clash = sorted(set(all_probes) & set(record.probes))
        if clash:
            raise ConfigError(f"make_task: probe name(s) {clash} are already used by the manipulated data's probes.")
        all_probes.update(record.probes)
    task = Task.from_forget_ids(name, train, test, ids, n_classes=n_classes, version=version, info=meta, modality=modality)
    if public_ids is not None:
        task = replace(task, public_ids=np.asarray(public_ids, dtype=np.int64))
    if RETAIN_EVAL in all_probes:  # a data source's own retain evaluation set (TOFU's retain_perturbed) must be retained data
        leaked = np.intersect1d(all_probes[RETAIN_EVAL].ids, ids)
        if len(leaked):
            raise TaskError(f"make_task: the data's fixed retain evaluation set ({RETAIN_EVAL}) holds {len(leaked)} example(s) of the "
                            f"forget set, e.g. ids {leaked[:5].tolist()}; forget the benchmark's own forget split "
                            "(forget: {kind: benchmark}) or examples outside that set.")
    if eval_retain_groups is not None:
        if RETAIN_EVAL in all_probes:
            raise ConfigError(f"make_task: probe name {RETAIN_EVAL!r} is already used.")
        subset = retain_eval_subset(task.retain, eval_retain_groups)
        if subset is not None:
            all_probes[RETAIN_EVAL] = subset
    return replace(task, probes=all_probes) if all_probes else task


# ------------------------------------------------------------------------------------ request streams
STREAM_KINDS = ("random", "classes", "ids", "profiles")  # what a request of a stream may be


def _request_where(i: int, n: int, spec: ForgetSpec) -> str:
    return f"requests: request {i + 1} of {n} ({spec.label()})"


def check_requests(specs: Sequence[ForgetSpec]) -> None:
    """What can be checked of a stream of requests without the data: at least one request, kinds a request can be, and
    no two requests naming the same ids, the same profiles or the same whole classes (the later one would delete
    nothing, or data already deleted)."""
    if not specs:
        raise ConfigError("requests: give at least one deletion request, e.g. [{kind: random, fraction: 0.01}, ...].")
    seen: dict[str, dict[int, int]] = {"ids": {}, "profiles": {}, "classes": {}}
    for i, spec in enumerate(specs):
        where = _request_where(i, len(specs), spec)
        if spec.kind not in STREAM_KINDS:
            raise ConfigError(f"{where}: a request of a stream is one of {list(STREAM_KINDS)}, not {spec.kind!r} (a {spec.kind} "
                              "forget set is defined on the whole training data, not on what earlier requests left).")
        named = ("ids", spec.ids) if spec.kind == "ids" else ("profiles", spec.ids) if spec.kind == "profiles" else \
            ("classes", spec.classes) if spec.kind == "classes" and spec.fraction in (None, 1.0) else (None, ())
        what, values = named
        if what is None:
            continue
        again = sorted({int(v) for v in values} & set(seen[what]))
        if again:
            first = seen[what][again[0]]
            raise ConfigError(f"{where}: {what} {again[:5]} already deleted by request {first + 1}; a request must name data "
                              "not yet deleted.")
        seen[what].update({int(v): i for v in values})


def request_rng(task_seed: int, index: int, spec: ForgetSpec) -> np.random.Generator:
    """The generator that draws request ``index`` (0-based) of a stream: from the task seed, the index and the spec."""
    return np_rng("request", task_seed, index, spec.to_dict())


def select_request(train: Split, deleted: np.ndarray, spec: ForgetSpec, rng: np.random.Generator,
                   n_classes: int | None = None) -> np.ndarray:
    """The ids one request deletes, sorted, chosen from the examples of ``train`` not in ``deleted``. A ``random``
    fraction is of the whole training set (10 requests of 1% delete 10%), a ``profiles`` fraction of all its profiles;
    ``classes`` takes the classes' examples still there; ``ids`` and listed profiles must name data still there."""
    remaining = train.subset(np.flatnonzero(~np.isin(train.ids, deleted)), train.name)
    if spec.kind == "random":
        if (spec.fraction is None) == (spec.count is None):
            raise ConfigError("give exactly one of fraction or count.")
        if spec.fraction is not None and not 0.0 < spec.fraction < 1.0:
            raise ConfigError(f"fraction must be in (0, 1), got {spec.fraction}.")
        k = int(round(spec.fraction * len(train))) if spec.fraction is not None else int(spec.count or 0)
        if k <= 0:
            raise EmptySelection(f"selects 0 of {len(train)} examples.")
        if k >= len(remaining):
            raise EmptySelection(f"selects {k} examples, but only {len(remaining)} are not yet deleted; nothing would be retained.")
        return np.sort(rng.choice(remaining.ids, size=k, replace=False))
    if spec.kind == "profiles" and spec.fraction is not None:
        groups, left = train.labels, remaining.labels
        if groups is None or left is None:
            raise TaskError("the training split has no group (profile) ids.")
        if spec.ids:
            raise ConfigError("give exactly one of fraction or ids.")
        if not 0.0 < spec.fraction < 1.0:
            raise ConfigError(f"fraction must be in (0, 1), got {spec.fraction}.")
        present = np.unique(left)
        k = max(1, int(round(spec.fraction * len(np.unique(groups)))))
        if k >= len(present):
            raise EmptySelection(f"selects {k} profiles, but only {len(present)} have examples not yet deleted; nothing would be retained.")
        chosen = rng.choice(present, size=k, replace=False)
        return np.sort(remaining.ids[np.isin(left, chosen)])
    if spec.kind in ("ids", "profiles"):
        ids = select_forget(train, spec, rng, n_classes)  # named data: checked against the whole training set
        train.positions_of(ids)
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) != len(ids):
            raise TaskError(f"repeats ids, e.g. {uniq[counts > 1][:5].tolist()}.")
        return np.sort(uniq)
    if spec.kind == "classes":
        return select_forget(remaining, spec, rng, n_classes)
    raise ConfigError(f"a request of a stream is one of {list(STREAM_KINDS)}, not {spec.kind!r}.")


def draw_public(train: Split, fraction: float, rng: np.random.Generator, *, by_group: bool = False) -> np.ndarray:
    """The sorted ids of a random ``fraction`` of ``train`` declared public (non-deletable: an experiment's ``public:``),
    at least one example and never all; ``by_group`` draws whole groups (a language-model task's profiles, its labels),
    so no person is half public."""
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ConfigError(f"public: fraction must lie strictly between 0 and 1, got {fraction!r}.")
    if by_group and train.labels is not None:
        groups = np.unique(train.labels)
        k = max(1, int(round(fraction * len(groups))))
        if k >= len(groups):
            raise ConfigError(f"public: a fraction of {fraction} declares all {len(groups)} profiles public; nothing would be deletable.")
        return np.sort(train.ids[np.isin(train.labels, rng.choice(groups, size=k, replace=False))])
    k = max(1, int(round(fraction * len(train))))
    if k >= len(train):
        raise ConfigError(f"public: a fraction of {fraction} declares all {len(train)} examples public; nothing would be deletable.")
    return np.sort(rng.choice(train.ids, size=k, replace=False))


def select_requests(train: Split, specs: Sequence[ForgetSpec], rngs: Sequence[np.random.Generator],
                    n_classes: int | None = None, *, public: np.ndarray | None = None) -> list[np.ndarray]:
    """The ids each request of a stream deletes, in order; a ConfigError naming the request for one that selects
    nothing, selects data an earlier request deleted, names data declared ``public`` (non-deletable; random and
    profile requests are drawn outside it, and a class request may not leave part of its class behind in it), or would
    leave nothing retained. Nothing is run before this."""
    check_requests(specs)
    deleted = np.zeros(0, dtype=np.int64)
    public = np.zeros(0, dtype=np.int64) if public is None else np.asarray(public, dtype=np.int64)
    out = []
    for i, (spec, rng) in enumerate(zip(specs, rngs, strict=True)):
        where = _request_where(i, len(specs), spec)
        try:
            ids = select_request(train, np.union1d(deleted, public), spec, rng, n_classes)
        except (ConfigError, TaskError, EmptySelection) as exc:
            left = len(train) - len(deleted) - len(public)
            among = (f" (among the {left} examples earlier requests left outside the declared public portion)" if len(public) else
                     f" (among the {left} examples earlier requests left)" if len(deleted) else "")
            raise ConfigError(f"{where}: {exc}{among}") from None
        if len(ids) == 0:
            raise ConfigError(f"{where}: selects nothing.")
        gone = np.intersect1d(ids, deleted)
        if len(gone):
            raise ConfigError(f"{where}: {len(gone)} of its ids were already deleted by an earlier request, e.g. {gone[:5].tolist()}; "
                              "a request must name data not yet deleted.")
        kept = np.intersect1d(ids, public)
        if len(kept):
            raise ConfigError(f"{where}: {len(kept)} of its ids are declared public (non-deletable, public:), e.g. {kept[:5].tolist()}.")
        if spec.kind == "classes" and len(public) and train.labels is not None:
            labels = train.labels[train.positions_of(public)]
            held = {int(c): int((labels == c).sum()) for c in spec.classes if (labels == c).any()}
            if held:
                raise ConfigError(f"{where}: the declared public portion holds examples of the class(es) it deletes ({held}: class -> "
                                  "examples), which no request may delete; a class request must delete its whole class. Request the "
                                  "class's other examples by ids, or declare no public portion.")
        deleted = np.union1d(deleted, ids)
        if len(deleted) >= len(train):
            raise ConfigError(f"{where}: after it every training example is deleted; nothing would be retained.")
        out.append(np.asarray(ids, dtype=np.int64))
    return out


def stream_forget_info(specs: Sequence[ForgetSpec], ids: np.ndarray) -> dict[str, Any]:
    """``info["forget"]`` of the task whose forget set is everything requests ``specs`` deleted (``ids``): their kind when
    they share it (``classes`` with the classes when each deleted whole classes, so class-forgetting evidence applies),
    else ``ids``, with the requests listed."""
    kinds = {s.kind for s in specs}
    out: dict[str, Any] = {"kind": "ids", "requests": [s.to_dict() for s in specs], "n": int(len(ids))}
    if kinds == {"classes"} and all(s.fraction in (None, 1.0) for s in specs):
        out.update(kind="classes", classes=sorted({int(c) for s in specs for c in s.classes}))
    elif len(kinds) == 1 and kinds <= {"random", "profiles"}:
        out["kind"] = kinds.pop()
    return out


RETAIN_EVAL = "retain_eval"


def retain_eval_subset(retain: Split, k: int) -> Split | None:
    """The examples of the ``k`` groups of ``retain`` with the smallest group ids, in retain order; None when ``k``
    covers every group (score the whole retain set)."""
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"eval_retain_groups must be an integer >= 1, got {k!r}.")
    groups = retain.labels
    if groups is None:
        raise TaskError("eval_retain_groups: the retain split has no group ids (e.g. profile ids) to choose from.")
    present = np.unique(groups)
    if k >= len(present):
        return None
    return retain.subset(np.flatnonzero(np.isin(groups, present[:k])), RETAIN_EVAL)


__all__: Sequence[str] = ["STREAM_KINDS", "ForgetSpec", "check_requests", "make_task", "read_id_file", "request_rng", "select_benchmark",
                          "select_forget", "select_request", "select_requests", "stream_forget_info", "task_from_ids"]
