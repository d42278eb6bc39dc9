// Drives the chat example (examples/chat) in real headless Chromium (Debian's /usr/bin/chromium,
// or $CHROMIUM) with playwright-core, against a running pyserver and the example's backend:
//
//   node tests/js/chat_example.mjs CHAT_URL [AWAY_MS]
//
// Page A stays online and sends every message through its form, as a user would. Page B
// reaches pyserver through a loopback TCP proxy in this script (its /config.js is rewritten to
// point there; the page itself is unchanged), and goes offline the way phones and proxies do:
// the proxy first stops forwarding without closing anything (what pyserver writes then never
// reaches the page), then cuts both sides and refuses new connections for a while. Messages
// are sent during both phases. When the proxy lets it through again, pusher-js reconnects on
// its own and the page's resume snippet asks for what it missed. Last, page C opens fresh and
// must show the channel's last messages (rewind). With AWAY_MS, page B stays away that much
// longer before the proxy lets it through (to outlast the server's recovery_window).
//
// Prints one JSON line with what each page shows and what page B received (before the page's
// de-duplication by message id); exits non-zero when a step times out or a page errs.
import net from 'node:net';

import { chromium } from 'playwright-core';

const [chatUrl, awayMs = '0'] = process.argv.slice(2);
if (!chatUrl) {
  console.error('usage: chat_example.mjs CHAT_URL [AWAY_MS]');
  process.exit(2);
}
const base = chatUrl.endsWith('/') ? chatUrl : chatUrl + '/';

// --- a loopback proxy that can go silent, cut, refuse and recover -----------------------------
function startProxy(targetHost, targetPort) {
  const proxy = { mode: 'open', pairs: new Set(), accepted: 0, refused: 0 };
  const server = net.createServer((client) => {
    if (proxy.mode !== 'open') {
      proxy.refused += 1;
      client.destroy();
      return;
    }
    proxy.accepted += 1;
    const upstream = net.connect(targetPort, targetHost);
    const pair = { client, upstream };
    proxy.pairs.add(pair);
    const forward = (from, to) => from.on('data', (chunk) => {
      if (!to.destroyed) to.write(chunk);
    });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      proxy.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  proxy.listen = () => new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    proxy.port = server.address().port;
    resolve();
  }));
  proxy.freeze = () => {
    // Stop reading both ways: no FIN, no RST. pyserver keeps writing into a connection that
    // looks healthy to it (the kernel still acknowledges into the proxy's buffers).
    proxy.mode = 'frozen';
    for (const { client, upstream } of proxy.pairs) {
      client.pause();
      upstream.pause();
    }
  };
  proxy.cut = () => {
    // The network is gone: both sides see their connection end; new ones are refused.
    proxy.mode = 'down';
    for (const { client, upstream } of [...proxy.pairs]) {
      upstream.resetAndDestroy();
      client.resetAndDestroy();
    }
  };
  proxy.restore = () => {
    proxy.mode = 'open';
  };
  proxy.close = () => new Promise((resolve) => {
    proxy.cut();
    server.close(() => resolve());
  });
  return proxy;
}

// --- the pages ------------------------------------------------------------------------------
const problems = [];
const failedAttempts = [];
const offline = new Set();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let proxy;
const timeline = [];
const started = Date.now();
const mark = (what) => timeline.push([Date.now() - started, what]);

async function openChat(name, wsPortOverride) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // Reconnect attempts fail while the page is offline: expected, counted apart.
    if (offline.has(name) && /^WebSocket connection to .* failed/.test(msg.text())) {
      failedAttempts.push(`${name}: ${msg.text()}`);
    } else {
      problems.push(`${name}: console error: ${msg.text()}`);
    }
  });
  if (wsPortOverride) {
    await page.route('**/config.js', async (route) => {
      const response = await route.fetch();
      const text = (await response.text()).replace(/"wsPort": \d+/, `"wsPort": ${wsPortOverride}`);
      await route.fulfill({ response, body: text });
    });
  }
  // What the page receives, before its own de-duplication: bound by an init script, so the
  // rewind that follows the first subscription is recorded too.
  await page.addInitScript(() => {
    window.received = [];
    window.states = [];
    window.recoveryFailed = [];
    window.resumeTokens = 0;
    const watch = () => {
      if (!window.chat) return setTimeout(watch, 5);
      const { pusher, channel } = window.chat;
      channel.bind('message', (m) => window.received.push(m.text));
      channel.bind('pusher:recovery_failed', (d) => window.recoveryFailed.push(d));
      pusher.connection.bind('state_change', ({ current }) => window.states.push(current));
      pusher.connection.bind('message', (m) => {
        if (m.event === 'pusher_internal:resume_token') window.resumeTokens += 1;
      });
    };
    document.addEventListener('DOMContentLoaded', watch);
  });
  await page.goto(base);
  await page.waitForFunction(() => window.chat && window.chat.channel.subscribed);
  await page.fill('#name', name);
  return { name, context, page };
}

