"""Summaries of an experiment: one table per forget setting (method × seeds aggregated), with
verdicts and cost ratios to retraining measured in the same experiment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cost import Cost
from ..verdict import Band, Verdict
from .references import mean_cost
from .store import Store

# (column label, metric, value key) shown in tables; the first three are the per-split fit of the model
COLUMNS_BY_MODALITY = {
    "classifier": (
        ("forget acc", "accuracy", "forget"),
        ("retain acc", "accuracy", "retain"),
        ("test acc", "accuracy", "test"),
        ("avg gap", "retrain_gap", "avg_gap"),
        ("MIA AUC", "threshold_mia", "loss.auc"),
        ("MIA eff.", "mia_efficacy", "efficacy"),
        ("relearn AUC", "relearn", "auc"),
    ),
    "regression": (
        ("forget MSE", "regression_error", "mse_forget"),
        ("retain MSE", "regression_error", "mse_retain"),
        ("test MSE", "regression_error", "mse_test"),
        ("avg gap", "regression_gap", "avg_gap"),
        ("MIA AUC", "residual_mia", "auc"),
        ("relearn AUC", "relearn", "auc"),
    ),
    "causal_lm": (
        ("forget prob", "answer_prob", "forget"),
        ("retain prob", "answer_prob", "retain"),
        ("holdout prob", "answer_prob", "test"),
        ("KS stat", "forget_quality", "statistic"),
        ("forget quality", "forget_quality", "p_value"),
        ("model utility", "model_utility", "model_utility"),
        ("Min-K AUC", "min_k", "auc"),
        ("privleak", "privleak", "privleak"),
        ("relearn AUC", "relearn", "auc"),
    ),
}
COLUMNS = COLUMNS_BY_MODALITY["classifier"]
# evidence keys of the per-split fit (forget, retain, test), for plots against the retrain band
SPLIT_EVIDENCE = {
    "classifier": ("accuracy", ("accuracy.forget", "accuracy.retain", "accuracy.test")),
    "regression": ("MSE", ("regression_error.mse_forget", "regression_error.mse_retain", "regression_error.mse_test")),
    "causal_lm": ("answer probability", ("answer_prob.forget", "answer_prob.retain", "answer_prob.test")),
}


def columns(modality: str) -> tuple[tuple[str, str, str], ...]:
    return COLUMNS_BY_MODALITY.get(modality, COLUMNS)


def metric_value(run: Mapping[str, Any], metric: str, key: str) -> float | None:
    value = run.get("results", {}).get(metric, {}).get("values", {}).get(key)
    return None if value is None else float(value)


def original_facts(original: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The original model's fit on forget / retain / train (= forget ∪ retain) / test and its memorisation gap
    (train accuracy − test accuracy, or test MSE − train MSE): membership evidence only means something when
    it is large."""
    modality = task.get("modality", "classifier")
    cols = columns(modality)[:3]
    fit = {split: metric_value(original, metric, key) for split, (_, metric, key) in zip(("forget", "retain", "test"), cols)}
    if any(v is None for v in fit.values()):
        return None
    n_f, n_r = task["splits"]["forget"]["n"], task["splits"]["retain"]["n"]
    train = (fit["forget"] * n_f + fit["retain"] * n_r) / (n_f + n_r)  # type: ignore[operator]
    higher_better = modality != "regression"
    gap = (train - fit["test"]) if higher_better else (fit["test"] - train)  # type: ignore[operator]
    return {**fit, "train": train, "gap": gap, "unit": SPLIT_EVIDENCE.get(modality, SPLIT_EVIDENCE["classifier"])[0]}


