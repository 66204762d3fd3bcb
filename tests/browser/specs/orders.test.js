// Orders: a paid order is found by its user, opened, and refunded with a confirmation; the stock
// and the customer's balance come back, as the product and Users pages show.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fact, openPage, rowWith, signIn, waitForText } from '../support/browser.js';
import { allowPending } from '../support/phase2.js';
import { useServer } from '../support/harness.js';

describe('orders', { timeout: 60_000 }, () => {
  const ctx = useServer();

  test('a paid order is found, opened and refunded; stock and balance come back', async () => {
    const product = await ctx.api.product({ name: 'Wool coat', price: 12000, stock: 5 });
    const buyer = await ctx.api.user('Coat buyer');
    await ctx.api.charge(buyer, 50000);
    const order = await ctx.api.paidOrder(buyer, product, 2);
    assert.equal(order.status, 'PAID');

    const { context, page, problems } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.getByRole('link', { name: 'Orders', exact: true }).click();
    await page.getByLabel('User id').fill(String(buyer.id));
    await page.getByLabel('Status').selectOption('PAID');
    await page.getByRole('button', { name: 'Search' }).click();
    const row = rowWith(page, 'PAID');
    await row.waitFor();
    assert.match(await row.innerText(), /24000/);

    await row.getByRole('link', { name: String(order.id), exact: true }).click();
    await page.getByRole('heading', { name: `Order ${order.id}` }).waitFor();
    await page.getByRole('cell', { name: 'Wool coat' }).waitFor();
    assert.equal(await fact(page, 'Paid amount'), '24000');
    assert.equal(await fact(page, 'Status'), 'PAID');

    // Refund asks first; Cancel leaves the order alone.
    await page.getByRole('button', { name: 'Refund' }).click();
    await page.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await page.getByRole('button', { name: 'Confirm' }).isVisible(), false);
    assert.equal((await ctx.api.call('GET', `/orders/${order.id}`, { token: buyer.token })).status, 'PAID');

    await page.getByRole('button', { name: 'Refund' }).click();
    await page.getByRole('button', { name: 'Confirm' }).click();
    await waitForText(page.getByRole('status'), 'Refunded 24000 KRW');
    assert.equal(await fact(page, 'Status'), 'REFUNDED');
    assert.equal(await page.getByRole('button', { name: 'Refund' }).isVisible(), false);

    await page.getByRole('cell').getByRole('link', { name: String(product.id), exact: true }).click();
    await page.getByRole('heading', { name: 'Wool coat' }).waitFor();
    assert.equal(await fact(page, 'Stock'), '5');

    await page.getByRole('link', { name: 'Users', exact: true }).click();
    await page.getByLabel('User id').fill(String(buyer.id));
    await page.getByRole('button', { name: 'Search' }).click();
    await waitForText(page.locator('#user-balance'), '50000');
    const refundLine = rowWith(page, 'REFUND');
    await refundLine.waitFor();
    assert.match(await refundLine.innerText(), /24000\s+50000/);
    assert.equal(await rowWith(page, 'PAYMENT').count(), 1);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a refund the server refuses is explained next to the button', async () => {
    const product = await ctx.api.product({ name: 'Scarf', price: 1000, stock: 3 });
    const buyer = await ctx.api.user('Scarf buyer');
    await ctx.api.charge(buyer, 1000);
    const order = await ctx.api.paidOrder(buyer, product, 1);
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/orders/${order.id}`);
    await page.getByRole('button', { name: 'Refund' }).click();
    // Someone else refunds it first.
    await ctx.api.call('POST', `/orders/${order.id}/refund`, { token: await ctx.api.admin() });
    await page.getByRole('button', { name: 'Confirm' }).click();
    await waitForText(page.locator('#order-refund').getByRole('alert'), 'ORDER_NOT_PAID');
    await context.close();
  });
});
