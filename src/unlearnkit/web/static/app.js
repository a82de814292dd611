// The comparator's front end: the screening table, A/B selection and the views, drawn from the JSON API.
"use strict";
const state = {runs: [], sort: {key: "experiment", dir: 1}, a: null, b: null, view: "classes", split: "forget", brushed: null,
               projection: "pca", score: "loss"};
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
  if (state.runs.some(r => r.stream)) cols.push(["request", r => r.stream ? `${r.stream.request} of ${r.stream.of}` : null]);
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
  const describe = (r, tag) => r ? `${tag}: ${r.method} (seed ${r.seed}, ${r.task}${r.stream ? `, after request ${r.stream.request} of ${r.stream.of}` : ""}, ${r.verdict})` : `${tag}: —`;
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

const isLM = id => { const r = runById(id); return !!r && r.modality === "causal_lm"; };
const splitName = (x, lm) => lm && x === "test" ? "holdout" : x;

// what the views compare with what (a request stream's step, a missing reference), from the API's compared_with
function comparedNote(c) {
  if (!c) return [];
  return [h("p", {class: "muted compared"}, `Compared: ${c.text}.` + (c.missing.length ? ` Missing: ${c.missing.join("; ")}.` : ""))];
}

function splitPicker(onchange, lm) {
  return h("label", {}, "split ", (() => { const s = h("select", {id: "split", onchange: ev => { state.split = ev.target.value; onchange(); }},
    ...["forget", "retain", "test"].map(x => { const o = h("option", {value: x}, splitName(x, lm)); if (x === state.split) o.selected = true; return o; }));
    return s; })());
}

