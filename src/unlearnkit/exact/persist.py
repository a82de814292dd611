"""Saving and loading served exact models (SISA, ACU, S3T, DP2Unlearning), so that they survive a process: the ledger
stores one after every deletion, and ``verify --deep`` reloads it to retrain a SISA shard and compare bytes.

A saved model is a directory, written atomically (built in a sibling temporary folder, every file and folder fsynced,
then swapped in by renames; a previous save at the path is replaced only once the new one is complete and loads):

- ``manifest.json``: format version, regime, guarantee, class, ``describe()``, the regime's settings and seeds, the
  training data's fingerprints, the caller's ``spec`` (how to rebuild what is not tensors), the training info, which
  modules were in training mode and which parameters frozen, the sha256 of every other file, and a checksum of itself.
- ``weights.safetensors``: the state dict (ACU's R, W and buffer projection and S3T's adapter flags are buffers in it).
- ``data.safetensors``: the training ids (in the model's order), the live mask and a frozen backbone's protected ids,
  as int64 tensors; ``additions.safetensors``: the examples an ACU model learned by ``add`` (they are in no dataset).
- ``history.json``: the receipts of every request.
- regime extras: SISA's partition (``parts.safetensors``) and per-shard per-slice checkpoints (``checkpoints/``, written
  by ``SisaModel.write_checkpoints``); DP2Unlearning's DP base weights (``base.safetensors``); S3T's slice plan
  (``plan.safetensors``; orderings and adapted layers are in the manifest).

``spec`` = ``{"model": {"name", "params", "input_shape", "n_classes", "init"}, "train": TrainConfig.to_dict(),
"dataset": {"name", "params"}, "task": {"modality", "n_classes"}}``: the architecture is rebuilt with
``models.build_model`` (a PEFT-wrapped language model is merged for S3T, as its backbone was), the training data comes
from ``load_dataset`` (or the caller's split) and must match the recorded content fingerprint, and SISA's shard factory
is rebuilt with the methods' seeding (``init`` "fresh_model": a seed drawn from torch's global RNG, then the model built
under it, as ``References.fresh_model`` does; "direct": built under the global RNG as the regime seeds it). Saving
checks that the spec's factory reproduces the model's own (shard 0's initialisation, bit for bit), so a deletion after
a load retrains exactly what it would have before the save.

Only JSON and safetensors are read; nothing is unpickled. Every problem is a ModelError/TaskError/ConfigError raised
before a model is returned (loading builds a new model and never changes the files).

Longer than 60 lines: the directory format, its atomic write, and the per-regime rebuild with its checks form one
contract that has to be read together.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cost import Cost
from ..errors import ConfigError, ModelError, TaskError, UnlearnError
from ..io import canonical_json, check_finite_state, load_state, save_state, sha256_file, to_jsonable, write_json
from ..models import build_model
from ..registry import ADAPTERS
from ..seeding import torch_seed
from ..train import TrainConfig
from ..types import Split, TensorData
from ..version import code_version
from .acu import AcuModel
from .base import Backbone, ExactModel, Receipt, ids_fingerprint, require_exact
from .dp import DPModel, PrivacyAccount
from .s3t import S3tModel, SlicedLinear, SlicePlan
from .s3t_lm import S3tCausalLM
from .sisa import SisaModel, fresh_shard

FORMAT = "unlearnkit.exact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLASSES: dict[str, type[ExactModel]] = {"SisaModel": SisaModel, "AcuModel": AcuModel, "S3tModel": S3tModel,
                                        "S3tCausalLM": S3tCausalLM, "DPModel": DPModel}
REGIMES = {"SisaModel": "sisa", "AcuModel": "acu", "S3tModel": "s3t", "S3tCausalLM": "s3t", "DPModel": "dp2unlearning"}
SPEC_KEYS = ("model", "train", "dataset", "task")
INITS = ("fresh_model", "direct")
DATA_TENSORS = ("x", "y", "attention_mask", "labels")  # what a Split's data holds (TensorData, TokenData)


# ------------------------------------------------------------------------------------------------ public API
def save_exact(model: ExactModel, path: str | Path, *, spec: Mapping[str, Any], verify: bool = True) -> str:
    """Save the served exact ``model`` as the directory ``path`` (see the module docstring) and return its ``digest``.

    Everything is checked before the disk is touched: the model is an exact model of a known class, ``spec`` is complete
    and rebuilds the model's architecture (and SISA's shard factory) exactly. ``verify`` (default) loads the new
    directory back from its temporary place before it replaces anything, so a save that could not be loaded never lands.
    An existing ``path`` must be a saved exact model (anything else is refused, never overwritten)."""
    model = require_exact(model, "save_exact")
    cls_name = type(model).__name__
    if cls_name not in CLASSES or type(model) is not CLASSES[cls_name]:
        raise ConfigError(f"save_exact knows {sorted(CLASSES)}; got a {type(model).__name__}.")
    spec = check_spec(spec)
    check_rebuildable(model, spec)
    path = Path(path)
    _recover(path)
    if path.exists() and not _is_saved(path):
        raise ModelError(f"{path} exists and is not a saved exact model (no {MANIFEST} of format {FORMAT!r}); refusing to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write(model, tmp, spec)
        _fsync_tree(tmp)
        if verify:
            load_exact(tmp, data=model.data, device=model._device())
        _swap(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return digest(path)


def load_exact(path: str | Path, *, data: Split | None = None, device: str = "cpu") -> ExactModel:
    """The exact model saved at ``path``, rebuilt on ``device``. Its training data is ``data`` (a Split holding at least
    the model's training ids, in any order: e.g. the task's ``train`` or the data source's) or, when None, the spec's
    dataset. Refused, with nothing returned: a missing, damaged or modified file, an unknown format version, class or
    regime, weights that do not fit the rebuilt architecture or are not finite, and training data whose content
    differs from the recorded fingerprint."""
    root = _resolve(Path(path))
    manifest = read_manifest(root)
    check_files(root, manifest)
    try:
        return _restore(root, manifest, data, device)
    except UnlearnError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # a manifest with the right checksum but wrong content
        raise ModelError(f"{root}: the saved model is malformed ({type(exc).__name__}: {exc}); it was not written by save_exact "
                         "or was rewritten since.") from None


def _restore(root: Path, manifest: dict[str, Any], data: Split | None, device: str) -> ExactModel:
    cls_name = manifest["class"]
    arrays = _tensors(root / "data.safetensors")
    ids, live = _ids_and_live(arrays, manifest, root)
    split = training_split(root, manifest, ids, data)
    weights = _tensors(root / "weights.safetensors")
    with torch_seed(0):  # rebuilding draws initial weights (all overwritten): keep the caller's global RNG untouched
        if cls_name == "SisaModel":
            model = _load_sisa(root, manifest, split, weights, device)
        elif cls_name == "AcuModel":
            model = _load_acu(manifest, split, arrays, weights, device)
        elif cls_name in ("S3tModel", "S3tCausalLM"):
            model = _load_s3t(root, manifest, split, arrays, weights, device)
        else:
            model = _load_dp(root, manifest, split, weights, device)
    model._live = live
    model.train_fingerprint = manifest["data"]["train_fingerprint"]
    model.history = _history(root / "history.json")
    model.training_info = _plain(manifest.get("training_info", {}))
    _restore_flags(model, manifest)
    if cls_name == "SisaModel":
        _check_sisa_checkpoints(root, manifest, model)  # type: ignore[arg-type]
    got = to_jsonable(model.describe())
    if got != manifest["describe"]:
        diff = sorted(k for k in set(got) | set(manifest["describe"]) if got.get(k) != manifest["describe"].get(k))
        raise ModelError(f"{root}: the rebuilt {cls_name} does not describe itself as the saved one did (fields {diff[:6]} differ); "
                         "the files are inconsistent with each other.")
    return model


def digest(path: str | Path) -> str:
    """sha256 (hex) over a saved model's files: every file under the directory, in the order of their relative POSIX
    paths, each as its path and its own sha256. Any changed, added, removed or renamed file changes it."""
    root = _resolve(Path(path))
    h = hashlib.sha256(f"{FORMAT}.digest/1\n".encode())
    for rel, file in _files(root):
        h.update(rel.encode("utf-8") + b"\0" + bytes.fromhex(_sha256(file)))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ the spec
def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` as plain JSON data, or a ConfigError naming what is missing or malformed."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"save_exact: spec must be a mapping with keys {list(SPEC_KEYS)}, got {type(spec).__name__}.")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"save_exact: unknown spec key(s) {unknown}; the spec has {list(SPEC_KEYS)}.")
    try:
        plain = json.loads(json.dumps(dict(spec), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_exact: the spec must be JSON data (strings, numbers, lists, mappings): {exc}.") from None
    m = plain.get("model")
    if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
        raise ConfigError("save_exact: spec['model'] must be a mapping with a model 'name' (for unlearnkit.models.build_model), "
                          "'params', 'input_shape' and 'n_classes'.")
    m.setdefault("params", {})
    m.setdefault("init", "fresh_model")
    shape = m.get("input_shape")
    if not isinstance(m["params"], dict):
        raise ConfigError(f"save_exact: spec['model']['params'] must be a mapping, got {m['params']!r}.")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise ConfigError(f"save_exact: spec['model']['input_shape'] must be a non-empty list of whole numbers, got {shape!r}.")
    if isinstance(m.get("n_classes"), bool) or not isinstance(m.get("n_classes"), int) or m["n_classes"] < 1:
        raise ConfigError(f"save_exact: spec['model']['n_classes'] must be a whole number >= 1, got {m.get('n_classes')!r}.")
    if m["init"] not in INITS:
        raise ConfigError(f"save_exact: spec['model']['init'] must be one of {list(INITS)}, got {m['init']!r}.")
    if "train" in plain:
        if not isinstance(plain["train"], dict):
            raise ConfigError("save_exact: spec['train'] must be TrainConfig.to_dict() of the training recipe.")
        TrainConfig.from_dict(plain["train"], "spec['train']")
    d = plain.get("dataset")
    if d is not None and (not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.setdefault("params", {}), dict)):
        raise ConfigError(f"save_exact: spec['dataset'] must be {{'name': str, 'params': mapping}} (for load_dataset), got {d!r}.")
    t = plain.setdefault("task", {})
    if not isinstance(t, dict):
        raise ConfigError(f"save_exact: spec['task'] must be a mapping (modality, n_classes), got {t!r}.")
    t.setdefault("modality", "classifier")
    if t["modality"] == "classifier":
        t.setdefault("n_classes", m["n_classes"])
    if t["modality"] not in ADAPTERS.names():
        raise ConfigError(f"save_exact: spec['task']['modality'] {t['modality']!r} is not one of {sorted(ADAPTERS.names())}.")
    return plain


def build_architecture(spec: Mapping[str, Any]) -> nn.Module:
    """A fresh model of the spec's architecture (under torch's current global RNG)."""
    m = spec["model"]
    return build_model(m["name"], tuple(m["input_shape"]), m["n_classes"], **m["params"])


def spec_factory(spec: Mapping[str, Any]) -> Callable[[], nn.Module]:
    """The fresh-model factory SISA retrains shards from, rebuilt from the spec with the methods' seeding."""
    if spec["model"]["init"] == "direct":
        return lambda: build_architecture(spec)

    def factory() -> nn.Module:  # as methods.sisa's factory through References.fresh_model
        with torch_seed(int(torch.randint(0, 2**31 - 1, ()).item())):
            return build_architecture(spec)

    return factory