@dataclass
class MethodRow:
    method: str
    kind: str
    runs: list[dict[str, Any]]
    stats: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # column -> (mean, sd, n)
    verdicts: Counter = field(default_factory=Counter)
    cost: Cost | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)
    cpu_ratios: list[float] = field(default_factory=list)  # per seed: CPU seconds / retraining's

    @property
    def cost_cells(self) -> list[str]:
        """What the tables print about cost, the machine-independent work first: example passes relative to retraining,
        CPU time relative to retraining (mean ± sd over seeds: CPU time barely moves with other load on the machine,
        wall time does), and mean wall seconds."""
        passes = self.ratios.get("example_passes")
        cpu = fmt_stat((float(np.mean(self.cpu_ratios)), float(np.std(self.cpu_ratios, ddof=1)) if len(self.cpu_ratios) > 1 else 0.0,
                        len(self.cpu_ratios))) if self.cpu_ratios else "—"
        return ["—" if passes is None else f"{passes:.3f}", cpu, "—" if self.cost is None else f"{self.cost.wall_seconds:.1f}"]

    @property
    def verdict(self) -> str:
        """The verdict across seeds with its agreement ("removed 3/3", "over-forgotten 2/3, removed 1/3"), how many seeds
        were borderline, and every other failing aspect with its count ("also: utility below retraining 1/3")."""
        if not self.verdicts:
            return "—"
        n = sum(self.verdicts.values())
        text = ", ".join(f"{lab} {c}/{n}" for lab, c in self.verdicts.most_common())
        borderline = sum(bool(r["verdict"].get("borderline")) for r in self.runs)
        if borderline:
            text += f" ({borderline}/{n} borderline)"
        also = Counter(a.split(" (")[0] for r in self.runs for a in r["verdict"].get("also", []))
        if also:
            text += "; also: " + ", ".join(f"{what} {c}/{n}" for what, c in also.most_common())
        return text

    @property
    def verdict_label(self) -> str:
        """The most common label over seeds (what a plot colours the row by); "" without runs."""
        return self.verdicts.most_common(1)[0][0] if self.verdicts else ""


@dataclass
class TaskSummary:
    label: str
    task: dict[str, Any]
    original: dict[str, Any] | None
    rows: list[MethodRow]
    retrain_cost: Cost | None
    retrain_cost_source: str
    noise_floor: dict[str, Any] | None
    modality: str = "classifier"

    @property
    def columns(self) -> tuple[tuple[str, str, str], ...]:
        return columns(self.modality)


def _row(method: str, runs: list[dict[str, Any]], modality: str) -> MethodRow:
    row = MethodRow(method, runs[0]["method"].get("kind", ""), runs)
    for label, metric, key in columns(modality):
        vals = [v for v in (metric_value(r, metric, key) for r in runs) if v is not None]
        if vals:
            row.stats[label] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals))
    row.verdicts = Counter(r["verdict"]["label"] for r in runs)
    costs = [r["cost"] for r in runs if r.get("cost")]
    row.cost = mean_cost(costs)
    return row


def summarize(store: Store, record: Mapping[str, Any]) -> list[TaskSummary]:
    out = []
    for t in record.get("tasks", []):
        rows = []
        modality = t["task"].get("modality", "classifier")
        for method, run_ids in t.get("runs", {}).items():
            runs = [store.load_run(r) for r in run_ids]
            if runs:
                rows.append(_row(method, runs, modality))
        original = store.load_run(t["original_run"]) if t.get("original_run") else None
        retrain_rows = [r for r in rows if r.runs[0]["method"]["name"] == "retrain"]
        if retrain_rows and retrain_rows[0].cost is not None:
            ref_cost, source = retrain_rows[0].cost, "the retrain method, measured in this experiment"
        else:
            ref_cost = mean_cost(t.get("references", {}).get("costs", {}).get("retrain", []))
            source = "the reference retrains (measured when they were trained; may be another session)"
        for row in rows:
            if row.cost is not None and ref_cost is not None:
                row.ratios = row.cost.ratios_to(ref_cost)
            if ref_cost is not None and ref_cost.cpu_seconds:
                row.cpu_ratios = [r["cost"]["cpu_seconds"] / ref_cost.cpu_seconds for r in row.runs
                                  if r.get("cost") and r["cost"].get("cpu_seconds") is not None]
        nf = original["results"].get("noise_floor") if original else None
        out.append(TaskSummary(t["label"], t["task"], original, rows, ref_cost, source, nf, modality))
    return out


COST_HEADER = ("passes × retrain", "CPU × retrain", "wall s")