const shown = (tab) => tab.page.evaluate(
  () => [...document.querySelectorAll('#messages li .text')].map((el) => el.textContent));

async function waitShown(tab, text, timeout = 15000) {
  try {
    await tab.page.waitForFunction((t) => [...document.querySelectorAll('#messages li .text')]
      .some((el) => el.textContent === t), text, { timeout });
  } catch (err) {
    throw new Error(`${tab.name} never showed ${JSON.stringify(text)}; it shows `
      + JSON.stringify(await shown(tab)));
  }
}

async function send(tab, text) {
  await tab.page.fill('#text', text);
  const posted = tab.page.waitForResponse((r) => r.url().endsWith('/messages'));
  await tab.page.click('#send button');
  const response = await posted;
  if (!response.ok()) throw new Error(`POST /messages answered ${response.status()}`);
  await waitShown(tab, text); // pyserver has broadcast it: it is on its way to every page
}

async function post(text) {
  const response = await fetch(base + 'messages', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'script', text }),
  });
  if (!response.ok) throw new Error(`POST /messages answered ${response.status}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let result;
try {
  const config = await (await fetch(base + 'config.js')).text();
  const wsPort = Number(/"wsPort": (\d+)/.exec(config)[1]);
  const wsHost = /"wsHost": "([^"]+)"/.exec(config)[1];
  proxy = startProxy(wsHost, wsPort);
  await proxy.listen();

  // Messages from before anyone opened the page: the rewind shows them.
  for (let i = 0; i < 3; i += 1) await post(`before-${i}`);
  const a = await openChat('alice');
  await waitShown(a, 'before-2');
  const b = await openChat('bob', proxy.port);
  await waitShown(b, 'before-2');
  const rewound = { alice: await shown(a), bob: await shown(b) };

  await send(a, 'live-0');
  await waitShown(b, 'live-0');

  // Bob's network goes quiet: pyserver still writes to his connection, nothing arrives.
  mark('freeze');
  proxy.freeze();
  for (let i = 0; i < 3; i += 1) await send(a, `unread-${i}`);
  await sleep(300);
  const duringFreeze = await shown(b);

  // Then it is gone: both ends see the connection close; reconnects are refused.
  mark('cut');
  offline.add('bob');
  proxy.cut();
  await b.context.setOffline(true); // the browser learns it too (the 'offline' event)
  await b.page.waitForFunction(() => window.chat.pusher.connection.state !== 'connected');
  for (let i = 0; i < 3; i += 1) await send(a, `away-${i}`);
  const whileAway = await shown(b);
  await sleep(Number(awayMs));

  // Back: pusher-js reconnects by itself; the resume snippet asks for what was missed.
  mark('restore');
  proxy.restore();
  await b.context.setOffline(false); // 'online': pusher-js retries at once
  await b.page.waitForFunction(() => window.chat.pusher.connection.state === 'connected',
    null, { timeout: 30000 });
  mark('reconnected');
  await waitShown(b, 'away-2');
  mark('caught up');
  await send(a, 'after-0');
  await waitShown(b, 'after-0');
  await sleep(300); // anything sent twice would have arrived by now

  const c = await openChat('carol');
  await waitShown(c, 'after-0');

  result = {
    rewound,
    duringFreeze,
    whileAway,
    alice: await shown(a),
    bob: await shown(b),
    carol: await shown(c),
    bobReceived: await b.page.evaluate(() => window.received),
    bobStates: await b.page.evaluate(() => window.states),
    bobRecoveryFailed: await b.page.evaluate(() => window.recoveryFailed),
    bobResumeTokens: await b.page.evaluate(() => window.resumeTokens),
    bobNotice: await b.page.textContent('#notice'),
    proxy: { accepted: proxy.accepted, refused: proxy.refused },
    failedAttempts: failedAttempts.length,
    timeline,
    problems,
  };
} catch (err) {
  result = { error: String(err && err.stack || err), timeline, problems, failedAttempts };
} finally {
  if (proxy) await proxy.close();
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.error || problems.length ? 1 : 0);