def spec_adapter(spec: Mapping[str, Any], data: Split) -> Any:
    """The adapter of the spec's modality, built by its registered factory (which reads what a task would give it)."""
    t = spec["task"]
    view = types.SimpleNamespace(modality=t["modality"], n_classes=t.get("n_classes"), retain=data, forget=data, train=data)
    return ADAPTERS.get(t["modality"])(view)


def check_rebuildable(model: ExactModel, spec: Mapping[str, Any]) -> None:
    """A ConfigError unless the spec rebuilds ``model``: the architecture's parameter names and shapes, SISA's shard
    factory bit for bit (shard 0's initialisation), and the training adapter's kind."""
    try:
        with torch_seed(0):
            net = _rebuilt_net(model, spec)
    except UnlearnError as exc:
        raise ConfigError(f"save_exact: the spec's model cannot be built: {exc}") from None
    own = _own_net(model)
    _same_layout(net.state_dict(), own.state_dict(), "the spec's model", ConfigError)
    if isinstance(model, SisaModel):
        theirs = fresh_shard(model.factory, seed=model.seed, shard=0)
        ours = fresh_shard(spec_factory(spec), seed=model.seed, shard=0)
        sa, sb = theirs.state_dict(), ours.state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            raise ConfigError("save_exact: the spec does not reproduce the SISA model's shard factory (shard 0's initialisation "
                              "differs): a deletion after loading would not retrain what this model would. Check "
                              "spec['model'] (name, params) and its 'init' ('fresh_model' for models built by the sisa method, "
                              "'direct' for a factory passed to train_sisa as it is).")
    if isinstance(model, (SisaModel, DPModel)):
        adapter = spec_adapter(spec, model.data)
        if type(adapter) is not type(model.adapter) or getattr(adapter, "n_classes", None) != getattr(model.adapter, "n_classes", None):
            raise ConfigError(f"save_exact: spec['task'] gives a {type(adapter).__name__} (n_classes "
                              f"{getattr(adapter, 'n_classes', None)}), the model trains with a {type(model.adapter).__name__} "
                              f"(n_classes {getattr(model.adapter, 'n_classes', None)}).")


