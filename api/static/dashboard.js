// The dancu dashboard: one plain ES module, no build step, nothing from a CDN.
//
// The page is a public shell: it holds no data until a person signs in with their API
// token (kept in this tab's sessionStorage only). Every request sends it as a bearer
// token; a 401 ends the session and shows the sign-in form with the server's message.
// Each panel names the roles that may see it (data-roles); a panel whose route the server
// refuses (403) or does not serve (404) is hidden, so the page works with whatever this
// server offers. Server text always goes in through textContent, never as markup.

const TOKEN_KEY = "dancu.token";
const FAST_MS = 2000; // live counters
const SLOW_MS = 10000; // charts, map, clusters, open alerts
const VN_TZ = "Asia/Ho_Chi_Minh";
const SVG_NS = "http://www.w3.org/2000/svg";

// Hà Nội's 30 district-level units (before the 2025 reform; codes as in
// reference/hanoi_districts.csv), each on a tile at [column, row], roughly where it lies.
const DISTRICTS = [
  ["016", "Sóc Sơn", 5, 0],
  ["271", "Ba Vì", 0, 1], ["269", "Sơn Tây", 1, 1], ["272", "Phúc Thọ", 2, 1],
  ["273", "Đan Phượng", 3, 1], ["250", "Mê Linh", 4, 1], ["017", "Đông Anh", 5, 1],
  ["276", "Thạch Thất", 1, 2], ["021", "Bắc Từ Liêm", 4, 2], ["003", "Tây Hồ", 5, 2],
  ["004", "Long Biên", 6, 2],
  ["275", "Quốc Oai", 1, 3], ["274", "Hoài Đức", 2, 3], ["019", "Nam Từ Liêm", 3, 3],
  ["005", "Cầu Giấy", 4, 3], ["001", "Ba Đình", 5, 3], ["002", "Hoàn Kiếm", 6, 3],
  ["018", "Gia Lâm", 7, 3],
  ["277", "Chương Mỹ", 2, 4], ["268", "Hà Đông", 3, 4], ["009", "Thanh Xuân", 4, 4],
  ["006", "Đống Đa", 5, 4], ["007", "Hai Bà Trưng", 6, 4],
  ["278", "Thanh Oai", 3, 5], ["020", "Thanh Trì", 4, 5], ["008", "Hoàng Mai", 5, 5],
  ["282", "Mỹ Đức", 2, 6], ["281", "Ứng Hòa", 3, 6], ["279", "Thường Tín", 4, 6],
  ["280", "Phú Xuyên", 4, 7],
];
const LEVELS = {
  1: "level 1 · new normal",
  2: "level 2 · low risk",
  3: "level 3 · high risk",
  4: "level 4 · very high risk",
};
const TIERS = ["F0", "F1", "F2"];
const CARD_COLOURS = ["green", "yellow", "red", "none"];
const LINE_COLOURS = ["#13315c", "#2e86de", "#27ae60", "#e67e22", "#8e44ad", "#c0392b"];
const FOLLOW_UPS = ["contacted", "quarantined", "tested", "result"];
const MAX_GRAPH_NODES = 300; // beyond that a graph is a hairball and its layout slow

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat("vi-VN");
// "28/11, 14:05" in Hà Nội time, whatever the browser's own zone.
const timeFormat = new Intl.DateTimeFormat("en-GB", {
  timeZone: VN_TZ, day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit",
});

// ---------------------------------------------------------------- small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (n) => (typeof n === "number" && Number.isFinite(n) ? numberFormat.format(n) : "–");
const pct = (x) => (Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : "–");
const share = (part, whole) => Math.round((10000 * part) / Math.max(1, whole)) / 100; // a % for CSS
const rate = (x, digits = 1) => (x === null || x === undefined || !Number.isFinite(Number(x)) ? "–" : Number(x).toFixed(digits));

function when(value) {
  const t = toEpoch(value);
  return t === null ? String(value ?? "–") : timeFormat.format(new Date(t * 1000));
}

/** Seconds since the epoch from an ISO time, a ClickHouse "YYYY-MM-DD hh:mm:ss" (UTC),
 * a date, or a number of seconds or milliseconds. */
function toEpoch(value) {
  if (typeof value === "number") return value > 1e11 ? value / 1000 : value;
  if (typeof value !== "string" || !value) return null;
  let s = value.trim();
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) s += "T00:00:00Z";
  else if (/^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s = s.replace(" ", "T") + "Z";
  const ms = Date.parse(s.replace(" ", "T"));
  return Number.isNaN(ms) ? null : ms / 1000;
}

/** A name folded for matching: no diacritics, no case, no "Quận"/"Huyện" prefix. */
function fold(name) {
  return String(name ?? "")
    .normalize("NFD").replace(/[\u0300-\u036f]/g, "").replace(/[đĐ]/g, "d")
    .toLowerCase().replace(/^(quan|huyen|thi xa|thanh pho)\s+/, "").replace(/\s+/g, " ").trim();
}

const DISTRICT_BY_KEY = new Map();
for (const d of DISTRICTS) {
  DISTRICT_BY_KEY.set(d[0], d);
  DISTRICT_BY_KEY.set(fold(d[1]), d);
}
const districtOf = (value) => DISTRICT_BY_KEY.get(String(value ?? "")) || DISTRICT_BY_KEY.get(fold(value));
const districtName = (value) => (districtOf(value) || [null, String(value ?? "–")])[1];

