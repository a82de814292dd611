"""Model directories: what a ledger deletes from, stores and verifies.

A model directory holds ``model.json`` (the spec) and the weights. The spec says how to rebuild everything a deletion
needs without the original training script::

    {"format": "unlearnkit.model", "version": 1, "kind": "weights",      # or "exact" (a stored exact regime)
     "model": {"name": "mlp", "params": {"hidden": [64, 64]}},           # a registered model factory and its parameters
     "dataset": {"name": "digits", "params": {}},                        # a registered data source; its train split is
     "train": {"epochs": 40, "optimizer": "adam", ...},                  #   the training data, minus "excluded_ids"
     "seed": 0, "excluded_ids": []}                                      # the recipe (TrainConfig) and its seed

``kind: "weights"``: ``model.safetensors`` holds the state dict of ``build_model(model.name, input_shape, n_outputs,
**model.params)``. ``kind: "exact"``: the files are an exact regime's (sharded, analytic), written and read by
``unlearnkit.exact.persist`` (``save_exact`` / ``load_exact``) behind ``load_exact_dir`` and ``save_exact_dir``.

A directory's digest is the sha256 of the canonical JSON {relative path: sha256 of the file} of every file in it: a
changed byte in any file, an added or a removed file changes it.

Longer than 60 lines: the spec's checks, the two model kinds, training a first model directory, and turning a stored
run into a model directory belong together.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError, LedgerError, ModelError
from ..io import canonical_json, load_model_weights, read_json, save_state, sha256_file, write_json

FORMAT = "unlearnkit.model"
SPEC_FILE, WEIGHTS_FILE, EXACT_DIR = "model.json", "model.safetensors", "exact"
REQUEST_RECORDS = (f"{EXACT_DIR}/history.json", f"{EXACT_DIR}/manifest.json")
"""Files of an exact model that record its requests' measured cost (wall seconds): a replayed deletion differs there
by design, so ``verify --deep`` compares every other file (weights, checkpoints, partition, live mask) byte for byte."""
KINDS = ("weights", "exact")




def file_digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (dot files, e.g. temporary ones, left out)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def dir_digest(folder: str | Path) -> str:
    """``sha256:`` + the sha256 of the canonical JSON of ``file_digests(folder)``."""
    return "sha256:" + hashlib.sha256(canonical_json(file_digests(Path(folder))).encode()).hexdigest()


def check_spec(spec: Any, where: str) -> dict[str, Any]:
    """A model spec with every field checked; a ConfigError naming the first bad field."""
    if not isinstance(spec, Mapping) or spec.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a model spec (its 'format' must be {FORMAT!r}).")
    if spec.get("kind") not in KINDS:
        raise ConfigError(f"{where}: 'kind' must be one of {list(KINDS)}, got {spec.get('kind')!r}.")
    for key in ("model", "dataset"):
        part = spec.get(key)
        if not (isinstance(part, Mapping) and isinstance(part.get("name"), str) and isinstance(part.get("params", {}), Mapping)):
            raise ConfigError(f"{where}: {key!r} must be {{name: <registered name>, params: {{...}}}}, got {part!r}.")
    if not isinstance(spec.get("train"), Mapping):
        raise ConfigError(f"{where}: 'train' must be the training recipe (TrainConfig fields), got {spec.get('train')!r}.")
    seed = spec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: 'seed' must be an integer, got {seed!r}.")
    excluded = spec.get("excluded_ids", [])
    if not (isinstance(excluded, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in excluded)):
        raise ConfigError(f"{where}: 'excluded_ids' must be a list of integer ids.")
    return {**dict(spec), "excluded_ids": sorted(excluded)}


def read_spec(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        raise ConfigError(f"{folder} is not a model directory: it has no {SPEC_FILE} (see unlearnkit.ledger.models for the format).")
    return check_spec(read_json(folder / SPEC_FILE), str(folder / SPEC_FILE))


def make_spec(*, model: Mapping[str, Any], dataset: Mapping[str, Any], train: Any, seed: int, kind: str = "weights",
              excluded_ids: Sequence[int] = ()) -> dict[str, Any]:
    """A model spec (``train`` a TrainConfig or its dict)."""
    train_dict = train.to_dict() if hasattr(train, "to_dict") else dict(train)
    spec = {"format": FORMAT, "version": 1, "kind": kind, "model": {"name": model["name"], "params": dict(model.get("params", {}))},
            "dataset": {"name": dataset["name"], "params": dict(dataset.get("params", {}))}, "train": train_dict, "seed": int(seed),
            "excluded_ids": sorted(int(i) for i in excluded_ids)}
    return check_spec(spec, "the model spec")


@dataclass
class Loaded:
    """A model directory loaded: its spec, the module, the data source, and the split it depends on (the train split
    minus the excluded ids)."""

    spec: dict[str, Any]
    module: nn.Module
    source: Any
    live: Any  # Split

    def factory(self) -> nn.Module:
        from ..models import build_model

        return build_model(self.spec["model"]["name"], tuple(self.source.input_shape), self.source.n_outputs, **self.spec["model"]["params"])

    def train_config(self) -> Any:
        from ..train import TrainConfig

        return TrainConfig.from_dict(self.spec["train"], "model spec train")


def load_source(spec: Mapping[str, Any]) -> Any:
    from ..data.sources import load_dataset

    return load_dataset(spec["dataset"]["name"], **spec["dataset"]["params"])


def live_split(source: Any, excluded: Sequence[int]) -> Any:
    train = source.train
    return train.subset(np.flatnonzero(~np.isin(train.ids, np.asarray(excluded, dtype=np.int64))), train.name)


def load_model_dir(folder: str | Path, *, device: str = "cpu", source: Any = None) -> Loaded:
    """Load the model directory ``folder`` (its data source too, unless given)."""
    folder = Path(folder)
    spec = read_spec(folder)
    source = source if source is not None else load_source(spec)
    live = live_split(source, spec["excluded_ids"])
    if spec["kind"] == "exact":
        module = load_exact_dir(folder, source.train, device)
        return Loaded(spec, module, source, live)
    from ..models import build_model

    module = build_model(spec["model"]["name"], tuple(source.input_shape), source.n_outputs, **spec["model"]["params"])
    load_model_weights(module, folder / WEIGHTS_FILE)
    return Loaded(spec, module.to(device).eval(), source, live)


def save_model_dir(folder: str | Path, module: nn.Module, spec: Mapping[str, Any], *, source: Any = None) -> Path:
    """Write ``module`` and ``spec`` as a model directory (files written atomically; the folder is created). An exact
    regime's model needs its data ``source`` (loaded from the spec when not given) for the shapes its spec records."""
    folder = Path(folder)
    spec = check_spec(spec, "the model spec")
    folder.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "exact":
        save_exact_dir(folder, module, spec, source if source is not None else load_source(spec))
    else:
        save_state(folder / WEIGHTS_FILE, module.state_dict(), {"format": FORMAT}, make_parents=False)
    write_json(folder / SPEC_FILE, spec, make_parents=False)
    return folder


