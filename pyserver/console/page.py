"""The debug console's single page: HTML, CSS and plain JavaScript, no build step, no CDN.

It signs in (app id + secret, or the console token), polls `/console/api/state` about once
a second, and renders connections, channels, presence members and a filterable event stream,
with a form that triggers a test event through `/console/api/trigger`.
"""

from __future__ import annotations

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyserver debug console</title>
<style>
 :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#6b7385; --line:#e3e6eb;
         --accent:#3b5bdb; --api:#2b8a3e; --client:#c2255c; --presence:#e67700; --sys:#5c6b7a; }
 * { box-sizing: border-box; }
 body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--ink); }
 header { display:flex; gap:16px; align-items:center; padding:10px 18px; background:var(--ink);
          color:#fff; }
 header h1 { font-size:16px; margin:0; font-weight:600; }
 header .stat { margin-left:auto; font-variant-numeric:tabular-nums; }
 header select { font:inherit; }
 main { display:grid; grid-template-columns: 320px 1fr; gap:14px; padding:14px 18px; }
 section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px; }
 h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted);
      margin:0 0 8px; }
 table { width:100%; border-collapse:collapse; }
 td, th { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line);
          vertical-align:top; }
 th { font-weight:600; color:var(--muted); font-size:12px; }
 .mono { font-family: ui-monospace, Menlo, monospace; font-size:12px; word-break:break-all; }
 .kind { display:inline-block; padding:1px 6px; border-radius:4px; color:#fff; font-size:11px; }
 .k-api { background:var(--api); } .k-client { background:var(--client); }
 .k-presence { background:var(--presence); } .k-channel, .k-subscribe, .k-user,
 .k-webhook { background:var(--sys); }
 form { display:grid; gap:6px; }
 input, textarea, button { font:inherit; padding:6px 8px; border:1px solid var(--line);
                           border-radius:6px; }
 button { background:var(--accent); color:#fff; border:0; cursor:pointer; }
 .filters { display:flex; gap:8px; margin-bottom:8px; }
 .filters input { flex:1; }
 #events { max-height: 60vh; overflow:auto; }
 #login { max-width:360px; margin:60px auto; }
 .error { color:#c92a2a; min-height:1.2em; }
 .muted { color:var(--muted); }
</style></head>
<body>
<div id="login"><section>
 <h2>pyserver debug console</h2>
 <form id="login-form">
  <input id="app-id" placeholder="app id" autocomplete="username">
  <input id="secret" type="password" placeholder="app secret" autocomplete="current-password">
  <div class="muted">or an admin token:</div>
  <input id="token" type="password" placeholder="console token">
  <button type="submit">Open</button>
  <div class="error" id="login-error"></div>
 </form>
</section></div>
<div id="app" hidden>
 <header><h1>pyserver debug console</h1>
  <select id="app-picker"></select>
  <span class="stat"><b id="connections">0</b> connections &middot;
   <b id="channel-count">0</b> channels</span>
 </header>
 <main>
  <div style="display:grid; gap:14px; align-content:start">
   <section><h2>Channels</h2>
    <table><thead><tr><th>channel</th><th>local subscribers</th></tr></thead>
     <tbody id="channels"></tbody></table></section>
   <section><h2>Presence members</h2><div id="members" class="mono"></div></section>
   <section><h2>Trigger a test event</h2>
    <form id="trigger-form">
     <input id="t-channel" placeholder="channel" required>
     <input id="t-event" placeholder="event name" required>
     <textarea id="t-data" rows="3" placeholder='data, e.g. {"hello":"world"}'></textarea>
     <button type="submit">Trigger</button>
     <div class="muted" id="trigger-result"></div>
    </form></section>
  </div>
  <section><h2>Events</h2>
   <div class="filters">
    <input id="f-channel" placeholder="filter by channel">
    <input id="f-event" placeholder="filter by event or kind">
   </div>
   <div id="events"><table><thead><tr><th>time</th><th>kind</th><th>channel</th>
    <th>event</th><th>detail</th></tr></thead><tbody id="event-rows"></tbody></table></div>
  </section>
 </main>
</div>
<script>
"use strict";
let auth = sessionStorage.getItem("console-auth") || "";
let app = "", since = 0, events = [];
const $ = (id) => document.getElementById(id);
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",
  '"':"&quot;"}[c])); }
async function api(path, options) {
  const response = await fetch(path, Object.assign({ headers: { Authorization: auth,
    "Content-Type": "application/json" } }, options || {}));
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.status);
  return body;
}
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  auth = token ? "Bearer " + token : "Basic " + btoa($("app-id").value + ":" + $("secret").value);
  try { await poll(); sessionStorage.setItem("console-auth", auth); show(); }
  catch (err) { $("login-error").textContent = err.message; }
});
function show() { $("login").hidden = true; $("app").hidden = false; }
$("app-picker").addEventListener("change", () => { app = $("app-picker").value; since = 0;
  events = []; render(); });
$("f-channel").addEventListener("input", () => render());
$("f-event").addEventListener("input", () => render());
$("trigger-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/console/api/trigger", { method: "POST", body: JSON.stringify({ app,
      channel: $("t-channel").value, event: $("t-event").value, data: $("t-data").value }) });
    $("trigger-result").textContent = "sent";
  } catch (err) { $("trigger-result").textContent = err.message; }
});
let latest = null;
async function poll() {
  const state = await api("/console/api/state?app=" + encodeURIComponent(app) + "&since=" + since);
  latest = state;
  if (!app) app = state.app;
  const picker = $("app-picker");
  if (picker.options.length !== state.apps.length) {
    picker.innerHTML = state.apps.map(a => "<option>" + esc(a) + "</option>").join("");
  }
  picker.value = state.app;
  for (const ev of state.events) { events.push(ev); since = Math.max(since, ev.seq); }
  if (events.length > 2000) events = events.slice(-2000);
  render();
  return state;
}
function render() {
  if (!latest) return;
  $("connections").textContent = latest.connections;
  $("channel-count").textContent = latest.channels.length;
  $("channels").innerHTML = latest.channels.map(c => "<tr><td class='mono'>" + esc(c.name) +
    "</td><td>" + c.local_subscribers + "</td></tr>").join("") ||
    "<tr><td colspan=2 class='muted'>no channels</td></tr>";
  const presence = latest.channels.filter(c => c.members);
  $("members").innerHTML = presence.map(c => "<div><b>" + esc(c.name) + "</b>: " +
    Object.keys(c.members).map(esc).join(", ") + "</div>").join("") ||
    "<span class='muted'>no presence channels</span>";
  const fc = $("f-channel").value.toLowerCase(), fe = $("f-event").value.toLowerCase();
  const shown = events.filter(ev => (!fc || ev.channel.toLowerCase().includes(fc)) &&
    (!fe || ev.event.toLowerCase().includes(fe) || ev.kind.includes(fe)));
  $("event-rows").innerHTML = shown.slice(-300).reverse().map(ev => "<tr><td class='muted'>" +
    new Date(ev.time * 1000).toLocaleTimeString() + "</td><td><span class='kind k-" +
    esc(ev.kind) + "'>" + esc(ev.kind) + "</span></td><td class='mono'>" + esc(ev.channel) +
    "</td><td class='mono'>" + esc(ev.event) + "</td><td class='mono'>" + esc(ev.detail) +
    "</td></tr>").join("");
}
if (auth) { poll().then(show).catch(() => { auth = ""; }); }
setInterval(() => { if (auth && !$("app").hidden) poll().catch(() => {}); }, 1000);
</script></body></html>
"""