def _own_net(model: ExactModel) -> nn.Module:
    if isinstance(model, SisaModel):
        return model.shards[0]
    if isinstance(model, DPModel):
        return model.model
    return model.net  # type: ignore[return-value]


def _rebuilt_net(model_or_manifest: Any, spec: Mapping[str, Any], adapted: list[str] | None = None,
                 chains: tuple[int, int, int] | None = None) -> nn.Module:
    """The spec's architecture as the regime holds it: S3T's backbone merged (PEFT) and its adapted layers replaced."""
    net = build_architecture(spec)
    is_s3t = isinstance(model_or_manifest, S3tModel) or adapted is not None
    if is_s3t:
        if hasattr(net, "peft_config") and hasattr(net, "merge_and_unload"):
            net = net.merge_and_unload()
        if isinstance(model_or_manifest, S3tModel):
            adapted = _adapted_names(model_or_manifest)
            m = model_or_manifest
            chains = (m.plan.shards * m.n_orderings, m.plan.slices, m.rank)
        assert adapted is not None and chains is not None
        for name in adapted:
            try:
                base = net.get_submodule(name)
            except AttributeError:
                base = None
            if not isinstance(base, nn.Linear):
                raise ModelError(f"The spec's model has no Linear layer {name!r} to carry S3T's adapters.")
            layer = SlicedLinear(base, *chains)
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(parent, name.rsplit(".", 1)[-1], layer)
    return net