def train_model_dir(folder: str | Path, *, dataset: Mapping[str, Any], model: Mapping[str, Any], train: Any, seed: int = 0,
                    method: str | None = None, params: Mapping[str, Any] | None = None, device: str = "cpu",
                    progress: bool = False) -> Path:
    """Train a model on a data source's whole train split with a recipe and save it as a model directory: the start of a
    deletion ledger's lineage when the model was not trained by an experiment (``unlearnkit forget --store`` takes those).
    ``method``: an exact regime (``sisa``, ``acu``, ``s3t``, ``dp2unlearning``, with ``params``) builds its served model
    instead of one ordinary training, stored with ``unlearnkit.exact.persist`` (kind "exact")."""
    from ..adapters import get_adapter
    from ..data.forget import task_from_ids
    from ..models import build_model
    from ..seeding import torch_seed
    from ..train import TrainConfig, train_model

    config = train if isinstance(train, TrainConfig) else TrainConfig.from_dict(train)
    spec = make_spec(model=model, dataset=dataset, train=config, seed=seed, kind="weights" if method is None else "exact")
    source = load_source(spec)
    probe = task_from_ids(spec["dataset"]["name"], source.train, source.test, source.train.ids[:1], forget_info={"kind": "ids"},
                          forget_label="model directory", n_classes=source.n_classes, modality=source.modality)

    def factory() -> nn.Module:
        return build_model(spec["model"]["name"], tuple(source.input_shape), source.n_outputs, **spec["model"]["params"])

    if method is not None:
        from ..methods import build_method
        from ..references import References

        regime = build_method(method, dict(params or {}))
        if not callable(getattr(regime, "build", None)):
            raise ConfigError(f"Method {method!r} is not an exact regime (sisa, acu, s3t, dp2unlearning): it has no served model to "
                              "build. Leave method out to train an ordinary model.")
        net = regime.build(probe, References(train_config=config, model_factory=factory), seed=seed, device=device, progress=progress)
        return save_model_dir(folder, net, spec, source=source)
    with torch_seed(seed):
        net = factory()
    net, _, _ = train_model(net, source.train, config, adapter=get_adapter(probe), seed=seed, device=device, progress=progress,
                            desc="model directory")
    return save_model_dir(folder, net, spec, source=source)


