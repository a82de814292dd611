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
def torch_seed(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Seed torch's global RNG inside the block and restore the caller's state after: for module initialisers, and around
    training for what a model draws from it (dropout masks), so that training is a function of its seed. On an
    accelerator ``device`` its generator is forked too."""
    dev = torch.device(device)
    devices: list[int] = []
    extra = {}
    if dev.type not in ("cpu", "meta"):
        module = torch.get_device_module(dev.type)
        devices = [dev.index if dev.index is not None else (module.current_device() if hasattr(module, "current_device") else 0)]
        extra = {"device_type": dev.type}
    with torch.random.fork_rng(devices=devices, **extra):
        torch.manual_seed(seed)  # every device's generator
        yield
