"""The HTML report of an experiment: per forget setting, the verdict table with its evidence, the
accuracy-vs-retrain-band plot, membership ROC curves, relearning curves and cost vs gap; for a tuned setting's
experiment, the tuning study (validation protocol, Pareto front, chosen setting)."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..runs.store import Store
from ..runs.summary import (COST_HEADER, SPLIT_EVIDENCE, StreamSummary, TaskSummary, evidence_row, fmt_stat, metric_value, original_facts,
                            sanity_warning, stream_summary, summarize, verdict_bands)
from ..verdict import BORDERLINE, Verdict
from . import plots

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1480px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px} h3{margin-top:24px}
.muted{color:#666;font-size:13px} table{border-collapse:collapse;margin:8px 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right} th{background:#f5f5f5} td.l,th.l{text-align:left}
.v{font-weight:600;padding:2px 6px;border-radius:4px;color:#fff;white-space:nowrap}
.removed{background:#2e7d32}.suppressed{background:#ef6c00}.not-forgotten{background:#c62828}.over-forgotten{background:#6a1b9a}.inconclusive{background:#757575}
.inside{color:#2e7d32}.more{color:#c62828;font-weight:600}.less{color:#6a1b9a;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:6px 0} details{margin:4px 0} code{background:#f5f5f5;padding:1px 4px}
.facts td{text-align:left}
.alarm{background:#fdecea;border:2px solid #c62828;color:#8e0000;padding:8px 12px;border-radius:4px}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def badge(label: str) -> str:
    return f'<span class="v {label.replace(" ", "-")}">{esc(label)}</span>'


def _facts(s: TaskSummary) -> str:
    sp = s.task["splits"]
    o = s.original
    rows = [("forget / retain / test", f"{sp['forget']['n']} / {sp['retain']['n']} / {sp['test']['n']}"),
            ("task fingerprint", f"<code>{esc(s.task['fingerprint'])}</code>")]
    if o is not None:
        facts = original_facts(o, s.task)
        if facts is not None:
            rows.append((f"original model: train / test {facts['unit']}",
                         f"{facts['train']:.4f} / {facts['test']:.4f} — the original memorises its training data (gap {facts['gap']:+.4f}; "
                         f"forget set {facts['forget']:.4f}); membership evidence is meaningful only because of this gap"))
        rows.append(("original model verdict", badge(o["verdict"]["label"]) + esc(Verdict.from_json(o["verdict"]).display.removeprefix(o["verdict"]["label"]))
                     + " (sanity check: must be “not forgotten”)"))
    if s.noise_floor:
        info = s.noise_floor.get("info", {})
        _, m = verdict_bands(s)
        rows.append(("noise floor", f"R = {info.get('R')} retrained seeds, family-wise false-alarm α = {info.get('alpha')} (Bonferroni over "
                                    f"{m} evidence bands: the retrain bands and the attacks' own null bands)"))
    if s.retrain_cost is not None:
        rows.append(("retraining cost", f"{s.retrain_cost.wall_seconds:.1f} s, {s.retrain_cost.optimizer_steps} steps, "
                                        f"{s.retrain_cost.example_passes} example passes — from {esc(s.retrain_cost_source)}"))
    return '<table class="facts">' + "".join(f"<tr><th class='l'>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _main_table(s: TaskSummary) -> str:
    head = (["method", "kind", "seeds"] + [c[0] for c in s.columns] + ["steps", "example passes", "peak MB"] + list(COST_HEADER)
            + ["verdict"])
    out = ["<table><tr>" + "".join(f"<th class='l'>{esc(h)}</th>" if i < 2 else f"<th>{esc(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    for r in s.rows:
        c = r.cost
        cells = [f"<td class='l'>{esc(r.method)}</td>", f"<td class='l'>{esc(r.kind)}</td>", f"<td>{len(r.runs)}</td>"]
        cells += [f"<td>{fmt_stat(r.stats.get(col[0]))}</td>" for col in s.columns]
        cells += [f"<td>{'—' if c is None else c.optimizer_steps}</td>", f"<td>{'—' if c is None else c.example_passes}</td>",
                  f"<td>{'—' if c is None else f'{c.peak_memory_mb:.0f}'}</td>"]
        cells += [f"<td>{esc(x)}</td>" for x in r.cost_cells]
        verdicts = " ".join(badge(lab) + f" {n}/{len(r.runs)}" for lab, n in r.verdicts.most_common())
        detail = r.verdict.partition(", ".join(f"{lab} {n}/{len(r.runs)}" for lab, n in r.verdicts.most_common()))[2]
        cells.append(f"<td class='l'>{verdicts}{esc(detail)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _margin(margin: float | None) -> str:
    """A row's margin in band half-widths (— when its band spans every possible value), bold when borderline."""
    if margin is None:
        return "—"
    text = f"{margin:+.2f}"
    return f"<b>{text}</b>" if abs(margin) < BORDERLINE else text