def _adapted_names(model: S3tModel) -> list[str]:
    names = {id(m): n for n, m in model.net.named_modules()}
    return [names[id(layer)] for layer in model.layers]


# ------------------------------------------------------------------------------------------------ writing
def _write(model: ExactModel, root: Path, spec: dict[str, Any]) -> None:
    n_added = sum(len(r.ids) for r in model.history if r.op == "add")
    n_original = len(model.data) - n_added
    added_ids = [i for r in model.history if r.op == "add" for i in r.ids]
    if added_ids and not np.array_equal(model.data.ids[n_original:], np.asarray(added_ids, dtype=np.int64)):
        raise ModelError("save_exact: the model's data does not end with the examples its addition receipts name.")
    original = model.data if n_added == 0 else model.data.subset(np.arange(n_original))
    tensors = {"ids": _int64(model.data.ids), "live": _int64(model._live)}
    if model.backbone is not None:
        tensors["backbone_protected"] = _int64(model.backbone.protected_ids)
    save_state(root / "data.safetensors", tensors)
    if n_added:
        added = model.data.data.subset(np.arange(n_original, len(model.data)))
        if not isinstance(added, TensorData):  # pragma: no cover - ExactModel.add only takes TensorData
            raise ModelError("save_exact: additions must be in-memory TensorData.")
        save_state(root / "additions.safetensors", {"x": added.x, **({} if added.y is None else {"y": added.y})})
    save_state(root / "weights.safetensors", model.state_dict())
    write_json(root / "history.json", [r.to_json() for r in model.history], make_parents=False)
    settings, seeds = _regime_extras(model, root)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "code_version": code_version(), "class": type(model).__name__,
        "regime": model.regime, "guarantee": model.guarantee, "describe": model.describe(), "settings": settings, "seeds": seeds,
        "backbone": None if model.backbone is None else {"source": model.backbone.source, "data_fingerprint": model.backbone.data_fingerprint},
        "data": {"name": model.data.name, "n": len(model.data), "n_original": n_original, "train_fingerprint": model.train_fingerprint,
                 "split_fingerprint": model.data.fingerprint, "content_fingerprint": content_fingerprint(original)},
        "spec": spec, "training_info": getattr(model, "training_info", {}),
        "training_modules": [n for n, m in model.named_modules() if m.training],
        "frozen_parameters": [n for n, p in model.named_parameters() if not p.requires_grad],
        "files": {rel: _sha256(f) for rel, f in _files(root)},
    }
    manifest = to_jsonable(manifest)
    manifest["checksum"] = _checksum(manifest)
    write_json(root / MANIFEST, manifest, make_parents=False)


def _int64(values: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=np.int64))  # a writable copy (ids arrays are read-only)


