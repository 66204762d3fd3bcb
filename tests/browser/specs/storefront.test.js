// A storefront served from another origin signs in and lists products in headless Chromium,
// once its origin is in ECOMMERCE_CORS_ORIGINS; the same page from an origin that is not
// listed gets nothing (the browser withholds the answers).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openPage, waitForText } from '../support/browser.js';
import { useServer } from '../support/harness.js';
import { startStorefront } from '../support/storefront.js';

// The storefront's port is known only once it listens; the server reads `env` when it starts,
// after this hook (hooks run in the order they are registered).
const env = {};
let storefront;
before(async () => {
  storefront = await startStorefront();
  env.ECOMMERCE_CORS_ORIGINS = `http://127.0.0.1:${storefront.port}`;
});
after(async () => {
  await storefront?.stop();
});
const ctx = useServer({ env });

test('a page on an allowed origin signs in and lists products', async () => {
  await ctx.api.product({ name: 'Linen shirt', price: 39000, stock: 5 });
  await ctx.api.product({ name: 'Wool coat', price: 189000, stock: 2 });
  const shopper = await ctx.api.user('Mina');
  const { page, problems } = await openPage(ctx.browser);
  await page.goto(`http://127.0.0.1:${storefront.port}/?api=${encodeURIComponent(ctx.url)}`);
  await page.getByLabel('Email').fill(shopper.email);
  await page.getByLabel('Password').fill(shopper.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await waitForText(page.getByRole('status'), `Signed in as user ${shopper.id}`);
  const products = await page.getByRole('list', { name: 'Products' }).getByRole('listitem').allInnerTexts();
  assert.deepEqual(products, ['Linen shirt 39000', 'Wool coat 189000']);
  // X-Request-Id is exposed to the script, so it could quote it in a bug report.
  assert.match(await page.getByRole('status').innerText(), /request [0-9a-f-]{36}$/);
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('the same page on an origin that is not allowed gets no answer', async () => {
  const shopper = await ctx.api.user('Kim');
  const { page } = await openPage(ctx.browser);
  // localhost and 127.0.0.1 are different origins; only the latter is allowed.
  await page.goto(`http://localhost:${storefront.port}/?api=${encodeURIComponent(ctx.url)}`);
  await page.getByLabel('Email').fill(shopper.email);
  await page.getByLabel('Password').fill(shopper.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await waitForText(page.getByRole('status'), 'Failed: Failed to fetch');
  assert.equal(await page.getByRole('listitem').count(), 0);
  await page.context().close();
});