const VIEWS = {
  async classes(a, b) {
    const [ca, cb] = await Promise.all([api(`/api/runs/${a}/classes`), b ? api(`/api/runs/${b}/classes`) : null]);
    if (ca.modality === "causal_lm") return lmClasses(ca, cb);
    const sp = ca.splits[state.split], spb = cb && cb.splits[state.split];
    const classes = [...Array(ca.n_classes).keys()];
    const table = h("table", {id: "class-table"}, h("tr", {}, h("th", {}, "class"), h("th", {}, "A accuracy"), h("th", {}, "B accuracy"),
        h("th", {}, "retrain band"), h("th", {}, "original"), h("th", {}, "examples")),
      ...classes.filter(c => sp.class_counts[c] > 0).map(c => h("tr", {"data-class": c}, h("td", {}, c), h("td", {class: "acc-a"}, fmt(sp.class_accuracy[c])),
        h("td", {class: "acc-b"}, spb ? fmt(spb.class_accuracy[c]) : "—"),
        h("td", {}, sp.retrain_band[c] ? `[${fmt(sp.retrain_band[c].min)}, ${fmt(sp.retrain_band[c].max)}]` : "—"),
        h("td", {}, fmt(sp.original ? sp.original[c] : null)), h("td", {}, sp.class_counts[c]))));
    const diff = spb ? spb.matrix.map((row, i) => row.map((v, j) => v - sp.matrix[i][j])) : null;
    return [splitPicker(() => show("classes")), ...comparedNote(ca.compared_with),
      h("h3", {}, `Per-class accuracy on the ${state.split} split`),
      h("div", {class: "row"}, classBars(classes, sp.class_accuracy, spb ? spb.class_accuracy : null, sp.retrain_band,
        `accuracy per class (${state.split}); grey: min–max over retrained seeds`), table),
      h("h3", {}, "Prediction matrices (true × predicted, counts)"),
      h("div", {class: "row"}, heatmap(sp.matrix, "A"), ...(spb ? [heatmap(spb.matrix, "B"), heatmap(diff, "B − A (orange: B more, blue: A more)", true)] : []))];
  },

  async instances(a, b) {
    const lm = isLM(a), q = `?projection=${state.projection}`;
    const [ea, eb] = await Promise.all([api(`/api/runs/${a}/embedding${q}`), b ? api(`/api/runs/${b}/embedding${q}`) : null]);
    const holder = h("div", {class: "row", id: "scatters"});
    const info = h("p", {class: "muted", id: "brush-info"}, "Drag a rectangle in either plot: the same examples light up in the other. Click to clear.");
    const what = lm ? "mean hidden state" : "penultimate features";
    const title = (e, tag) => e.method === "UMAP" ? `${tag}: UMAP of ${what} (${e.n_neighbors} neighbours, seed ${e.seed})`
      : `${tag}: PCA of ${what} (${(e.explained_variance[0] * 100).toFixed(0)}% + ${(e.explained_variance[1] * 100).toFixed(0)}% variance)`;
    const axis = e => e.method === "UMAP" ? "UMAP" : "PC";
    const draw = () => {
      const onBrush = sel => { state.brushed = sel; draw(); info.textContent = sel ? `${sel.size} examples selected` : "selection cleared"; };
      holder.replaceChildren(scatter(ea.points, title(ea, "A"), state.brushed, onBrush, axis(ea)),
        ...(eb ? [scatter(eb.points, title(eb, "B"), state.brushed, onBrush, axis(eb))] : []));
    };
    draw();
    const picker = h("label", {}, "projection ", (() => { const s = h("select", {id: "projection", onchange: ev => { state.projection = ev.target.value; show("instances"); }},
      ...[["pca", "PCA"], ["umap", "UMAP (computed once per run)"]].map(([v, t]) => { const o = h("option", {value: v}, t); if (v === state.projection) o.selected = true; return o; }));
      return s; })());
    const nodes = [h("h3", {}, `Embedding of a fixed sample of forget, retain and ${lm ? "holdout" : "test"} examples`), picker,
      ...(ea.features ? [h("p", {class: "muted"}, `Features: ${ea.features}.`)] : []), info, holder];
    if (b) {
      const ch = await api(`/api/runs/${a}/confidence-changes?against=${b}&split=${state.split}&k=20`);
      nodes.push(splitPicker(() => show("instances"), lm));
      if (ch.modality === "causal_lm") {
        nodes.push(h("h3", {}, `Items whose answer probability changed most (${splitName(state.split, true)}): A − B`),
          h("table", {id: "changes"}, h("tr", {}, ...["id", "profile", "question", "gold answer", "A's greedy answer", "B's greedy answer",
                                                      "A p(answer)", "B p(answer)", "A − B", "A ROUGE-L", "B ROUGE-L"].map(x => h("th", {class: "l"}, x))),
            ...ch.rows.map(r => h("tr", {}, h("td", {}, r.id), h("td", {class: "l"}, r.group), h("td", {class: "l txt"}, r.question),
              h("td", {class: "l txt"}, r.gold), h("td", {class: "l txt ans-a"}, r.answer), h("td", {class: "l txt ans-b"}, r.answer_against),
              h("td", {}, fmt(r.p_true)), h("td", {}, fmt(r.p_true_against)), h("td", {}, fmt(r.delta)),
              h("td", {}, fmt(r.rouge_l)), h("td", {}, fmt(r.rouge_l_against))))));
      } else {
        const head = [ch.images ? "example (id)" : "id", "class", "A predicts", "B predicts", "A p(true)", "B p(true)", "A − B"];
        nodes.push(h("h3", {}, `Examples whose confidence changed most (${state.split}): p(true class) of A − B`),
          h("table", {id: "changes"}, h("tr", {}, ...head.map(x => h("th", {}, x))),
            ...ch.rows.map(r => h("tr", {}, h("td", {}, ...(ch.images ? [h("img", {class: "ex-img", src: r.image, alt: ""})] : []), r.id), h("td", {}, r.label), h("td", {}, r.pred), h("td", {}, r.pred_against),
              h("td", {}, fmt(r.p_true)), h("td", {}, fmt(r.p_true_against)), h("td", {}, fmt(r.delta))))));
      }
    }
    return nodes;
  },

  async layers(a, b) {
    const [ka, kb] = await Promise.all([api(`/api/runs/${a}/cka`), b ? api(`/api/runs/${b}/cka`) : null]);
    const lm = isLM(a);
    return [...comparedNote(ka.compared_with), h("p", {class: "muted"}, `${ka.measure}; against retraining: ${ka.retrain}.` +
        (lm ? " Language models: each decoder block's output hidden state, mean over the item's tokens." : "")),
      h("div", {class: "row"}, ...["forget", "retain", "test"].map(split => lines(ka.layers, [
        {label: "A vs original", colour: PALETTE.a, values: ka.splits[split].map(x => x.original)},
        {label: "A vs retrain", colour: PALETTE.a, dash: "5 3", values: ka.splits[split].map(x => x.retrain_mean)},
        ...(kb ? [{label: "B vs original", colour: PALETTE.b, values: kb.splits[split].map(x => x.original)},
                  {label: "B vs retrain", colour: PALETTE.b, dash: "5 3", values: kb.splits[split].map(x => x.retrain_mean)}] : []),
      ], `${splitName(split, lm)}: similarity of each ${lm ? "decoder block" : "layer"}`, lm ? "decoder block" : "layer")))];
  },

  async attack(a, b) {
    const sq = `score=${isLM(a) ? state.score : "loss"}`;
    const first = await api(`/api/runs/${a}/attack?${sq}`);
    const hi = first.histogram.edges[first.histogram.edges.length - 1];
    const wrap = h("div", {}), shown = h("span", {id: "threshold-value"}, fmt(first.threshold, 4));
    const slider = h("input", {type: "range", id: "threshold", min: 0, max: hi, step: hi / 400, value: Math.min(first.threshold, hi)});
    let latest = 0;
    const redraw = async t => {
      const seq = ++latest;
      const [xa, xb] = await Promise.all([api(`/api/runs/${a}/attack?threshold=${t}&${sq}`), b ? api(`/api/runs/${b}/attack?threshold=${t}&${sq}`) : null]);
      if (seq !== latest) return;  // a later move of the slider is already on its way: never show an older threshold's numbers
      const panel = (x, tag) => {
        const frac = arr => { const n = arr.reduce((s, v) => s + v, 0) || 1; return arr.map(v => v / n); };
        return h("div", {class: `attack-${tag}`},
          histogram(x.histogram.edges, [{label: "forget (members)", colour: PALETTE.forget, frac: frac(x.histogram.forget)},
                                        {label: "non-members", colour: PALETTE.test, frac: frac(x.histogram.test)}],
                    x.threshold, `${tag.toUpperCase()}: membership score distributions`, isLM(a) ? x.score : "loss (cross-entropy, nats)"),
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
    const scores = first.scores || ["loss"];
    const picker = scores.length < 2 ? [] : [h("label", {}, "membership score ", (() => { const s = h("select", {id: "score", onchange: ev => { state.score = ev.target.value; show("attack"); }},
      ...scores.map(v => { const o = h("option", {value: v}, v === "min_k" ? "Min-K% NLL" : "loss (answer NLL)"); if (v === state.score) o.selected = true; return o; }));
      return s; })()), " "];
    return [...picker, h("label", {}, `threshold (${first.score_name === "min_k" ? "Min-K% NLL" : "loss"}) `, slider, " ", shown),
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

// a language model's class level: per profile, answer probability and ROUGE-L recall of A and B with the retrain band
function lmClasses(ca, cb) {
  const sp = ca.splits[state.split], spb = cb && cb.splits[state.split];
  const same = spb && JSON.stringify(spb.groups) === JSON.stringify(sp.groups);
  const col = (s, key) => s && same ? s[key] : null;
  const band = key => sp.retrain_band[key].map(b => b ? {min: b.min, max: b.max} : null);
  const where = splitName(state.split, true);
  const table = h("table", {id: "profile-table"}, h("tr", {}, ...["profile", "items", "A answer prob", "B answer prob", "retrain band", "original",
                                                                   "A ROUGE-L", "B ROUGE-L", "retrain band", "original"].map(x => h("th", {}, x))),
    ...sp.groups.map((g, i) => h("tr", {"data-profile": g}, h("td", {class: "l"}, sp.group_names[i]), h("td", {}, sp.n_items[i]),
      h("td", {class: "acc-a"}, fmt(sp.answer_prob[i])), h("td", {class: "acc-b"}, fmt(col(spb, "answer_prob") ? spb.answer_prob[i] : null)),
      h("td", {}, sp.retrain_band.answer_prob[i] ? `[${fmt(sp.retrain_band.answer_prob[i].min)}, ${fmt(sp.retrain_band.answer_prob[i].max)}]` : "—"),
      h("td", {}, fmt(sp.original ? sp.original.answer_prob[i] : null)),
      h("td", {class: "rouge-a"}, fmt(sp.rouge_l[i])), h("td", {class: "rouge-b"}, fmt(col(spb, "rouge_l") ? spb.rouge_l[i] : null)),
      h("td", {}, sp.retrain_band.rouge_l[i] ? `[${fmt(sp.retrain_band.rouge_l[i].min)}, ${fmt(sp.retrain_band.rouge_l[i].max)}]` : "—"),
      h("td", {}, fmt(sp.original ? sp.original.rouge_l[i] : null)))));
  return [splitPicker(() => show("classes"), true), ...comparedNote(ca.compared_with),
    h("p", {class: "muted"}, `Means over the ${sp.label} (${sp.n} items): A answer probability ${fmt(sp.mean.answer_prob)}, ROUGE-L ${fmt(sp.mean.rouge_l)}` +
      (spb ? `; B ${fmt(spb.mean.answer_prob)}, ${fmt(spb.mean.rouge_l)}` : "") + `. Grey: min–max over ${sp.n_retrained} retrained model(s).`),
    h("h3", {}, `Per-profile answer probability and ROUGE-L on the ${where} split`),
    h("div", {class: "row"},
      classBars(sp.group_names.map(n => n.replace("profile ", "")), sp.answer_prob, col(spb, "answer_prob"), band("answer_prob"),
                `answer probability per profile (${where})`, "profile", "answer probability exp(−NLL/token)"),
      classBars(sp.group_names.map(n => n.replace("profile ", "")), sp.rouge_l, col(spb, "rouge_l"), band("rouge_l"),
                `ROUGE-L recall of the greedy answer (${where})`, "profile", "ROUGE-L recall")),
    table];
}

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