def _regime_extras(model: ExactModel, root: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Write the regime's own files; its settings and seeds for the manifest."""
    if isinstance(model, SisaModel):
        save_state(root / "parts.safetensors", {f"{k}.{r}": _int64(pos)
                                                for k, shard in enumerate(model.parts) for r, pos in enumerate(shard, start=1)})
        view = copy.copy(model)  # a shallow view that writes its checkpoints here, leaving the model's own folder alone
        view.checkpoint_dir = root / "checkpoints"
        view.write_checkpoints({k: range(1, model.n_slices + 1) for k in range(len(model.parts))})
        return ({"shards": len(model.parts), "slices": model.n_slices, "aggregation": model.aggregation,
                 "step_config": model.step_config.to_dict()}, {"seed": model.seed})
    if isinstance(model, AcuModel):
        return ({"n_classes": model.n_classes, "gamma": model.gamma, "activation": model.activation, "dims": model.dim,
                 "buffer": 0 if model.projection is None else int(model.projection.shape[1])}, {})
    if isinstance(model, S3tModel):
        p = model.plan
        save_state(root / "plan.safetensors", {"shard_of": _int64(p.shard_of),
                                               "slice_of": _int64(p.slice_of),
                                               "ids": _int64(p.ids)})
        return ({"shards": p.shards, "slices": p.slices, "unit": p.unit, "orderings": [list(o) for o in model.orderings],
                 "rank": model.rank, "aggregation": model.aggregation, "adapted_layers": _adapted_names(model)}, {})
    assert isinstance(model, DPModel)
    save_state(root / "base.safetensors", model._base)
    return ({"account": model.account.to_json(), "finetune": model.finetune.to_dict()}, {"finetune_seed": int(model.finetune_seed)})


def content_fingerprint(split: Split) -> str:
    """sha256 over a split's ids and the bytes of its data's tensors (x, y, a language model's attention mask and labels,
    its codec's name and template, its records' fingerprint): the same examples give the same fingerprint however the
    split was assembled (unlike ``Split.fingerprint``, which follows its lineage)."""
    h = hashlib.sha256(b"ids|")
    h.update(np.ascontiguousarray(split.ids, dtype=np.int64).tobytes())
    data, found = split.data, 0
    for name in DATA_TENSORS:
        t = getattr(data, name, None)
        if torch.is_tensor(t):
            t = t.detach().cpu().contiguous()
            h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
            found += 1
    if not found:
        raise TaskError(f"Cannot fingerprint training data of type {type(data).__name__}: it holds none of the tensors {list(DATA_TENSORS)}.")
    codec = getattr(data, "codec", None)
    if codec is not None:
        h.update(f"|codec|{getattr(codec, 'name', '')}|{getattr(codec, 'template', '')}".encode())
    records = getattr(data, "records_fingerprint", None)
    if isinstance(records, str):
        h.update(f"|records|{records}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ atomic swap
def _backup(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def _is_saved(path: Path) -> bool:
    try:
        with open(path / MANIFEST, encoding="utf-8") as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _recover(path: Path) -> None:
    """A save interrupted between its two renames left the previous model at the backup name: put it back."""
    backup = _backup(path)
    if not path.exists() and backup.is_dir() and _is_saved(backup):
        os.replace(backup, path)
        _fsync_dir(path.parent)


def _resolve(path: Path) -> Path:
    """``path``, or the previous save still at the backup name after an interrupted swap; a ModelError if neither."""
    if path.is_dir():
        return path
    if not path.exists() and _backup(path).is_dir() and _is_saved(_backup(path)):
        return _backup(path)
    raise ModelError(f"No saved exact model at {path} ({'not a directory' if path.exists() else 'it does not exist'}).")


def _swap(tmp: Path, path: Path) -> None:
    """Put the complete ``tmp`` at ``path``: the previous directory moves to the backup name, the new one takes its place,
    then the backup is removed. A failure in between puts the previous directory back."""
    backup = _backup(path)
    if backup.exists():  # left by a save whose clean-up was interrupted after ``path`` was already the newer model
        shutil.rmtree(backup)
    moved = False
    try:
        if path.exists():
            os.replace(path, backup)
            moved = True
        os.replace(tmp, path)
    except BaseException:
        if moved and not path.exists():
            os.replace(backup, path)
        raise
    _fsync_dir(path.parent)
    if moved:
        shutil.rmtree(backup, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """The files are fsynced as they are written (``io.atomic_write_bytes``); this makes their directory entries durable."""
    for folder, _, _ in os.walk(root):
        _fsync_dir(Path(folder))


# ------------------------------------------------------------------------------------------------ reading
def _files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for f in root.rglob("*"):
        if f.is_symlink():
            raise ModelError(f"{f} is a symbolic link; a saved exact model holds plain files only.")
        if f.is_file():
            out.append((f.relative_to(root).as_posix(), f))
    return sorted(out)


_sha256 = sha256_file


def _checksum(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "checksum"}).encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest, checked: valid JSON, its own checksum, the format and its version, a known class and regime."""
    file = root / MANIFEST
    if not file.is_file():
        raise ModelError(f"{root} is not a saved exact model: {MANIFEST} is missing.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file} is not valid JSON ({type(exc).__name__}: {exc}): the manifest is damaged.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{file} is not the manifest of a saved exact model (format {FORMAT!r} expected).")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{file} has format version {version!r}; this unlearnkit ({code_version()}) reads version {FORMAT_VERSION}. "
                         "Load it with the unlearnkit version that saved it.")
    if manifest.get("checksum") != _checksum(manifest):
        raise ModelError(f"{file} was modified after it was written: its checksum does not match its content.")
    cls_name = manifest.get("class")
    if cls_name not in CLASSES:
        raise ModelError(f"{file} names the model class {cls_name!r}; known: {sorted(CLASSES)}.")
    if manifest.get("regime") != REGIMES[cls_name] or manifest.get("guarantee") != CLASSES[cls_name].guarantee:
        raise ModelError(f"{file}: regime {manifest.get('regime')!r} with guarantee {manifest.get('guarantee')!r} is not what a "
                         f"{cls_name} is ({REGIMES[cls_name]!r}, {CLASSES[cls_name].guarantee!r}).")
    try:
        manifest["spec"] = check_spec(manifest["spec"])
    except (KeyError, ConfigError) as exc:
        raise ModelError(f"{file}: the recorded spec is unusable: {exc}") from None
    return manifest


def check_files(root: Path, manifest: Mapping[str, Any]) -> None:
    """Every file the manifest lists exists and has the recorded sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or "weights.safetensors" not in files:
        raise ModelError(f"{root / MANIFEST} lists no files (weights.safetensors at least).")
    for rel, want in sorted(files.items()):
        file = root / rel
        if not file.is_file():
            raise ModelError(f"{root}: the file {rel} is missing; the saved model is incomplete.")
        if _sha256(file) != want:
            raise ModelError(f"{root}: the file {rel} is damaged (truncated or modified): its sha256 differs from the manifest's.")


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, refused (ModelError naming the tensor) when a floating-point one holds NaN or inf.
    The test is t − t summing to exactly 0 (true iff every value is finite: inf − inf and NaN give NaN), several times
    cheaper than ``isfinite`` over a SISA model's dozens of checkpoints; a failure is named by ``check_finite_state``."""
    state = load_state(file)
    for name, t in state.items():
        if t.is_floating_point() and t.numel() and not bool(torch.sub(t, t).sum() == 0):
            check_finite_state({name: t}, f"{file}")
    return state


def _ids_and_live(arrays: Mapping[str, torch.Tensor], manifest: Mapping[str, Any], root: Path) -> tuple[np.ndarray, np.ndarray]:
    ids, live = arrays.get("ids"), arrays.get("live")
    n = manifest["data"]["n"]
    if ids is None or live is None or ids.dtype != torch.int64 or live.dtype != torch.int64 or ids.shape != (n,) or live.shape != (n,):
        raise ModelError(f"{root / 'data.safetensors'} must hold int64 'ids' and 'live' of {n} entries each.")
    ids_np, live_np = ids.numpy().copy(), live.numpy()
    if len(np.unique(ids_np)) != n or not np.isin(live_np, (0, 1)).all():
        raise ModelError(f"{root / 'data.safetensors'}: the ids repeat or the live mask is not 0/1.")
    ids_np.setflags(write=False)
    return ids_np, live_np.astype(bool)


def training_split(root: Path, manifest: Mapping[str, Any], ids: np.ndarray, data: Split | None) -> Split:
    """The model's training split: the original examples taken from ``data`` (or the spec's dataset) in the saved order
    and checked against the recorded content fingerprint, followed by the saved additions."""
    rec = manifest["data"]
    n0 = rec["n_original"]
    if data is None:
        d = manifest["spec"].get("dataset")
        if d is None:
            raise TaskError("load_exact: give the training data (data=...): the saved spec names no dataset to load it from.")
        from ..data.sources import load_dataset

        data = load_dataset(d["name"], **d["params"]).train
    if not isinstance(data, Split):
        raise TaskError(f"load_exact: data must be a Split, got {type(data).__name__}.")
    want = ids[:n0]
    missing = np.setdiff1d(want, data.ids)
    if len(missing):
        raise TaskError(f"load_exact: the training data given lacks {len(missing)} of the model's {n0} training ids, e.g. "
                        f"{missing[:5].tolist()}: it is not the data the model was trained on.")
    split = data if np.array_equal(data.ids, want) else data.select_ids(want)
    got = content_fingerprint(split)
    if got != rec["content_fingerprint"]:
        raise TaskError(f"load_exact: the training data given differs from the data the model was trained on (content fingerprint "
                        f"{got[:12]}…, recorded {rec['content_fingerprint'][:12]}…): another dataset, version or preprocessing.")
    content = split.data
    if len(ids) > n0:
        extra = _tensors(root / "additions.safetensors")
        if not isinstance(content, TensorData):
            raise TaskError("load_exact: a model with additions needs in-memory (TensorData) training data.")
        content = TensorData.concat([content, TensorData(extra["x"], extra.get("y"))])
    return Split(rec["name"], content, ids, rec["split_fingerprint"])


def _history(file: Path) -> list[Receipt]:
    try:
        items = json.loads(file.read_text(encoding="utf-8"))
        return [Receipt(r["op"], tuple(int(i) for i in r["ids"]), r["guarantee"], r["touched"], Cost.from_json(r["cost"]),
                        int(r["live_after"]), r["live_fingerprint"]) for r in items]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{file} is not a readable request history ({type(exc).__name__}: {exc}).") from None


def _load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    _same_layout(state, module.state_dict(), where, ModelError)
    module.load_state_dict(dict(state), strict=True)


def _same_layout(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], where: str, error: type[Exception]) -> None:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise error(f"{where} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}.")
    for k, t in got.items():
        if tuple(t.shape) != tuple(want[k].shape) or t.dtype != want[k].dtype:
            raise error(f"{where} does not fit the model: {k!r} is {t.dtype} {tuple(t.shape)}, the model has {want[k].dtype} "
                        f"{tuple(want[k].shape)}.")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _restore_flags(model: nn.Module, manifest: Mapping[str, Any]) -> None:
    """Training mode per module and ``requires_grad`` per parameter, as they were when the model was saved."""
    training, frozen = set(manifest.get("training_modules", [])), set(manifest.get("frozen_parameters", []))
    for name, m in model.named_modules():
        m.training = name in training
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)


def _backbone(manifest: Mapping[str, Any], arrays: Mapping[str, torch.Tensor]) -> Backbone:
    b = manifest.get("backbone")
    if not isinstance(b, dict) or "backbone_protected" not in arrays:
        raise ModelError(f"The manifest of this {manifest['class']} records no frozen backbone (or its protected ids are missing).")
    return Backbone(b["source"], b["data_fingerprint"], arrays["backbone_protected"].numpy().copy())


# ------------------------------------------------------------------------------------------------ per regime
def _load_sisa(root: Path, manifest: dict[str, Any], data: Split, weights: Mapping[str, torch.Tensor], device: str) -> SisaModel:
    s, spec = manifest["settings"], manifest["spec"]
    S, R = int(s["shards"]), int(s["slices"])
    raw = _tensors(root / "parts.safetensors")
    try:
        parts = [[raw[f"{k}.{r}"].numpy().copy() for r in range(1, R + 1)] for k in range(S)]
    except KeyError as exc:
        raise ModelError(f"{root / 'parts.safetensors'} lacks the positions of shard/slice {exc}.") from None
    flat = np.concatenate([p for shard in parts for p in shard]) if parts else np.zeros(0, np.int64)
    if not np.array_equal(np.sort(flat), np.arange(len(data))):
        raise ModelError(f"{root / 'parts.safetensors'}: the shards' slices do not partition the {len(data)} training examples.")
    factory = spec_factory(spec)
    adapter = spec_adapter(spec, data)
    models = [fresh_shard(factory, seed=int(manifest["seeds"]["seed"]), shard=k) for k in range(S)]
    ckpt_manifest = _json(root / "checkpoints" / "manifest.json")
    checkpoints: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in range(S)]
    for entry in ckpt_manifest.get("checkpoints", []):
        k, r = int(entry["shard"]), int(entry["slice"])
        state = _tensors(root / "checkpoints" / entry["file"])
        _same_layout(state, models[0].state_dict(), f"checkpoint {entry['file']}", ModelError)
        checkpoints[k][r] = {n: t.to(device) for n, t in state.items()}
    lacking = [(k, r) for k in range(S) for r in range(1, R + 1) if r not in checkpoints[k]]
    if lacking:
        raise ModelError(f"{root / 'checkpoints'} lacks the checkpoints (shard, slice) {lacking[:5]}.")
    model = SisaModel(data, models, parts=parts, factory=factory, config=TrainConfig.from_dict(s["step_config"], "step_config"),
                      seed=int(manifest["seeds"]["seed"]), aggregation=s["aggregation"], adapter=adapter, checkpoints=checkpoints).to(device)
    _load_weights(model, weights, f"{root / 'weights.safetensors'}")
    for k in range(S):
        last = checkpoints[k][R]
        if not all(torch.equal(t, last[n]) for n, t in model.shards[k].state_dict().items()):
            raise ModelError(f"{root}: shard {k}'s weights differ from its checkpoint after the last slice; the files are inconsistent.")
    return model