def _num(x: object) -> str:
    """A table cell for a number that a verdict row may lack (None, NaN): '—'."""
    return f"{x:.4f}" if isinstance(x, (int, float)) and x == x else "—"


def _evidence_details(s: TaskSummary) -> str:
    parts = []
    runs = ([("original (reference)", s.original)] if s.original is not None else []) + [(r.method, r.runs[0]) for r in s.rows]
    for label, run in runs:
        v = run["verdict"]
        rows = "".join(
            f"<tr><td class='l'>{esc(x['key'])}</td><td class='l'>{esc(x['role'])}</td><td>{x['value']:.4f}</td>"
            f"<td>[{x['lo']:.4f}, {x['hi']:.4f}]</td><td>{_num(x.get('retrain_mean'))}</td><td class='l'>{esc(x.get('band_from', 'retrained seeds'))}</td>"
            f"<td class='l {x['status']}'>{esc(x['status'])}</td><td>{_margin(x.get('margin'))}</td></tr>"
            for x in v.get("rows", [])
        )
        ks = v.get("tests", {}).get("ks_forget_loss")
        ks_txt = ""
        if ks:
            ks_txt = (f"<p class='muted'>KS test of forget-example losses vs the first retrained model: D = {ks['statistic']:.4f}, "
                      f"p = {ks['pvalue']:.3g}; between retrained seeds D ≤ {ks['retrain_seed_max'] if ks['retrain_seed_max'] is not None else float('nan'):.4f}.</p>")
        reasons = "".join(f"<li>{esc(x)}</li>" for x in v["reasons"])
        missing = f"<p class='muted'>missing: {esc(', '.join(v['missing']))}</p>" if v.get("missing") else ""
        warn = run.get("unlearn_info", {}).get("warning")
        warn_txt = f"<p class='more'>training note: {esc(warn)}</p>" if warn else ""
        parts.append(
            f"<details><summary><b>{esc(label)}</b> (seed {run['seed']}, run <code>{esc(run['run_id'])}</code>) {badge(v['label'])}"
            f"{esc(Verdict.from_json(v).display.removeprefix(v['label']))}</summary>"
            f"<ul>{reasons}</ul>{warn_txt}<table><tr><th class='l'>evidence</th><th class='l'>role</th><th>value</th><th>band</th>"
            f"<th>band centre</th><th class='l'>band from</th><th class='l'>status</th>"
            f"<th title='distance to the nearest band edge, in band half-widths: inside &gt; 0, outside &lt; 0'>margin</th></tr>"
            f"{rows}</table>{ks_txt}{missing}"
            f"<p class='muted'>{esc(v.get('method', ''))}</p><p class='muted'>params: <code>{esc(run['method'].get('params'))}</code>; "
            f"paper: {esc(run['method'].get('paper', ''))}</p></details>"
        )
    return "".join(parts)