def run_spec(store: Any, run_id: str) -> tuple[dict[str, Any], nn.Module]:
    """A stored run as (model spec, its model): the run's record names its experiment, data source, model and recipe. The
    original model (kind "reference") depends on the task's whole training split; an unlearning run's model on the task's
    retain set (its forget set, rebuilt from the experiment and checked against the recorded fingerprint, is excluded).
    Runs of exact regimes, of request streams and of data sources with a declared public portion are refused."""
    from ..models import build_model
    from ..runs.runner import rebuild_run_task

    record = store.load_run(run_id)
    where = f"run {record['run_id']}"
    identity = record.get("model") or {}
    if identity.get("original_architecture") is False:
        raise ConfigError(f"{where} stored an exact regime's model ({identity.get('regime')}), whose state is more than its "
                          "weights; give a stored exact model directory (kind 'exact') instead.")
    exp, source, task = rebuild_run_task(store, record)  # a ConfigError (RebuildError) naming the run when it cannot
    if len(task.train) != len(source.train):
        raise ConfigError(f"{where}: its task trains on {len(task.train)} of the source's {len(source.train)} examples; only tasks "
                          "over the whole train split can be turned into a model directory.")
    refs = record["key"]["references"]
    excluded = task.forget.ids if record.get("kind") == "unlearn" else np.zeros(0, dtype=np.int64)
    spec = make_spec(model={"name": exp.model.name, "params": exp.model.params}, dataset=exp.dataset.to_dict(), train=refs["train"],
                     seed=int(refs["original_seed"]), excluded_ids=[int(i) for i in excluded])
    net = build_model(exp.model.name, tuple(source.input_shape), source.n_outputs, **exp.model.params)
    return spec, store.load_run_model(record["run_id"], net)


# ------------------------------------------------------------------------------ exact regimes (unlearnkit.exact.persist)
def _persist() -> Any:
    try:
        from ..exact import persist  # type: ignore[attr-defined]
    except ImportError:
        raise ConfigError("Stored exact models (model directories of kind 'exact') need unlearnkit.exact.persist, which this "
                          "installation lacks; use a model directory of kind 'weights' or a stored run.") from None
    return persist


def persist_spec(spec: Mapping[str, Any], source: Any) -> dict[str, Any]:
    """The spec ``persist.save_exact`` records, from a model spec and its data source (the regimes build their fresh
    models as ``References.fresh_model`` does: init "fresh_model")."""
    return {"model": {"name": spec["model"]["name"], "params": dict(spec["model"]["params"]), "input_shape": list(source.input_shape),
                      "n_classes": int(source.n_outputs), "init": "fresh_model"},
            "train": dict(spec["train"]), "dataset": dict(spec["dataset"]),
            "task": {"modality": source.modality, **({"n_classes": source.n_classes} if source.n_classes is not None else {})}}


def load_exact_dir(folder: Path, data: Any, device: str) -> nn.Module:
    """The exact regime stored in ``folder/exact`` (``persist.load_exact``), given its training split."""
    return _persist().load_exact(folder / EXACT_DIR, data=data, device=device)


def save_exact_dir(folder: Path, model: nn.Module, spec: Mapping[str, Any], source: Any) -> None:
    """Store an exact regime's model in ``folder/exact`` (``persist.save_exact``)."""
    _persist().save_exact(model, folder / EXACT_DIR, spec=persist_spec(spec, source))


def copy_module(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)
