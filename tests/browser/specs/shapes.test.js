// The console against the answer shapes of the phase-2 admin API (PLAN.md), served by the test
// itself through request interception: this runs today and checks that the pages render those
// shapes and update by themselves. The real routes are exercised in phase2.test.js.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fact, openPage, rowWith, signIn, waitForText } from '../support/browser.js';
import { useServer } from '../support/harness.js';
import { allowPending } from '../support/phase2.js';

/** Answers `method path` (path as a RegExp on the pathname) with `answer(url, calls)`'s JSON. */
async function mock(page, method, path, answer) {
  const seen = [];
  await page.route((url) => path.test(url.pathname), async (route) => {
    if (route.request().method() !== method) return route.fallback();
    const url = new URL(route.request().url());
    seen.push(url);
    const [status, body] = answer(url, seen.length);
    return route.fulfill({
      status,
      contentType: status < 400 ? 'application/json' : 'application/problem+json',
      body: JSON.stringify(body),
    });
  });
  return seen;
}

const ok = (body) => [200, body];
const page1 = (items) => ok({ items, next_after: null });

describe('the console reads the phase-2 shapes', { timeout: 90_000 }, () => {
  const ctx = useServer();

  async function consolePage() {
    // Routes not mocked in a test may not exist yet: their 404s are not the test's subject.
    const opened = await openPage(ctx.browser, { allow: allowPending });
    await signIn(opened.page, ctx.url);
    return opened;
  }

  test('Live shows every figure in words, updates by itself, and draws the sales chart', async () => {
    const { context, page, problems } = await consolePage();
    const live = await mock(page, 'GET', /^\/api\/v1\/admin\/live$/, (_, n) => ok({
      generated_at: '2026-12-01T09:00:00.123Z',
      orders_paid_total: 100 + n,
      orders_paid_per_second: 2.5,
      payment_failures: { INSUFFICIENT_BALANCE: 4, OUT_OF_STOCK: 9 },
      requests_per_second: 812.25,
      outbox_backlog: 1,
      outbox_oldest_unsent_age_seconds: 12.4,
    }));
    const start = Date.UTC(2026, 10, 28, 10);
    const hourly = await mock(page, 'GET', /^\/api\/v1\/admin\/sales\/hourly$/, () => ok({
      hours: 72,
      items: Array.from({ length: 72 }, (_, i) => ({
        hour: new Date(start + i * 3600_000).toISOString().replace('.000Z', 'Z'), quantity: i === 70 ? 30 : i % 5,
      })),
    }));
    await mock(page, 'GET', /^\/api\/v1\/admin\/coupons$/, (url, n) => {
      assert.equal(url.searchParams.get('limit'), '5');
      return page1([{ id: 4, name: 'Drop 10%', discount_type: 'RATE', discount_value: 10, total_quantity: 500,
        remaining_quantity: 500 - n, valid_for_seconds: 60, issue_starts_at: null, issue_ends_at: null }]);
    });
    await mock(page, 'GET', /^\/api\/v1\/admin\/products$/, () => page1([{ id: 8, name: 'Drop tee', price: 1000,
      stock: 12, status: 'ON_SALE', sale_starts_at: null, max_per_user: 1 }]));
    await page.getByRole('link', { name: 'Live', exact: true }).click();
    await waitForText(page.locator('#live-orders-paid'), '101');
    await waitForText(page.locator('#live-orders-paid'), '102'); // polled again, no reload
    assert.equal(await fact(page, 'Orders paid per second'), '2.5');
    assert.equal(await fact(page, 'Requests per second'), '812.3');
    assert.equal(await fact(page, 'Outbox backlog'), '1');
    assert.equal(await fact(page, 'Oldest unsent event'), '12 s');
    await waitForText(rowWith(page, 'Drop 10%'), /^Coupon\t4\tDrop 10%\t49[0-8]\t500$/);
    await waitForText(rowWith(page, 'Drop tee'), /^Product\t8\tDrop tee\t12\t–$/);
    assert.match(await rowWith(page, 'OUT_OF_STOCK').innerText(), /9/);
    assert.match(await rowWith(page, 'INSUFFICIENT_BALANCE').innerText(), /4/);
    assert.equal(hourly[0].searchParams.get('hours'), '72');
    await waitForText(page.locator('#chart-summary'), 'units sold in the last 72 hours');
    assert.match(await page.locator('#chart-summary').innerText(), /busiest hour was 2026-12-01T08:00:00Z with 30/);
    assert.equal(await page.locator('#chart svg rect.bar').count(), 72 - 15 + 1, 'one bar per hour that sold');
    assert.ok(live.length >= 2);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('an empty backlog and no failures read as such', async () => {
    const { context, page, problems } = await consolePage();
    await mock(page, 'GET', /^\/api\/v1\/admin\/live$/, () => ok({
      generated_at: '2026-12-01T09:00:00Z', orders_paid_total: 0, orders_paid_per_second: 0,
      payment_failures: {}, requests_per_second: 0, outbox_backlog: 0, outbox_oldest_unsent_age_seconds: null,
    }));
    await mock(page, 'GET', /^\/api\/v1\/admin\/sales\/hourly$/, () => ok({
      hours: 72, items: [{ hour: '2026-12-01T08:00:00Z', quantity: 0 }],
    }));
    await page.goto(`${ctx.url}/admin/#/live`);
    await waitForText(page.locator('#live-oldest'), 'none');
    await waitForText(page.locator('#failure-rows'), 'No failed payments');
    await waitForText(page.locator('#chart-summary'), 'No units sold');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('Coupons lists every coupon and its remaining quantity drains live', async () => {
    const { context, page, problems } = await consolePage();
    await mock(page, 'GET', /^\/api\/v1\/admin\/coupons$/, (_, n) => page1([{
      id: 7, name: 'Rush', discount_type: 'RATE', discount_value: 15, total_quantity: 1000,
      remaining_quantity: Math.max(0, 1000 - 400 * n), valid_for_seconds: 3600,
      issue_starts_at: '2026-12-01T09:00:00Z', issue_ends_at: null,
    }]));
    await page.goto(`${ctx.url}/admin/#/coupons`);
    const row = rowWith(page, 'Rush');
    await waitForText(row, /1000\s+600\s+3600\s+2026-12-01T09:00:00Z/);
    assert.match(await row.innerText(), /15% off/);
    await waitForText(row, /1000\s+0\s+3600/);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('Draws lists draws with live entry counts; a drawn draw shows winners and their orders', async () => {
    const { context, page, problems } = await consolePage();
    const draw = {
      id: 3, product_id: 9, quantity: 2, entry_starts_at: '2026-12-01T09:00:00Z', entry_ends_at: '2026-12-01T10:00:00Z',
      payment_window_seconds: 600, status: 'OPEN', entry_count: 0, winner_count: null, drawn_at: null,
    };
    await mock(page, 'GET', /^\/api\/v1\/admin\/draws$/, (_, n) => page1([{ ...draw, entry_count: 40 * n }]));
    await page.goto(`${ctx.url}/admin/#/draws`);
    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: '3', exact: true }) });
    await waitForText(row, /OPEN\s+40/);
    await waitForText(row, /OPEN\s+80/);

    const drawn = { ...draw, status: 'DRAWN', entry_count: 120, winner_count: 2, drawn_at: '2026-12-01T10:00:04Z' };
    await mock(page, 'GET', /^\/api\/v1\/draws\/3$/, () => ok(drawn));
    const entries = await mock(page, 'GET', /^\/api\/v1\/admin\/draws\/3\/entries$/, () => page1([
      { draw_id: 3, user_id: 21, status: 'WON', entered_at: '2026-12-01T09:10:00Z', order_id: 501 },
      { draw_id: 3, user_id: 22, status: 'WON', entered_at: '2026-12-01T09:11:00Z', order_id: 502 },
    ]));
    await mock(page, 'GET', /^\/api\/v1\/orders\/50[12]$/, (url) => ok({
      id: Number(url.pathname.split('/').pop()), user_id: 21, status: url.pathname.endsWith('1') ? 'PAID' : 'PENDING_PAYMENT',
      items: [], total_amount: 300000, discount_amount: 0, paid_amount: url.pathname.endsWith('1') ? 300000 : 0,
      user_coupon_id: null, created_at: '2026-12-01T10:00:04Z', expires_at: '2026-12-01T10:10:04Z', paid_at: null,
    }));
    await row.getByRole('link', { name: '3', exact: true }).click();
    await page.getByRole('heading', { name: 'Draw 3' }).waitFor();
    await waitForText(page.locator('#entries-title'), 'Winners and their orders');
    await waitForText(rowWith(page, '501'), /WON.*501\s+PAID\s+300000/s);
    await waitForText(rowWith(page, '502'), /PENDING_PAYMENT/);
    assert.equal(entries[0].searchParams.get('status'), 'WON');
    assert.equal(await fact(page, 'Winner count'), '2');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('Orders without a user id asks the admin list; Users finds a user by email', async () => {
    const { context, page, problems } = await consolePage();
    const order = {
      id: 44, user_id: 5, status: 'PAID', items: [], total_amount: 9000, discount_amount: 0, paid_amount: 9000,
      user_coupon_id: null, created_at: '2026-12-01T09:00:00Z', expires_at: '2026-12-01T09:15:00Z', paid_at: '2026-12-01T09:01:00Z',
    };
    const orders = await mock(page, 'GET', /^\/api\/v1\/admin\/orders$/, () => page1([order]));
    await page.goto(`${ctx.url}/admin/#/orders`);
    await page.getByLabel('Status').selectOption('PAID');
    await page.getByRole('button', { name: 'Search' }).click();
    await rowWith(page, '44').waitFor();
    assert.equal(orders.at(-1).searchParams.get('status'), 'PAID');
    assert.equal(orders.at(-1).searchParams.has('user_id'), false);
    assert.match(page.url(), /#\/orders\?status=PAID$/);

    const user = { id: 5, email: 'mina@example.com', name: 'Mina', role: 'USER', balance: 1000, created_at: '2026-11-01T00:00:00Z' };
    const byEmail = await mock(page, 'GET', /^\/api\/v1\/admin\/users$/, () => page1([user]));
    await mock(page, 'GET', /^\/api\/v1\/admin\/users\/5$/, () => ok(user));
    await mock(page, 'GET', /^\/api\/v1\/users\/5\/balance$/, () => ok({ user_id: 5, balance: 1000 }));
    await mock(page, 'GET', /^\/api\/v1\/users\/5\/balance\/history$/, () => page1([
      { id: 1, type: 'CHARGE', amount: 1000, balance_after: 1000, order_id: null, created_at: '2026-11-01T00:00:00Z' },
    ]));
    await page.getByRole('link', { name: 'Users', exact: true }).click();
    await page.getByLabel('Email').fill('Mina@Example.com');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('heading', { name: 'User 5' }).waitFor();
    assert.equal(byEmail[0].searchParams.get('email'), 'Mina@Example.com');
    await waitForText(page.locator('#user-facts'), 'mina@example.com');
    assert.equal(await fact(page, 'Role'), 'USER');
    await waitForText(page.locator('#user-balance'), '1000');
    await rowWith(page, 'CHARGE').waitFor();

    await page.goto(`${ctx.url}/admin/#/users`);
    await mock(page, 'GET', /^\/api\/v1\/admin\/users$/, () => page1([]));
    await page.getByLabel('Email').fill('nobody@example.com');
    await page.getByRole('button', { name: 'Search' }).click();
    await waitForText(page.getByRole('alert'), 'No user has the email nobody@example.com');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('Products lists every product with its release time and limit, and pages on', async () => {
    const { context, page, problems } = await consolePage();
    const product = (id) => ({
      id, name: `Item ${id}`, price: 1000 * id, stock: id, status: id % 2 ? 'ON_SALE' : 'STOPPED',
      sale_starts_at: id === 60 ? '2026-12-24T00:00:00Z' : null, max_per_user: id === 60 ? 2 : null,
    });
    const calls = await mock(page, 'GET', /^\/api\/v1\/admin\/products$/, (url) => {
      const after = Number(url.searchParams.get('after') || 61);
      const ids = Array.from({ length: 50 }, (_, i) => after - 1 - i).filter((id) => id > 0);
      return ok({ items: ids.map(product), next_after: ids.length === 50 ? ids.at(-1) : null });
    });
    await page.goto(`${ctx.url}/admin/#/products`);
    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'Item 60', exact: true }) });
    await waitForText(row, /60000\s+60\s+STOPPED\s+2026-12-24T00:00:00Z\s+2/);
    await page.getByRole('button', { name: 'More' }).click();
    await page.getByRole('link', { name: 'Item 1', exact: true }).waitFor();
    assert.equal(calls.at(-1).searchParams.get('after'), '11');
    assert.equal(await page.getByRole('button', { name: 'More' }).isVisible(), false);
    assert.equal(await page.locator('#product-rows tr').count(), 60);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
