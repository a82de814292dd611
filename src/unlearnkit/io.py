"""Atomic file writes and safe weight loading (safetensors only; nothing is ever unpickled)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's temporary files are 0600)


def atomic_write_bytes(path: str | Path, data: bytes, *, make_parents: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename. The file gets the mode an
    existing ``path`` had, else the usual new-file mode (0666 minus the umask), not the temporary file's 0600.

    ``make_parents=False`` refuses to create a missing folder (FileNotFoundError naming it): writers filling a
    temporary folder use it, so a folder removed under them fails loudly instead of being recreated half-empty."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: its folder {path.parent} does not exist (it is not recreated).")
    mode = path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, make_parents: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy/tuples/paths; non-finite floats become None with no surprise."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def write_json(path: str | Path, obj: Any, *, make_parents: bool = True) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n", make_parents=make_parents)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_array(path: str | Path, array: np.ndarray, *, make_parents: bool = True) -> None:
    """Save a numeric array as .npy atomically (object arrays are refused)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise ValueError(f"Refusing to save an object array to {path}: only numeric arrays are stored.")
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue(), make_parents=make_parents)


def load_array(path: str | Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def save_state(path: str | Path, state: Mapping[str, Any], metadata: Mapping[str, str] | None = None, *,
               make_parents: bool = True) -> None:
    """Save a state dict as safetensors, atomically. Tensors sharing storage (tied embeddings) are stored as copies."""
    from safetensors.torch import save

    tensors, seen = {}, set()
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    atomic_write_bytes(path, save(tensors, metadata=dict(metadata or {})), make_parents=make_parents)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a safetensors state dict; anything else (pickles, corrupt files) is a ModelError."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Weight file {path} does not exist.")
    data = path.read_bytes()
    try:
        return load(data)
    except Exception as exc:  # safetensors raises several types for malformed input
        raise ModelError(
            f"Cannot read {path} as safetensors ({type(exc).__name__}: {exc}). unlearnkit only loads "
            "safetensors files; convert pickled checkpoints with torch.load(..., weights_only=True) and "
            "safetensors.torch.save_file."
        ) from None


def check_finite_state(state: Mapping[str, Any], where: str) -> None:
    """Raise ModelError naming the first tensor with NaN or inf values."""
    import torch

    for name, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"{where}: parameter {name!r} has {bad} NaN/inf value(s).")


def load_model_weights(model: Any, path: str | Path) -> Any:
    """Load safetensors weights into ``model`` with shape and finiteness checks."""
    state = load_state(path)
    check_finite_state(state, f"weights in {path}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ModelError(f"Weights in {path} do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}.")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ModelError(
                f"Weights in {path}: {name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}."
            )
    model.load_state_dict(state)
    return model