def _check_sisa_checkpoints(root: Path, manifest: Mapping[str, Any], model: SisaModel) -> None:
    """The checkpoint manifest's fingerprints (ids each checkpoint was trained on) against the restored live mask."""
    ck = _json(root / "checkpoints" / "manifest.json")
    if ck.get("seed") != model.seed or ck.get("live_fingerprint") != ids_fingerprint(model.live_ids()):
        raise ModelError(f"{root / 'checkpoints' / 'manifest.json'} was written for another seed or set of live examples.")
    for entry in ck.get("checkpoints", []):
        parts = model.live_slices(int(entry["shard"]))[: int(entry["slice"])]
        if entry.get("seen_fingerprint") != ids_fingerprint(model.data.ids[np.concatenate(parts)]):
            raise ModelError(f"{root}: checkpoint {entry['file']} was trained on other examples than the live ones of its slices.")


def _load_acu(manifest: dict[str, Any], data: Split, arrays: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
              device: str) -> AcuModel:
    s = manifest["settings"]
    net = build_architecture(manifest["spec"])
    prefix = "net."
    _load_weights(net, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, "the backbone's weights")
    if "R" not in weights or "W" not in weights:
        raise ModelError("The saved ACU weights lack the head (R, W).")
    model = AcuModel(data, net, backbone=_backbone(manifest, arrays), n_classes=int(s["n_classes"]), gamma=float(s["gamma"]),
                     buffer=int(s["buffer"]), activation=s["activation"], device=device, head=(weights["R"], weights["W"]))
    _load_weights(model, weights, "the saved ACU model's weights")
    return model


