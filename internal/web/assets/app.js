// pgshift dashboard: reads the agent's API (/api/status, /api/history, ...) and follows
// /api/events. Plain script, no build step; charts by the vendored uPlot.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

function bytes(n) {
  if (n == null || isNaN(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0; n = Number(n);
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
}
function count(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
function dur(s) {
  if (s == null || s < 0 || !isFinite(s)) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 90) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 90) return m + " min " + Math.round(s % 60) + " s";
  const h = Math.floor(m / 60);
  return h + " h " + (m % 60) + " min";
}
function ago(t) { return t ? dur((Date.now() - new Date(t).getTime()) / 1000) + " ago" : "–"; }
function lsn(s) {
  if (!s) return 0;
  const [hi, lo] = s.split("/");
  return parseInt(hi, 16) * 4294967296 + parseInt(lo, 16);
}

// --- API -----------------------------------------------------------------------------------

async function api(path, opts) {
  opts = opts || {};
  const headers = { "X-Pgshift-Request": "dashboard" };
  if (opts.body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, credentials: "same-origin" });
  if (r.status === 401) { showLogin(); throw new Error("sign in with the API token"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function showLogin() { $("login").hidden = false; }
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }) });
  if (r.ok) { location.reload(); } else { $("login-error").textContent = "wrong token"; }
});

// --- charts --------------------------------------------------------------------------------

const series = { t: [], lagS: [], lagB: [], rate: [], retained: [], txs: [] };
let lastPoint = null; // {at, applied, txs} of the last point, for rates
let lagChart, tputChart;

function addPoint(at, appliedLSN, lagSeconds, lagBytes, retained, txs) {
  const t = new Date(at).getTime() / 1000;
  if (series.t.length && t <= series.t[series.t.length - 1]) return false;
  let rate = null, txRate = null;
  if (lastPoint) {
    const dt = t - lastPoint.t;
    if (dt > 0) {
      rate = Math.max(0, (appliedLSN - lastPoint.applied) / dt);
      txRate = txs >= lastPoint.txs ? (txs - lastPoint.txs) / dt : null; // a new agent counts from 0
    }
  }
  lastPoint = { t, applied: appliedLSN, txs };
  series.t.push(t); series.lagS.push(lagSeconds); series.lagB.push(lagBytes);
  series.rate.push(rate); series.retained.push(retained); series.txs.push(txRate);
  const max = 4000;
  if (series.t.length > max) for (const k of Object.keys(series)) series[k].splice(0, series.t.length - max);
  return true;
}

function chartOpts(title, s1, s2, fmt1, fmt2) {
  const w = Math.max(300, $("lag-chart").parentElement.clientWidth - 30);
  return {
    title, width: w, height: 220,
    series: [{}, { label: s1, stroke: "#2b6cb0", width: 2, value: (u, v) => fmt1(v) },
      { label: s2, stroke: "#c05621", width: 1.5, scale: "y2", value: (u, v) => fmt2(v) }],
    axes: [{}, { values: (u, vs) => vs.map(fmt1), size: 70 }, { side: 1, scale: "y2", values: (u, vs) => vs.map(fmt2), size: 70, grid: { show: false } }],
    scales: { x: { time: true } },
  };
}

function drawCharts() {
  if (typeof uPlot === "undefined") return;
  const lagData = [series.t, series.lagS, series.lagB];
  const tputData = [series.t, series.rate, series.retained];
  if (!lagChart) {
    lagChart = new uPlot(chartOpts("replication lag", "lag (s)", "lag (bytes)", (v) => v == null ? "–" : dur(v), bytes), lagData, $("lag-chart"));
    tputChart = new uPlot(chartOpts("apply throughput", "applied WAL/s", "retained WAL", (v) => v == null ? "–" : bytes(v) + "/s", bytes), tputData, $("tput-chart"));
  } else {
    lagChart.setData(lagData);
    tputChart.setData(tputData);
  }
}

