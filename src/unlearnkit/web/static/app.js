// The comparator's front end: the screening table, A/B selection and the views, drawn from the JSON API.
"use strict";
const state = {runs: [], sort: {key: "experiment", dir: 1}, a: null, b: null, view: "classes", split: "forget", brushed: null};
const $ = id => document.getElementById(id);
// Readiness hook for the browser tests and the benchmark: window.uk.ready is false while the table, a view or a
// threshold redraw is loading; window.uk.timings lists how long each took in the page (ms).
window.uk = {ready: false, pending: 0, view: null, timings: []};
function busy() { window.uk.pending++; window.uk.ready = false; return performance.now(); }
function idle(t0, what) {
  window.uk.timings.push({what, ms: performance.now() - t0});
  if (--window.uk.pending === 0) window.uk.ready = true;
}

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick" || k === "oninput" || k === "onchange") e[k] = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "—" : String(c)));
  return e;
}

async function api(path) {
  const r = await fetch(path);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

const fmt = (v, d = 3) => v === null || v === undefined ? "—" : (typeof v === "number" ? v.toFixed(d) : String(v));
const badge = label => h("span", {class: `v ${String(label || "").replace(/ /g, "-")}`}, label || "—");

// ------------------------------------------------------------------ screening
const COLUMNS = [
  ["A/B", null], ["experiment", r => r.experiment], ["task", r => r.task], ["method", r => r.method], ["params", r => JSON.stringify(r.params)],
  ["seed", r => r.seed === null || r.seed === undefined ? null : String(r.seed)], ["verdict", r => r.verdict], ["passes × retrain", r => r.cost_ratio.example_passes],
  ["CPU × retrain", r => r.cost_ratio.cpu_seconds],
];

function evidenceKeys() {
  const keys = new Set();
  state.runs.forEach(r => Object.keys(r.evidence).forEach(k => keys.add(k)));
  return [...keys];
}

function renderTable() {
  const ev = evidenceKeys();
  const cols = COLUMNS.concat(ev.map(k => [k, r => r.evidence[k]]));
  const head = $("runs").tHead, body = $("runs").tBodies[0];
  head.replaceChildren(h("tr", {}, ...cols.map(([name, get]) => {
    const th = h("th", {class: "l", "data-col": name}, name + (state.sort.key === name ? (state.sort.dir > 0 ? " ▲" : " ▼") : ""));
    if (get) th.onclick = () => { state.sort = {key: name, dir: state.sort.key === name ? -state.sort.dir : 1}; renderTable(); };
    return th;
  })));
  const q = $("filter").value.trim().toLowerCase();
  const get = (cols.find(c => c[0] === state.sort.key) || cols[1])[1];
  const rows = state.runs.filter(r => !q || [r.experiment, r.task, r.method, r.verdict, JSON.stringify(r.params), r.run_id]
      .some(x => String(x || "").toLowerCase().includes(q)))
    .sort((x, y) => { const a = get(x), b = get(y);
      if (a === b) return 0; if (a === null || a === undefined) return 1; if (b === null || b === undefined) return -1;
      return (a < b ? -1 : 1) * state.sort.dir; });
  $("count").textContent = `${rows.length} of ${state.runs.length} runs`;
  body.replaceChildren(...rows.map(r => {
    const pick = which => h("button", {title: `choose as ${which.toUpperCase()}`, "data-pick": which, onclick: () => choose(which, r.run_id)},
                              which.toUpperCase());
    const tr = h("tr", {"data-run": r.run_id, class: r.run_id === state.a ? "sel-a" : r.run_id === state.b ? "sel-b" : ""},
      h("td", {class: "l"}, pick("a"), pick("b")),
      ...cols.slice(1).map(([name, g]) => name === "verdict" ? h("td", {class: "l"}, badge(r.verdict))
        : name === "params" ? h("td", {class: "l p", title: g(r)}, g(r))
        : h("td", {class: typeof g(r) === "number" ? "" : "l"}, typeof g(r) === "number" ? fmt(g(r)) : g(r))));
    tr.title = r.run_id;
    return tr;
  }));
}

function runById(id) { return state.runs.find(r => r.run_id === id); }

function choose(which, id) {
  state[which] = id;
  state.brushed = null;
  const a = runById(state.a), b = runById(state.b);
  const describe = (r, tag) => r ? `${tag}: ${r.method} (seed ${r.seed}, ${r.task}, ${r.verdict})` : `${tag}: —`;
  let text = `${describe(a, "A")} · ${describe(b, "B")}`;
  if (a && b && a.task_fingerprint !== b.task_fingerprint) text += " — different tasks: choose two runs of the same task to compare.";
  $("selection").textContent = text;
  renderTable();
  show(state.view);
}

// ------------------------------------------------------------------ views
async function show(view) {
  state.view = view;
  if (state.a) history.replaceState(null, "", `#a=${state.a}${state.b ? `&b=${state.b}` : ""}&view=${view}`);
  document.querySelectorAll("#tabs button").forEach(b => b.classList.toggle("on", b.dataset.view === view));
  const out = $("view");
  if (!state.a) { out.replaceChildren(h("p", {class: "muted"}, "Choose run A (and B) in the table above.")); return; }
  $("status").textContent = "loading … (the first view of a run computes its analysis once; later views read the cache)";
  const t0 = busy();
  try {
    const a = state.a, b = state.b && runById(state.b) && runById(state.a).task_fingerprint === runById(state.b).task_fingerprint ? state.b : null;
    const nodes = await VIEWS[view](a, b);
    out.replaceChildren(...nodes);
    $("status").textContent = "";
  } catch (e) {
    out.replaceChildren(h("p", {class: "err"}, e.message));
    $("status").textContent = "";
  } finally {
    window.uk.view = view;
    idle(t0, view);
  }
}

function splitPicker(onchange) {
  return h("label", {}, "split ", (() => { const s = h("select", {id: "split", onchange: ev => { state.split = ev.target.value; onchange(); }},
    ...["forget", "retain", "test"].map(x => { const o = h("option", {value: x}, x); if (x === state.split) o.selected = true; return o; }));
    return s; })());
}

const VIEWS = {
  async classes(a, b) {
    const [ca, cb] = await Promise.all([api(`/api/runs/${a}/classes`), b ? api(`/api/runs/${b}/classes`) : null]);
    const sp = ca.splits[state.split], spb = cb && cb.splits[state.split];
    const classes = [...Array(ca.n_classes).keys()];
    const table = h("table", {id: "class-table"}, h("tr", {}, h("th", {}, "class"), h("th", {}, "A accuracy"), h("th", {}, "B accuracy"),
        h("th", {}, "retrain band"), h("th", {}, "original"), h("th", {}, "examples")),
      ...classes.filter(c => sp.class_counts[c] > 0).map(c => h("tr", {"data-class": c}, h("td", {}, c), h("td", {class: "acc-a"}, fmt(sp.class_accuracy[c])),
        h("td", {class: "acc-b"}, spb ? fmt(spb.class_accuracy[c]) : "—"),
        h("td", {}, sp.retrain_band[c] ? `[${fmt(sp.retrain_band[c].min)}, ${fmt(sp.retrain_band[c].max)}]` : "—"),
        h("td", {}, fmt(sp.original ? sp.original[c] : null)), h("td", {}, sp.class_counts[c]))));
    const diff = spb ? spb.matrix.map((row, i) => row.map((v, j) => v - sp.matrix[i][j])) : null;
    return [splitPicker(() => show("classes")),
      h("h3", {}, `Per-class accuracy on the ${state.split} split`),
      h("div", {class: "row"}, classBars(classes, sp.class_accuracy, spb ? spb.class_accuracy : null, sp.retrain_band,
        `accuracy per class (${state.split}); grey: min–max over retrained seeds`), table),
      h("h3", {}, "Prediction matrices (true × predicted, counts)"),
      h("div", {class: "row"}, heatmap(sp.matrix, "A"), ...(spb ? [heatmap(spb.matrix, "B"), heatmap(diff, "B − A (orange: B more, blue: A more)", true)] : []))];
  },

  async instances(a, b) {
    const [ea, eb] = await Promise.all([api(`/api/runs/${a}/embedding`), b ? api(`/api/runs/${b}/embedding`) : null]);
    const holder = h("div", {class: "row", id: "scatters"});
    const info = h("p", {class: "muted", id: "brush-info"}, "Drag a rectangle in either plot: the same examples light up in the other. Click to clear.");
    const draw = () => {
      const onBrush = sel => { state.brushed = sel; draw(); info.textContent = sel ? `${sel.size} examples selected` : "selection cleared"; };
      holder.replaceChildren(scatter(ea.points, `A: PCA of penultimate features (${(ea.explained_variance[0] * 100).toFixed(0)}% + ${(ea.explained_variance[1] * 100).toFixed(0)}% variance)`, state.brushed, onBrush),
        ...(eb ? [scatter(eb.points, `B: PCA of penultimate features (${(eb.explained_variance[0] * 100).toFixed(0)}% + ${(eb.explained_variance[1] * 100).toFixed(0)}% variance)`, state.brushed, onBrush)] : []));
    };
    draw();
    const nodes = [h("h3", {}, "Embedding of a fixed sample of forget, retain and test examples"), info, holder];
    if (b) {
      const ch = await api(`/api/runs/${a}/confidence-changes?against=${b}&split=${state.split}&k=20`);
      nodes.push(splitPicker(() => show("instances")), h("h3", {}, `Examples whose confidence changed most (${state.split}): p(true class) of A − B`),
        h("table", {id: "changes"}, h("tr", {}, ...["id", "class", "A predicts", "B predicts", "A p(true)", "B p(true)", "A − B"].map(x => h("th", {}, x))),
          ...ch.rows.map(r => h("tr", {}, h("td", {}, r.id), h("td", {}, r.label), h("td", {}, r.pred), h("td", {}, r.pred_against),
            h("td", {}, fmt(r.p_true)), h("td", {}, fmt(r.p_true_against)), h("td", {}, fmt(r.delta))))));
    }
    return nodes;
  },

  async layers(a, b) {
    const [ka, kb] = await Promise.all([api(`/api/runs/${a}/cka`), b ? api(`/api/runs/${b}/cka`) : null]);
    return [h("p", {class: "muted"}, `${ka.measure}; against retraining: ${ka.retrain}.`),
      h("div", {class: "row"}, ...["forget", "retain", "test"].map(split => lines(ka.layers, [
        {label: "A vs original", colour: PALETTE.a, values: ka.splits[split].map(x => x.original)},
        {label: "A vs retrain", colour: PALETTE.a, dash: "5 3", values: ka.splits[split].map(x => x.retrain_mean)},
        ...(kb ? [{label: "B vs original", colour: PALETTE.b, values: kb.splits[split].map(x => x.original)},
                  {label: "B vs retrain", colour: PALETTE.b, dash: "5 3", values: kb.splits[split].map(x => x.retrain_mean)}] : []),
      ], `${split}: similarity of each layer`)))];
  },

  async attack(a, b) {
    const first = await api(`/api/runs/${a}/attack`);
    const hi = first.histogram.edges[first.histogram.edges.length - 1];
    const wrap = h("div", {}), shown = h("span", {id: "threshold-value"}, fmt(first.threshold, 4));
    const slider = h("input", {type: "range", id: "threshold", min: 0, max: hi, step: hi / 400, value: Math.min(first.threshold, hi)});
    let latest = 0;
    const redraw = async t => {
      const seq = ++latest;
      const [xa, xb] = await Promise.all([api(`/api/runs/${a}/attack?threshold=${t}`), b ? api(`/api/runs/${b}/attack?threshold=${t}`) : null]);
      if (seq !== latest) return;  // a later move of the slider is already on its way: never show an older threshold's numbers
      const panel = (x, tag) => {
        const frac = arr => { const n = arr.reduce((s, v) => s + v, 0) || 1; return arr.map(v => v / n); };
        return h("div", {class: `attack-${tag}`},
          histogram(x.histogram.edges, [{label: "forget (members)", colour: PALETTE.forget, frac: frac(x.histogram.forget)},
                                        {label: "non-members", colour: PALETTE.test, frac: frac(x.histogram.test)}],
                    x.threshold, `${tag.toUpperCase()}: membership score distributions`, "loss (cross-entropy, nats)"),
          h("p", {class: "big"}, `TPR `, h("span", {class: "tpr"}, fmt(x.tpr)), `  FPR `, h("span", {class: "fpr"}, fmt(x.fpr)),
            `  (attack advantage ${fmt(x.advantage)}, AUC ${fmt(x.auc)})`),
          h("p", {class: "muted"}, `Non-members: ${x.non_members}. ${x.rule}; forget members called members: ${Math.round(x.tpr * x.n.forget)} of ${x.n.forget}. ` +
            (x.privacy_score ? `Comparator privacy score (stored): ${fmt(x.privacy_score.values.score)} (1 = indistinguishable from retraining).` : "No stored privacy score.")));
      };
      wrap.replaceChildren(panel(xa, "a"), ...(xb ? [panel(xb, "b")] : []));
      shown.textContent = fmt(xa.threshold, 4);
    };
    slider.oninput = () => { const t0 = busy(); redraw(slider.value).finally(() => idle(t0, "threshold")); };
    await redraw(first.threshold);
    return [h("label", {}, "threshold (loss) ", slider, " ", shown),
      h("p", {class: "muted"}, "Starts at the threshold of the largest TPR − FPR for A."), wrap];
  },

  async evidence(a, b) {
    const runs = await Promise.all([api(`/api/runs/${a}/evidence`), b ? api(`/api/runs/${b}/evidence`) : null]);
    return runs.filter(Boolean).map((e, i) => h("div", {},
      h("h3", {}, `${i ? "B" : "A"}: `, badge(e.label), ` ${e.display || ""}`),
      h("ul", {}, ...e.reasons.map(r => h("li", {}, r))),
      h("table", {}, h("tr", {}, ...["evidence", "role", "value", "retrain band", "status", "margin"].map(x => h("th", {class: "l"}, x))),
        ...e.rows.map(r => h("tr", {}, h("td", {class: "l"}, r.key), h("td", {class: "l"}, r.role), h("td", {}, fmt(r.value, 4)),
          h("td", {}, `[${fmt(r.lo, 4)}, ${fmt(r.hi, 4)}]`), h("td", {class: "l"}, r.status), h("td", {}, fmt(r.margin, 2))))),
      h("p", {class: "muted"}, e.method || ""),
      h("p", {class: "muted"}, "Stored strong evidence: " + (Object.keys(e.strong).join(", ") || "none")),
      ...relearnChart(e)));
  },
};

function relearnChart(e) {
  const c = e.strong.relearn && e.strong.relearn.curves && e.strong.relearn.curves.relearn;
  if (!c || !c.step) return [];
  return [lines(c.step.map(v => Math.round(v)), [{label: "this model", colour: PALETTE.a, values: c.accuracy},
                                                  {label: "retrained (mean)", colour: PALETTE.retrain, dash: "5 3", values: c.retrained}],
                "relearning attack: forget-set accuracy while fine-tuning on it", "fine-tuning step", "forget accuracy")];
}

async function main() {
  document.querySelectorAll("#tabs button").forEach(b => b.onclick = () => show(b.dataset.view));
  $("filter").oninput = renderTable;
  const t0 = busy();
  try {
    state.runs = (await api("/api/runs")).runs;
    renderTable();
    // a link may name the pair and the view: #a=RUN&b=RUN&view=attack
    const q = new URLSearchParams(location.hash.slice(1));
    if (q.get("view") && VIEWS[q.get("view")]) state.view = q.get("view");
    if (q.get("b") && runById(q.get("b"))) state.b = q.get("b");
    if (q.get("a") && runById(q.get("a"))) choose("a", q.get("a"));
  } catch (e) {
    $("count").textContent = e.message;
  } finally {
    idle(t0, "runs");
  }
}
main();
