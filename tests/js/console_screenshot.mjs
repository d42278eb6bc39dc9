// Drives the live debug console in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core: signs in with an app's id and secret, waits for a channel (and a presence
// member), triggers an event from the form, waits for it in the event stream, filters the
// stream, saves screenshots, and optionally signs in again with the console token.
//   node tests/js/console_screenshot.mjs URL APP_ID SECRET CHANNEL OUT.png [--member=ID]
//        [--token=TOKEN]
// OUT.png shows the whole console; OUT-filtered.png the stream filtered to the sent event.
// Exits non-zero on any failure, including a JavaScript error or CSP violation in the page.
import fs from 'node:fs';
import path from 'node:path';

import { openPage } from './chromium.mjs';

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flags = Object.fromEntries(process.argv.slice(2).filter((a) => a.startsWith('--'))
  .map((a) => a.slice(2).split(/=(.*)/s).slice(0, 2)));
const [url, appId, secret, channel, out] = positional;
if (!out) {
  console.error('usage: console_screenshot.mjs URL APP_ID SECRET CHANNEL OUT.png [--member=ID] [--token=T]');
  process.exit(2);
}
const filteredOut = out.replace(/\.png$/, '') + '-filtered.png';
const EVENT = 'from-console';

const { page, problems, close } = await openPage('console', { width: 1280, height: 760 });
try {
  await page.goto(url);
  await page.fill('#app-id', appId);
  await page.fill('#secret', 'not-the-secret');
  await page.click('#login-form button');
  await page.waitForSelector('#login-error:has-text("Sign in")');   // a wrong secret: 401
  problems.length = 0;  // the browser logs the refused fetch (401) as a console error
  await page.fill('#secret', secret);
  await page.click('#login-form button');
  await page.waitForSelector(`#channels a.ch:text-is("${channel}")`);
  await page.waitForSelector('#status.live');
  if (flags.member) await page.waitForSelector(`#members div:has-text("${flags.member}")`);

  // Clicking a channel fills the trigger form's channel field.
  await page.click(`#channels a.ch:text-is("${channel}")`);
  if ((await page.inputValue('#t-channel')) !== channel) throw new Error('channel click');
  await page.fill('#t-event', EVENT);
  await page.fill('#t-data', '{"hello":"browser"}');
  await page.click('#trigger-form button');
  await page.waitForSelector(`#trigger-result.ok:has-text("${EVENT}")`);
  const sent = `#event-rows tr:has-text("${channel}"):has-text("${EVENT}")`;
  await page.waitForSelector(sent);

  // Filters: by type, by event name, by channel. Every row left must match.
  const rows = () => page.$$eval('#event-rows tr', (trs) => trs.map((tr) => tr.textContent));
  await page.selectOption('#f-kind', 'api');
  await page.fill('#f-event', EVENT);
  await page.fill('#f-channel', channel);
  await page.waitForFunction(() => document.querySelectorAll('#event-rows tr').length >= 1);
  // The channel filter also narrows the channel list (on the server, at the next poll).
  await page.waitForFunction((name) => [...document.querySelectorAll('#channels a.ch')]
    .every((a) => a.textContent.includes(name)), channel);
  const filtered = await rows();
  if (!filtered.length || !filtered.every((r) => r.includes(EVENT) && r.includes(channel))) {
    throw new Error(`filter failed: ${JSON.stringify(filtered)}`);
  }
  await page.fill('#f-event', 'no-such-event');
  await page.waitForSelector('#event-rows td.empty');
  await page.fill('#f-event', EVENT);
  await page.waitForSelector(sent);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: filteredOut });

  await page.fill('#f-event', '');
  await page.fill('#f-channel', '');
  await page.selectOption('#f-kind', '');
  await page.waitForSelector(sent);
  await page.waitForTimeout(1200);  // one more poll, so the counts are settled
  await page.screenshot({ path: out });

  let apps = 1;
  if (flags.token) {
    await page.click('#sign-out');
    await page.waitForSelector('#login-form');
    await page.fill('#token', flags.token);
    await page.click('#login-form button');
    await page.waitForSelector('#status.live');
    apps = await page.$$eval('#app-picker option', (options) => options.length);
    if (apps < 2) throw new Error(`the token should open every app, saw ${apps}`);
  }
  if (problems.length) throw new Error(problems.join('\n'));
  console.log(JSON.stringify({ ok: true, filtered: filtered.length, apps }));
} finally {
  await close();
}
