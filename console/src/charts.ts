// Small SVG charts drawn from the stats API's per-minute series. Built with
// DOM calls (no markup strings) so the strict CSP needs no exception.

import { h, svg } from "./dom.ts";

export interface Line {
  name: string;
  cls: string;
  values: Array<number | null>;
}

const W = 600;
const H = 160;
const PAD = { l: 60, r: 8, t: 10, b: 22 };

function maxOf(lines: Line[]): number {
  let m = 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > m) m = v;
  return m;
}

function niceMax(m: number): number {
  if (m <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(m)));
  for (const f of [1, 2, 5, 10]) if (f * p >= m) return f * p;
  return 10 * p;
}

function clock(t: number): string {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** A line chart (`bars`: a bar chart) over minute starts `times`. */
export function chart(
  title: string,
  times: number[],
  lines: Line[],
  unit: string,
  bars = false,
): HTMLElement {
  const top = niceMax(maxOf(lines));
  const n = Math.max(times.length, 1);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const x = (i: number) => PAD.l + (n === 1 ? iw / 2 : (i * iw) / (n - 1));
  const y = (v: number) => PAD.t + ih - (v / top) * ih;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const label = `${title}: ` + lines.map((l) => {
    const vals = l.values.filter((v): v is number => v !== null);
    const total = vals.reduce((a, b) => a + b, 0);
    return bars ? `${l.name} ${total} in all` : `${l.name} up to ${Math.max(0, ...vals)} ${unit}`;
  }).join(", ");
  root.setAttribute("aria-label", label);
  for (const frac of [0, 0.5, 1]) {
    const gy = y(top * frac);
    root.appendChild(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: gy, y2: gy, class: "grid" }));
    const t = svg("text", { x: PAD.l - 4, y: gy + 4, class: "axis", "text-anchor": "end" });
    t.textContent = `${+(top * frac).toFixed(2)}${frac === 1 && unit ? " " + unit : ""}`;
    root.appendChild(t);
  }
  if (times.length > 0) {
    for (const [i, anchor] of [[0, "start"], [times.length - 1, "end"]] as const) {
      const t = svg("text", { x: x(i), y: H - 4, class: "axis", "text-anchor": anchor });
      t.textContent = clock(times[i]);
      root.appendChild(t);
    }
  }
  const bw = Math.max(1, iw / n / (lines.length + 0.5));
  lines.forEach((l, li) => {
    if (bars) {
      l.values.forEach((v, i) => {
        if (!v) return;
        const bx = x(i) - (bw * lines.length) / 2 + li * bw;
        root.appendChild(svg("rect", {
          x: bx,
          y: y(v),
          width: Math.max(bw - 0.5, 1),
          height: Math.max(y(0) - y(v), 1),
          class: l.cls,
        }));
      });
    } else {
      let d = "";
      let pen = false;
      l.values.forEach((v, i) => {
        if (v === null) {
          pen = false;
          return;
        }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (d) root.appendChild(svg("path", { d, class: `line ${l.cls}` }));
      l.values.forEach((v, i) => {
        if (v !== null) root.appendChild(svg("circle", { cx: x(i), cy: y(v), r: 2, class: l.cls }));
      });
    }
  });
  const legend = h("ul", { class: "legend" });
  for (const l of lines) {
    legend.appendChild(h("li", {}, h("span", { class: `swatch ${l.cls}` }), l.name));
  }
  return h("figure", { class: "chart-box" }, h("figcaption", { text: title }), root, legend);
}

/** A tiny calls/errors chart for the function list. */
export function sparkline(calls: number[], errors: number[]): SVGElement {
  const w = 120;
  const hgt = 28;
  const top = Math.max(1, ...calls, ...errors);
  const n = Math.max(calls.length, 2);
  const pts = (vals: number[]) =>
    vals.map((v, i) => `${((i * w) / (n - 1)).toFixed(1)},${(hgt - 2 - (v / top) * (hgt - 4)).toFixed(1)}`)
      .join(" ");
  const root = svg("svg", { viewBox: `0 0 ${w} ${hgt}`, class: "spark", role: "img" });
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
  root.setAttribute(
    "aria-label",
    `last hour: ${sum(calls)} calls, ${sum(errors)} errors`,
  );
  root.appendChild(svg("polyline", { points: pts(calls), class: "calls" }));
  root.appendChild(svg("polyline", { points: pts(errors), class: "errors" }));
  return root;
}
