// Drives the live debug console in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core: signs in, waits for a channel, triggers an event from the form, filters the
// event stream, and saves a screenshot.
//   node tests/js/console_screenshot.mjs URL APP_ID SECRET CHANNEL OUT.png
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const [url, appId, secret, channel, out] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pyserver-console-'));
// A fresh, empty profile; the flags keep Chromium off the (closed) network.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(url);
  await page.fill('#app-id', appId);
  await page.fill('#secret', secret);
  await page.click('#login-form button');
  await page.waitForSelector(`#channels td:has-text("${channel}")`);
  await page.fill('#t-channel', channel);
  await page.fill('#t-event', 'from-console');
  await page.fill('#t-data', '{"hello":"browser"}');
  await page.click('#trigger-form button');
  const sent = `#event-rows tr:has-text("${channel}"):has-text("from-console")`;
  await page.waitForSelector(sent);
  await page.fill('#f-event', 'from-console');
  await page.waitForFunction(() => document.querySelectorAll('#event-rows tr').length >= 1);
  const rows = await page.$$eval('#event-rows tr', (trs) => trs.map((tr) => tr.textContent));
  if (!rows.every((r) => r.includes('from-console'))) throw new Error(`filter failed: ${rows}`);
  await page.fill('#f-event', '');
  await page.waitForSelector(sent);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out, fullPage: true });
  console.log(JSON.stringify({ ok: true, rows: rows.length }));
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
