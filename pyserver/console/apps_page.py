"""The Apps page of the console: the operator's view of the app store, as `pyserver apps`.

Three ASCII byte strings that `page.py` splices into its one page (like `charts.py`):
- `STYLE`: the CSS of the tabs and of the Apps view;
- `MARKUP`: the Apps view, next to the debug view (`<main id="debug-view">`);
- `SCRIPT`: plain JavaScript that reads and changes apps through `<page>/api/apps...`
  (`apps_admin.py`): the list, one app with every option, forms to add an app, set or reset
  an option (the key and `enabled` too), disable, enable, rotate the secret and remove.

What the page shows and never does:
- The Apps tab shows only for the `console_token` login (`state.operator`); an app's own
  login never sees it (and its requests would get 403).
- Secrets are masked; "Show secret" asks the server for them (`secrets=1`) and "Hide" masks
  them again. A rotation shows the new secret once, in the result box.
- Every refusal (a bad value, a duplicate key, the database away) is shown in `#apps-error`
  with the server's message; no input makes the page throw.
- With `app_store = "config"` the list is read-only: the forms are hidden and the notice
  says why (the server's `reason`).
- Removing asks for a second click on the same button within 5 seconds.

Contract with the page's own script: it defines `$`, `esc`, `api`, `app` and
`loadState()`, calls `appsLogin(state)` with each state it loads (to show or hide the tab),
and `appsReset()` when it starts over (sign-in, sign-out). After each change the page
reloads its state, so a new app shows in the app picker too, and when the app of the debug
view was removed the debug view starts over on the first app left.
"""

from __future__ import annotations

STYLE = b"""
.tabs { display:flex; gap:2px; }
.tabs button { background:transparent; border:1px solid #4a5163; color:#c5cad6;
  padding:2px 10px; }
.tabs button.on { background:#fff; color:var(--ink); border-color:#fff; }
#apps-view { display:grid; grid-template-columns:minmax(0, 1fr) minmax(0, 1fr); gap:12px;
  padding:12px 16px; align-items:start; }
#apps-view .col { display:grid; gap:12px; align-content:start; min-width:0; }
#apps-view.read-only .writes { display:none; }
.notice { background:#fff4e6; border:1px solid #ffd8a8; border-radius:6px; padding:6px 8px;
  margin:0 0 8px; }
.notice.secret { background:#ebfbee; border-color:#b2f2bb; }
#apps-msg { min-height:18px; margin:4px 0; }
#apps-rows tr { cursor:pointer; }
#apps-rows tr.on td { background:#edf2ff; }
.off { color:var(--bad); }
.pair { display:grid; grid-template-columns:1fr 1fr; gap:6px; }
.actions { display:flex; flex-wrap:wrap; gap:6px; align-items:center; margin:8px 0; }
.actions form { display:flex; gap:6px; flex:1 1 100%; order:1; }
.actions button { white-space:nowrap; }
#apps-store { text-transform:none; letter-spacing:0; }
button.danger { background:var(--bad); }
#set-form { grid-template-columns:minmax(0, 1fr) minmax(0, 1fr) auto auto; }
#set-form select { padding:4px 6px; border:1px solid var(--line); border-radius:6px;
  background:#fff; }
td.opt { width:40%; }
h2.gap { margin-top:10px; }
"""

MARKUP = b"""
 <div id="apps-view" hidden>
  <div class="col">
   <section><h2><span>Apps</span><span id="apps-store" class="mono"></span></h2>
    <div id="apps-readonly" class="notice" hidden></div>
    <div id="apps-msg" role="status"></div>
    <table><thead><tr><th>id</th><th>key</th><th>enabled</th><th>name</th><th>updated</th>
     </tr></thead><tbody id="apps-rows"></tbody></table></section>
   <section class="writes"><h2>Add an app</h2>
    <form id="add-form">
     <div class="pair"><input id="add-id" placeholder="id" required>
      <input id="add-key" placeholder="key" required></div>
     <div class="pair"><input id="add-secret" placeholder="secret" required autocomplete="off">
      <button id="add-generate" class="plain" type="button">Generate a secret</button></div>
     <textarea id="add-options" rows="3"
      placeholder='options (JSON, optional), e.g. {"name": "Shop", "max_connections": 1000}'>
</textarea>
     <button type="submit">Add app</button>
    </form></section>
  </div>
  <div class="col">
   <section id="app-detail" hidden><h2><span>App <b id="d-id" class="mono"></b></span>
     <span id="d-updated"></span></h2>
    <table><tbody>
     <tr><td class="opt">key</td><td class="mono" id="d-key"></td></tr>
     <tr><td class="opt">secret</td><td><span class="mono" id="d-secret"></span>
      <button id="d-show-secret" class="plain" type="button">Show secret</button></td></tr>
     <tr><td class="opt">enabled</td><td id="d-enabled"></td></tr>
    </tbody></table>
    <div id="d-new-secret" class="notice secret" hidden></div>
    <div class="actions writes">
     <button id="d-toggle" type="button">Disable</button>
     <form id="rotate-form"><input id="rotate-secret" placeholder="new secret (empty: random)"
       autocomplete="off"><input id="rotate-grace" placeholder="grace (s)" inputmode="decimal">
      <button type="submit">Rotate secret</button></form>
     <button id="d-remove" class="danger" type="button">Remove</button>
    </div>
    <form id="set-form" class="writes">
     <select id="set-name"></select><input id="set-value" placeholder="value">
     <button type="submit">Set</button>
     <button id="set-reset" class="plain" type="button">Reset to default</button>
    </form>
    <h2 class="gap"><span>Options</span><span class="muted">* set for this app</span>
    </h2>
    <table><tbody id="d-options"></tbody></table></section>
  </div>
 </div>
"""

