// Debian's Chromium driven by playwright-core, plus the checks every console test shares.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { ADMIN } from './server.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const screenshots = path.resolve(here, '../../../docs/console');

// Without the background-networking flags Chromium tries to reach the internet, and its
// connections are refused on a closed machine.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
  });
}

/** The pages of the console, by hash, with the name of their <h1> (details take an id). */
export const PAGES = ['products', 'coupons', 'draws', 'orders', 'users', 'live'];

/**
 * A page in a fresh context (its own sessionStorage) that records everything that would be a
 * bug: console errors (CSP violations are reported there), uncaught exceptions, and failed
 * requests. `allow(url)` lets a test tolerate the 404s of routes that do not exist yet.
 */
export async function openPage(browser, { width = 1280, height = 800, allow = () => false } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const where = message.location().url || '';
    if (/Failed to load resource/.test(message.text()) && allow(where)) return;
    problems.push(`console: ${message.text()} (${where})`);
  });
  page.on('pageerror', (error) => problems.push(`exception: ${error.message}`));
  page.on('requestfailed', (request) => {
    const reason = request.failure()?.errorText ?? '';
    if (reason !== 'net::ERR_ABORTED') problems.push(`request failed: ${request.url()} ${reason}`);
  });
  return { context, page, problems };
}

/** Signs in through the form and waits for the console's menu. */
export async function signIn(page, url, { email = ADMIN.email, password = ADMIN.password } = {}) {
  await page.goto(`${url}/admin/`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/**
 * Waits until one of the elements of `locator` shows `expected` (a substring, or a RegExp tested
 * against the rendered text, where table cells are separated by tabs), as Playwright's
 * expect().toHaveText would; fails with what was there instead.
 */
export async function waitForText(locator, expected, timeout = 10_000) {
  const matches = (text) => (typeof expected === 'string' ? text.includes(expected) : expected.test(text));
  const deadline = Date.now() + timeout;
  let texts = [];
  while (Date.now() < deadline) {
    texts = await locator.allInnerTexts();
    if (texts.some(matches)) return;
    await new Promise((resolve) => { setTimeout(resolve, 50); }); // the page polls its API; so do we
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${expected} in ${locator}; it showed ${JSON.stringify(texts)}`);
}

/** The text of the <dd> after the <dt> named `term` on the page. */
export async function fact(page, term) {
  return page.locator('dt', { hasText: new RegExp(`^${term}$`) }).locator('xpath=following-sibling::dd').innerText();
}

/** The table rows that have a cell reading exactly `text`. */
export function rowWith(page, text) {
  return page.getByRole('row').filter({ has: page.getByRole('cell', { name: text, exact: true }) });
}

/** How far the page scrolls sideways (0 when nothing overflows). */
export function sideScroll(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/** Saves a screenshot into docs/console/ when SCREENSHOTS=1. */
export async function screenshot(page, name) {
  if (process.env.SCREENSHOTS !== '1') return;
  await mkdir(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}