def _load_s3t(root: Path, manifest: dict[str, Any], data: Split, arrays: Mapping[str, torch.Tensor],
              weights: Mapping[str, torch.Tensor], device: str) -> S3tModel:
    s = manifest["settings"]
    orderings = [tuple(int(i) for i in o) for o in s["orderings"]]
    chains = (int(s["shards"]) * len(orderings), int(s["slices"]), int(s["rank"]))
    net = _rebuilt_net(manifest, manifest["spec"], adapted=list(s["adapted_layers"]), chains=chains)
    names = dict(net.named_modules())
    layers = [names[n] for n in s["adapted_layers"]]
    p = _tensors(root / "plan.safetensors")
    if not {"shard_of", "slice_of", "ids"} <= set(p):
        raise ModelError(f"{root / 'plan.safetensors'} must hold 'shard_of', 'slice_of' and 'ids'.")
    plan = SlicePlan(p["shard_of"].numpy().copy(), p["slice_of"].numpy().copy(), p["ids"].numpy().copy(), int(s["shards"]),
                     int(s["slices"]), s["unit"])
    if len(plan.ids) != len(data) or not np.array_equal(plan.ids, data.ids):
        raise ModelError(f"{root / 'plan.safetensors'}: the slice plan is for other training ids than the saved ones.")
    cls = S3tCausalLM if manifest["class"] == "S3tCausalLM" else S3tModel
    model = cls(data, net, _backbone(manifest, arrays), plan, orderings, layers, rank=int(s["rank"]), aggregation=s["aggregation"])
    _load_weights(model, weights, "the saved S3T model's weights")
    return model.to(device)


