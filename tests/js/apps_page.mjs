// Drives the console's Apps page in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, next to a real pusher-js 8 client (Node) using the app the page adds.
//   node tests/js/apps_page.mjs URL TOKEN APP_ID APP_SECRET OUT.png [--readonly | --empty]
// URL is the console (http://127.0.0.1:PORT/console); the WebSocket port is the same.
//
// With a database store: an app's own login sees no Apps tab and gets 403 from the Apps
// endpoints; the token login adds an app (after a refused duplicate key and bad options),
// a pusher-js client connects with its key and subscribes, the page shows and hides the
// secret, refuses and then sets an option, disables the app (the client is closed with
// 4003), enables it, rotates the secret (the new one is shown, and the Node SDK signs
// with it at once; a made-up secret is refused) and removes the app.
// With --readonly (app_store = "config"): the list is shown, the forms are not, and the
// notice says why. With --empty (a store without apps; APP_ID and APP_SECRET unused): the
// token login opens on the Apps view, and the first app added goes live in the debug view.
// Prints one JSON line: {ok, close_code, new_secret, ...}. Exits non-zero on any failure,
// including a JavaScript error or CSP violation in the page.
import fs from 'node:fs';
import path from 'node:path';

import PusherServer from 'pusher';
import Pusher from 'pusher-js';

import { openPage } from './chromium.mjs';

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const readonly = process.argv.includes('--readonly');
const empty = process.argv.includes('--empty');
const [url, token, appId, appSecret, out] = positional;
if (!out) {
  console.error('usage: apps_page.mjs URL TOKEN APP_ID APP_SECRET OUT.png [--readonly]');
  process.exit(2);
}
const port = Number(new URL(url).port);
const ID = 'shop-' + Date.now().toString(36), KEY = ID + '-key', SECRET = ID + '-secret';

function waitFor(predicate, what, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      const value = predicate();
      if (value) { clearInterval(timer); resolve(value); }
      else if (Date.now() - started > timeout) {
        clearInterval(timer); reject(new Error(`timed out waiting for ${what}`));
      }
    }, 20);
  });
}

// A pusher-js client with the app's key: resolves once connected, records close errors.
function connectClient(key) {
  const seen = { errors: [], states: [] };
  const pusher = new Pusher(key, {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
  });
  pusher.connection.bind('error', (err) => seen.errors.push(err));
  pusher.connection.bind('state_change', (s) => seen.states.push(s.current));
  seen.pusher = pusher;
  return seen;
}

// The Node SDK's trigger with this secret: the HTTP status the server answered.
async function triggerStatus(secret) {
  const sdk = new PusherServer({ appId: ID, key: KEY, secret, host: '127.0.0.1', port,
    useTLS: false });
  try {
    return (await sdk.trigger('news', 'rotated', { ok: true })).status;
  } catch (err) {
    if (err.status) return err.status;
    throw err;
  }
}

async function message(page, kind, text) {
  await page.waitForSelector(`#apps-msg.${kind}:has-text(${JSON.stringify(text)})`);
  return page.textContent('#apps-msg');
}

// --empty: the token login on a store without apps, and the first app.
async function firstApp() {
  await page.fill('#token', token);
  await page.click('#login-form button');
  await page.waitForSelector('#apps-rows td.empty:has-text("no apps")');
  if (!(await page.isVisible('#apps-view'))) throw new Error('not on the Apps view');
  await page.fill('#add-id', ID);
  await page.fill('#add-key', KEY);
  await page.click('#add-generate');
  if (!/^[0-9a-f]{32}$/.test(await page.inputValue('#add-secret'))) throw new Error('secret');
  await page.click('#add-form button[type=submit]');
  await message(page, 'ok', `Added app ${ID}`);
  await page.waitForSelector('#status.live');  // the stream opened for the new app
  await page.click('#tab-debug');
  await page.waitForSelector(`#app-name:text-is("${ID}")`);
  result.id = ID; result.key = KEY;
}

// An app's own login: the debug console as before, no Apps tab, 403 from the endpoints.
async function appLogin() {
  await page.fill('#app-id', appId);
  await page.fill('#secret', appSecret);
  await page.click('#login-form button');
  await page.waitForSelector('#status.live');
  if (await page.isVisible('#tab-apps')) throw new Error('an app login sees the Apps tab');
  result.app_login_status = await page.evaluate(async ([id, secret]) => {
    const auth = 'Basic ' + btoa(id + ':' + secret);
    const response = await fetch('/console/api/apps', { headers: { Authorization: auth } });
    return response.status;
  }, [appId, appSecret]);
  if (result.app_login_status !== 403) throw new Error(`app login: ${result.app_login_status}`);
  problems.length = 0;  // the browser logs the refused fetch (403) as a console error
  await page.click('#sign-out');
}

// The operator's login: the Apps tab.
async function operatorLogin() {
  await page.fill('#token', token);
  await page.click('#login-form button');
  await page.waitForSelector('#tab-apps:not([hidden])');
  await page.click('#tab-apps');
  await page.waitForSelector(`#apps-rows tr[data-id="${appId}"]`);
  if (await page.isVisible('#debug-view')) throw new Error('the debug view still shows');
}

