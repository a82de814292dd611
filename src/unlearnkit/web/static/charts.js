// Plain SVG charts for the comparator (no library): bars with bands, heatmaps, histograms, scatter with a brush, lines.
// Colours: the Okabe–Ito colour-blind-safe palette.
"use strict";
const PALETTE = {a: "#0072B2", b: "#E69F00", band: "#BBBBBB", forget: "#D55E00", retain: "#009E73", test: "#56B4E9",
                 original: "#000000", retrain: "#CC79A7"};
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function frame(width, height, m) {
  const svg = el("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "img"});
  return {svg, x0: m.l, x1: width - m.r, y0: height - m.b, y1: m.t};
}

function linear(d0, d1, r0, r1) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return v => r0 + (v - d0) * k;
}

function axes(f, sx, sy, xTicks, yTicks, xLabel, yLabel, xFmt, yFmt) {
  const g = el("g", {class: "axis"}, f.svg);
  el("line", {x1: f.x0, x2: f.x1, y1: f.y0, y2: f.y0}, g);
  el("line", {x1: f.x0, x2: f.x0, y1: f.y0, y2: f.y1}, g);
  for (const t of xTicks) {
    el("line", {x1: sx(t), x2: sx(t), y1: f.y0, y2: f.y0 + 4}, g);
    el("text", {x: sx(t), y: f.y0 + 15, "text-anchor": "middle"}, g, xFmt ? xFmt(t) : t);
  }
  for (const t of yTicks) {
    el("line", {x1: f.x0 - 4, x2: f.x0, y1: sy(t), y2: sy(t)}, g);
    el("text", {x: f.x0 - 6, y: sy(t) + 4, "text-anchor": "end"}, g, yFmt ? yFmt(t) : t);
  }
  el("text", {x: (f.x0 + f.x1) / 2, y: f.y0 + 32, "text-anchor": "middle"}, g, xLabel);
  el("text", {x: 12, y: (f.y0 + f.y1) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(f.y0 + f.y1) / 2})`}, g, yLabel);
}

function ticks(lo, hi, n) {
  const out = [];
  for (let i = 0; i <= n; i++) out.push(lo + (hi - lo) * i / n);
  return out;
}

function legend(svg, x, y, items) {
  items.forEach(([label, colour], i) => {
    el("rect", {x, y: y + i * 15 - 9, width: 10, height: 10, fill: colour}, svg);
    el("text", {x: x + 14, y: y + i * 15}, svg, label);
  });
}

// per-class accuracy of A and B with the retrain band (min–max over retrained seeds) per class
function classBars(classes, a, b, band, title, xLabel = "true class", yLabel = "accuracy (fraction correct)") {
  const f = frame(620, 280, {l: 50, r: 110, t: 24, b: 42});
  el("text", {x: f.x0, y: 14, class: "title"}, f.svg, title);
  const n = classes.length, w = (f.x1 - f.x0) / n;
  const sx = i => f.x0 + w * i, sy = linear(0, 1, f.y0, f.y1);
  classes.forEach((c, i) => {
    const bd = band[i];
    if (bd) el("rect", {x: sx(i) + 2, width: w - 4, y: sy(bd.max), height: Math.max(1.5, sy(bd.min) - sy(bd.max)), fill: PALETTE.band,
                        "data-band": `${bd.min}-${bd.max}`}, f.svg);
    [[a[i], PALETTE.a, 0.2], [b ? b[i] : null, PALETTE.b, 0.52]].forEach(([v, colour, off]) => {
      if (v === null || v === undefined) return;
      const r = el("rect", {x: sx(i) + w * off, width: w * 0.28, y: sy(v), height: sy(0) - sy(v), fill: colour}, f.svg);
      el("title", {}, r, `${xLabel} ${c}: ${v.toFixed(3)}`);
    });
  });
  axes(f, i => sx(i) + w / 2, sy, classes.map((_, i) => i), ticks(0, 1, 5), xLabel, yLabel,
       i => classes[i], v => v.toFixed(1));
  legend(f.svg, f.x1 + 10, 40, [["A", PALETTE.a], ["B", PALETTE.b], ["retrain band", PALETTE.band]]);
  return f.svg;
}

// a true × predicted matrix as a heatmap; diverging (B−A) when signed
function heatmap(matrix, title, signed) {
  const n = matrix.length, cell = Math.min(26, 240 / n);
  const f = frame(60 + n * cell + 20, 60 + n * cell + 20, {l: 50, r: 20, t: 26, b: 44});
  el("text", {x: f.x0, y: 14}, f.svg, title);
  const flat = matrix.flat(), max = Math.max(1, ...flat.map(Math.abs));
  matrix.forEach((row, i) => row.forEach((v, j) => {
    let fill;
    if (signed) {
      const t = Math.min(1, Math.abs(v) / max);
      fill = v >= 0 ? `rgba(230,159,0,${t})` : `rgba(0,114,178,${t})`;
    } else fill = `rgba(0,114,178,${v / max})`;
    const r = el("rect", {x: f.x0 + j * cell, y: f.y1 + i * cell, width: cell - 1, height: cell - 1, fill, stroke: "#eee"}, f.svg);
    el("title", {}, r, `true ${i}, predicted ${j}: ${v}`);
    if (cell >= 18 && v !== 0) el("text", {x: f.x0 + j * cell + cell / 2, y: f.y1 + i * cell + cell / 2 + 4, "text-anchor": "middle",
                                           style: "font-size:9px"}, f.svg, v);
  }));
  el("text", {x: f.x0 + n * cell / 2, y: f.y1 + n * cell + 30, "text-anchor": "middle"}, f.svg, "predicted class");
  el("text", {x: 14, y: f.y1 + n * cell / 2, transform: `rotate(-90 14 ${f.y1 + n * cell / 2})`, "text-anchor": "middle"}, f.svg, "true class");
  for (let i = 0; i < n; i++) {
    el("text", {x: f.x0 - 4, y: f.y1 + i * cell + cell / 2 + 4, "text-anchor": "end"}, f.svg, i);
    el("text", {x: f.x0 + i * cell + cell / 2, y: f.y1 + n * cell + 12, "text-anchor": "middle"}, f.svg, i);
  }
  return f.svg;
}

// two overlaid histograms (counts per bin) with a vertical threshold line
function histogram(edges, series, threshold, title, xLabel) {
  const f = frame(560, 250, {l: 50, r: 120, t: 24, b: 42});
  el("text", {x: f.x0, y: 14}, f.svg, title);
  const top = Math.max(1e-9, ...series.flatMap(s => s.frac));  // fractions: the tallest bar reaches the top
  const sx = linear(edges[0], edges[edges.length - 1], f.x0, f.x1), sy = linear(0, top, f.y0, f.y1);
  for (const s of series) {
    s.frac.forEach((v, i) => el("rect", {x: sx(edges[i]), width: Math.max(0.5, sx(edges[i + 1]) - sx(edges[i]) - 0.5), y: sy(v),
                                         height: sy(0) - sy(v), fill: s.colour, "fill-opacity": 0.55}, f.svg));
  }
  const tx = sx(Math.min(threshold, edges[edges.length - 1]));
  el("line", {x1: tx, x2: tx, y1: f.y0, y2: f.y1, stroke: "#000", "stroke-width": 2, "stroke-dasharray": "4 2", class: "threshold"}, f.svg);
  axes(f, sx, sy, ticks(edges[0], edges[edges.length - 1], 5), ticks(0, top, 4), xLabel, "fraction of examples",
       v => v.toFixed(2), v => v.toFixed(2));
  legend(f.svg, f.x1 + 10, 40, series.map(s => [s.label, s.colour]).concat([["threshold", "#000"]]));
  return f.svg;
}

// scatter of the embedding; onBrush(set of "split:id" keys or null) is called when a rectangle is drawn
function scatter(points, title, selected, onBrush, axisName = "PC") {
  const f = frame(420, 380, {l: 40, r: 14, t: 24, b: 40});
  el("text", {x: f.x0, y: 14}, f.svg, title);
  const xs = points.map(p => p.x), ys = points.map(p => p.y);
  const pad = (lo, hi) => [lo - (hi - lo) * 0.04 - 1e-9, hi + (hi - lo) * 0.04 + 1e-9];
  const [xl, xh] = pad(Math.min(...xs), Math.max(...xs)), [yl, yh] = pad(Math.min(...ys), Math.max(...ys));
  const sx = linear(xl, xh, f.x0, f.x1), sy = linear(yl, yh, f.y0, f.y1);
  axes(f, sx, sy, ticks(xl, xh, 4), ticks(yl, yh, 4), `${axisName} 1`, `${axisName} 2`, v => v.toFixed(1), v => v.toFixed(1));
  const shape = {forget: "forget", retain: "retain", test: "test"};
  for (const p of points) {
    const key = `${p.split}:${p.id}`, on = !selected || selected.has(key);
    const c = el("circle", {cx: sx(p.x), cy: sy(p.y), r: on && selected ? 3.6 : 2.6, fill: PALETTE[shape[p.split]],
                            "fill-opacity": on ? 0.85 : 0.12, "data-key": key}, f.svg);
    el("title", {}, c, p.group !== undefined
      ? `${p.split} #${p.id}: ${p.group}, answer probability ${p.p_true === null ? "—" : p.p_true.toFixed(3)}`
      : `${p.split} #${p.id}: class ${p.label}, predicted ${p.pred}, p(true) ${p.p_true.toFixed(3)}`);
  }
  legend(f.svg, f.x1 - 60, f.y1 + 10, [["forget", PALETTE.forget], ["retain", PALETTE.retain], ["test", PALETTE.test]]);
  let start = null, rect = null;
  const pos = ev => { const b = f.svg.getBoundingClientRect(); return [ev.clientX - b.left, ev.clientY - b.top]; };
  f.svg.addEventListener("mousedown", ev => { start = pos(ev); rect = el("rect", {fill: "#000", "fill-opacity": 0.08, stroke: "#000", class: "brush"}, f.svg); });
  f.svg.addEventListener("mousemove", ev => {
    if (!start) return;
    const [x, y] = pos(ev);
    Object.entries({x: Math.min(x, start[0]), y: Math.min(y, start[1]), width: Math.abs(x - start[0]), height: Math.abs(y - start[1])})
      .forEach(([k, v]) => rect.setAttribute(k, v));
  });
  f.svg.addEventListener("mouseup", ev => {
    if (!start) return;
    const [x, y] = pos(ev), [ax, ay] = start;
    start = null;
    if (Math.abs(x - ax) < 3 && Math.abs(y - ay) < 3) { onBrush(null); return; }
    const inside = points.filter(p => { const px = sx(p.x), py = sy(p.y);
      return px >= Math.min(x, ax) && px <= Math.max(x, ax) && py >= Math.min(y, ay) && py <= Math.max(y, ay); });
    onBrush(new Set(inside.map(p => `${p.split}:${p.id}`)));
  });
  return f.svg;
}

// CKA per layer: one line per series, y in [0, 1]
function lines(layers, series, title, xLabel = "layer", yLabel = "linear CKA") {
  const f = frame(520, 260, {l: 50, r: 150, t: 24, b: 42});
  el("text", {x: f.x0, y: 14}, f.svg, title);
  const sx = linear(0, Math.max(1, layers.length - 1), f.x0 + 20, f.x1 - 20), sy = linear(0, 1, f.y0, f.y1);
  for (const s of series) {
    const pts = s.values.map((v, i) => v === null ? null : [sx(i), sy(v)]).filter(Boolean);
    if (pts.length > 1) el("polyline", {points: pts.map(p => p.join(",")).join(" "), fill: "none", stroke: s.colour, "stroke-width": 2,
                                         "stroke-dasharray": s.dash || ""}, f.svg);
    pts.forEach(p => el("circle", {cx: p[0], cy: p[1], r: 3, fill: s.colour}, f.svg));
  }
  axes(f, sx, sy, layers.map((_, i) => i), ticks(0, 1, 5), xLabel, yLabel, i => layers[i], v => v.toFixed(1));
  legend(f.svg, f.x1 + 10, 40, series.map(s => [s.label, s.colour]));
  return f.svg;
}