// --- rendering -----------------------------------------------------------------------------

const phases = ["new", "schema", "data", "post-data", "sequences", "copied", "following", "cutover", "finished"];

function renderStatus(st) {
  $("phase").textContent = st.phase;
  const a = st.agent;
  $("agent").textContent = a ? (a.alive ? `agent pid ${a.pid} on ${a.host}, heartbeat ${ago(a.heartbeat_at)}` : "no agent running") : "";
  renderTimeline(st);
  const measured = !!st.measured_at;
  $("lag").textContent = measured ? `${dur(st.lag_seconds)} / ${bytes(st.lag_bytes)}` : "not measured yet";
  $("lag").className = measured && st.lag_seconds > 300 ? "bad" : "";
  $("applied").textContent = st.applied_lsn;
  $("retained").textContent = measured ? bytes(st.retained_wal_bytes) : "–";
  $("rate").textContent = measured ? bytes(st.apply_rate_bytes_per_second) + "/s" : "–";
  $("applied-count").textContent = measured ? `${count(st.txs_applied)} transactions, ${count(st.changes_applied)} changes (this agent)` : "–";
  $("eta").textContent = !measured ? "–" : st.catch_up_eta_seconds === 0 ? "caught up" : st.catch_up_eta_seconds > 0 ? "about " + dur(st.catch_up_eta_seconds) : "not catching up";
  $("measured").textContent = measured ? ago(st.measured_at) : "–";
  if (measured && addPoint(st.measured_at, lsn(st.applied_lsn), st.lag_seconds, st.lag_bytes, st.retained_wal_bytes, st.txs_applied)) drawCharts();
  renderTables(st.tables || []);
  renderVerifySummary(st.last_verify);
  renderCutover(st.cutover);
}

function renderTimeline(st) {
  const tl = st.timeline || [];
  const box = $("timeline");
  box.replaceChildren();
  const entered = {};
  tl.forEach((e, i) => {
    const end = i + 1 < tl.length ? new Date(tl[i + 1].entered_at) : new Date();
    entered[e.phase] = { at: e.entered_at, secs: (end - new Date(e.entered_at)) / 1000 };
  });
  for (const p of phases) {
    const e = entered[p];
    const cls = "ph" + (p === st.phase ? " current" : "");
    box.append(el("div", { class: cls, "data-phase": p }, p, el("small", { text: e ? dur(e.secs) : (phases.indexOf(p) < phases.indexOf(st.phase) ? "not recorded" : "not started") })));
  }
}

function renderTables(tables) {
  const body = document.querySelector("#tables tbody");
  body.replaceChildren();
  let done = 0, rows = 0, b = 0;
  for (const t of tables) {
    if (t.state === "done") done++;
    rows += t.rows_copied; b += t.bytes_copied;
    const known = t.est_rows > 0 ? [t.rows_copied, t.est_rows] : t.est_bytes > 0 ? [t.bytes_copied, t.est_bytes] : null;
    let pct = t.state === "done" ? 100 : known ? Math.min(99, 100 * known[0] / known[1]) : 0;
    let eta = "–";
    if (t.state === "done") eta = "done";
    else if (t.state === "copying" && t.started_at && known && known[0] > 0) {
      const el2 = (Date.now() - new Date(t.started_at).getTime()) / 1000;
      eta = dur(Math.max(0, (known[1] - known[0]) / (known[0] / el2)));
    }
    const bar = el("div", { class: "bar" + (t.state === "done" ? " done" : "") }, el("span", { style: `width:${pct.toFixed(1)}%` }));
    body.append(el("tr", { "data-table": t.table },
      el("td", {}, el("code", { text: t.table })), el("td", { text: t.state }), el("td", {}, bar),
      el("td", { class: "num", text: count(t.rows_copied) + (t.est_rows > 0 && t.state !== "done" ? " / ~" + count(t.est_rows) : "") }),
      el("td", { class: "num", text: bytes(t.bytes_copied) }), el("td", { class: "num", text: eta })));
  }
  $("copy-summary").textContent = `${done}/${tables.length} tables done, ${count(rows)} rows, ${bytes(b)}`;
}