def _plots(s: TaskSummary) -> str:
    bands, _ = verdict_bands(s)
    unit, keys = SPLIT_EVIDENCE.get(s.modality, SPLIT_EVIDENCE["classifier"])
    original = None
    if s.original is not None:
        original = {split: metric_value(s.original, metric, key) for split, (_, metric, key) in zip(("forget", "retain", "test"), s.columns)}
    out = []
    if s.rows:
        panels = [(split, col[0], key) for split, col, key in zip(("forget", "retain", "test"), s.columns, keys)]
        out.append(f"<h3>{esc(unit.capitalize())} per split against the retrain band</h3>"
                   "<p class='muted'>Dots: mean ± sd over seeds, coloured by verdict. Shaded: prediction band for one more retrain.</p>"
                   f"<img alt='per-split fit vs retrain band' src='data:image/png;base64,{plots.split_vs_band(s.rows, bands, original, panels, unit)}'>")
    rocs = []
    for label, run in ([("original", s.original)] if s.original else []) + [(r.method, r.runs[0]) for r in s.rows]:
        res = run["results"].get("threshold_mia")
        if res and "roc.loss" in res.get("curves", {}):
            rocs.append((label, res["curves"]["roc.loss"], res["values"]["loss.auc"]))
    if rocs:
        nonm = (s.original or {}).get("results", {}).get("threshold_mia", {}).get("info", {}).get("nonmembers", "test")
        out.append(f"<h3>Membership inference (loss threshold): forget set vs {esc(nonm)}</h3>"
                   f"<img alt='ROC curves' src='data:image/png;base64,{plots.roc_curves(rocs)}'>")
    rel = [(r.method, r.runs[0]["results"]["relearn"]["curves"]["relearn"]) for r in s.rows if "relearn" in r.runs[0]["results"]]
    if s.original is not None and "relearn" in s.original["results"]:
        rel.insert(0, ("original", s.original["results"]["relearn"]["curves"]["relearn"]))
    if rel:
        out.append("<h3>Relearning attack</h3><p class='muted'>Fine-tune on a small slice of the forget set; accuracy on the rest of "
                   "it. A method whose curve rises faster than the retrained models' suppressed rather than removed.</p>"
                   f"<img alt='relearning curves' src='data:image/png;base64,{plots.relearn_curves(rel, bands.get('relearn.auc'))}'>")
    out.extend(_tracing(s))
    if any(r.ratios.get("example_passes") for r in s.rows):
        column, label = ("KS stat", "forget-quality KS statistic vs the retain model") if s.modality == "causal_lm" else ("avg gap", "average gap to retrain")
        out.append(f"<h3>Cost vs. {esc(label)}</h3><img alt='cost vs gap' src='data:image/png;base64,{plots.cost_vs_gap(s.rows, column, label)}'>")
    return "".join(out)


def _tracing(s: TaskSummary) -> list[str]:
    """A heatmap per method whose run stored a causal-tracing matrix (``unlearn_info.tracing``, e.g. layer_constrained)."""
    out = []
    for r in s.rows:
        info = r.runs[0].get("unlearn_info", {})
        tracing = info.get("tracing")
        if not isinstance(tracing, dict) or "matrix" not in tracing:
            continue
        chosen = info.get("layers")
        title = f"{r.method}: causal tracing over {tracing.get('n_prompts')} forget prompts" + (f", layers chosen {chosen}" if chosen else "")
        out.append(f"<h3>Causal tracing: {esc(r.method)}</h3><p class='muted'>Noise on the subject tokens' embeddings takes the answer "
                   f"probability from {tracing.get('p_clean', float('nan')):.3f} to {tracing.get('p_corrupt', float('nan')):.3f}; each cell is "
                   "what restoring one layer's clean hidden state at one position class brings back (mean over prompts).</p>"
                   f"<img alt='causal tracing heatmap' src='data:image/png;base64,{plots.tracing_heatmap(tracing['matrix'], tracing['categories'], title)}'>")
    return out


def _step_band(chains: list[Any], original: dict[str, Any] | None, i: int, key: str) -> dict[str, Any] | None:
    """The retrain band of evidence ``key`` at request ``i`` (0-based), as a method's verdict there used it (else the
    original model's)."""
    for c in chains:
        if i < len(c.runs) and (row := evidence_row(c.runs[i], key)) is not None:
            return row
    return evidence_row(original, key)


