// Opens a page in real headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) through
// playwright-core, for the console's page tests: a fresh, empty profile, flags that keep the
// browser off the network (loopback only), and every JavaScript error or console error (a
// refused fetch, a CSP violation) collected in `problems`.
//   const { page, problems, close } = await openPage('console', { width: 1280, height: 760 });
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

export async function openPage(name, viewport) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), `pyserver-${name}-`));
  const close = async (browser) => {
    if (browser) await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  let browser;
  try {
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      viewport,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (err) {
    await close(browser);
    throw err;
  }
  const problems = [];
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(10000);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  return { page, problems, close: () => close(browser) };
}