function renderVerifySummary(v) {
  if (!v) { $("verify-summary").textContent = "never run (pgshift verify)"; return; }
  const s = v.summary;
  $("verify-summary").textContent = (s.identical ? "IDENTICAL" : `${count(s.differences)} differences`) +
    ` — ${s.tables_identical}/${s.tables_compared} tables identical, ${v.mode} mode, ${ago(v.finished_at)}`;
}

function renderVerify(rep) {
  const box = $("verify");
  box.replaceChildren();
  if (!rep || !rep.tables) { box.append(el("p", { class: "muted", text: "no saved verify result" })); return; }
  const classes = Object.entries(rep.classes || {});
  if (classes.length) box.append(el("p", {}, "discrepancies by class: " + classes.map(([k, v]) => `${k} ${v}`).join(", ")));
  const diff = rep.tables.filter((t) => t.differences > 0 || t.error || t.source_rows !== t.target_rows);
  if (!diff.length) { box.append(el("p", { class: "ok", text: `all ${rep.tables.length} tables identical` })); }
  for (const t of diff) {
    const keys = (t.rows || []).slice(0, 20).map((r) => `${r.kind} ${r.key}` + (r.columns ? " (" + r.columns.map((c) => c.column).join(", ") + ")" : ""));
    box.append(el("div", { class: "bad" }, el("code", { text: t.table }), ` ${t.error || count(t.differences) + " differing rows"}: `,
      el("span", { text: keys.join("; ") + (t.differences > keys.length ? " …" : "") })));
  }
  for (const d of (rep.schema && rep.schema.differences) || []) box.append(el("div", { class: "bad", text: `schema: ${d.kind} ${d.name} ${d.issue}` }));
  for (const d of (rep.sequences && rep.sequences.differences) || []) box.append(el("div", { class: "warn", text: `sequence ${d.sequence}: source ${d.source_last_value}, target ${d.target_last_value}` }));
}

function renderCutover(c) {
  if (!c) return;
  $("cutover-state").textContent = c.state + (c.attempt ? ` (attempt ${c.attempt})` : "");
  const ol = $("cutover-steps");
  ol.replaceChildren();
  for (const s of c.steps || []) {
    let d = "";
    if (s.started_at) d = " " + dur(((s.finished_at ? new Date(s.finished_at) : new Date()) - new Date(s.started_at)) / 1000);
    const cls = s.state === "done" ? "ok" : s.state === "failed" ? "bad" : s.state === "running" ? "warn" : "muted";
    ol.append(el("li", {}, s.name, el("span", { class: "state " + cls, text: (s.state === "pending" && c.state === "not started" ? "not started" : s.state) + d }),
      s.detail ? el("div", { class: "muted", text: s.detail }) : ""));
  }
}

function renderProxy(p) {
  const box = $("proxy");
  box.replaceChildren();
  if (!p || !p.running) { box.append(el("p", { class: "muted", text: "no proxy in this agent (pgshift run --proxy ADDR)" })); return; }
  $("proxy-actions").hidden = false;
  const s = p.stats;
  box.append(el("p", {}, `mode ${s.mode}${s.paused ? " (PAUSED)" : ""}, ${s.clients} clients, server connections: ${s.server_connections[0]} source / ${s.server_connections[1]} target`));
  const tb = el("tbody");
  for (const r of p.routes || []) tb.append(el("tr", {}, ...Object.values(r).map((v) => el("td", { text: v }))));
  if ((p.routes || []).length) box.append(el("table", {}, el("thead", {}, el("tr", {}, ...Object.keys(p.routes[0]).map((k) => el("th", { text: k })))), tb));
}

