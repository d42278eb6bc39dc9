// Drives the console's dashboard (stats over time) in real headless Chromium (Debian's
// /usr/bin/chromium) with playwright-core: signs in with an app's id and secret, waits for
// the charts to be drawn from the stats the server sampled, switches the range (1 h, 6 h,
// 24 h), hovers a chart, checks that the debug log still receives a triggered event, that a
// feed entry arrives by push within a second, that the page's stream, dropped, resumes
// without a lost or repeated entry, and saves screenshots.
//   node tests/js/dashboard_screenshot.mjs URL APP_ID SECRET CHANNEL OUT.png
// OUT.png shows the whole page; OUT-charts.png the dashboard section alone.
// Prints one JSON line with what the page drew; exits non-zero on any failure, including a
// JavaScript error or a CSP violation in the page.
import fs from 'node:fs';
import path from 'node:path';

import { openPage } from './chromium.mjs';

const [url, appId, secret, channel, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: dashboard_screenshot.mjs URL APP_ID SECRET CHANNEL OUT.png');
  process.exit(2);
}
const chartsOut = out.replace(/\.png$/, '') + '-charts.png';

const { page, problems, close } = await openPage('dashboard', { width: 1280, height: 820 });
try {
  await page.goto(url);
  await page.fill('#app-id', appId);
  await page.fill('#secret', secret);
  await page.click('#login-form button');
  await page.waitForSelector('#status.live');

  // Drawn: every minute chart shows the traffic, the day chart has today's bar.
  await page.waitForFunction(() => ['connections', 'messages'].every((id) => {
    const svg = document.getElementById('chart-' + id);
    return Number(svg.dataset.points) > 0 && svg.querySelector('path.series');
  }));
  await page.waitForSelector('#chart-days rect.bar');

  const read = () => page.evaluate(() => {
    const chart = (id) => {
      const svg = document.getElementById('chart-' + id);
      return {
        window: Number(svg.dataset.window),
        points: Number(svg.dataset.points),
        max: Number(svg.dataset.max),
        paths: [...svg.querySelectorAll('path.series')].map((p) => p.dataset.key),
        bars: [...svg.querySelectorAll('rect.bar')].filter(
          (r) => Number(r.getAttribute('height')) > 0).length,
        labels: [...svg.querySelectorAll('text.axis')].map((t) => t.textContent),
      };
    };
    return {
      connections: chart('connections'),
      messages: chart('messages'),
      days: chart('days'),
      range: document.querySelector('#range button.on')?.dataset.range,
      totals: [...document.querySelectorAll('#totals div')].map(
        (d) => [d.children[1].textContent, d.children[0].textContent]),
    };
  });

  const drawn = { 60: await read() };
  // The range switch: each window has as many slots as minutes, the button shows it is on.
  for (const minutes of ['360', '1440', '60']) {
    await page.click(`#range button[data-range="${minutes}"]`);
    await page.waitForFunction((m) => document.getElementById('chart-messages').dataset.window
      === m && document.getElementById('chart-connections').dataset.window === m, minutes);
    drawn[minutes] = await read();
    if (drawn[minutes].range !== minutes) throw new Error(`range ${minutes} not marked on`);
  }

  // Hovering a chart names the minute under the pointer.
  const box = await page.locator('#chart-messages').boundingBox();
  await page.mouse.move(box.x + box.width - 8, box.y + box.height / 2);
  await page.waitForFunction(() => document.getElementById('hover-messages').textContent
    .includes('sent'));
  const hover = await page.textContent('#hover-messages');
  // On the day chart: today has data, the first of the 30 days (before the server ran) none.
  const days = await page.locator('#chart-days').boundingBox();
  await page.mouse.move(days.x + days.width - 6, days.y + days.height / 2);
  const today = await page.textContent('#hover-days');
  await page.mouse.move(days.x + 40, days.y + days.height / 2);
  const firstDay = await page.textContent('#hover-days');
  await page.mouse.move(0, 0);

  // The debug log and the event creator still work below the charts.
  await page.fill('#t-channel', channel);
  await page.fill('#t-event', 'from-dashboard');
  await page.fill('#t-data', '{"hello":"charts"}');
  await page.click('#trigger-form button');
  await page.waitForSelector('#trigger-result.ok:has-text("from-dashboard")');
  await page.waitForSelector(`#event-rows tr:has-text("${channel}"):has-text("from-dashboard")`);
  // The charts follow: the event just sent to the channel's subscribers shows in today's
  // totals within a few seconds (one sample a second, one stats fetch a second).
  const before = drawn['60'].totals.find(([name]) => name === 'sent to clients')[1];
  await page.waitForFunction((old) => [...document.querySelectorAll('#totals div')].some(
    (d) => d.children[1].textContent === 'sent to clients' && d.children[0].textContent !== old),
  before, { timeout: 5000 });
  const live = await read();

  // Pushed, not polled: an event triggered now is in the log within a second.
  const auth = 'Basic ' + Buffer.from(`${appId}:${secret}`).toString('base64');
  const base = url.replace(/\/+$/, '');
  const trigger = async (event) => {
    const response = await fetch(`${base}/api/trigger`, {
      method: 'POST',
      headers: { Authorization: auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ app: appId, channel, event, data: '{}' }),
    });
    if (!response.ok) throw new Error(`trigger ${event}: HTTP ${response.status}`);
  };
  const started = Date.now();
  await trigger('pushed-now');
  await page.waitForSelector('#event-rows tr:has-text("pushed-now")', { timeout: 1000 });
  const pushMs = Date.now() - started;

  // Reconnect: drop the page's stream, send three events while it is away; it comes back
  // with Last-Event-ID and shows each once, in order.
  const opened = await page.evaluate(() => window.consoleStream.opened);
  await page.evaluate(() => window.consoleStream.abort());
  await page.waitForSelector('#status.down');
  for (const n of [0, 1, 2]) await trigger(`while-away-${n}`);
  await page.waitForFunction((n) => window.consoleStream.opened > n, opened, { timeout: 5000 });
  await page.waitForSelector('#event-rows tr:has-text("while-away-2")');
  await page.waitForSelector('#status.live');
  await page.waitForTimeout(600);  // a repeated entry would come with the resumed backlog
  const names = await page.$$eval('#event-rows tr', (trs) => trs.map(
    (tr) => (tr.children[3] ? tr.children[3].textContent : '')));
  const stream = await page.evaluate(() => ({
    opened: window.consoleStream.opened,
    resets: window.consoleStream.resets,
    lastId: window.consoleStream.lastId,
  }));
  const resumed = { opened, stream, names: names.reverse() };  // oldest first

  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  await page.locator('#dashboard').screenshot({ path: chartsOut });
  if (problems.length) throw new Error(problems.join('\n'));
  console.log(JSON.stringify({ ok: true, drawn, live, hover, today, firstDay, pushMs, resumed }));
} finally {
  await close();
}
