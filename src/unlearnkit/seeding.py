"""Explicit randomness: every sampler takes a generator derived from the run seed."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (e.g. run seed and a purpose)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def np_rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def torch_gen(rng: np.random.Generator, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded from ``rng`` (advances ``rng``)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block (for module initialisers) and restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Seed torch's global RNG inside the block, for what a model draws from it while training (dropout masks), so that
    training is a function of its seed; the caller's global state — CPU and the accelerator ``device`` — is restored after."""
    dev = torch.device(device)
    if dev.type in ("cpu", "meta"):
        devices: list[int] = []
    else:
        module = torch.get_device_module(dev.type)
        devices = [dev.index if dev.index is not None else (module.current_device() if hasattr(module, "current_device") else 0)]
    with torch.random.fork_rng(devices=devices, device_type=dev.type if devices else None):
        torch.manual_seed(seed)  # every device's generator
        yield
