"""The debug console's single page: HTML, CSS and plain JavaScript, no build step, no CDN.

It signs in (app id + secret, or the console token) with one `<page>/api/state` request,
then reads `<page>/api/stream` (server-sent events, `live.py`) and renders what it pushes:
the connection count, channels, presence members, a filterable event log and the stats.
No polling: while the channel filter is set, each pushed state is followed by one filtered
`<page>/api/state` request. A form triggers a test event through `<page>/api/trigger`.
Credentials live in the tab's `sessionStorage` only (gone when the tab closes; "Sign out"
clears them).

The stream is read with `fetch`, not `EventSource`, because an `EventSource` cannot send
the `Authorization` header (the secret would have to go into the URL or a cookie). The page
parses the same `text/event-stream` format, and reconnects after a drop (backoff 1, 2, 4 ...
10 s) with the last id it saw as `Last-Event-ID`, so no entry is lost or shown twice while
the server still holds it; a `reset` event shows as a gap row. `window.consoleStream` holds
the stream's bookkeeping (last id, opens, resets) and `abort()`, for the headless test.

Above the debug log, the dashboard (`charts.py`, spliced in) draws the app's stats over time
from the `stats` events.

With the `console_token` login, an "Apps" tab (`apps_page.py`, spliced in) opens the Apps
view: the app store managed like `pyserver apps`. An app's own login never shows the tab.
Every request carries the login in its `Authorization` header, never in a cookie, so another
site cannot make the browser send a change (no CSRF token is needed).

`PAGE_HEADERS` go with the page: no caching, and a Content-Security-Policy that allows only
this page's own inline style and script (by hash) and fetches to its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import re

from pyserver.console import apps_page, charts

PAGE = (
    b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>pyserver debug console</title>
<style>
:root { --bg:#f4f5f7; --card:#fff; --ink:#1b2130; --muted:#687085; --line:#e2e5ea;
  --accent:#3b5bdb; --ok:#2b8a3e; --bad:#c92a2a; --api:#2b8a3e; --client:#c2255c;
  --presence:#d9480f; --webhook:#7048e8; --sys:#5c6b7a; }
* { box-sizing:border-box; }
[hidden] { display:none !important; }
body { margin:0; font:13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  background:var(--bg); color:var(--ink); }
header { display:flex; gap:14px; align-items:center; padding:8px 16px; background:var(--ink);
  color:#fff; }
header h1 { font-size:15px; margin:0; font-weight:600; white-space:nowrap; }
header label { color:#c5cad6; }
header select { font:inherit; padding:2px 4px; border-radius:4px; }
#app-name { color:#fff; font-size:13px; }
.stats { margin-left:auto; display:flex; gap:14px; align-items:center;
  font-variant-numeric:tabular-nums; }
.stats b { font-size:15px; }
.dot { display:inline-block; width:8px; height:8px; border-radius:50%; background:var(--muted);
  margin-right:4px; }
.live .dot { background:#51cf66; } .down .dot { background:#ff6b6b; }
header button { background:transparent; border:1px solid #4a5163; color:#fff; padding:3px 10px; }
main { display:grid; grid-template-columns:340px minmax(0, 1fr); gap:12px; padding:12px 16px; }
.side { display:grid; gap:12px; align-content:start; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:10px 12px; min-width:0; }
h2 { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted);
  margin:0 0 6px; display:flex; justify-content:space-between; }
table { width:100%; border-collapse:collapse; }
td, th { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:11px; background:var(--card);
  position:sticky; top:0; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.mono { font-family:ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size:12px;
  overflow-wrap:anywhere; }
.muted { color:var(--muted); }
.badge { display:inline-block; padding:0 6px; border-radius:4px; color:#fff; font-size:11px;
  line-height:17px; background:var(--sys); }
.k-api { background:var(--api); } .k-client { background:var(--client); }
.k-presence { background:var(--presence); } .k-webhook { background:var(--webhook); }
.t { display:inline-block; padding:0 5px; border-radius:4px; font-size:10px;
  border:1px solid var(--line); color:var(--muted); margin-left:4px; }
a.ch { color:var(--ink); text-decoration:none; cursor:pointer; }
a.ch:hover { color:var(--accent); text-decoration:underline; }
.member { margin:2px 0 6px; }
.member .mono { margin-left:8px; }
form { display:grid; gap:6px; margin:0; }
input, textarea, select, button { font:inherit; }
input, textarea { padding:5px 8px; border:1px solid var(--line); border-radius:6px;
  width:100%; background:#fff; }
textarea { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12px; resize:vertical; }
button { padding:5px 12px; border-radius:6px; border:0; background:var(--accent); color:#fff;
  cursor:pointer; }
button.plain { background:#fff; color:var(--ink); border:1px solid var(--line); }
.filters { display:grid; grid-template-columns:1fr 1fr 130px auto; gap:6px; margin-bottom:6px; }
.filters select { padding:4px 6px; border:1px solid var(--line); border-radius:6px;
  background:#fff; }
#events { max-height:calc(100vh - 150px); overflow:auto; }
#events table { table-layout:fixed; }
.c-time { width:106px; } .c-kind { width:78px; } .c-chan { width:24%; } .c-event { width:18%; }
.ok { color:var(--ok); } .error { color:var(--bad); }
#login { max-width:340px; margin:70px auto; }
#login h2 { font-size:14px; text-transform:none; letter-spacing:0; color:var(--ink); }
.or { text-align:center; color:var(--muted); font-size:12px; }
.empty { color:var(--muted); padding:6px; }
"""
    + charts.STYLE
    + apps_page.STYLE
    + b"""</style></head>
<body>
<div id="login"><section>
 <h2>pyserver debug console</h2>
 <form id="login-form">
  <input id="app-id" placeholder="app id" autocomplete="username">
  <input id="secret" type="password" placeholder="app secret" autocomplete="current-password">
  <div class="or">or</div>
  <input id="token" type="password" placeholder="console token" autocomplete="off">
  <button type="submit">Open console</button>
  <div class="error" id="login-error"></div>
 </form>
</section></div>
<div id="app" hidden>
 <header>
  <h1>pyserver debug console</h1>
  <nav class="tabs"><button id="tab-debug" type="button" class="on">Debug</button>
   <button id="tab-apps" type="button" hidden>Apps</button></nav>
  <label>app <select id="app-picker"></select><b id="app-name" class="mono"></b></label>
  <div class="stats">
   <span><b id="connections">0</b> <span id="connections-label">connections</span></span>
   <span><b id="channel-count">0</b> <span id="channel-label">channels</span></span>
   <span id="status"><span class="dot"></span><span id="status-text">connecting</span></span>
   <button id="sign-out" type="button">Sign out</button>
  </div>
 </header>
 <main id="debug-view">"""
    + charts.MARKUP
    + b"""
  <div class="side">
   <section><h2><span>Channels</span><span id="channels-note"></span></h2>
    <table><thead><tr><th>channel</th><th class="num">subscribers</th></tr></thead>
     <tbody id="channels"></tbody></table></section>
   <section><h2>Presence members</h2><div id="members"></div></section>
   <section><h2>Trigger a test event</h2>
    <form id="trigger-form">
     <input id="t-channel" placeholder="channel" required>
     <input id="t-event" placeholder="event name" required>
     <textarea id="t-data" rows="3" placeholder='data (JSON), e.g. {"hello":"world"}'></textarea>
     <button type="submit">Trigger event</button>
     <div id="trigger-result" class="muted"></div>
    </form></section>
  </div>
  <section><h2><span>Events</span><span id="events-note"></span></h2>
   <div class="filters">
    <input id="f-channel" placeholder="filter by channel">
    <input id="f-event" placeholder="filter by event name">
    <select id="f-kind">
     <option value="">all types</option><option value="api">api</option>
     <option value="client">client</option><option value="presence">presence</option>
     <option value="channel">channel</option><option value="subscribe">subscribe</option>
     <option value="user">user</option><option value="webhook">webhook</option>
    </select>
    <button id="clear" class="plain" type="button">Clear</button>
   </div>
   <div id="events"><table><thead><tr><th class="c-time">time</th><th class="c-kind">type</th>
    <th class="c-chan">channel</th><th class="c-event">event</th><th>details</th></tr></thead>
    <tbody id="event-rows"></tbody></table></div>
  </section>
 </main>"""
    + apps_page.MARKUP
    + b"""</div>
<script>
"use strict";
const KEY = "pyserver-console-auth", KEEP = 2000, SHOW = 400;
const BASE = location.pathname.replace(/\\/+$/, "");
let auth = sessionStorage.getItem(KEY) || "";
let app = "", events = [], latest = null, dirty = true, queued = false;
const live = { lastId: "", opened: 0, resets: [], controller: null, backoff: 1000, timer: null };
live.abort = () => { if (live.controller) live.controller.abort(); };  // drop: the page resumes
window.consoleStream = live;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;",
  "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

async function api(path, options) {
  const init = Object.assign({ cache: "no-store" }, options || {});
  init.headers = { Authorization: auth, "Content-Type": "application/json" };
  const response = await fetch(BASE + path, init);
  let body = {};
  try { body = await response.json(); } catch (err) { body = {}; }
  if (!response.ok) {
    const err = new Error(body.error || "HTTP " + response.status);
    err.status = response.status;
    throw err;
  }
  return body;
}

function basic(id, secret) {
  const bytes = new TextEncoder().encode(id + ":" + secret);
  return "Basic " + btoa(String.fromCharCode.apply(null, bytes));
}

function reset() {
  stopStream(); app = ""; events = []; latest = null; dirty = true; live.lastId = "";
  statsReset();
}
function show(signedIn) {
  $("login").hidden = signedIn; $("app").hidden = !signedIn;
  if (signedIn) requestAnimationFrame(drawStats);
}
function signOut(message) {
  sessionStorage.removeItem(KEY); auth = ""; reset(); appsReset(); show(false);
  $("login-error").textContent = message || "";
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim(), id = $("app-id").value.trim();
  if (!token && !id) {
    $("login-error").textContent = "Enter an app id and its secret, or the console token";
    return;
  }
  auth = token ? "Bearer " + token : basic(id, $("secret").value);
  reset(); appsReset();
  try {
    await loadState();
    sessionStorage.setItem(KEY, auth);
    $("secret").value = ""; $("token").value = ""; $("login-error").textContent = "";
    show(true);
    openStream();
  } catch (err) { auth = ""; $("login-error").textContent = err.message; }
});
$("sign-out").addEventListener("click", () => signOut(""));
$("app-picker").addEventListener("change", () => {
  const picked = $("app-picker").value; reset(); app = picked; render();
  loadState().then(openStream).catch(() => {});
});
let refetch = null;
for (const id of ["f-channel", "f-event", "f-kind"]) {
  $(id).addEventListener("input", () => { dirty = true; render(); });
}
$("f-channel").addEventListener("input", () => {  // the channel list is filtered by the server
  clearTimeout(refetch);
  refetch = setTimeout(() => loadState().catch(() => {}), 250);
});
$("clear").addEventListener("click", () => { events = []; dirty = true; render(); });
$("channels").addEventListener("click", (e) => {
  const link = e.target.closest("a.ch");
  if (!link) return;
  e.preventDefault();
  $("t-channel").value = link.dataset.channel;
  $("t-event").focus();
});

$("trigger-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const result = $("trigger-result"), channel = $("t-channel").value.trim();
  const event = $("t-event").value.trim(), data = $("t-data").value.trim() || "{}";
  try { JSON.parse(data); } catch (err) {
    result.className = "error"; result.textContent = "Data must be JSON: " + err.message;
    return;
  }
  try {
    await api("/api/trigger", { method: "POST",
      body: JSON.stringify({ app, channel, event, data }) });
    result.className = "ok"; result.textContent = "Sent " + event + " to " + channel;
  } catch (err) { result.className = "error"; result.textContent = err.message; }
});

// One request for the apps this login opens and the (filtered) channel list; the feed
// itself comes from the stream (`since` past any sequence: no events here).
async function loadState() {
  const asked = app;
  const state = await api("/api/state?app=" + encodeURIComponent(asked) +
    "&since=9007199254740991&channel=" + encodeURIComponent($("f-channel").value.trim()));
  if (asked !== app) return state;  // the app was switched meanwhile
  app = state.app; latest = state;
  const picker = $("app-picker");
  if ([...picker.options].map((o) => o.value).join() !== state.apps.join()) {
    picker.innerHTML = state.apps.map((a) => "<option>" + esc(a) + "</option>").join("");
  }
  picker.value = app; picker.hidden = state.apps.length < 2;
  $("app-name").textContent = state.apps.length < 2 ? app : "";
  appsLogin(state);
  render();
  return state;
}

// --- the stream: server-sent events read with fetch (see the module's docstring) ---------
function stopStream() {
  const controller = live.controller;
  live.controller = null; clearTimeout(live.timer);
  if (controller) controller.abort();
}
async function openStream() {
  stopStream();
  if (!auth || !app) return;  // no app yet: the operator adds one on the Apps page
  const controller = new AbortController(), headers = { Authorization: auth };
  live.controller = controller;
  if (live.lastId) headers["Last-Event-ID"] = live.lastId;
  let response;
  try {
    response = await fetch(BASE + "/api/stream?app=" + encodeURIComponent(app),
      { headers, cache: "no-store", signal: controller.signal });
  } catch (err) { streamLost(controller, "server unreachable"); return; }
  if (response.status === 401) { signOut("Signed out: the login was refused"); return; }
  if (!response.ok) { streamLost(controller, "HTTP " + response.status); return; }
  live.opened += 1; live.backoff = 1000;
  if (controller === live.controller) setStatus(true, "live");
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (controller === live.controller) dispatch(block);
      }
    }
  } catch (err) { /* dropped or aborted */ }
  streamLost(controller, "reconnecting");
}
function streamLost(controller, text) {
  if (controller !== live.controller || !auth) return;  // replaced meanwhile, or signed out
  live.controller = null;
  setStatus(false, text);
  clearTimeout(live.timer);
  live.timer = setTimeout(openStream, live.backoff);
  live.backoff = Math.min(live.backoff * 2, 10000);
}
function dispatch(block) {
  let id = "", name = "message", data = "";
  for (const line of block.split("\\n")) {
    if (!line || line[0] === ":") continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") name = value;
    else if (field === "data") data += (data ? "\\n" : "") + value;
  }
  if (!data) return;
  const body = JSON.parse(data);
  if (name === "feed") {
    events.push(body);
    if (id) live.lastId = id;
    if (events.length > KEEP) events = events.slice(-KEEP);
    dirty = true; renderSoon();
  } else if (name === "reset") {
    live.resets.push(body);
    if (body.reason === "unknown-id") events = [];  // another server start: start over
    else events.push({ kind: "gap", time: Date.now() / 1000, channel: "", event: "gap",
      data: (body.dropped == null ? "some" : body.dropped) + " entries were not kept" });
    dirty = true; renderSoon();
  } else if (name === "stats") {
    statsApply(body);
  } else if (name === "state" && body.app === app) {
    latest = Object.assign({}, latest || {}, body);
    if ($("f-channel").value.trim()) loadState().catch(() => {});
    else render();
  }
}
function renderSoon() {
  if (queued) return;
  queued = true;
  setTimeout(() => { queued = false; render(); }, 30);
}

function setStatus(ok, text) {
  $("status").className = ok ? "live" : "down"; $("status-text").textContent = text;
}

function clock(t) {
  const d = new Date(t * 1000), p = (n, w) => String(n).padStart(w || 2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." +
    p(d.getMilliseconds(), 3);
}

function details(ev) {
  const who = [];
  if (ev.socket_id) who.push("socket " + ev.socket_id);
  if (ev.user_id && ev.kind === "client") who.push("user " + ev.user_id);
  let text = esc(ev.data);
  if (ev.kind === "presence" || ev.kind === "user") text = "user " + esc(ev.user_id);
  if (ev.kind === "webhook") {
    text = "<span class='" + (ev.outcome === "delivered" ? "ok" : "error") + "' title='" +
      esc(ev.data) + "'>" + esc(ev.outcome) + "</span> <span class='muted'>" + esc(ev.url) +
      "</span>";
  }
  if (ev.node) who.push("node " + ev.node);
  if (who.length) text += " <span class='muted'>" + esc(who.join(" \\u00b7 ")) + "</span>";
  return text;
}

function render() {
  if (!latest) return;
  $("connections").textContent = latest.connections;
  $("channel-count").textContent = latest.channel_count;
  $("connections-label").textContent = latest.connections === 1 ? "connection" : "connections";
  $("channel-label").textContent = latest.channel_count === 1 ? "channel" : "channels";
  const filtered = $("f-channel").value.trim() !== "";
  $("channels-note").textContent = (filtered ? "filtered" : "") +
    (latest.channel_total > latest.channels.length ?
      " first " + latest.channels.length + " of " + latest.channel_total : "");
  $("channels").innerHTML = latest.channels.map((c) => "<tr><td class='mono'><a class='ch' " +
    "href='#' title='use in the trigger form' data-channel='" + esc(c.name) + "'>" +
    esc(c.name) + "</a>" + (c.type === "public" ? "" : "<span class='t'>" + esc(c.type) +
    "</span>") + "</td><td class='num'>" + c.subscribers + "</td></tr>").join("") ||
    "<tr><td colspan='2' class='empty'>no occupied channels</td></tr>";
  const presence = latest.channels.filter((c) => c.members);
  $("members").innerHTML = presence.map((c) => {
    const ids = Object.keys(c.members);
    return "<div class='member'><b class='mono'>" + esc(c.name) + "</b> <span class='muted'>(" +
      ids.length + ")</span>" + ids.map((id) => {
        const info = c.members[id];
        const shown = info == null ? "" : JSON.stringify(info);
        return "<div class='mono'>" + esc(id) + (shown ? " <span class='muted'>" +
          esc(shown.length > 80 ? shown.slice(0, 80) + "\\u2026" : shown) + "</span>" : "") +
          "</div>";
      }).join("") + "</div>";
  }).join("") || "<div class='empty'>no presence channels</div>";
  if (!dirty) return;
  dirty = false;
  const fc = $("f-channel").value.trim().toLowerCase();
  const fe = $("f-event").value.trim().toLowerCase(), fk = $("f-kind").value;
  const shown = events.filter((ev) => (!fc || ev.channel.toLowerCase().includes(fc)) &&
    (!fe || ev.event.toLowerCase().includes(fe)) && (!fk || ev.kind === fk));
  $("events-note").textContent = shown.length === events.length ? events.length + " events" :
    shown.length + " of " + events.length + " events";
  $("event-rows").innerHTML = shown.slice(-SHOW).reverse().map((ev) =>
    "<tr><td class='muted mono'>" + clock(ev.time) + "</td><td><span class='badge k-" +
    esc(ev.kind) + "'>" + esc(ev.kind) + "</span></td><td class='mono'>" + esc(ev.channel) +
    "</td><td class='mono'>" + esc(ev.event) + "</td><td class='mono'>" + details(ev) +
    "</td></tr>").join("") ||
    "<tr><td colspan='5' class='empty'>no events yet: they appear here as they happen</td></tr>";
}
"""
    + charts.SCRIPT
    + apps_page.SCRIPT
    + b"""
if (auth) { loadState().then(() => { show(true); openStream(); }).catch(() => signOut("")); }
</script></body></html>
"""
)


def _sha256_source(tag: bytes) -> str:
    """The CSP source matching the page's one inline `<tag>` element."""
    match = re.search(rb"<" + tag + rb">(.*?)</" + tag + rb">", PAGE, re.DOTALL)
    assert match is not None, tag
    digest = base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode()
    return f"'sha256-{digest}'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256_source(b'script')}; "
    f"style-src {_sha256_source(b'style')}; connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