function renderAlerts(list) {
  const ul = $("alerts");
  ul.replaceChildren();
  const firing = (list || []).filter((a) => a.state === "firing");
  $("alert-count").textContent = firing.length ? `${firing.length} firing` : "no alerts";
  $("alert-count").className = "badge " + (firing.length ? "bad" : "ok");
  if (!list || !list.length) { ul.append(el("li", { class: "muted", text: "no rules configured" })); return; }
  for (const a of list) {
    const cls = a.state === "firing" ? "bad" : a.state === "pending" ? "warn" : "ok";
    ul.append(el("li", {}, el("span", { class: cls, text: a.state }), ` ${a.name}: ${a.description}`, a.message ? el("div", { class: "muted", text: a.message }) : ""));
  }
}

function renderAudit(list) {
  const body = document.querySelector("#audit tbody");
  body.replaceChildren();
  if (!list || !list.length) { body.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "nothing recorded yet" }))); return; }
  for (const e of list.slice().reverse()) {
    body.append(el("tr", {}, el("td", { text: new Date(e.at).toISOString().replace("T", " ").slice(0, 19) }), el("td", { text: e.actor }),
      el("td", { text: e.action }), el("td", { class: e.outcome === "ok" ? "ok" : "bad", text: e.outcome }), el("td", {}, el("code", { text: JSON.stringify(e.detail) }))));
  }
}

// --- actions -------------------------------------------------------------------------------

async function action(path, msgEl) {
  try {
    const r = await api(path, { method: "POST" });
    if (msgEl) msgEl.textContent = JSON.stringify(r);
    refreshSide();
  } catch (e) {
    if (msgEl) msgEl.textContent = e.message; else alert(e.message);
  }
}
for (const b of document.querySelectorAll("[data-mode]")) b.addEventListener("click", () => action("/api/proxy/mode?mode=" + b.dataset.mode));
$("pause").addEventListener("click", () => action("/api/pause?timeout=10s"));
$("resume").addEventListener("click", () => action("/api/resume"));
$("cutover-start").addEventListener("click", async () => {
  if (!confirm("Start the cutover now? Traffic pauses while the target takes over.")) return;
  try {
    const r = await api("/api/cutover", { method: "POST", body: JSON.stringify({ confirm: true }) });
    $("cutover-msg").textContent = JSON.stringify(r);
  } catch (e) { $("cutover-msg").textContent = e.message; $("cutover-msg").className = "bad"; }
});

// --- wiring --------------------------------------------------------------------------------

async function refreshSide() {
  api("/api/proxy").then(renderProxy).catch(() => {});
  api("/api/audit").then(renderAudit).catch(() => {});
}

async function start() {
  try {
    const hist = await api("/api/history");
    for (const p of hist || []) addPoint(p.at, lsn(p.applied_lsn), p.lag_seconds_max, p.lag_bytes_max, p.retained_wal_bytes_max, p.txs_applied);
    renderStatus(await api("/api/status"));
    drawCharts();
  } catch (e) { $("conn").textContent = e.message; }
  api("/api/verify").then(renderVerify).catch(() => renderVerify(null));
  api("/api/alerts").then(renderAlerts).catch(() => {});
  refreshSide();
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => { $("conn").textContent = "live"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; });
  es.addEventListener("status", (ev) => renderStatus(JSON.parse(ev.data)));
  es.addEventListener("alerts", (ev) => renderAlerts(JSON.parse(ev.data)));
  es.addEventListener("audit", (ev) => renderAudit(JSON.parse(ev.data)));
  es.addEventListener("verify", (ev) => renderVerify(JSON.parse(ev.data)));
  es.addEventListener("proxy", (ev) => renderProxy(JSON.parse(ev.data)));
  window.addEventListener("resize", () => { if (lagChart) { const w = Math.max(300, $("lag-chart").parentElement.clientWidth - 30); lagChart.setSize({ width: w, height: 220 }); tputChart.setSize({ width: w, height: 220 }); } });
}
start();