def sanity_warning(s: TaskSummary) -> str | None:
    """Why the table of ``s`` is not meaningful, or None: the original model (which saw the forget set) must come out
    "not forgotten"; when it passes as forgotten the evidence cannot tell it from a retrained model, so a method being
    "removed" says nothing (e.g. an original that never learned: a zero learning rate or budget, or too little
    training to memorise)."""
    if s.original is None:
        return None
    label = s.original.get("verdict", {}).get("label")
    if label == "not forgotten":
        return None
    facts = original_facts(s.original, s.task)
    gap = f" (memorisation gap {facts['gap']:+.3f})" if facts is not None else ""
    return (f"the original model, which was trained on the forget set, comes out {label!r}, not 'not forgotten'{gap}: the "
            "evidence cannot tell it from a retrained model, so no verdict in this table is meaningful. Train the original "
            "until it memorises its training data (more epochs, a larger model or less data), or add stronger evidence.")


def verdict_bands(s: TaskSummary) -> tuple[dict[str, Band], int]:
    """The retrain bands the original model's verdict stored, as it used them, and the size of their Bonferroni family
    (retrain bands plus the evidence with a null distribution of its own)."""
    verdict = (s.original or {}).get("verdict", {})
    if "bands" in verdict:
        bands = {k: Band.from_json(b) for k, b in verdict["bands"].items()}
        return {k: b for k, b in bands.items() if b.source == "retrained seeds"}, int(verdict["family"])
    # records written before verdicts stored their bands: the noise floor's, as it stored them (for its own family)
    stored = (s.noise_floor or {}).get("info", {}).get("bands", {})
    return {k: Band.from_json(b) for k, b in stored.items()}, int(verdict.get("family") or len(stored))


def fmt_stat(stat: tuple[float, float, int] | None, digits: int = 3) -> str:
    if stat is None:
        return "—"
    mean, sd, n = stat
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f}±{sd:.{digits}f}"


