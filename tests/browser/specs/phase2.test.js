// End-to-end tests against the real phase-2 routes: the console's admin API (docs/API.md, "Admin
// API"), the drops fields and the draws (API.md, "Limited drops"). All have landed; the flags of
// support/phase2.js could skip a part again (with the reason) while it is rebuilt.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fact, openPage, rowWith, signIn, waitForText } from '../support/browser.js';
import { useServer } from '../support/harness.js';
import { needsAdminApi, needsDraws, needsDrops, phase2 } from '../support/phase2.js';

const iso = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

describe('phase 2: the admin API seen through the console', { timeout: 180_000 }, () => {
  const ctx = useServer({ enabled: phase2 });

  /** A signed-in page; its problems must stay empty. */
  async function consolePage(hash) {
    const opened = await openPage(ctx.browser);
    await signIn(opened.page, ctx.url);
    if (hash) await opened.page.goto(`${ctx.url}/admin/${hash}`);
    return opened;
  }

  test('the product list shows every product with its release time and limit', { skip: needsAdminApi || needsDrops }, async () => {
    const { context, page, problems } = await consolePage('#/products');
    const release = iso(Date.now() + 7 * 24 * 3600 * 1000);
    await page.getByLabel('Name').fill('Drop sneaker');
    await page.getByLabel('Price').fill('189000');
    await page.getByLabel('Stock').fill('30');
    await page.getByLabel('Sale starts at').fill(release);
    await page.getByLabel('Max per user').fill('2');
    await page.getByRole('button', { name: 'Create' }).click();
    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'Drop sneaker' }) });
    await waitForText(row, release);
    assert.match(await row.innerText(), /189000\s+30\s+ON_SALE/);
    assert.match(await row.innerText(), /\t2$/);

    // Unreleased: customers do not see it; clearing the time releases it now.
    const id = Number(await row.getByRole('cell').first().innerText());
    assert.equal((await fetch(`${ctx.url}/api/v1/products/${id}`)).status, 404);
    await row.getByRole('link', { name: 'Drop sneaker' }).click();
    await page.getByLabel('Sale starts at').fill('');
    await page.getByLabel('Max per user').fill('');
    await page.getByRole('button', { name: 'Save' }).click();
    await waitForText(page.getByRole('status'), 'Saved');
    assert.equal(await fact(page, 'Sale starts at'), '–');
    const product = await ctx.api.call('GET', `/products/${id}`);
    assert.equal(product.sale_starts_at, null);
    assert.equal(product.max_per_user, null);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('orders of every user are listed and filtered by status without a user id', { skip: needsAdminApi }, async () => {
    const { api } = ctx;
    const product = await api.product({ name: 'Belt', price: 5000, stock: 10 });
    const buyers = [await api.user('One'), await api.user('Two')];
    const orders = [];
    for (const buyer of buyers) {
      await api.charge(buyer, 5000);
      orders.push(await api.paidOrder(buyer, product, 1));
    }
    const { context, page, problems } = await consolePage('#/orders');
    await page.getByLabel('Status').selectOption('PAID');
    await page.getByRole('button', { name: 'Search' }).click();
    for (const order of orders) await page.getByRole('link', { name: String(order.id), exact: true }).first().waitFor();
    assert.equal(await rowWith(page, 'PENDING_PAYMENT').count(), 0);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a user is found by email, with balance and history', { skip: needsAdminApi }, async () => {
    const customer = await ctx.api.user('Found by email');
    await ctx.api.charge(customer, 7000);
    const { context, page, problems } = await consolePage('#/users');
    await page.getByLabel('Email').fill(customer.email.toUpperCase());
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('heading', { name: `User ${customer.id}` }).waitFor();
    await waitForText(page.locator('#user-facts'), customer.email);
    await waitForText(page.locator('#user-balance'), '7000');
    await rowWith(page, 'CHARGE').waitFor();
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a coupon drains while the page is open', { skip: needsAdminApi }, async () => {
    const { api } = ctx;
    const { context, page, problems } = await consolePage('#/coupons');
    await page.getByLabel('Name').fill('Rush 5000');
    await page.getByLabel('Discount value').fill('5000');
    await page.getByLabel('Total quantity').fill('3');
    await page.getByLabel('Valid for seconds').fill('3600');
    await page.getByRole('button', { name: 'Create' }).click();
    const row = rowWith(page, 'Rush 5000');
    await waitForText(row, /3\s+3\s+3600/);
    const id = Number(await row.getByRole('cell').first().innerText());
    for (const user of [await api.user('A'), await api.user('B')]) {
      await api.call('POST', `/users/${user.id}/coupons`, { body: { coupon_id: id }, token: user.token });
    }
    await waitForText(row, /3\s+1\s+3600/); // no reload: the list polls
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a draw is created, fills with entries, and shows its winners and their orders', { skip: needsDraws }, async () => {
    const { api } = ctx;
    const product = await api.product({ name: 'Numbered bag', price: 300000, stock: 5 });
    const { context, page, problems } = await consolePage('#/draws');
    await page.getByLabel('Product id').fill(String(product.id));
    await page.getByLabel('Quantity').fill('2');
    await page.getByLabel('Entry starts at').fill(iso(Date.now() - 60_000));
    await page.getByLabel('Entry ends at').fill(iso(Date.now() + 6_000));
    await page.getByLabel('Payment window seconds').fill('600');
    await page.getByRole('button', { name: 'Create' }).click();
    const created = page.getByRole('status').filter({ hasText: 'created' });
    await created.waitFor();
    const id = Number(/Draw (\d+) created/.exec(await created.innerText())[1]);
    assert.equal((await api.getProduct(product.id)).stock, 3, 'the units left stock');

    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: String(id), exact: true }) });
    await waitForText(row, 'OPEN');
    const users = [await api.user('E1'), await api.user('E2'), await api.user('E3')];
    await Promise.all(users.map((u) => api.call('POST', `/users/${u.id}/draws/${id}/entries`, { token: u.token })));
    await waitForText(row, /OPEN\s+3/); // entry count, live

    await row.getByRole('link', { name: String(id), exact: true }).click();
    await page.getByRole('heading', { name: `Draw ${id}` }).waitFor();
    await waitForText(page.locator('#draw-facts'), 'DRAWN', 30_000);
    await waitForText(page.locator('#entries-title'), 'Winners');
    const winners = rowWith(page, 'WON');
    await waitForText(winners.first(), 'PENDING_PAYMENT');
    assert.equal(await winners.count(), 2);
    assert.equal(await winners.getByRole('link').filter({ hasText: /^\d+$/ }).count(), 4, 'user and order links');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('live figures move during a small rush, with failures by reason and the sales chart', { skip: needsAdminApi }, async () => {
    const { api } = ctx;
    const product = await api.product({ name: 'Rush tee', price: 10000, stock: 50 });
    const { context, page, problems } = await consolePage('#/live');
    const figure = (name) => fact(page, name);
    await waitForText(page.locator('#live-orders-paid'), /^\d+$/);
    const before = Number(await figure('Orders paid'));

    const buyers = await Promise.all(Array.from({ length: 5 }, (_, i) => api.user(`Rush ${i}`)));
    await Promise.all(buyers.map(async (buyer) => {
      await api.charge(buyer, 10000);
      await api.paidOrder(buyer, product, 1);
    }));
    const broke = await api.user('No money');
    const order = await api.call('POST', `/users/${broke.id}/orders`, {
      body: { items: [{ product_id: product.id, quantity: 1 }] }, token: broke.token,
    });
    const failed = await fetch(`${ctx.url}/api/v1/orders/${order.id}/payment`, {
      method: 'POST', headers: { Authorization: `Bearer ${broke.token}` },
    });
    assert.equal(failed.status, 409);

    await waitForText(page.locator('#live-orders-paid'), String(before + 5));
    await waitForText(rowWith(page, 'INSUFFICIENT_BALANCE'), '1');
    assert.match(await figure('Orders paid per second'), /^\d+\.\d$/);
    assert.ok(Number(await figure('Requests per second')) > 0, 'this page alone polls every 1.5 s');
    assert.match(await figure('Outbox backlog'), /^\d+$/);
    assert.match(await figure('Oldest unsent event'), /^(none|\d+ s)$/);

    await page.reload();
    await waitForText(page.locator('#chart-summary'), /units sold in the last 72 hours/);
    assert.ok(await page.locator('#chart svg rect.bar').count() >= 1, 'a bar for this hour');
    assert.deepEqual(problems, []);
    await context.close();
  });
});
