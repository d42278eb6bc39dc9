"""The dashboard on the console page: stats over time drawn as SVG by a few lines of script.

Three ASCII byte strings that `page.py` splices into its one page, so the page stays one
self-contained document (no library, no CDN: it works on an air-gapped host):
- `STYLE`: the CSS of the charts, the range switch and today's totals;
- `MARKUP`: the section above the debug log;
- `SCRIPT`: plain JavaScript that takes the stats reports pushed by `<page>/api/stream`
  (the JSON of `<page>/api/stats`, documented in docs/extensions.md) and draws connections
  and messages per minute over the last 1, 6 or 24 hours, messages per UTC day over 30
  days, and today's totals.

Contract with the page's own script: it defines `$` and `app`, calls `statsReset()`
whenever it starts over (sign-in, app switch) and `statsApply(report)` with each `stats`
event of the stream: the whole report first, then the current minute and today. The page
keeps at most 1440 minutes and 30 days, and redraws in place: a page left open for a day
does not grow.

Every chart is an `<svg>` with `data-window` (minutes or days shown), `data-points` (how many
of them hold data, gaps excluded) and `data-max` (its highest value, or highest stack of
bars), which the headless-Chromium test reads.
"""

from __future__ import annotations

STYLE = b"""
.wide { grid-column:1 / -1; }
.range { display:flex; gap:2px; }
.range button { padding:0 8px; font-size:11px; line-height:18px; text-transform:none;
  letter-spacing:0; background:#fff; color:var(--ink); border:1px solid var(--line); }
.range button.on { background:var(--accent); color:#fff; border-color:var(--accent); }
.totals { display:flex; gap:26px; flex-wrap:wrap; margin:0 0 8px; }
.totals div { display:flex; flex-direction:column; }
.totals b { font-size:18px; font-variant-numeric:tabular-nums; }
.totals span { color:var(--muted); font-size:11px; }
.charts { display:grid; grid-template-columns:repeat(3, minmax(0, 1fr)); gap:14px; }
@media (max-width:1000px) { .charts { grid-template-columns:minmax(0, 1fr); } }
figure { margin:0; min-width:0; }
figcaption { display:flex; justify-content:space-between; gap:8px; font-size:12px;
  font-weight:600; margin-bottom:2px; white-space:nowrap; }
figcaption .hover { font-weight:400; color:var(--muted); overflow:hidden;
  text-overflow:ellipsis; font-variant-numeric:tabular-nums; }
.legend { font-size:11px; color:var(--muted); font-weight:400; }
.legend i { display:inline-block; width:9px; height:9px; border-radius:2px; margin:0 3px 0 8px; }
svg.chart { display:block; width:100%; height:140px; overflow:visible; }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { fill:var(--muted); font-size:10px; }
svg .cursor { stroke:var(--muted); stroke-dasharray:2 2; }
svg .none { fill:var(--muted); font-size:11px; }
.s-peak { fill:rgba(59, 91, 219, .16); stroke:#3b5bdb; stroke-width:1.5; }
.s-open { fill:none; stroke:#0b7285; stroke-width:1.5; }
.s-sent { fill:rgba(59, 91, 219, .16); stroke:#3b5bdb; stroke-width:1.5; }
.s-received { fill:none; stroke:#c2255c; stroke-width:1.5; }
rect.s-sent { fill:#3b5bdb; stroke:none; } rect.s-received { fill:#e64980; stroke:none; }
i.s-peak, i.s-sent { background:#3b5bdb; } i.s-open { background:#0b7285; }
i.s-received { background:#c2255c; }
"""

MARKUP = b"""
  <section class="wide" id="dashboard">
   <h2><span>Stats <span id="stats-note"></span></span>
    <span class="range" id="range">
     <button type="button" data-range="60">1 h</button>
     <button type="button" data-range="360">6 h</button>
     <button type="button" data-range="1440">24 h</button></span></h2>
   <div class="totals" id="totals"></div>
   <div class="charts">
    <figure><figcaption><span>Connections per minute<span class="legend"><i class="s-peak"></i>peak
     <i class="s-open"></i>open</span></span><span class="hover" id="hover-connections"></span>
     </figcaption><svg class="chart" id="chart-connections"></svg></figure>
    <figure><figcaption><span>Messages per minute<span class="legend"><i class="s-sent"></i>sent
     <i class="s-received"></i>received</span></span><span class="hover" id="hover-messages">
     </span></figcaption><svg class="chart" id="chart-messages"></svg></figure>
    <figure><figcaption><span>Messages per day (UTC)<span class="legend"><i class="s-sent"></i>sent
     <i class="s-received"></i>received</span></span><span class="hover" id="hover-days"></span>
     </figcaption><svg class="chart" id="chart-days"></svg></figure>
   </div>
  </section>
"""

