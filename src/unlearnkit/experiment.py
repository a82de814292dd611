"""Experiment files: YAML (or a dict) naming the dataset, forget sets (or a stream of deletion requests), model, training
recipe, references, methods with parameters, metrics and seeds. Unknown keys and names are errors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data.forget import ForgetSpec, check_requests
from .device import check_device
from .errors import ConfigError
from .io import canonical_json
from .params import Component, coerce, component
from .references import check_retrain_seeds
from .registry import DATASETS, METHODS, METRICS, MODELS, suggest
from .train import TrainConfig
from .version import code_version

TOP_KEYS = {"name", "description", "dataset", "forget", "requests", "model", "train", "references", "methods", "metrics", "seeds",
            "task_seed", "device", "public"}


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}.")
    for key in value:
        if key not in allowed:
            raise ConfigError(f"Unknown key {key!r} in {where}.{suggest(str(key), allowed)} Allowed: {sorted(allowed)}.")
    return dict(value)


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: Component
    forget: tuple[ForgetSpec, ...]
    model: Component
    train: TrainConfig
    methods: tuple[Component, ...]
    metrics: tuple[Component, ...] | None = None  # None: the standard battery of the dataset's modality
    retrain_seeds: int = 3
    original_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    task_seed: int = 0
    description: str = ""
    device: str = "auto"
    source: str | None = None
    requests: tuple[ForgetSpec, ...] = ()  # a stream of deletion requests (beside or instead of ``forget``): see ``parse_requests``
    public_fraction: float | None = None  # ``public: {fraction: f}``: a stream's non-deletable portion of the training set

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None) -> Experiment:
        if not isinstance(d, Mapping):
            raise ConfigError(f"An experiment must be a mapping at the top level, got {type(d).__name__}.")
        for key in d:
            if key not in TOP_KEYS:
                raise ConfigError(f"Unknown key {key!r} at the top of the experiment.{suggest(str(key), TOP_KEYS)} Allowed: {sorted(TOP_KEYS)}.")
        for key in ("name", "dataset", "model", "train", "methods"):
            if key not in d:
                raise ConfigError(f"The experiment is missing {key!r}.")
        if "forget" not in d and "requests" not in d:
            raise ConfigError("The experiment is missing 'forget' (the forget sets), or 'requests' (a stream of deletion requests).")
        requests = parse_requests(d["requests"]) if "requests" in d else ()
        public_fraction = None
        if "public" in d:
            if not requests:
                raise ConfigError("public: declares the non-deletable part of the training data of a request stream (requests:); an "
                                  "experiment of forget sets draws each forget set from all the training data. Use requests:, or "
                                  "drop public:.")
            if d.get("forget"):
                raise ConfigError("public: declares the non-deletable part of a request stream; this experiment also has forget sets "
                                  "(forget:), each drawn from all the training data. Drop public:, or run the forget sets apart.")
            public = _mapping(d["public"], "public", {"fraction"})
            fraction = public.get("fraction")
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise ConfigError(f"public.fraction (the share of the training data declared non-deletable) must lie strictly between "
                                  f"0 and 1, got {fraction!r}.")
            public_fraction = float(fraction)
        forget_raw = d.get("forget", ())
        forget_list = forget_raw if isinstance(forget_raw, Sequence) and not isinstance(forget_raw, (str, Mapping)) else [forget_raw]
        if not forget_list and not requests:
            raise ConfigError("forget: give at least one forget set.")
        refs = _mapping(d.get("references"), "references", {"retrain_seeds", "original_seed"})
        retrain_seeds = coerce(refs.get("retrain_seeds", 3), int, "references.retrain_seeds")
        if retrain_seeds != 0:  # 0: data without a retrained oracle (real knowledge); the runner checks the data says so
            retrain_seeds = check_retrain_seeds(retrain_seeds, minimum=2, why=(
                " (3 recommended; 0 only for data without a retrained oracle, e.g. knowledge): the verdict compares a model with "
                "the seed-to-seed spread of the retrained models, and one retrained model has no spread, so there would be no "
                "retrain band and every verdict would be inconclusive"))
        methods_raw = d["methods"]
        if not isinstance(methods_raw, Sequence) or isinstance(methods_raw, str) or not methods_raw:
            raise ConfigError("methods: give a non-empty list of methods.")
        metrics_raw = d.get("metrics")
        if metrics_raw == "default":  # what to_dict writes for the standard battery: a stored experiment reads back
            metrics_raw = None
        if metrics_raw is not None and (not isinstance(metrics_raw, Sequence) or isinstance(metrics_raw, str)):
            raise ConfigError("metrics: give a list of metrics (or leave it out for the standard battery).")
        seeds = d.get("seeds", [0])
        if isinstance(seeds, int):
            seeds = [seeds]
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds: give a non-empty list of integers, got {seeds!r}.")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds: duplicate seeds in {seeds}.")
        exp = cls(
            name=str(d["name"]),
            description=str(d.get("description", "")),
            dataset=component(d["dataset"], "dataset", DATASETS),
            forget=tuple(ForgetSpec.from_dict(f) for f in forget_list),
            requests=requests,
            public_fraction=public_fraction,
            model=component(d["model"], "model", MODELS),
            train=TrainConfig.from_dict(_mapping(d["train"], "train", set(TrainConfig.__dataclass_fields__)), "train"),
            methods=tuple(component(m, f"methods[{i}]", METHODS) for i, m in enumerate(methods_raw)),
            metrics=None if metrics_raw is None else tuple(component(m, f"metrics[{i}]", METRICS) for i, m in enumerate(metrics_raw)),
            retrain_seeds=retrain_seeds,
            original_seed=coerce(refs.get("original_seed", 0), int, "references.original_seed"),
            seeds=tuple(seeds),
            task_seed=coerce(d.get("task_seed", 0), int, "task_seed"),
            device=check_device(d.get("device", "auto")),
            source=source,
        )
        exp.check_components()
        return exp

    def check_components(self) -> None:
        """Build every method and metric once so bad parameters fail now, not mid-run."""
        from .evaluation import build_metric
        from .methods import build_method, method_params

        resolved = [m.name + " " + canonical_json(method_params(build_method(m.name, m.params))) for m in self.methods]  # defaults in
        dup = sorted({x for x in resolved if resolved.count(x) > 1})
        if dup:
            raise ConfigError(f"methods: the same method with the same parameters (defaults included) is listed twice: {dup[0]}.")
        names = [m.name for m in self.metrics or ()]
        if len(set(names)) != len(names):
            raise ConfigError(f"metrics: listed twice: {sorted({n for n in names if names.count(n) > 1})}.")
        for m in self.metrics or ():
            build_metric(m.name, m.params)

    def method_labels(self) -> list[str]:
        """One label per method entry, for logs and result rows: the registry name, or, when that name is listed more than
        once, the name with the parameters given in the file, so different settings of one method are never merged."""
        names = [m.name for m in self.methods]
        return [m.name if names.count(m.name) == 1 else f"{m.name} {canonical_json(m.params)}" for m in self.methods]

    def metrics_for(self, modality: str) -> tuple[Component, ...]:
        """The metrics to run: those listed, or the standard battery of the data's modality."""
        from .evaluation import default_battery

        return self.metrics if self.metrics is not None else tuple(Component(m) for m in default_battery(modality))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset.to_dict(),
            **({"requests": [r.to_dict() for r in self.requests]} if self.requests else {}),
            **({"forget": [f.to_dict() for f in self.forget]} if self.forget or not self.requests else {}),
            **({"public": {"fraction": self.public_fraction}} if self.public_fraction is not None else {}),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "references": {"retrain_seeds": self.retrain_seeds, "original_seed": self.original_seed},
            "methods": [m.to_dict() for m in self.methods],
            "metrics": "default" if self.metrics is None else [m.to_dict() for m in self.metrics],
            "seeds": list(self.seeds),
            "task_seed": self.task_seed,
        }

    def exp_id(self) -> str:
        return self.name.replace(" ", "_")[:40] + "-" + hashlib.sha256(canonical_json({"spec": self.to_dict(), "code": code_version()}).encode()).hexdigest()[:10]


