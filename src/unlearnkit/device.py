"""Device names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, checked before anything runs."""

from __future__ import annotations

import torch

from .distributed import local_device
from .errors import ConfigError, UnlearnError

HELP = "use cpu, cuda, cuda:N, mps or auto"


def check_device(device: str) -> str:
    """``device`` if torch can parse it (or it is ``auto``); a ConfigError naming it otherwise. Availability is not
    checked: an experiment file written for a GPU machine validates anywhere."""
    if not isinstance(device, str) or not device:
        raise ConfigError(f"device must be a string ({HELP}), got {device!r}.")
    if device == "auto":
        return device
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"Unknown device {device!r}: {HELP}.") from None
    return device


def resolve_device(device: str) -> str:
    """The device to run on: ``auto`` picks cuda, then mps, then cpu; a named device must exist here. In a data-parallel
    launch ``cuda`` is this rank's GPU, ``cuda:LOCAL_RANK`` (``distributed.local_device``)."""
    check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return local_device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = torch.device(device)
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise UnlearnError(f"Device {device!r} was requested but CUDA is not available here; use --device cpu.")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise UnlearnError(f"Device {device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist here.")
    if kind.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UnlearnError(f"Device {device!r} was requested but MPS is not available here; use --device cpu.")
    if kind.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"Device {device!r} is not supported: {HELP}.")
    return local_device(device)
