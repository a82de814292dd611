"""Matplotlib figures for the report, returned as base64 PNG strings (headless Agg backend)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..verdict import Band

VERDICT_COLORS = {
    "removed": "#2e7d32",
    "suppressed": "#ef6c00",
    "not forgotten": "#c62828",
    "over-forgotten": "#6a1b9a",
    "inconclusive": "#757575",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def split_vs_band(rows: Sequence[Any], bands: dict[str, Band], original: dict[str, float | None] | None,
                  panels: Sequence[tuple[str, str, str]], unit: str) -> str:
    """One panel per split (split, table column, evidence key): each method's value (mean ± sd over seeds)
    against the retrain band of that evidence."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    names = [r.method for r in rows]
    y = np.arange(len(rows))
    for ax, (split, col, key) in zip(axes, panels):
        band = bands.get(key)
        if band is not None:
            ax.axvspan(band.lo, band.hi, color="#90caf9", alpha=0.45, label="retrain band")
            ax.axvline(band.mean, color="#1565c0", lw=1, label="retrain mean")
        for i, r in enumerate(rows):
            stat = r.stats.get(col)
            if stat is None:
                continue
            colour = VERDICT_COLORS.get(r.verdict_label, "#333")
            ax.errorbar(stat[0], i, xerr=stat[1], fmt="o", color=colour, capsize=3)
        if original and original.get(split) is not None:
            ax.axvline(original[split], color="#c62828", ls="--", lw=1, label="original")
        ax.set_title(f"{split} {unit}")
        ax.set_yticks(y, names)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    axes[-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def roc_curves(curves: Sequence[tuple[str, dict[str, list[float]], float]]) -> str:
    """Loss-threshold membership ROC (forget vs non-members) per model, log-scaled FPR inset-free."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve, auc in curves:
        for ax in axes:
            ax.plot(curve["fpr"], curve["tpr"], lw=1.4, label=f"{name} (AUC {auc:.3f})")
    for ax in axes:
        ax.plot([1e-4, 1], [1e-4, 1], color="#999", ls=":", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    axes[0].set_title("membership ROC (linear)")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlim(1e-3, 1)
    axes[1].set_ylim(1e-3, 1)
    axes[1].set_title("membership ROC (log-log: low-FPR regime)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def relearn_curves(curves: Sequence[tuple[str, dict[str, list[float]]]], band: Band | None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    retrained = None
    for name, c in curves:
        ax.plot(c["step"], c["accuracy"], marker="o", ms=3, lw=1.4, label=name)
        retrained = c
    if retrained is not None:
        ax.plot(retrained["step"], retrained["retrained"], color="black", ls="--", lw=2, label="retrained models (mean)")
    ax.set_xlabel("relearning steps on a slice of the forget set")
    ax.set_ylabel("fit score on the held-out forget examples\n(accuracy; −MSE for regression; answer probability for LMs)")
    title = "relearning attack"
    if band is not None:
        title += f" — retrain band of curve mean: [{band.lo:.3f}, {band.hi:.3f}]"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the axes: never over a curve
    fig.tight_layout()
    return _png(fig)


def cost_vs_gap(rows: Sequence[Any], column: str = "avg gap", label: str = "average gap to retrain") -> str:
    """Work relative to retraining (example passes: the same on any machine) vs a distance-to-retraining column of the
    summary (lower-left is better)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in rows:
        ratio = r.ratios.get("example_passes")
        gap = r.stats.get(column)
        if ratio is None or gap is None:
            continue
        colour = VERDICT_COLORS.get(r.verdict_label, "#333")
        ax.errorbar(ratio, gap[0], yerr=gap[1], fmt="o", color=colour, capsize=3)
        ax.annotate(r.method, (ratio, gap[0]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("example passes / retraining's (log)")
    ax.set_ylabel(label)
    ax.set_title("cost vs. closeness to retraining (lower-left is better)", fontsize=10)
    for label, colour in VERDICT_COLORS.items():
        ax.scatter([], [], color=colour, label=label)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _png(fig)