def _load_dp(root: Path, manifest: dict[str, Any], data: Split, weights: Mapping[str, torch.Tensor], device: str) -> DPModel:
    s = manifest["settings"]
    net = build_architecture(manifest["spec"])
    base = _tensors(root / "base.safetensors")
    _same_layout(base, net.state_dict(), f"{root / 'base.safetensors'} (the DP base)", ModelError)
    try:
        account = PrivacyAccount(**s["account"])
    except TypeError as exc:
        raise ModelError(f"The saved privacy account is malformed: {exc}.") from None
    if not (isinstance(account.epsilon, float) and math.isfinite(account.epsilon)):
        raise ModelError(f"The saved privacy account's epsilon is {account.epsilon!r}.")
    model = DPModel(data, net.to(device), {k: v.to(device) for k, v in base.items()}, account,
                    TrainConfig.from_dict(s["finetune"], "finetune"), adapter=spec_adapter(manifest["spec"], data),
                    seed=int(manifest["seeds"]["finetune_seed"]), device=device)
    _load_weights(model, weights, "the saved DP2Unlearning model's weights")
    return model


def _json(file: Path) -> dict[str, Any]:
    try:
        out = json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        raise ModelError(f"{file} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file} is not valid JSON ({exc}).") from None
    if not isinstance(out, dict):
        raise ModelError(f"{file} is not a JSON object.")
    return out