/** Replace a table's rows. ``head``: labels (a leading "#" marks a numeric column). */
function fillTable(table, head, rows) {
  const numeric = head.map((h) => h.startsWith("#"));
  const thead = el("thead", {}, el("tr", {}, ...head.map((h, i) =>
    el("th", {class: numeric[i] ? "num" : undefined}, numeric[i] ? h.slice(1) : h))));
  const tbody = el("tbody");
  for (const row of rows) {
    const cells = row.cells || row;
    const tr = el("tr", row.attrs || {});
    cells.forEach((c, i) => tr.append(el("td", {class: numeric[i] ? "num" : undefined},
      typeof c === "number" ? fmt(c) : c)));
    tbody.append(tr);
  }
  table.replaceChildren(thead, tbody);
  return tbody;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

/** A header value fetch() accepts: Vietnamese text is sent percent-encoded as UTF-8''…
 * (RFC 8187's form), plain ASCII as it is. */
function headerText(value) {
  const s = String(value).trim().slice(0, 200);
  return /^[\x20-\x7e]*$/.test(s) ? s : `UTF-8''${encodeURIComponent(s)}`;
}

// ---------------------------------------------------------------- talking to the API

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
class SessionEnded extends Error {}

let session = null; // {token, me, abort, lastEventId, alerts, charts, graphKey}

async function errorText(response) {
  try {
    const body = await response.json();
    return String(body.error ?? body.detail ?? JSON.stringify(body));
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

/** One authenticated request of this session; JSON back. A 401 ends the session. */
async function api(path, {method = "GET", body, purpose} = {}) {
  const s = session;
  if (!s) throw new SessionEnded("signed out");
  const headers = {Authorization: `Bearer ${s.token}`, Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (purpose) headers["X-Purpose"] = headerText(purpose);
  const response = await fetch(path, {
    method, headers, cache: "no-store", signal: s.abort.signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (s !== session) throw new SessionEnded("signed out");
  if (response.status === 401) {
    const message = await errorText(response);
    endSession(`${s.me ? "Signed out" : "Sign-in refused"}: ${message}`);
    throw new SessionEnded(message);
  }
  if (!response.ok) throw new HttpError(response.status, await errorText(response));
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

const quiet = (e) => e instanceof SessionEnded || e?.name === "AbortError";

/** Run a panel's refresh: a 403 or 404 hides the panel for this session, any other
 * failure is shown on it (and the next refresh tries again). */
async function refresh(panelId, work) {
  const panel = $(panelId);
  if (!panel || panel.hidden) return;
  const error = panel.querySelector(":scope > .error");
  try {
    await work();
    if (error) error.hidden = true;
  } catch (e) {
    if (quiet(e)) return;
    if (e instanceof HttpError && (e.status === 403 || e.status === 404)) {
      panel.hidden = true;
      panel.dataset.unavailable = `${e.status}: ${e.message}`;
      return;
    }
    if (error) {
      error.textContent = `Could not refresh: ${e.message}`;
      error.hidden = false;
    }
    console.warn(panelId, e);
  }
}

function every(s, ms, work) {
  (async () => {
    while (s === session) {
      if (!document.hidden) {
        try { await work(); } catch (e) { if (!quiet(e)) console.warn(e); }
      }
      await sleep(ms, s.abort.signal);
    }
  })();
}

// ---------------------------------------------------------------- sign in and out

const pristineApp = $("app").cloneNode(true);

function showLogin(message = "") {
  $("app").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-message").textContent = message;
  $("token").value = "";
  $("token").focus();
}

function endSession(message = "") {
  const s = session;
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("live-dot").classList.remove("on");
  $("live-dot").hidden = true;
  if (s) {
    s.abort.abort();
    for (const {plot} of s.charts.values()) plot.destroy();
  }
  // A fresh copy of the panels: nothing the last person saw stays in the page.
  $("app").replaceWith(pristineApp.cloneNode(true));
  showLogin(message);
}

async function signIn(token) {
  session?.abort.abort(); // a second sign-in replaces the first
  const s = {
    token, me: null, abort: new AbortController(), lastEventId: "",
    alerts: new Map(), charts: new Map(), graphKey: "", cluster: "", listEventId: "",
    retry: 0,
  };
  session = s;
  let me;
  try {
    me = await api("/v1/me");
  } catch (e) {
    if (e instanceof SessionEnded) return; // endSession showed the server's message
    if (quiet(e)) return;
    endSession(`Could not sign in: ${e.message}`);
    return;
  }
  s.me = me;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("login").hidden = true;
  $("session").hidden = false;
  const where = [me.district, me.organisation].filter(Boolean).join(", ");
  $("whoami").textContent = `${me.name} · ${me.role}${where ? ` · ${where}` : ""}`;
  $("whoami").dataset.role = me.role;
  const app = $("app");
  for (const panel of app.querySelectorAll(".panel[data-roles]")) {
    panel.hidden = !panel.dataset.roles.split(/\s+/).includes(me.role);
  }
  app.hidden = false;
  bindForms();
  drawLegends();
  every(s, FAST_MS, () => Promise.all([
    refresh("p-live", live).then(() => { if ($("p-live").hidden) $("p-districts").hidden = true; }),
    refresh("p-tracing", tracingSummary),
  ]));
  every(s, SLOW_MS, () => Promise.all([
    refresh("p-scans", scansChart), refresh("p-cases", casesChart),
    refresh("p-levels", levels), refresh("p-vaccination", vaccination),
    refresh("p-colours", colours), refresh("p-top", topCheckpoints),
    refresh("p-clusters", clusters), refresh("p-quality", quality),
    refresh("p-owner", ownerCheckpoints), refresh("p-alerts", openAlerts),
    refresh("p-testing-summary", testingSummary),
  ]));
  if (!$("p-alerts").hidden) {
    $("live-dot").hidden = false;
    alertStream(s);
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) signIn(token);
});
$("logout").addEventListener("click", () => endSession("You are signed out."));
window.addEventListener("resize", () => {
  for (const [id, {plot}] of session?.charts ?? []) {
    plot.setSize({width: chartWidth($(id)), height: 240});
  }
});

// ---------------------------------------------------------------- live counters

function setCount(id, value, text) {
  const node = $(id);
  node.textContent = text ?? fmt(value);
  node.dataset.value = String(value ?? "");
}

async function live() {
  const [stats, healthy] = await Promise.all([
    api("/v1/stats/live"),
    fetch("/healthz", {cache: "no-store"}).then((r) => r.ok, () => false),
  ]);
  setCount("c-processed", stats.scans_processed);
  setCount("c-rate", stats.rate_per_s, Number(stats.rate_per_s).toFixed(1));
  setCount("c-lag", stats.lag, stats.lag === null ? "?" : fmt(stats.lag));
  setCount("c-visits", stats.visits_total);
  const health = $("c-health");
  health.textContent = healthy ? "healthy" : "degraded";
  health.className = healthy ? "ok" : "bad";
  bars($("district-visits"), Object.entries(stats.visits_by_district || {})
    .map(([d, n]) => [districtName(d), n]).sort((a, b) => b[1] - a[1]));
}

function bars(holder, entries) {
  const max = Math.max(1, ...entries.map((e) => e[1]));
  holder.replaceChildren(...entries.map(([label, value]) => {
    const fill = el("div", {class: "fill"});
    fill.style.width = `${share(value, max)}%`;
    return el("div", {class: "bar-row"}, el("span", {}, label),
      el("div", {class: "track"}, fill), el("span", {class: "value"}, fmt(value)));
  }));
  if (!entries.length) holder.replaceChildren(el("p", {class: "muted"}, "No visits yet."));
}

async function tracingSummary() {
  const t = await api("/v1/tracing/summary");
  const reports = t.reports || {};
  setCount("c-reports", Object.values(reports).reduce((a, b) => a + b, 0));
  $("c-report-states").textContent = Object.entries(reports).map(([k, v]) => `${k} ${v}`).join(" · ");
  setCount("c-f1", t.flagged?.F1 ?? 0);
  setCount("c-f2", t.flagged?.F2 ?? 0);
  setCount("c-held", reports.held ?? 0);
  fillTable($("latest-reports"), ["report", "status", "#F1", "#F2", "reported"],
    (t.latest || []).map((r) => [r.report_id, r.status, r.counts?.F1 ?? 0, r.counts?.F2 ?? 0,
      when(r.reported_at)]));
}

// ---------------------------------------------------------------- charts

function chartWidth(holder) {
  return Math.max(280, (holder?.clientWidth || 600) - 4);
}

/** Draw (or update) a uPlot time chart; ``key`` names its series, so new series redraw. */
const hourFormat = new Intl.DateTimeFormat("en-GB", {timeZone: VN_TZ, hour: "2-digit", minute: "2-digit"});
const dayFormat = new Intl.DateTimeFormat("en-GB", {timeZone: VN_TZ, day: "2-digit", month: "2-digit"});
const AXIS = {
  hour: (ts) => {
    const t = new Date(ts * 1000), hm = hourFormat.format(t);
    return hm === "00:00" ? dayFormat.format(t) : hm;
  },
  day: (ts) => dayFormat.format(new Date(ts * 1000)),
};

/** Every step from ``first`` to ``last`` (seconds): a chart shows a quiet hour as 0, not
 * as a line drawn across it. */
function steps(first, last, step) {
  const out = [];
  for (let t = first; t <= last && out.length < 5000; t += step) out.push(t);
  return out;
}

function timeChart(holder, key, series, data, unit) {
  const charts = session.charts;
  const old = charts.get(holder.id);
  if (!data[0].length) {
    old?.plot.destroy();
    charts.delete(holder.id);
    holder.replaceChildren(el("div", {class: "empty"}, "No data yet."));
    return;
  }
  if (typeof uPlot === "undefined") {
    holder.replaceChildren(el("div", {class: "empty"}, "The chart library did not load."));
    return;
  }
  if (old && old.key === key) {
    old.plot.setData(data);
    return;
  }
  old?.plot.destroy();
  holder.replaceChildren();
  const plot = new uPlot({
    width: chartWidth(holder),
    height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), VN_TZ),
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
    axes: [{values: (u, splits) => splits.map(AXIS[unit])}, {size: 60}],
    series: [{label: unit, value: (u, ts) => (ts === null ? "–" : unit === "day" ? AXIS.day(ts) : when(ts))}, ...series],
  }, data, holder);
  charts.set(holder.id, {key, plot});
}

async function scansChart() {
  const rows = await api("/v1/analytics/scans?hours=48");
  const seen = rows.map((r) => toEpoch(r.hour)).filter((t) => t !== null);
  const hours = seen.length ? steps(Math.min(...seen), Math.max(...seen), 3600) : [];
  const at = new Map(hours.map((h, i) => [h, i]));
  const total = hours.map(() => 0);
  const byDistrict = new Map();
  for (const r of rows) {
    const i = at.get(toEpoch(r.hour));
    if (i === undefined) continue;
    const n = Number(r.scans) || 0;
    total[i] += n;
    const name = districtName(r.district);
    if (!byDistrict.has(name)) byDistrict.set(name, hours.map(() => 0));
    byDistrict.get(name)[i] += n;
  }
  const top = [...byDistrict.entries()]
    .sort((a, b) => b[1].reduce((x, y) => x + y, 0) - a[1].reduce((x, y) => x + y, 0))
    .slice(0, 5);
  const series = [{label: "all districts", stroke: LINE_COLOURS[0], width: 2}, ...top.map(([name], i) =>
    ({label: name, stroke: LINE_COLOURS[i + 1], width: 1}))];
  timeChart($("scans-chart"), series.map((s) => s.label).join("|"), series,
    [hours, total, ...top.map(([, values]) => values)], "hour");
}

async function casesChart() {
  const rows = await api("/v1/analytics/cases?days=30");
  const byDay = new Map(rows.map((r) => [toEpoch(r.day), r]).filter(([t]) => t !== null));
  const known = [...byDay.keys()];
  const days = (known.length ? steps(Math.min(...known), Math.max(...known), 86400) : [])
    .map((t) => ({t, r: byDay.get(t) || {}}));
  const series = [
    {label: "F0", stroke: "#c0392b", width: 2},
    {label: "F1", stroke: "#e67e22", width: 2},
    {label: "F2", stroke: "#d4ac0d", width: 2},
  ];
  timeChart($("cases-chart"), "cases", series, [
    days.map((d) => d.t),
    ...["f0", "f1", "f2"].map((k) => days.map((d) => Number(d.r[k]) || 0)),
  ], "day");
}

function bandStart(band) {
  const m = /\d+/.exec(String(band));
  return m ? Number(m[0]) : 999;
}

async function vaccination() {
  const rows = await api("/v1/analytics/vaccination");
  const bands = [...new Set(rows.map((r) => String(r.age_band)))].sort((a, b) => bandStart(a) - bandStart(b));
  const table = new Map();
  for (const r of rows) {
    const name = districtName(r.district);
    if (!table.has(name)) table.set(name, new Map());
    table.get(name).set(String(r.age_band), r);
  }
  const cell = (residents, one, full) => {
    const share = residents ? full / residents : NaN;
    return el("span", {
      "data-share": Number.isFinite(share) ? share : "",
      title: `≥ 1 dose ${pct(residents ? one / residents : NaN)} · full ${pct(share)} · ${fmt(residents)} residents`,
    }, pct(share));
  };
  const body = fillTable($("vaccination"), ["district", ...bands.map((b) => `#${b}`), "#all ages"],
    [...table.entries()].sort((a, b) => a[0].localeCompare(b[0], "vi")).map(([name, byBand]) => {
      let residents = 0, one = 0, full = 0;
      const cells = bands.map((b) => {
        const r = byBand.get(b);
        if (!r) return "–";
        residents += Number(r.residents) || 0; one += Number(r.one_dose) || 0; full += Number(r.full) || 0;
        return cell(Number(r.residents) || 0, Number(r.one_dose) || 0, Number(r.full) || 0);
      });
      return [name, ...cells, cell(residents, one, full)];
    }));
  // Shade each cell by its fully vaccinated share: pale red (none) to green (all).
  for (const span of body.querySelectorAll("td span[data-share]")) {
    const share = parseFloat(span.dataset.share);
    if (Number.isFinite(share)) span.parentElement.style.background = `hsl(${Math.round(share * 120)} 60% 85%)`;
  }
}

async function colours() {
  const rows = await api("/v1/analytics/colours");
  const by = new Map();
  const total = Object.fromEntries(CARD_COLOURS.map((c) => [c, 0]));
  for (const r of rows) {
    const name = districtName(r.district);
    if (!by.has(name)) by.set(name, Object.fromEntries(CARD_COLOURS.map((c) => [c, 0])));
    const colour = CARD_COLOURS.includes(r.colour) ? r.colour : "none";
    by.get(name)[colour] += Number(r.residents) || 0;
    total[colour] += Number(r.residents) || 0;
  }
  const row = (label, counts, extra) => {
    const sum = CARD_COLOURS.reduce((a, c) => a + counts[c], 0);
    const stack = el("div", {class: "stack"});
    for (const c of CARD_COLOURS) {
      if (!counts[c]) continue;
      const seg = el("span", {class: `seg-${c}`, title: `${c}: ${fmt(counts[c])} (${pct(counts[c] / sum)})`});
      seg.style.width = `${share(counts[c], sum)}%`;
      stack.append(seg);
    }
    return el("div", {class: `stack-row ${extra || ""}`}, el("span", {}, label), stack,
      el("span", {class: "value"}, fmt(sum)));
  };
  const legend = el("div", {class: "legend"}, ...CARD_COLOURS.map((c) => {
    const i = el("i", {class: `seg-${c}`});
    return el("span", {}, i, c);
  }));
  $("colours").replaceChildren(
    ...(rows.length ? [row("Hà Nội", total, "total")] : [el("p", {class: "muted"}, "No residents yet.")]),
    ...[...by.entries()].sort((a, b) => a[0].localeCompare(b[0], "vi")).map(([n, c]) => row(n, c)),
    legend);
}

async function topCheckpoints() {
  const rows = await api("/v1/analytics/checkpoints/top");
  const max = Math.max(1, ...rows.map((r) => Number(r.visits) || 0));
  fillTable($("top-checkpoints"), ["checkpoint", "district", "#visits", ""], rows.map((r) => {
    const fill = el("div", {class: "fill"});
    fill.style.width = `${share(Number(r.visits) || 0, max)}%`;
    const bar = el("div", {class: "bar-row"}, el("div", {class: "track"}, fill));
    bar.style.gridTemplateColumns = "1fr";
    return [el("span", {title: r.checkpoint_id}, r.name || r.checkpoint_id), districtName(r.district),
      Number(r.visits) || 0, bar];
  }));
}

// ---------------------------------------------------------------- epidemic levels

function drawLegends() {
  $("level-legend").replaceChildren(
    ...Object.entries(LEVELS).map(([n, label]) => el("span", {}, el("i", {class: `lvl-${n}`}), label)),
    el("span", {}, el("i", {class: "lvl-0"}), "no assessment"));
  $("graph-legend").replaceChildren(
    ...[["F0", "F0 (case)"], ["F1", "F1"], ["F2", "F2"], ["place", "place (checkpoint)"]].map(([k, label]) =>
      el("span", {}, el("i", {class: `legend-${k}`}), label)),
    el("span", {}, "dashed: same household"));
  for (const [k, colour] of Object.entries({F0: "var(--f0)", F1: "var(--f1)", F2: "var(--f2)", place: "var(--place)"})) {
    for (const i of document.querySelectorAll(`.legend-${k}`)) i.style.background = colour;
  }
}

function describe(value) {
  if (typeof value === "boolean") return value ? "met" : "not met";
  if (typeof value === "number") return value <= 1 ? pct(value) : fmt(value);
  if (value && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${typeof v === "number" && v <= 1 ? pct(v) : v}`).join(", ");
  }
  return value ?? "–";
}

async function levels() {
  const data = await api("/v1/levels");
  session.levels = data;
  $("levels-rule").textContent = data.rule_version ? `rulebook ${data.rule_version}` : "";
  const byCode = new Map();
  const others = [];
  for (const d of data.districts || []) {
    const known = districtOf(d.district);
    if (known) byCode.set(known[0], d); else others.push(d);
  }
  const map = $("level-map");
  const tiles = [];
  const tile = (code, name, info, col, row) => {
    const level = Number(info?.level) || 0;
    const button = el("button", {
      type: "button", role: "listitem", class: `tile lvl-${level}`, "data-district": name,
      "data-level": level || "", title: info
        ? `${name}: level ${level || "?"} (${info.name || LEVELS[level] || "no level"}); ` +
          `${fmt(info.cases_7d)} cases in 7 days, ${rate(info.cases_per_100k)} per 100,000; ` +
          `coverage ${describe(info.coverage)}` + (info.reasons?.length ? `\n${info.reasons.join("\n")}` : "")
        : `${name}: no assessment`,
    }, el("span", {class: "t-name"}, name), el("span", {class: "t-level"}, level || "–"),
    el("span", {class: "t-rate"}, info ? `${rate(info.cases_per_100k, 0)}/100k` : ""));
    if (col !== null) {
      button.style.gridColumn = String(col + 1);
      button.style.gridRow = String(row + 1);
    }
    if (session.ward === name) button.classList.add("selected");
    button.addEventListener("click", () => showWards(name));
    tiles.push(button);
  };
  for (const [code, name, col, row] of DISTRICTS) tile(code, name, byCode.get(code), col, row);
  others.forEach((d, i) => tile(null, String(d.district), d, i % 8, 8 + Math.floor(i / 8)));
  map.replaceChildren(...tiles);
  if (session.ward) showWards(session.ward);
}

function showWards(district) {
  session.ward = district;
  for (const t of $("level-map").children) t.classList.toggle("selected", t.dataset.district === district);
  const key = fold(district);
  const wards = (session.levels?.wards || []).filter((w) => fold(districtName(w.district)) === key)
    .sort((a, b) => (Number(b.level) || 0) - (Number(a.level) || 0) || String(a.ward).localeCompare(String(b.ward), "vi"));
  $("ward-title").textContent = `Wards of ${district} (${wards.length})`;
  fillTable($("ward-list"), ["ward", "level", "#cases 7 d", "#per 100k", "coverage"], wards.map((w) => {
    const level = Number(w.level) || 0;
    const chip = el("span", {class: `chip lvl-${level}`, title: (w.reasons || []).join("\n") || undefined}, level || "–");
    return [w.ward, chip, Number(w.cases_7d) || 0,
      rate(w.cases_per_100k), describe(w.coverage)];
  }));
}

// ---------------------------------------------------------------- clusters

async function clusters() {
  const [list, hotspots] = await Promise.all([api("/v1/clusters"), api("/v1/hotspots")]);
  const body = fillTable($("clusters"), ["cluster", "#F0s", "#people", "#places"], list.slice(0, 20).map((c) => ({
    cells: [String(c.cluster_id).slice(0, 12), c.cases, c.people, (c.checkpoints || []).length],
    attrs: {"data-cluster": c.cluster_id, class: c.cluster_id === session.cluster ? "selected" : undefined},
  })));
  for (const tr of body.children) {
    tr.addEventListener("click", () => {
      session.cluster = tr.dataset.cluster;
      refresh("p-clusters", clusters);
    });
  }
  fillTable($("hotspots"), ["place", "district", "#F0s", "last F0 visit"], hotspots.slice(0, 10).map((h) =>
    [h.name || h.checkpoint_id, districtName(h.district), h.cases, when(h.last_visit)]));
  if (!list.some((c) => c.cluster_id === session.cluster)) session.cluster = list[0]?.cluster_id || "";
  if (!session.cluster) {
    $("graph").replaceChildren(svg("text", {x: 20, y: 40, class: "note"}, "No cluster in the last 28 days."));
    session.graphKey = "";
    return;
  }
  let g;
  try {
    g = await api(`/v1/clusters/${encodeURIComponent(session.cluster)}/graph`);
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) return; // it merged or ended: next refresh
    throw e;
  }
  const key = `${session.cluster}|${g.nodes.length}|${g.edges.length}`;
  if (key === session.graphKey) return;
  session.graphKey = key;
  const cluster = list.find((c) => c.cluster_id === session.cluster);
  $("graph-title").textContent = `Exposure graph: ${cluster?.cases ?? "?"} F0, ${cluster?.people ?? "?"} people` +
    (g.nodes.length > MAX_GRAPH_NODES ? ` (${MAX_GRAPH_NODES} shown, nearest the F0s)` : "");
  drawGraph($("graph"), g);
}

/** A force-directed layout (Fruchterman–Reingold, with a pull to the centre so large
 * clusters fill the frame instead of piling on its edges) from a deterministic ring start:
 * the same graph is drawn the same way each time. Places link to the people seen there. */
function layout(nodes, links, w, h) {
  const n = nodes.length;
  const ring = {F0: 0.1, place: 0.2, F1: 0.3, F2: 0.45};
  const pos = nodes.map((node, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, n) + (ring[node.tier] || 0.45);
    const r = (ring[node.tier] || 0.45) * Math.min(w, h);
    return [w / 2 + r * Math.cos(a), h / 2 + r * Math.sin(a)];
  });
  const k = 0.5 * Math.sqrt((w * h) / Math.max(1, n)); // the ideal edge length
  const gravity = 1;
  const fx = new Float64Array(n), fy = new Float64Array(n);
  let heat = w / 10;
  for (let step = 0; step < 150; step++) {
    fx.fill(0);
    fy.fill(0);
    for (let i = 0; i < n; i++) { // repulsion k²/d between every pair
      for (let j = i + 1; j < n; j++) {
        const dx = pos[i][0] - pos[j][0], dy = pos[i][1] - pos[j][1];
        const f = (k * k) / Math.max(0.25, dx * dx + dy * dy);
        fx[i] += dx * f; fy[i] += dy * f;
        fx[j] -= dx * f; fy[j] -= dy * f;
      }
    }
    for (const [a, b] of links) { // attraction d²/k along each link
      const dx = pos[a][0] - pos[b][0], dy = pos[a][1] - pos[b][1];
      const f = Math.max(0.5, Math.hypot(dx, dy)) / k;
      fx[a] -= dx * f; fy[a] -= dy * f;
      fx[b] += dx * f; fy[b] += dy * f;
    }
    for (let i = 0; i < n; i++) {
      fx[i] += (w / 2 - pos[i][0]) * gravity;
      fy[i] += (h / 2 - pos[i][1]) * gravity * (w / h);
      const len = Math.max(0.01, Math.hypot(fx[i], fy[i])), move = Math.min(len, heat);
      pos[i][0] = Math.min(w - 12, Math.max(12, pos[i][0] + (fx[i] / len) * move));
      pos[i][1] = Math.min(h - 12, Math.max(12, pos[i][1] + (fy[i] / len) * move));
    }
    heat = Math.max(0.5, heat * 0.95);
  }
  return pos;
}

/** At most ``limit`` nodes of a large cluster, kept connected: the F0s and places, then
 * F1s, then F2s, each only when someone who exposed them is kept. */
function visibleNodes(g, limit) {
  const rank = {F0: 0, place: 1, F1: 2, F2: 3};
  const exposedBy = new Map();
  for (const e of g.edges) {
    if (!exposedBy.has(e.target)) exposedBy.set(e.target, []);
    exposedBy.get(e.target).push(e.source);
  }
  const kept = new Set();
  const nodes = [];
  for (const node of [...g.nodes].sort((a, b) => (rank[a.tier] ?? 4) - (rank[b.tier] ?? 4))) {
    if (nodes.length >= limit) break;
    const sources = exposedBy.get(node.id);
    if (sources && node.tier !== "F0" && !sources.some((x) => kept.has(x))) continue;
    kept.add(node.id);
    nodes.push(node);
  }
  return nodes;
}

function drawGraph(holder, g) {
  const [w, h] = [900, 420];
  const nodes = visibleNodes(g, MAX_GRAPH_NODES);
  const index = new Map(nodes.map((node, i) => [node.id, i]));
  const links = [];
  const visited = new Set(); // place→person, once each
  for (const e of g.edges) {
    const a = index.get(e.source), b = index.get(e.target);
    if (a === undefined || b === undefined) continue;
    links.push([a, b, e]);
    const place = e.checkpoint_id ? index.get(`cp:${e.checkpoint_id}`) : undefined;
    for (const person of place === undefined ? [] : [a, b]) {
      if (visited.has(`${place}:${person}`)) continue;
      visited.add(`${place}:${person}`);
      links.push([place, person, null]);
    }
  }
  const pos = layout(nodes, links, w, h).map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
  const parts = [];
  for (const [a, b, e] of links) {
    if (!e) {
      parts.push(svg("line", {x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1], class: "visit"}));
      continue;
    }
    const line = svg("line", {x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1],
      class: e.reason === "household" ? "household" : "contact"});
    line.append(svg("title", {}, e.reason === "household" ? "same household"
      : `${e.checkpoint_id || ""}: ${e.minutes ?? "?"} min together`));
    parts.push(line);
  }
  nodes.forEach((node, i) => {
    const [x, y] = pos[i];
    const shape = node.tier === "place"
      ? svg("rect", {x: x - 5, y: y - 5, width: 10, height: 10, class: "n-place"})
      : svg("circle", {cx: x, cy: y, r: node.tier === "F0" ? 7 : 4.5, class: `n-${node.tier}`});
    // People by the first characters of their pseudonym only; places by checkpoint.
    shape.append(svg("title", {}, node.tier === "place" ? `place ${node.checkpoint_id}`
      : `${node.tier} · person ${String(node.id).slice(0, 8)}…`));
    parts.push(shape);
  });
  holder.replaceChildren(...parts);
}

// ---------------------------------------------------------------- alerts (officials, owners)

/** An alert as one line. Exposure alerts name the person (officials of that district
 * only: the server decides); venue alerts (owners) say where and when, never who. */
function alertLine(a) {
  if (a.kind === "venue") {
    const slots = (a.slots || []).map((s) => `${when(s.start)}–${when(s.end).slice(-5)}`).join(", ");
    return `F0 visited ${a.checkpoint_name || a.checkpoint_id}` +
      (slots ? ` (${slots})` : "") + ` · ${fmt(Number(a.visitors_flagged) || 0)} visitors flagged`;
  }
  const bits = [a.tier, districtName(a.district)];
  if (a.name || a.person_id) bits.push([a.name, a.person_id].filter(Boolean).join(" "));
  if (a.checkpoint_id) bits.push(`at ${a.checkpoint_id}${a.overlap_minutes ? `, ${rate(a.overlap_minutes, 0)} min` : ""}`);
  else if (a.reason) bits.push(a.reason);
  if (a.report_id) bits.push(`report ${a.report_id}`);
  return bits.filter(Boolean).join(" · ");
}

/** One SSE ``data:`` as {alert fields…, change, at}: the server sends {event_id, change,
 * at, alert}; a flat alert is taken as it is. */
function alertOfEvent(data) {
  if (!data || typeof data !== "object" || !data.alert) return data;
  return {...data.alert, change: data.change, at: data.at ?? data.alert.flagged_at};
}

function addToFeed(a) {
  const s = session;
  const id = String(a.alert_id ?? "");
  const old = id && s.alerts.get(id);
  const status = a.change && a.change !== a.status ? `${a.change}, ${a.status}` : a.status;
  const item = el("li", {class: `tier-${a.tier ?? "F0"} fresh`, "data-alert": id, "data-report": a.report_id ?? ""},
    el("span", {class: "when"}, when(a.at ?? a.flagged_at)), alertLine(a),
    el("small", {class: "status"}, ` (${status ?? "open"})`));
  if (old) old.remove();
  $("alert-feed").prepend(item);
  if (id) s.alerts.set(id, item);
  const feed = $("alert-feed");
  while (feed.children.length > 200) {
    s.alerts.delete(feed.lastElementChild.dataset.alert);
    feed.lastElementChild.remove();
  }
  $("alert-feed-empty").hidden = true;
}

let openTimer = null;
function soonOpenAlerts() {
  clearTimeout(openTimer);
  openTimer = setTimeout(() => refresh("p-alerts", openAlerts), 400);
}

/** What is still to do: open alerts, and (officials) acknowledged ones waiting for a
 * result. Also where the live stream starts, so nothing falls between list and stream. */
async function openAlerts() {
  const s = session;
  const official = s.me.role === "official";
  const [open, taken] = await Promise.all([
    api("/v1/alerts?status=open&limit=200"),
    official ? api("/v1/alerts?status=acknowledged&limit=200") : Promise.resolve({alerts: []}),
  ]);
  if (!s.listEventId && open?.last_event_id) s.listEventId = String(open.last_event_id);
  const counts = open?.counts || {};
  $("alert-counts").textContent = Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(" · ");
  const rows = [...(open?.alerts || []), ...(taken?.alerts || [])];
  $("open-alerts-empty").hidden = rows.length > 0;
  fillTable($("open-alerts"), ["when", "alert", "status", official ? "action" : ""], rows.slice(0, 300).map((a) => ({
    cells: [when(a.flagged_at ?? a.created_at), alertLine(a), a.status, official ? alertActions(a) : ""],
    attrs: {"data-alert": a.alert_id, "data-report": a.report_id ?? "", "data-status": a.status},
  })));
}

function alertActions(a) {
  const id = encodeURIComponent(String(a.alert_id));
  const ack = el("button", {type: "button", class: "ack", disabled: a.status !== "open"}, "Ack");
  const action = el("select", {"aria-label": "follow-up"}, ...FOLLOW_UPS.map((f) => el("option", {value: f}, f)));
  const result = el("select", {"aria-label": "test result", hidden: true},
    el("option", {value: "negative"}, "negative"), el("option", {value: "positive"}, "positive"));
  const note = el("input", {placeholder: "note", maxlength: 1000, "aria-label": "note"});
  const save = el("button", {type: "button", class: "follow-up"}, "Record");
  const box = el("div", {class: "actions"}, ack, action, result, note, save);
  action.addEventListener("change", () => { result.hidden = action.value !== "result"; });
  const act = async (button, path, body) => {
    button.disabled = true;
    try {
      await api(path, {method: "POST", body});
      soonOpenAlerts();
    } catch (e) {
      if (quiet(e)) return;
      button.disabled = false;
      box.append(el("span", {class: "error"}, e.message));
    }
  };
  ack.addEventListener("click", () => act(ack, `/v1/alerts/${id}/ack`));
  save.addEventListener("click", () => {
    const body = {action: action.value};
    if (action.value === "result") body.result = result.value;
    if (note.value.trim()) body.note = note.value.trim();
    act(save, `/v1/alerts/${id}/followup`, body);
  });
  return box;
}

/** Read Server-Sent Events from a fetch() body (EventSource cannot send a bearer token):
 * the event stream format of the HTML standard, one dispatch per blank line. */
async function readEvents(body, onEvent, onRetry) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", type = "", data = [], id = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buffer);
      if (!m || (m[0] === "\r" && m.index === buffer.length - 1)) break; // "\r" may precede "\n"
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === "") {
        onEvent({type: type || "message", data: data.join("\n"), id, empty: !data.length});
        type = ""; data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: connected, keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") type = text;
      else if (field === "data") data.push(text);
      else if (field === "id" && !text.includes("\0")) id = text;
      else if (field === "retry" && /^\d+$/.test(text)) onRetry(Number(text));
    }
  }
}

/** The live alert feed: starts where the open list ended, reconnects after a drop and
 * resumes after the last event seen (Last-Event-ID). */
async function alertStream(s) {
  let backoff = 1000;
  const conn = (text, on) => {
    if (s !== session) return;
    $("alert-conn").textContent = text;
    $("live-dot").classList.toggle("on", on);
  };
  await refresh("p-alerts", openAlerts);
  while (s === session && !$("p-alerts").hidden) {
    try {
      const headers = {Authorization: `Bearer ${s.token}`, Accept: "text/event-stream"};
      let url = "/v1/alerts/stream";
      const resume = s.lastEventId || s.listEventId;
      if (resume) {
        headers["Last-Event-ID"] = resume;
        url += `?last_event_id=${encodeURIComponent(resume)}`;
      }
      const response = await fetch(url, {headers, cache: "no-store", signal: s.abort.signal});
      if (s !== session) return;
      if (response.status === 401) {
        endSession(`Signed out: ${await errorText(response)}`);
        return;
      }
      if (response.status === 403 || response.status === 404) {
        conn(`live feed unavailable: ${await errorText(response)}`, false);
        return;
      }
      if (!response.ok || !response.body) throw new HttpError(response.status, await errorText(response));
      conn("live", true);
      backoff = 1000;
      await readEvents(response.body, (event) => {
        if (s !== session) return;
        if (event.id) s.lastEventId = event.id;
        if (event.type === "gap") soonOpenAlerts(); // missed entries were trimmed: reload the list
        if (event.type !== "alert" || event.empty) return;
        try {
          addToFeed(alertOfEvent(JSON.parse(event.data)));
        } catch (e) {
          console.warn("an alert event that is not JSON", e);
        }
        soonOpenAlerts();
      }, (ms) => { s.retry = ms; });
    } catch (e) {
      if (quiet(e) || s !== session) return;
      console.warn("alert stream", e.message);
    }
    conn("reconnecting…", false);
    await sleep(s.retry || backoff, s.abort.signal);
    backoff = Math.min(backoff * 2, 15000);
  }
}

// ---------------------------------------------------------------- forms: lookup, review, staff

function bindForms() {
  $("lookup-form").addEventListener("submit", (event) => { event.preventDefault(); lookup(); });
  $("review-form").addEventListener("submit", (event) => { event.preventDefault(); reviewQueue(); });
  $("staff-form").addEventListener("submit", (event) => { event.preventDefault(); staff(); });
  $("testing-form").addEventListener("submit", (event) => { event.preventDefault(); flaggedForTesting(); });
}

function colourChip(colour) {
  return el("span", {class: `colour colour-${colour}`}, colour);
}

async function lookup() {
  const id = $("lookup-id").value.trim();
  const purpose = $("lookup-purpose").value.trim();
  const out = $("lookup-result");
  out.replaceChildren(el("p", {class: "muted"}, "Looking up…"));
  const path = encodeURIComponent(id);
  const [status, why] = await Promise.allSettled([
    api(`/v1/residents/${path}/status`, {purpose}),
    api(`/v1/residents/${path}/why`, {purpose}),
  ]);
  if (!session) return;
  const parts = [];
  if (status.status === "fulfilled") {
    const s = status.value;
    parts.push(el("p", {}, "Card: ", colourChip(s.colour), ` rule ${s.rule_version}, updated ${when(s.updated_at)}`),
      el("ul", {}, ...(s.reasons || []).map((r) => el("li", {}, r))));
  } else if (!quiet(status.reason)) {
    parts.push(el("p", {class: "error"}, status.reason.message));
  }
  if (why.status === "fulfilled" && (why.value.evidence || []).length) {
    parts.push(el("h3", {}, `Why ${why.value.tier || ""}`));
    for (const link of why.value.evidence) {
      parts.push(el("p", {}, `${link.tier} by report ${link.report_id} (${link.report_status ?? "?"})` +
        (link.window ? `, infectious ${when(link.window.start)} – ${when(link.window.end)}` : "")));
      const chain = link.chain || [];
      if (chain.length) {
        const t = el("table", {class: "data"});
        fillTable(t, ["tier", "person", "via", "how", "where", "from", "#minutes"], chain.map((c) =>
          [c.tier, c.person_id ?? "–", c.via ?? "–", c.reason, c.checkpoint_id ?? "–", when(c.overlap_start), c.overlap_minutes]));
        parts.push(t);
      }
    }
  } else if (why.status === "rejected" && status.status === "fulfilled" && !quiet(why.reason)) {
    parts.push(el("p", {class: "error"}, why.reason.message));
  }
  out.replaceChildren(...parts);
}

// A read that states its purpose (audited), shown in its panel: the data, or null after
// showing the error in the panel.
async function purposefulRead(panelId, path, purpose) {
  const error = $(panelId).querySelector(":scope > .error");
  try {
    const data = await api(path, {purpose});
    error.hidden = true;
    return data;
  } catch (e) {
    if (!quiet(e)) {
      error.textContent = e.message;
      error.hidden = false;
    }
    return null;
  }
}

async function reviewQueue() {
  const purpose = $("review-purpose").value.trim();
  const items = await purposefulRead("p-review", "/v1/review?limit=200", purpose);
  if (items === null) return;
  $("review-empty").hidden = items.length > 0;
  fillTable($("review"), ["record", "person", "name", "born", "why", "decide"], items.map((item) => {
    const event = item.event || {};
    const record = event.record || {};
    const conflict = item.conflicts_with
      ? el("div", {class: "muted"}, `applied: ${JSON.stringify(item.conflicts_with)}`) : null;
    return {
      cells: [`${event.kind ?? "?"} · row ${item.row ?? "?"}`, event.person_id ?? "–", record.name ?? "–",
        record.dob ?? "–", el("div", {}, item.reason ?? "", conflict), reviewActions(item, purpose)],
      attrs: {"data-review": item.review_id},
    };
  }));
}

function reviewActions(item, purpose) {
  const note = el("input", {placeholder: "note", maxlength: 1000});
  const accept = el("button", {type: "button"}, "Accept");
  const reject = el("button", {type: "button"}, "Reject");
  const box = el("div", {class: "actions"}, accept, reject, note);
  const decide = async (decision) => {
    accept.disabled = reject.disabled = true;
    try {
      await api(`/v1/review/${encodeURIComponent(item.review_id)}`, {
        method: "POST", purpose, body: {decision, note: note.value.trim()},
      });
      box.replaceChildren(el("span", {class: "muted"}, `${decision}ed`));
    } catch (e) {
      if (quiet(e)) return;
      accept.disabled = reject.disabled = false;
      box.append(el("span", {class: "error"}, e.message));
    }
  };
  accept.addEventListener("click", () => decide("accept"));
  reject.addEventListener("click", () => decide("reject"));
  return box;
}

async function ownerCheckpoints() {
  const rows = await api("/v1/owner/checkpoints");
  $("owner-empty").hidden = rows.length > 0;
  fillTable($("owner-checkpoints"), ["checkpoint", "type", "district", "#visits last hour", "#visits today"],
    rows.map((r) => [r.name ? `${r.name} (${r.checkpoint_id})` : r.checkpoint_id, r.type ?? "",
      districtName(r.district), Number(r.visits_last_hour) || 0, Number(r.visits_today) || 0]));
}

async function staff() {
  const data = await purposefulRead("p-staff", "/v1/organisations/staff", $("staff-purpose").value.trim());
  if (data === null) return;
  fillTable($("staff"), ["person", "unit", "card", "why", "exposures"], (data.staff || []).map((r) => [
    r.person_id, r.unit ?? "", colourChip(r.colour), (r.reasons || []).join("; "),
    (r.exposures || []).map((x) => `${x.tier} since ${when(x.since)}`).join("; ") || "–",
  ]));
}

// ---------------------------------------------------------------- flagged for testing

async function testingSummary() {
  const counts = await api("/v1/testing/summary");
  const entries = Object.entries(counts).map(([d, n]) => [districtName(d), Number(n) || 0])
    .sort((a, b) => b[1] - a[1]);
  bars($("testing-summary"), entries);
  if (!entries.length) $("testing-summary").replaceChildren(el("p", {class: "muted"}, "No one is waiting for a test."));
}

async function flaggedForTesting() {
  const rows = await purposefulRead("p-testing", "/v1/testing/flagged", $("testing-purpose").value.trim());
  if (rows === null) return;
  fillTable($("testing"), ["person", "ward", "card", "flagged"], rows.map((r) => [
    r.person_id, r.ward || "–", colourChip(r.colour), when(r.flagged_since),
  ]));
}

async function quality() {
  const q = await api("/v1/quality");
  const sources = q.match_rates?.by_source || {};
  fillTable($("sources"), ["source", "#imports", "#rows", "match rate", "newest record"],
    Object.entries(sources).map(([k, v]) => [k, v.imports, v.rows,
      v.match_rate === null || v.match_rate === undefined ? "–" : `${(v.match_rate * 100).toFixed(1)}%`,
      (q.freshness || {})[k]?.newest_record || "–"]));
}

// ---------------------------------------------------------------- start

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved); else showLogin();