def _stream_section(s: StreamSummary) -> str:
    """A stream of requests: what each deleted, the verdict of every method after each (against retraining without
    everything deleted so far), its decisive evidence against each step's retrain band, and the cumulative cost."""
    steps = [st.request for st in s.steps]
    out = ["<h2>Request stream</h2>",
           f"<p class='muted'>{len(steps)} deletion requests, applied in order: each method unlearns request k from the model it "
           "left after request k−1, and is evaluated against models retrained without everything deleted by requests 1..k "
           "(the per-request sections below give each evaluation in full).</p>",
           "<table><tr><th>request</th><th class='l'>selection</th><th>deletes</th><th>deleted in all</th><th>retained</th>"
           "<th>original model</th></tr>"]
    for st in s.steps:
        orig = badge(st.original["verdict"]["label"]) if st.original else "—"
        out.append(f"<tr><td>{st.request}</td><td class='l'>{esc(st.label)}</td><td>{st.n}</td><td>{st.deleted}</td><td>{st.retained}</td>"
                   f"<td>{orig}</td></tr>")
    out.append("</table><h3>Verdict after each request</h3><table><tr><th class='l'>method</th><th>seed</th>"
               + "".join(f"<th>request {k}</th>" for k in steps) + "<th>passes (cumulative)</th><th>wall s (cumulative)</th></tr>")
    for c in (c for c in s.chains if c.runs):
        cells = [f"<td>{badge(r['verdict']['label'])}</td>" for r in c.runs] + ["<td>stopped</td>"] * (len(steps) > len(c.runs))
        cells += ["<td>—</td>"] * max(0, len(steps) - len(c.runs) - 1)
        passes, wall = c.cumulative("example_passes"), c.cumulative("wall_seconds")
        kind = f" ({esc(c.regime)} regime)" if c.regime else ""
        out.append(f"<tr><td class='l'>{esc(c.method)}{kind}</td><td>{esc(c.seed)}</td>{''.join(cells)}"
                   f"<td>{passes[-1]:.0f}</td><td>{wall[-1]:.2f}</td></tr>")
    passes, wall = s.retrain_cumulative("example_passes"), s.retrain_cumulative("wall_seconds")
    if passes and passes[-1] is not None and wall[-1] is not None:
        out.append(f"<tr><td class='l'>retraining after each request</td><td>—</td>{'<td>—</td>' * len(steps)}"
                   f"<td>{passes[-1]:.0f}</td><td>{wall[-1]:.2f}</td></tr>")
    out.append("</table>")
    for c in s.chains:
        if (t := c.training_cost()) is not None:
            out.append(f"<p class='muted'>{esc(c.method)} (seed {esc(c.seed)}): its {esc(c.regime or 'exact')} model was trained once "
                       f"before the first request ({t['wall_seconds']:.2f} s, {t['example_passes']} example passes); the costs above are "
                       "its deletions'.</p>")
    keys = s.evidence_keys()
    original = [{row["key"]: row for row in st.original["verdict"].get("rows", [])} if st.original else None for st in s.steps]
    by_method: dict[str, list[Any]] = {}
    for c in s.chains:
        by_method.setdefault(c.method, []).append(c)
    if keys:
        out.append("<h3>Decisive evidence after each request</h3><p class='muted'>Bars: the retrain band at that request (it moves as "
                   "more is deleted), with its centre; dots: the method's value, coloured by that request's verdict; crosses: the "
                   "original model, which saw everything.</p>")
    for method, chains in by_method.items():
        series = [(c.seed, [{"label": r["verdict"]["label"], "rows": {row["key"]: row for row in r["verdict"].get("rows", [])}}
                            for r in c.runs] + [None] * (len(steps) - len(c.runs))) for c in chains]
        shown = [k for k in keys if any(r is not None and k in r["rows"] for _, runs in series for r in runs)]
        if not shown:
            continue
        bands = {k: [_step_band(chains, s.steps[i].original, i, k) for i in range(len(steps))] for k in shown}
        out.append(f"<img alt='{esc(method)}: evidence per request' src='data:image/png;base64,"
                   f"{plots.stream_evidence(method, shown, steps, series, original, bands)}'>")
    cost_series = [(f"{c.method}" + (f" (seed {c.seed})" if len(by_method[c.method]) > 1 else ""), c.cumulative("example_passes"),
                    c.cumulative("wall_seconds")) for c in s.chains if c.runs]
    if cost_series:
        out.append("<h3>Cumulative cost</h3>"
                   f"<img alt='cumulative cost per request' src='data:image/png;base64,{plots.stream_cost(steps, cost_series, (passes, wall))}'>")
    return "".join(out)


EVIDENCE_FAMILIES = {
    "classifier": "forget evidence (forget accuracy, membership AUC, MIA efficacy), utility (retain and test accuracy) and robustness "
                  "(relearning attack)",
    "regression": "forget evidence (forget error, residual membership AUC), utility (retain and test error) and robustness "
                  "(relearning attack)",
    "causal_lm": "forget evidence (forget answer probability and ROUGE-L, forget-quality KS statistic vs the retain model, PrivLeak), "
                 "utility (model utility, retain ROUGE-L and truth ratio) and robustness (paraphrase probe, relearning attack)",
}


