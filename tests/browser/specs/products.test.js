// Products: create, edit, restock, stop and resume from the console; the API agrees.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fact, openPage, signIn, waitForText } from '../support/browser.js';
import { allowPending } from '../support/phase2.js';
import { useServer } from '../support/harness.js';

describe('products', { timeout: 60_000 }, () => {
  const ctx = useServer();

  test('a product is created, edited, restocked, stopped and resumed', async () => {
    const { context, page, problems } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.getByRole('link', { name: 'Products', exact: true }).click();

    await page.getByLabel('Name').fill('Linen shirt');
    await page.getByLabel('Price').fill('39000');
    await page.getByLabel('Stock').fill('10');
    await page.getByRole('button', { name: 'Create' }).click();
    const created = page.getByRole('status').filter({ hasText: 'created' });
    await created.waitFor();
    const id = Number(/Product (\d+) created/.exec(await created.innerText())[1]);
    const fresh = await ctx.api.getProduct(id);
    assert.deepEqual([fresh.name, fresh.price, fresh.stock, fresh.status], ['Linen shirt', 39000, 10, 'ON_SALE']);

    await created.getByRole('link').click();
    await page.getByRole('heading', { name: 'Linen shirt' }).waitFor();
    assert.equal(await fact(page, 'Stock'), '10');

    await page.getByLabel('Name').fill('Linen shirt, blue');
    await page.getByLabel('Price').fill('41000');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: 'Linen shirt, blue' }).waitFor();
    assert.equal(await fact(page, 'Price'), '41000');

    await page.getByLabel('Quantity').fill('5');
    await page.getByRole('button', { name: 'Restock' }).click();
    await waitForText(page.getByRole('status'), 'now 15');
    assert.equal(await fact(page, 'Stock'), '15');

    await page.getByRole('button', { name: 'Stop' }).click();
    await page.getByRole('button', { name: 'Resume' }).waitFor();
    assert.equal(await fact(page, 'Status'), 'STOPPED');
    assert.equal((await ctx.api.getProduct(id)).status, 'STOPPED');

    await page.getByRole('button', { name: 'Resume' }).click();
    await page.getByRole('button', { name: 'Stop' }).waitFor();
    assert.equal(await fact(page, 'Status'), 'ON_SALE');

    const product = await ctx.api.getProduct(id);
    assert.equal(product.name, 'Linen shirt, blue');
    assert.equal(product.price, 41000);
    assert.equal(product.stock, 15);
    assert.equal(product.status, 'ON_SALE');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('an API error is shown next to the form, in words with its code', async () => {
    // Stock never exceeds 10,000,000: fill it up through the API, then ask for one more.
    const product = await ctx.api.product({ name: 'Full', price: 1000, stock: 1_000_000 });
    for (let i = 0; i < 9; i += 1) {
      await ctx.api.call('POST', `/admin/products/${product.id}/restock`, { body: { quantity: 1_000_000 }, token: await ctx.api.admin() });
    }
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/products/${product.id}`);
    await page.getByLabel('Quantity').fill('2');
    await page.getByRole('button', { name: 'Restock' }).click();
    const alert = page.locator('#product-restock').getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /VALIDATION_FAILED/);
    assert.equal(await fact(page, 'Stock'), '10000000');
    await context.close();
  });

  test('an unknown product says so', async () => {
    const { context, page } = await openPage(ctx.browser, { allow: (url) => allowPending(url) || /products\/9999/.test(url) });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/products/9999`);
    await waitForText(page.getByRole('alert'), 'PRODUCT_NOT_FOUND');
    await context.close();
  });

  test('while a request runs the submit button is disabled', async () => {
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    let release;
    const held = new Promise((resolve) => { release = resolve; });
    await page.route('**/api/v1/admin/products', async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      await held;
      return route.continue();
    });
    await page.getByLabel('Name').fill('Slow hat');
    await page.getByLabel('Price').fill('1000');
    await page.getByLabel('Stock').fill('1');
    const create = page.getByRole('button', { name: 'Create' });
    await create.click();
    assert.equal(await create.isDisabled(), true);
    release();
    await page.getByRole('status').filter({ hasText: 'created' }).waitFor();
    assert.equal(await create.isDisabled(), false);
    await context.close();
  });
});
