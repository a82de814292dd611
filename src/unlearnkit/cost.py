"""Cost as a first-class result: optimizer steps and example passes (the work, the same on any machine), CPU and wall
seconds, peak memory."""

from __future__ import annotations

import contextvars
import os
import threading
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import torch

_ACTIVE: contextvars.ContextVar[tuple[CostMeter, ...]] = contextvars.ContextVar("unlearnkit_cost_meters", default=())


@dataclass(frozen=True)
class Cost:
    """What a piece of work cost. ``peak_memory_mb`` is the peak resident-memory increase over the
    start of the work on CPU (sampled every few ms), or the peak allocated device memory on CUDA."""

    wall_seconds: float
    optimizer_steps: int
    example_passes: int
    peak_memory_mb: float
    device: str = "cpu"
    # CPU time of this process (all its threads): it leaves out waiting for a core, but torch's threads spin while waiting
    # for each other, so it still grows on an oversubscribed machine; example_passes is the measure no load can move
    cpu_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cost:
        return cls(**{k: d[k] for k in ("wall_seconds", "optimizer_steps", "example_passes", "peak_memory_mb", "device")},
                   cpu_seconds=d.get("cpu_seconds"))  # None in records written before CPU time was measured

    def ratios_to(self, ref: Cost) -> dict[str, float | None]:
        """This cost divided by a reference cost (retraining), field by field."""

        def div(a: float, b: float) -> float | None:
            return a / b if b else None

        return {
            "cpu": None if self.cpu_seconds is None or ref.cpu_seconds is None else div(self.cpu_seconds, ref.cpu_seconds),
            "wall": div(self.wall_seconds, ref.wall_seconds),
            "steps": div(self.optimizer_steps, ref.optimizer_steps),
            "example_passes": div(self.example_passes, ref.example_passes),
            "peak_memory": div(self.peak_memory_mb, ref.peak_memory_mb),
            "speedup": div(ref.wall_seconds, self.wall_seconds),
        }


_WARM = False


def _warm_up() -> None:
    """Trigger PyTorch's one-time lazy imports (the first optimizer imports its compiler stack, ~70 MB)
    so that they are not charged to whichever method happens to run first."""
    global _WARM
    if not _WARM:
        for kind in ("foreach", "fused"):
            try:
                torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], **{kind: True})
            except RuntimeError:  # no fused kernel here
                pass
        _WARM = True


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc), so that the resident-memory baseline is low and the work's
    own allocations show up in the peak. (No gc.collect: it costs up to a second in a large process.)"""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is coarser, not wrong
        pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


class CostMeter:
    """Context manager measuring the enclosed work; the training loop reports steps and passes to
    every active meter (meters nest: a method's meter also counts the steps of its inner loops)."""

    def __init__(self, device: str | torch.device = "cpu", sample_seconds: float = 0.005) -> None:
        self.device = torch.device(device)
        self.sample_seconds = sample_seconds
        self.steps = 0
        self.passes = 0
        self._peak = 0
        self._start_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: contextvars.Token | None = None
        self.cost: Cost | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_seconds):
            self._peak = max(self._peak, _rss_bytes())

    def __enter__(self) -> CostMeter:
        _warm_up()
        outer = _ACTIVE.get()
        self._token = _ACTIVE.set(outer + (self,))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            so_far = torch.cuda.max_memory_allocated(self.device)  # the reset below wipes the enclosing meters' peak: keep it
            for m in outer:
                if m.device == self.device:
                    m._peak = max(m._peak, so_far)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_rss = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_memory()
            self._start_rss = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        if self.device.type == "cuda":
            peak = max(torch.cuda.max_memory_allocated(self.device), self._peak) - self._start_rss
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes()) - self._start_rss
        if self._token is not None:
            _ACTIVE.reset(self._token)
        self.cost = Cost(wall, self.steps, self.passes, max(peak, 0) / 2**20, str(self.device), cpu)


def record(steps: int = 0, passes: int = 0) -> None:
    """Add optimizer steps / example passes to every active meter (no-op when none is active)."""
    for meter in _ACTIVE.get():
        meter.steps += steps
        meter.passes += passes