def parse_requests(raw: Any) -> tuple[ForgetSpec, ...]:
    """``requests:``, a list of forget specs applied in order (each may carry ``repeat: n``, for n requests alike),
    checked as far as possible without the data (``check_requests``)."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, Mapping)):
        raise ConfigError(f"requests: give a list of deletion requests (forget specs, applied in order), got {raw!r:.80}.")
    specs: list[ForgetSpec] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"requests[{i}]: expected a mapping like {{kind: random, fraction: 0.01}}, got {entry!r:.80}.")
        entry = dict(entry)
        repeat = entry.pop("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"requests[{i}]: repeat must be a whole number >= 1 (how many requests alike), got {repeat!r}.")
        try:
            spec = ForgetSpec.from_dict(entry)
        except ConfigError as exc:
            raise ConfigError(f"requests[{i}]: {exc}") from None
        specs.extend([spec] * repeat)
    check_requests(specs)
    return tuple(specs)


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment YAML file (nothing is run)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the path of an experiment file (.yaml) inside it.")
    if not path.is_file():
        raise ConfigError(f"Experiment file {path} does not exist.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text (UTF-8) file: undecodable byte at offset {exc.start}; "
                          "an experiment file is YAML text.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}.") from None
    return Experiment.from_dict(data, source=str(path))


def bundled_experiment(name: str) -> Path:
    """Path of an experiment file shipped inside the package (e.g. ``quickstart``)."""
    path = Path(__file__).parent / "experiments" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"No bundled experiment {name!r}.{suggest(name, set(known))} Bundled: {known}.")
    return path