SCRIPT = b"""
// --- the Apps page: the app store, as `pyserver apps` (pyserver/console/apps_page.py) -------
const MASK = "\\u2022".repeat(8);
let view = "debug", operator = false, appsList = null, chosen = "", chosenApp = null;
let removeArmed = null;

function setView(name) {
  view = name === "apps" && operator ? "apps" : "debug";
  $("debug-view").hidden = view !== "debug"; $("apps-view").hidden = view !== "apps";
  $("tab-debug").className = view === "debug" ? "on" : "";
  $("tab-apps").className = view === "apps" ? "on" : "";
  if (view === "apps") loadApps();
  else requestAnimationFrame(drawStats);
}
function appsLogin(state) {
  operator = !!state.operator;
  $("tab-apps").hidden = !operator;
  if (!operator && view === "apps") setView("debug");
  if (operator && !state.apps.length && view !== "apps") setView("apps");  // nothing to debug
}
function appsReset() {
  operator = false; appsList = null; chosen = ""; chosenApp = null;
  $("tab-apps").hidden = true; $("app-detail").hidden = true; $("apps-rows").innerHTML = "";
  appsMessage("", ""); setView("debug");
}
function appsMessage(kind, text) {
  $("apps-msg").className = kind; $("apps-msg").textContent = text;
}

async function loadApps() {
  try {
    appsList = await api("/api/apps");
  } catch (err) { appsMessage("error", err.message); return; }
  $("apps-store").textContent = appsList.store;
  $("apps-view").classList.toggle("read-only", appsList.read_only);
  $("apps-readonly").hidden = !appsList.read_only;
  $("apps-readonly").textContent = appsList.read_only ? appsList.reason : "";
  const names = ["key", "enabled", ...Object.keys(appsList.options)];
  if ($("set-name").options.length !== names.length) {
    $("set-name").innerHTML = names.map((n) => "<option>" + esc(n) + "</option>").join("");
    optionHint();
  }
  renderApps();
  if (chosen && appsList.apps.some((a) => a.id === chosen)) await showApp(chosen, false);
  else { chosen = ""; chosenApp = null; $("app-detail").hidden = true; }
}
function renderApps() {
  $("apps-rows").innerHTML = appsList.apps.map((a) => "<tr data-id='" + esc(a.id) + "'" +
    (a.id === chosen ? " class='on'" : "") + "><td class='mono'>" + esc(a.id) +
    "</td><td class='mono'>" + esc(a.key) + "</td><td>" + (a.enabled ? "yes" :
    "<span class='off'>no</span>") + "</td><td>" + esc(a.settings.name || "") +
    "</td><td class='muted'>" + esc(a.updated_at || "-") + "</td></tr>").join("") ||
    "<tr><td colspan='5' class='empty'>no apps: add one below</td></tr>";
}
async function showApp(id, secrets) {
  let shown;
  try {
    const query = "?id=" + encodeURIComponent(id) + (secrets ? "&secrets=1" : "");
    shown = await api("/api/apps/show" + query);
  } catch (err) { appsMessage("error", err.message); return; }
  chosen = id; chosenApp = shown; renderApps();
  $("app-detail").hidden = false;
  $("d-id").textContent = shown.id; $("d-key").textContent = shown.key;
  $("d-updated").textContent = shown.updated_at ? "changed " + shown.updated_at +
    " (revision " + shown.revision + ")" : "";
  let secret = secrets ? shown.secret : MASK;
  if (shown.previous_secret_expires_at) {
    secret += " \\u00b7 previous " + (secrets ? shown.previous_secret : MASK) + " valid until " +
      shown.previous_secret_expires_at;
  }
  $("d-secret").textContent = secret;
  $("d-show-secret").textContent = secrets ? "Hide" : "Show secret";
  $("d-show-secret").dataset.shown = secrets ? "1" : "";
  $("d-enabled").innerHTML = shown.enabled ? "yes" : "<span class='off'>no</span>";
  $("d-toggle").textContent = shown.enabled ? "Disable" : "Enable";
  disarmRemove();
  $("d-options").innerHTML = Object.keys(shown.settings).map((name) => "<tr><td class='opt mono'>" +
    (name in shown.options ? "* " : "") + esc(name) + "</td><td class='mono'>" +
    esc(JSON.stringify(shown.settings[name])) + "</td></tr>").join("");
}
// One change: POST, show the outcome, reload the list and the page's state (the app picker).
async function changeApp(verb, body, done) {
  let answer;
  try {
    answer = await api("/api/apps/" + verb, { method: "POST", body: JSON.stringify(body) });
  } catch (err) { appsMessage("error", err.message); return null; }
  appsMessage("ok", done(answer));
  await loadApps();
  const before = app;
  if (app && appsList && !appsList.apps.some((a) => a.id === app)) reset();  // removed
  try { await loadState(); } catch (err) {
    if (err.status !== 404) return answer;
    reset();  // the app of the debug view was removed: show the first one left
    try { await loadState(); } catch (again) { return answer; }
  }
  if (app && app !== before) openStream();
  return answer;
}
function optionHint() {
  const name = $("set-name").value, defaults = appsList ? appsList.options : {};
  $("set-value").placeholder = name in defaults ?
    "value (default " + JSON.stringify(defaults[name]) + ")" : "value";
}
function disarmRemove() {
  clearTimeout(removeArmed); removeArmed = null; $("d-remove").textContent = "Remove";
}

$("tab-debug").addEventListener("click", () => setView("debug"));
$("tab-apps").addEventListener("click", () => setView("apps"));
$("apps-rows").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-id]");
  if (row) { $("d-new-secret").hidden = true; showApp(row.dataset.id, false); }
});
$("add-generate").addEventListener("click", () => {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  $("add-secret").value = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
});
$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("add-options").value.trim();
  let options = {};
  if (text) {
    try { options = JSON.parse(text); } catch (err) {
      appsMessage("error", "Options must be a JSON object: " + err.message); return;
    }
    if (options === null || typeof options !== "object" || Array.isArray(options)) {
      appsMessage("error", "Options must be a JSON object, e.g. {\\"name\\": \\"Shop\\"}");
      return;
    }
  }
  const body = { id: $("add-id").value.trim(), key: $("add-key").value.trim(),
    secret: $("add-secret").value, options };
  chosen = body.id;
  const added = await changeApp("add", body, (a) => "Added app " + a.id + " (key " + a.key +
    ")");
  if (!added) { chosen = chosenApp ? chosenApp.id : ""; return; }
  for (const id of ["add-id", "add-key", "add-secret", "add-options"]) $(id).value = "";
});
$("set-name").addEventListener("change", optionHint);
$("set-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("set-name").value, options = {};
  options[name] = $("set-value").value;
  const done = await changeApp("set", { id: chosen, options }, (a) => "Changed app " + a.id +
    ": " + name);
  if (done) $("set-value").value = "";
});
$("set-reset").addEventListener("click", () => {
  const name = $("set-name").value;
  changeApp("set", { id: chosen, reset: [name] }, (a) => "Reset " + name + " of app " + a.id);
});
$("d-toggle").addEventListener("click", () => {
  const verb = chosenApp && chosenApp.enabled ? "disable" : "enable";
  changeApp(verb, { id: chosen }, (a) => (a.enabled ? "Enabled" : "Disabled") + " app " + a.id);
});
$("d-show-secret").addEventListener("click", () => {
  showApp(chosen, !$("d-show-secret").dataset.shown);
});
$("rotate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { id: chosen }, secret = $("rotate-secret").value;
  const grace = $("rotate-grace").value.trim();
  if (secret) body.secret = secret;
  if (grace) {
    body.grace = Number(grace);
    if (!Number.isFinite(body.grace)) {
      appsMessage("error", "Grace must be a number of seconds"); return;
    }
  }
  const rotated = await changeApp("rotate-secret", body, (a) => "Rotated the secret of app " +
    a.id);
  if (!rotated) return;
  $("rotate-secret").value = ""; $("rotate-grace").value = "";
  const box = $("d-new-secret");
  box.hidden = false;
  box.innerHTML = "New secret: <b class='mono' id='d-new-secret-value'>" + esc(rotated.secret) +
    "</b> \\u2014 " + (rotated.previous_secret_expires_at ? "the old one stays valid until " +
    esc(rotated.previous_secret_expires_at) : "the old one is invalid now");
});
$("d-remove").addEventListener("click", () => {
  if (!removeArmed) {
    $("d-remove").textContent = "Click again to remove " + chosen;
    removeArmed = setTimeout(disarmRemove, 5000);
    return;
  }
  disarmRemove();
  const id = chosen;
  changeApp("remove", { id }, () => "Removed app " + id);
});
"""