def format_tables(summaries: list[TaskSummary]) -> str:
    """Plain-text results tables (what the CLI prints)."""
    lines: list[str] = []
    for s in summaries:
        lines.append("")
        lines.append(f"== forget set: {s.label} — forget {s.task['splits']['forget']['n']}, retain {s.task['splits']['retain']['n']}, "
                     f"test {s.task['splits']['test']['n']} ==")
        warning = sanity_warning(s)
        if warning is not None:
            lines.append(f"!! NOT MEANINGFUL: {warning}")
        facts = original_facts(s.original, s.task) if s.original is not None else None
        if facts is not None and s.original is not None:
            lines.append(f"original model {facts['unit']}: train {facts['train']:.3f} (forget {facts['forget']:.3f}), test {facts['test']:.3f} — "
                         f"memorisation gap {facts['gap']:+.3f}; verdict {Verdict.from_json(s.original['verdict']).display}")
        if s.noise_floor is not None:
            bands, m = verdict_bands(s)
            if bands:
                r = next(iter(bands.values())).R
                lines.append(f"retrain band (R={r} seeds, Bonferroni over {m} evidence bands): " + "; ".join(
                    f"{k} [{b.lo:.3f}, {b.hi:.3f}]" for k, b in bands.items()))
        header = ["method", "seeds"] + [c[0] for c in s.columns] + list(COST_HEADER) + ["verdict"]
        table = [header]
        for row in s.rows:
            table.append([row.method, str(len(row.runs))] + [fmt_stat(row.stats.get(c[0])) for c in s.columns] + row.cost_cells
                         + [row.verdict])
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for i, r in enumerate(table):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if warning is not None:
            lines.append("!! the verdicts above are not meaningful: see the warning at the top of this table")
        if s.retrain_cost is not None:
            c = s.retrain_cost
            cpu = "" if c.cpu_seconds is None else f"{c.cpu_seconds:.1f} CPU s, "
            lines.append(f"retraining cost: {c.optimizer_steps} steps, {c.example_passes} example passes, {cpu}{c.wall_seconds:.1f} wall s "
                         f"(from {s.retrain_cost_source})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ request streams
@dataclass
class StreamStep:
    """One request of a stream: what it deleted, the original model's run against this step's references (its verdict
    holds the step's retrain bands) and the mean cost of one retraining without everything deleted so far."""

    request: int
    label: str
    n: int
    deleted: int
    retained: int
    original: dict[str, Any] | None
    retrain_cost: Cost | None


@dataclass
class StreamChain:
    """One method × seed along a stream: its runs in request order (fewer than the requests when a step failed)."""

    method: str
    seed: str
    runs: list[dict[str, Any]]

    @property
    def kind(self) -> str:
        return self.runs[0]["method"].get("kind", "") if self.runs else ""

    @property
    def regime(self) -> str | None:
        return (self.runs[0].get("model") or {}).get("regime") if self.runs else None

    def cumulative(self, what: str) -> list[float]:
        """The running sum over requests of a cost field (``wall_seconds``, ``example_passes``)."""
        return [float(x) for x in np.cumsum([(r.get("cost") or {}).get(what, 0.0) for r in self.runs])]

    def training_cost(self) -> dict[str, Any] | None:
        """An exact regime's one-time training (before its first deletion), or None."""
        return self.runs[0].get("unlearn_info", {}).get("training_cost") if self.runs else None


@dataclass
class StreamSummary:
    steps: list[StreamStep]
    chains: list[StreamChain]

    def retrain_cumulative(self, what: str) -> list[float | None]:
        """Retraining after every request (one model per request, the references' mean cost): its running sum."""
        out: list[float | None] = []
        total: float | None = 0.0
        for s in self.steps:
            total = None if s.retrain_cost is None or total is None else total + float(getattr(s.retrain_cost, what))
            out.append(total)
        return out

    def evidence_keys(self) -> list[str]:
        """The decisive evidence (in the verdict's family: not reported only) of any run, in the order runs list it."""
        keys: dict[str, None] = {}
        for c in self.chains:
            for r in c.runs:
                keys.update({row["key"]: None for row in r["verdict"].get("rows", []) if not row.get("reported_only")})
        return list(keys)


def evidence_row(run: Mapping[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The verdict row of evidence ``key`` in ``run`` (value, band lo/hi/centre, status), or None."""
    if run is None:
        return None
    return next((row for row in run["verdict"].get("rows", []) if row["key"] == key), None)


def stream_summary(store: Store, record: Mapping[str, Any]) -> StreamSummary | None:
    """The stream of an experiment record (``requests:``), or None for an experiment of independent forget sets."""
    stream = record.get("stream")
    if not stream:
        return None
    tasks = {t.get("stream_request"): t for t in record.get("tasks", []) if t.get("stream_request")}
    steps = []
    for req in stream["requests"]:
        t = tasks.get(req["request"], {})
        original = store.load_run(t["original_run"]) if t.get("original_run") and store.has_run(t["original_run"]) else None
        steps.append(StreamStep(req["request"], req["label"], req["n"], req["deleted"], req["retained"], original,
                                mean_cost(t.get("references", {}).get("costs", {}).get("retrain", []))))
    chains = [StreamChain(method, seed, [store.load_run(r) for r in ids])
              for method, seeds in stream.get("runs", {}).items() for seed, ids in seeds.items()]
    return StreamSummary(steps, chains)


def format_stream(s: StreamSummary | None) -> str:
    """The verdict at every request of a stream, per method and seed, with its cumulative cost next to retraining's."""
    if s is None:
        return ""
    lines = ["", f"== request stream: {len(s.steps)} requests — the verdict after each, against retraining without everything deleted so far =="]
    lines += [f"request {st.request}: {st.label}, deletes {st.n} ({st.deleted} deleted in all, {st.retained} retained)" for st in s.steps]
    header = ["method", "seed"] + [f"request {st.request}" for st in s.steps] + ["passes (cumulative)", "wall s (cumulative)"]
    table = [header]
    for c in s.chains:
        cells = [r["verdict"]["label"] for r in c.runs] + ["stopped"] * (len(s.steps) > len(c.runs)) + \
            ["—"] * max(0, len(s.steps) - len(c.runs) - 1)
        passes, wall = c.cumulative("example_passes"), c.cumulative("wall_seconds")
        table.append([c.method, c.seed] + cells + [f"{passes[-1]:.0f}" if passes else "—", f"{wall[-1]:.2f}" if wall else "—"])
    passes, wall = s.retrain_cumulative("example_passes"), s.retrain_cumulative("wall_seconds")
    if passes and passes[-1] is not None and wall[-1] is not None:
        table.append(["retraining after each request", "—"] + ["—"] * len(s.steps) + [f"{passes[-1]:.0f}", f"{wall[-1]:.2f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for c in s.chains:
        if (t := c.training_cost()) is not None:
            lines.append(f"{c.method} (seed {c.seed}): its {c.regime or 'exact'} model was trained once before the first request "
                         f"({t['wall_seconds']:.2f} s, {t['example_passes']} example passes), not counted above")
    return "\n".join(lines)