// --readonly: app_store = "config".
async function readOnly() {
  await page.waitForSelector('#apps-readonly:has-text("read-only")');
  if (await page.isVisible('#add-form')) throw new Error('the add form shows on config');
  await page.click(`#apps-rows tr[data-id="${appId}"]`);
  await page.waitForSelector(`#d-id:text-is("${appId}")`);
  for (const hidden of ['#set-form', '#d-toggle', '#rotate-form', '#d-remove']) {
    if (await page.isVisible(hidden)) throw new Error(`${hidden} shows on config`);
  }
  if ((await page.textContent('#d-secret')).includes(appSecret)) throw new Error('secret shown');
  await page.click('#d-show-secret');
  await page.waitForSelector(`#d-secret:has-text("${appSecret}")`);
  result.notice = await page.textContent('#apps-readonly');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });
}

// A database store: every operation.
async function everyOperation() {
  // Refused: a key in use, options that are not JSON, an unknown option.
  await page.fill('#add-id', ID);
  await page.fill('#add-key', await page.evaluate(() => document.querySelector(
    '#apps-rows tr td:nth-child(2)').textContent));
  await page.fill('#add-secret', SECRET);
  await page.click('#add-form button[type=submit]');
  result.duplicate = await message(page, 'error', 'already used by app');
  await page.fill('#add-key', KEY);
  await page.fill('#add-options', '{"name": ');
  await page.click('#add-form button[type=submit]');
  await message(page, 'error', 'Options must be a JSON object');
  await page.fill('#add-options', '{"max_conections": 5}');
  await page.click('#add-form button[type=submit]');
  result.unknown_option = await message(page, 'error', 'did you mean');

  // Added: the page lists it and shows it.
  await page.fill('#add-options', '{"name": "Browser-shop"}');
  await page.click('#add-form button[type=submit]');
  await message(page, 'ok', `Added app ${ID}`);
  await page.waitForSelector(`#apps-rows tr.on[data-id="${ID}"]`);
  await page.waitForSelector(`#d-id:text-is("${ID}")`);

  // A real pusher-js client connects with the new key, at once.
  client = connectClient(KEY);
  await waitFor(() => client.states.includes('connected'), 'pusher-js to connect', 10000);
  const channel = client.pusher.subscribe('news');
  await new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', resolve);
    channel.bind('pusher:subscription_error', reject);
  });

  // Secrets: masked until asked.
  if ((await page.textContent('#d-secret')).includes(SECRET)) throw new Error('secret shown');
  await page.click('#d-show-secret');
  await page.waitForSelector(`#d-secret:has-text("${SECRET}")`);
  await page.click('#d-show-secret');
  await page.waitForSelector('#d-show-secret:text-is("Show secret")');
  if ((await page.textContent('#d-secret')).includes(SECRET)) throw new Error('not hidden');

  // An option: a refused value, then a good one.
  await page.selectOption('#set-name', 'max_connections');
  await page.fill('#set-value', '-1');
  await page.click('#set-form button[type=submit]');
  result.bad_value = await message(page, 'error', 'max_connections');
  await page.fill('#set-value', '50');
  await page.click('#set-form button[type=submit]');
  await message(page, 'ok', `Changed app ${ID}: max_connections`);
  await page.waitForSelector('#d-options tr:has-text("* max_connections"):has-text("50")');

  // Disable: the client is closed with 4003.
  await page.click('#d-toggle');
  await message(page, 'ok', `Disabled app ${ID}`);
  await page.waitForSelector('#d-toggle:text-is("Enable")');
  const closed = await waitFor(() => client.errors.find((e) => e && e.data && e.data.code),
    'the client to be closed', 10000);
  result.close_code = closed.data.code;
  client.pusher.disconnect();
  client = null;
  await page.click('#d-toggle');
  await message(page, 'ok', `Enabled app ${ID}`);

  // Rotate: the new secret is shown once.
  await page.click('#rotate-form button');
  await message(page, 'ok', `Rotated the secret of app ${ID}`);
  result.new_secret = await page.textContent('#d-new-secret-value');
  if (!/^[0-9a-f]{32}$/.test(result.new_secret)) throw new Error(`secret ${result.new_secret}`);
  result.rotation_note = await page.textContent('#d-new-secret');
  await page.click('#d-show-secret');
  await page.waitForSelector(`#d-secret:has-text("${result.new_secret}")`);
  result.trigger_new_secret = await triggerStatus(result.new_secret);
  result.trigger_made_up_secret = await triggerStatus('not-' + result.new_secret);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });

  // Remove: a second click confirms. The debug view shows the app until then, and the
  // first app left afterwards.
  await page.selectOption('#app-picker', ID);
  await page.waitForSelector('#status.live');
  await page.click('#d-remove');
  await page.waitForSelector('#d-remove:has-text("Click again")');
  await page.click('#d-remove');
  await message(page, 'ok', `Removed app ${ID}`);
  await page.waitForSelector(`#apps-rows tr[data-id="${ID}"]`, { state: 'detached' });
  await page.waitForFunction((id) => document.querySelector('#app-picker').value === id, appId);
  await page.waitForSelector('#status.live');
  result.id = ID; result.key = KEY;
}

const { page, problems, close } = await openPage('apps', { width: 1280, height: 900 });
let client = null;
const result = { ok: false };
try {
  await page.goto(url);
  if (empty) {
    await firstApp();
  } else {
    await appLogin();
    await operatorLogin();
    await (readonly ? readOnly() : everyOperation());
  }
  // Each refusal above is a 4xx answer, which the browser logs as a console error.
  const refused = /Failed to load resource: the server responded with a status of 40[039]/;
  const left = problems.filter((p) => !refused.test(p));
  if (left.length) throw new Error(left.join('\n'));
  result.ok = true;
  console.log(JSON.stringify(result));
} finally {
  if (client) client.pusher.disconnect();
  await close();
}
