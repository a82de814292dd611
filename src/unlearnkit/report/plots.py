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


def stream_evidence(method: str, keys: Sequence[str], steps: Sequence[int], chains: Sequence[tuple[str, Sequence[dict[str, Any] | None]]],
                    original: Sequence[dict[str, Any] | None], bands: dict[str, Sequence[dict[str, Any] | None]]) -> str:
    """One panel per decisive evidence: the method's value after each request (one line per seed, points coloured by
    that step's verdict) against the retrain band of that step (a bar per request: the bands move as more is deleted),
    with the original model's value (which saw everything) as crosses."""
    plt = _plt()
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for x, band in zip(steps, bands.get(key, ())):
            if band is not None:
                ax.bar(x, band["hi"] - band["lo"], bottom=band["lo"], width=0.5, color="#90caf9", alpha=0.55)
                ax.hlines(band["retrain_mean"], x - 0.25, x + 0.25, color="#1565c0", lw=1)
        orig = [(x, row["value"]) for x, row in zip(steps, (o.get(key) if o else None for o in original)) if row is not None]
        if orig:
            ax.scatter(*zip(*orig), marker="x", color="#c62828", s=22, zorder=3)
        for seed, runs in chains:
            pts = [(x, r["rows"][key]["value"], r["label"]) for x, r in zip(steps, runs) if r is not None and key in r["rows"]]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#444", lw=0.8, zorder=2)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=[VERDICT_COLORS.get(p[2], "#333") for p in pts], s=26, zorder=4,
                       label=f"seed {seed}")
        ax.set_title(key, fontsize=9)
        ax.set_xticks(list(steps))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("request")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#90caf9", alpha=0.55, label="retrain band at that request"),
               plt.Line2D([], [], marker="x", ls="", color="#c62828", label="original model")]
    handles += [plt.Line2D([], [], marker="o", ls="", color=c, label=lab) for lab, c in VERDICT_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(7, len(handles)), fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{method}: decisive evidence after each request", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def stream_cost(steps: Sequence[int], series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
                retrain: tuple[Sequence[float | None], Sequence[float | None]]) -> str:
    """Cumulative example passes and wall seconds after each request, per method (and seed), next to retraining once
    per request (dashed)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, passes, wall in series:
        for ax, values in zip(axes, (passes, wall)):
            ax.plot(list(steps)[: len(values)], values, marker="o", ms=3, lw=1.4, label=name)
    for ax, values in zip(axes, retrain):
        pts = [(x, v) for x, v in zip(steps, values) if v is not None]
        if pts:
            ax.plot(*zip(*pts), color="black", ls="--", lw=1.6, label="retraining after each request")
    for ax, what in zip(axes, ("example passes", "wall seconds")):
        positive = all(y > 0 for line in ax.get_lines() for y in line.get_ydata())  # an analytic deletion may cost 0 passes
        if positive:
            ax.set_yscale("log")
        ax.set_xticks(list(steps))
        ax.set_xlabel("request")
        ax.set_ylabel(f"cumulative {what}" + (" (log)" if positive else ""))
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("cumulative cost of the deletions", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def pareto_front(trials: Sequence[dict[str, Any]], front: Sequence[int], chosen: int | None) -> str:
    """A tuning study's trials: example passes (log) vs distance of the evidence to the retrain band (in half-widths);
    the Pareto front joined by a step line, the chosen trial starred (lower-left is better)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    done = [t for t in trials if t.get("state") == "complete"]
    ax.scatter([t["example_passes"] for t in done], [t["band_distance"] for t in done], color="#9e9e9e", s=18, label="trial")
    best = sorted((t for t in done if t["number"] in set(front)), key=lambda t: t["example_passes"])
    if best:
        ax.step([t["example_passes"] for t in best], [t["band_distance"] for t in best], where="post", color="#c62828", lw=1.2)
        ax.scatter([t["example_passes"] for t in best], [t["band_distance"] for t in best], color="#c62828", s=28, label="Pareto front")
    for t in done:
        if t["number"] == chosen:
            ax.scatter([t["example_passes"]], [t["band_distance"]], marker="*", s=220, color="#2e7d32", label="chosen", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("example passes of the method (log)")
    ax.set_ylabel("distance to the retrain band (half-widths)")
    ax.set_title("tuning trials on the validation forget set (lower-left is better)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _png(fig)


def tracing_heatmap(matrix: Sequence[Sequence[float | None]], categories: Sequence[str], title: str) -> str:
    """Causal tracing: the indirect effect (restored − corrupted answer probability) per decoder layer (rows) and
    prompt position class (columns); blank where no traced prompt has such a position."""
    plt = _plt()
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(categories) + 2, 0.35 * len(values) + 1.8))
    image = ax.imshow(values, aspect="auto", cmap="Purples", origin="lower")
    ax.set_xticks(range(len(categories)), list(categories), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(values)), [str(i) for i in range(len(values))], fontsize=8)
    ax.set_ylabel("decoder layer (hidden state restored)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="recovered answer probability")
    fig.tight_layout()
    return _png(fig)