SCRIPT = b"""
// --- the dashboard: stats over time (pyserver/console/charts.py) ---------------------------
const RANGE_KEY = "pyserver-console-range", SVGNS = "http://www.w3.org/2000/svg";
let range = Number(sessionStorage.getItem(RANGE_KEY)) || 60;
let stats = null;

function statsReset() {
  stats = { now: 0, minutes: new Map(), days: new Map() };
}
statsReset();

function statsApply(answer) {
  if (answer.app !== app) return;
  stats.now = Math.max(stats.now, answer.now);
  for (const p of answer.minutes) stats.minutes.set(p.time, p);
  for (const p of answer.days) stats.days.set(p.time, p);
  const firstMinute = Math.floor(answer.now / 60) * 60 - 1439 * 60;
  const firstDay = Math.floor(answer.now / 86400) * 86400 - 29 * 86400;
  for (const t of stats.minutes.keys()) if (t < firstMinute) stats.minutes.delete(t);
  for (const t of stats.days.keys()) if (t < firstDay) stats.days.delete(t);
  drawStats();
}

function node(parent, name, attrs, text) {
  const e = document.createElementNS(SVGNS, name);
  for (const key in attrs) e.setAttribute(key, attrs[key]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}

function short(n) {
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) {
    if (n >= size) return +(n / size).toFixed(n % size ? 1 : 0) + unit;
  }
  return String(+n.toFixed(2));
}

function roundUp(v) {  // the axis' top: 1, 2, 2.5 or 5 times a power of ten, at least v
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((top) => top >= v);
}

const utcDate = (t) => new Date(t * 1000).toISOString().slice(0, 10);

function hhmm(t) {
  const d = new Date(t * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

// One chart: `points` oldest first (a gap has nodes 0), `series` [{key, cls}], drawn as
// lines (the first filled down to zero) or, with `bars`, as stacked bars.
function chart(svg, points, series, label, bars) {
  const W = svg.clientWidth || 300, H = svg.clientHeight || 140;
  const L = 36, R = 4, T = 6, B = 16, n = points.length, step = (W - L - R) / n;
  const value = (p, key) => (p.nodes ? p[key] || 0 : 0);
  const height = (p) => bars ? series.reduce((sum, s) => sum + value(p, s.key), 0) :
    Math.max(...series.map((s) => value(p, s.key)));
  const highest = Math.max(0, ...points.map(height)), top = roundUp(highest);
  const y = (v) => T + (H - T - B) * (1 - v / top), x = (i) => L + step * (i + 0.5);
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.replaceChildren();
  for (const v of [0, top / 2, top]) {
    node(svg, "line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) });
    node(svg, "text", { class: "axis", x: L - 4, y: y(v) + 3, "text-anchor": "end" }, short(v));
  }
  for (const [i, anchor] of [[0, "start"], [Math.floor((n - 1) / 2), "middle"], [n - 1, "end"]]) {
    const at = anchor === "start" ? L : anchor === "end" ? W - R : x(i);
    node(svg, "text", { class: "axis", x: at, y: H - 3, "text-anchor": anchor }, label(points[i]));
  }
  const drawn = points.filter((p) => p.nodes).length;
  if (!drawn) node(svg, "text", { class: "none", x: (L + W) / 2, y: H / 2,
    "text-anchor": "middle" }, "no data yet");
  if (bars) {
    const width = Math.max(1, step * 0.7);
    points.forEach((p, i) => {
      let base = 0;
      for (const s of series) {
        const v = value(p, s.key);
        if (v > 0) node(svg, "rect", { class: "bar " + s.cls, x: x(i) - width / 2,
          y: y(base + v), width: width, height: y(base) - y(base + v) });
        base += v;
      }
    });
  } else {
    series.forEach((s, k) => {
      const runs = [];  // runs of consecutive points with data: a gap breaks the line
      points.forEach((p, i) => {
        if (!p.nodes) { runs.push([]); return; }
        if (!runs.length) runs.push([]);
        runs[runs.length - 1].push([x(i), y(value(p, s.key))]);
      });
      let d = "";
      for (const run of runs.filter((r) => r.length)) {
        if (run.length === 1) {  // a lone minute: a short flat stroke, so it shows
          const [at, level] = run[0];
          run.splice(0, 1, [at - step * 0.4, level], [at + step * 0.4, level]);
        }
        d += "M" + run.map((pt) => pt[0].toFixed(1) + " " + pt[1].toFixed(1)).join("L");
        if (k === 0) d += "L" + run[run.length - 1][0].toFixed(1) + " " + y(0) + "L" +
          run[0][0].toFixed(1) + " " + y(0) + "Z";
      }
      if (d) node(svg, "path", { class: "series " + s.cls, d: d, "data-key": s.key });
    });
  }
  svg.dataset.window = n;
  svg.dataset.points = drawn;
  svg.dataset.max = highest;
  svg.chart = { points, L, step, H, T, B };
}

function windowOf(map, now, size, count) {  // `count` points of `size` seconds ending now
  const last = Math.floor(now / size) * size, out = [];
  for (let i = count - 1; i >= 0; i--) {
    const t = last - i * size;
    out.push(map.get(t) || { time: t, nodes: 0 });
  }
  return out;
}

const fmt = (n) => n == null ? "-" : Number(n).toLocaleString("en-US");

function drawStats() {
  if (!stats.now || $("app").hidden) return;
  for (const b of document.querySelectorAll("#range button")) {
    b.classList.toggle("on", Number(b.dataset.range) === range);
  }
  const minutes = windowOf(stats.minutes, stats.now, 60, range);
  const days = windowOf(stats.days, stats.now, 86400, 30);
  chart($("chart-connections"), minutes, [{ key: "peak_connections", cls: "s-peak" },
    { key: "connections", cls: "s-open" }], (p) => hhmm(p.time));
  chart($("chart-messages"), minutes, [{ key: "messages_sent", cls: "s-sent" },
    { key: "messages_received", cls: "s-received" }], (p) => hhmm(p.time));
  chart($("chart-days"), days, [{ key: "messages_sent", cls: "s-sent" },
    { key: "messages_received", cls: "s-received" }], (p) => utcDate(p.time).slice(5), true);
  const today = days[days.length - 1];
  const tiles = [
    [fmt((today.messages_sent || 0) + (today.messages_received || 0)), "messages today"],
    [fmt(today.messages_sent), "sent to clients"],
    [fmt(today.messages_received), "received from clients"],
    [fmt(today.api_calls), "API calls"],
    [fmt(today.peak_connections), "peak connections"],
    [fmt(today.webhook_deliveries) + " / " + fmt(today.webhook_failures),
      "webhooks delivered / failed"],
  ];
  const totals = $("totals");
  if (totals.children.length !== tiles.length) {
    totals.replaceChildren(...tiles.map(() => {
      const tile = document.createElement("div");
      tile.append(document.createElement("b"), document.createElement("span"));
      return tile;
    }));
  }
  tiles.forEach(([number, text], i) => {
    totals.children[i].children[0].textContent = number;
    totals.children[i].children[1].textContent = text;
  });
}

function describe(id, p) {
  const head = id === "days" ? utcDate(p.time) + " (UTC)" : hhmm(p.time);
  if (!p.nodes) return head + ": no data";
  if (id === "connections") {
    return head + ": peak " + fmt(p.peak_connections) + ", open " + fmt(p.connections);
  }
  return head + ": " + fmt(p.messages_sent) + " sent, " + fmt(p.messages_received) +
    " received, " + fmt(p.api_calls) + " API calls";
}

for (const id of ["connections", "messages", "days"]) {
  const svg = $("chart-" + id), hover = $("hover-" + id);
  svg.addEventListener("mousemove", (e) => {
    const c = svg.chart;
    if (!c) return;
    const box = svg.getBoundingClientRect();
    const i = Math.floor((e.clientX - box.left - c.L) / c.step);
    const p = c.points[Math.min(c.points.length - 1, Math.max(0, i))];
    hover.textContent = describe(id, p);
    let line = svg.querySelector(".cursor");
    if (!line) line = node(svg, "line", { class: "cursor", y1: c.T, y2: c.H - c.B });
    const at = c.L + c.step * (c.points.indexOf(p) + 0.5);
    line.setAttribute("x1", at); line.setAttribute("x2", at);
  });
  svg.addEventListener("mouseleave", () => {
    hover.textContent = "";
    const line = svg.querySelector(".cursor");
    if (line) line.remove();
  });
}

$("range").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-range]");
  if (!button) return;
  range = Number(button.dataset.range);
  sessionStorage.setItem(RANGE_KEY, String(range));
  drawStats();
});
let resizing = null;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(drawStats);
});
"""