def _tuning_section(study: Mapping[str, Any]) -> str:
    """How the tuned setting was found: the validation protocol, the search space, the Pareto front (plot and table) and
    the chosen setting, which this experiment then ran once on the real forget set."""
    trials = study.get("trials", [])
    done = [t for t in trials if t.get("state") == "complete"]
    chosen = (study.get("chosen") or {}).get("number")
    validation = study.get("validation", {})
    parts = [f"<h2>Tuning: {esc(study.get('method'))} ({esc(study.get('label'))})</h2>",
             f"<p class='muted'>study <code>{esc(study.get('study'))}</code> · {len(done)} completed of {len(trials)} trial(s)"
             + (f" · {esc(study['stopped'])}" if study.get("stopped") else "") + " · objectives: distance of the evidence to the "
             "retrain band (largest, in band half-widths; 0 = every evidence inside) and example passes, both minimised</p>",
             f"<p>{esc(validation.get('protocol', ''))} Validation forget set here: {esc(validation.get('label'))} "
             f"({esc(validation.get('n_forget'))} examples, {esc(validation.get('n_retain'))} retained).</p>",
             f"<p>Search space ({esc(study.get('space_source'))}): <code>{esc(study.get('space'))}</code></p>"]
    if done:
        parts.append(f"<img src='data:image/png;base64,{plots.pareto_front(trials, study.get('pareto', []), chosen)}'>")
        rows = sorted((t for t in done if t["number"] in set(study.get("pareto", []))), key=lambda t: t["example_passes"])
        parts.append("<table><tr><th>trial</th><th class='l'>setting</th><th>distance (half-widths)</th><th>example passes</th>"
                     "<th>optimizer steps</th><th class='l'>validation verdict</th></tr>" + "".join(
                         f"<tr><td>{t['number']}{' ★ chosen' if t['number'] == chosen else ''}</td><td class='l'><code>{esc(t['params'])}</code></td>"
                         f"<td>{t['band_distance']:.3f}</td><td>{t['example_passes']}</td><td>{esc(t.get('optimizer_steps'))}</td>"
                         f"<td class='l'>{badge(str(t.get('verdict')))}</td></tr>" for t in rows) + "</table>")
    failed = [t for t in trials if t.get("state") == "failed"]
    if failed:
        parts.append("<details><summary>failed trials</summary><ul>" + "".join(
            f"<li>{t['number']}: <code>{esc(t['params'])}</code> — {esc(t.get('error'))}</li>" for t in failed) + "</ul></details>")
    return "".join(parts)


def _modality(summaries: list[Any]) -> str:
    kinds = {s.modality for s in summaries}
    return kinds.pop() if len(kinds) == 1 else "classifier"


def render_report(store: Store, record: Mapping[str, Any]) -> str:
    summaries = summarize(store, record)
    spec = record.get("spec", {})
    body = [f"<h1>unlearnkit report — {esc(record['name'])}</h1>",
            f"<p class='muted'>experiment <code>{esc(record['exp_id'])}</code> · status {esc(record.get('status'))} · device "
            f"{esc(record.get('device'))} · dataset {esc(spec.get('dataset', {}).get('name'))} · model {esc(spec.get('model'))} · "
            f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
            "<p>Verdicts: " + " ".join(badge(x) for x in plots.VERDICT_COLORS) + " — each decided against the spread of several retrained "
            f"models (the noise floor): {EVIDENCE_FAMILIES.get(_modality(summaries), EVIDENCE_FAMILIES['classifier'])}.</p>"]
    if record.get("failures"):
        body.append("<h2>Failures</h2><ul>" + "".join(f"<li>{esc(f)}</li>" for f in record["failures"]) + "</ul>")
    if record.get("skipped"):
        body.append("<p class='muted'>Not applicable (skipped): " + "; ".join(
            f"{esc(s['method'])} on {esc(s['task'])} — {esc(s['reason'])}" for s in record["skipped"]) + "</p>")
    tuning = record.get("tuning")
    for study in ([tuning] if isinstance(tuning, Mapping) else tuning or []):  # one study (unlearnkit tune) or several
        body.append(_tuning_section(study))
    if (stream := stream_summary(store, record)) is not None:
        body.append(_stream_section(stream))
    for s in summaries:
        body.append(f"<h2>{'After' if stream is not None else 'Forget set:'} {esc(s.label)}</h2>")
        if (warning := sanity_warning(s)) is not None:
            body.append(f"<p class='alarm'><b>Not meaningful:</b> {esc(warning)}</p>")
        body.append(_facts(s))
        body.append("<h3>Results and verdicts</h3>")
        body.append(_main_table(s))
        body.append("<h3>Evidence behind each verdict (first seed)</h3>")
        body.append(_evidence_details(s))
        body.append(_plots(s))
    env = record.get("environment", {})
    body.append(f"<p class='muted'>environment: {esc(env)}</p>")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>unlearnkit — {esc(record['name'])}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"


def write_report(store: Store, record: Mapping[str, Any], path: str | Path | None = None) -> Path:
    out = Path(path) if path else store.experiment_dir(record["exp_id"]) / "report.html"
    atomic_write_text(out, render_report(store, record))
    return out
