"""Cost accounting: means over seeds, and peak memory of nested meters."""

import pytest
import torch

from unlearnkit.cost import CostMeter
from unlearnkit.runs.references import mean_cost

MB = 2**20


def test_mean_cost_rounds_steps_and_passes():
    costs = [{"wall_seconds": 1.0, "optimizer_steps": s, "example_passes": p, "peak_memory_mb": 10.0} for s, p in ((9, 99), (10, 100))]
    c = mean_cost(costs)
    assert (c.optimizer_steps, c.example_passes, c.wall_seconds) == (10, 100, 1.0)  # 9.5 and 99.5 round, not truncate to 9, 99


def test_a_nested_cuda_meter_does_not_erase_the_outer_peak(monkeypatch):
    """An inner meter resets CUDA's peak statistic; the outer meter must still see the peak before the inner one began
    (a fake allocator stands in for the device: current and resettable peak, as torch.cuda documents them)."""
    state = {"cur": 0, "peak": 0}

    def alloc(n):
        state["cur"] += n
        state["peak"] = max(state["peak"], state["cur"])
        state["cur"] -= n

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: state.__setitem__("peak", state["cur"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: state["cur"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: state["peak"])
    with CostMeter("cuda") as outer:
        alloc(500 * MB)  # e.g. low_influence_skip's scoring, before its inner method's own meter
        with CostMeter("cuda") as inner:
            alloc(100 * MB)
        alloc(50 * MB)
    assert inner.cost.peak_memory_mb == pytest.approx(100.0)
    assert outer.cost.peak_memory_mb == pytest.approx(500.0)
