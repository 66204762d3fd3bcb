// Every page: the security headers, no console error or CSP violation, no sideways scrolling on
// a 375 px screen; with SCREENSHOTS=1 a picture of each page goes to docs/console/.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { openPage, screenshot, sideScroll, signIn } from '../support/browser.js';
import { useServer } from '../support/harness.js';
import { allowPending, needsDraws } from '../support/phase2.js';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
  + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

describe('every page', { timeout: 120_000 }, () => {
  const ctx = useServer();
  const seeded = {};
  before(async () => {
    const { api } = ctx;
    seeded.product = await api.product({ name: 'Silk scarf', price: 25000, stock: 40 });
    seeded.coupon = await api.coupon({
      name: 'Welcome 3000', discount_type: 'FIXED', discount_value: 3000, total_quantity: 500, valid_for_seconds: 604800,
    });
    seeded.user = await api.user('Mina Park');
    await api.charge(seeded.user, 100000);
    const coupon = await api.call('POST', `/users/${seeded.user.id}/coupons`, {
      body: { coupon_id: seeded.coupon.id }, token: seeded.user.token,
    });
    const order = await api.call('POST', `/users/${seeded.user.id}/orders`, {
      body: { items: [{ product_id: seeded.product.id, quantity: 2 }] }, token: seeded.user.token,
    });
    seeded.order = await api.call('POST', `/orders/${order.id}/payment`, {
      body: { user_coupon_id: coupon.id }, token: seeded.user.token,
    });
  });

  /** [hash, screenshot name] of every page, details included. */
  const pages = () => [
    ['#/products', 'products'],
    [`#/products/${seeded.product.id}`, 'product'],
    ['#/coupons', 'coupons'],
    ['#/draws', 'draws'],
    [`#/orders?user_id=${seeded.user.id}`, 'orders'],
    [`#/orders/${seeded.order.id}`, 'order'],
    [`#/users/${seeded.user.id}`, 'user'],
    ['#/live', 'live'],
  ];

  test('the page and its assets carry the security headers', async () => {
    const page = await fetch(`${ctx.url}/admin/`);
    const html = await page.text();
    const assets = [...html.matchAll(/"(\/admin\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.equal(assets.length, 3, 'script, stylesheet and icon');
    for (const response of [page, ...await Promise.all(assets.map((a) => fetch(`${ctx.url}${a}`)))]) {
      assert.equal(response.status, 200, response.url);
      assert.equal(response.headers.get('content-security-policy'), CSP);
      assert.equal(response.headers.get('x-frame-options'), 'DENY');
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(response.headers.get('referrer-policy'), 'no-referrer');
      assert.ok(response.headers.get('etag'), `ETag on ${response.url}`);
    }
    const redirect = await fetch(`${ctx.url}/admin`, { redirect: 'manual' });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), '/admin/');
  });

  for (const [width, height] of [[1280, 800], [375, 740]]) {
    test(`every page at ${width} px: no console error, no CSP violation, no sideways scrolling`, async () => {
      const { context, page, problems } = await openPage(ctx.browser, { width, height, allow: allowPending });
      await page.addInitScript(() => {
        window.cspViolations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective));
      });
      await page.goto(`${ctx.url}/admin/`);
      if (width === 1280) await screenshot(page, 'signin');
      await signIn(page, ctx.url);
      for (const [hash, name] of pages()) {
        await page.goto(`${ctx.url}/admin/${hash}`);
        await page.locator('h1').waitFor();
        await page.waitForLoadState('networkidle');
        assert.deepEqual(await page.evaluate(() => window.cspViolations), [], `CSP on ${hash}`);
        assert.equal(await sideScroll(page), 0, `sideways scrolling on ${hash} at ${width} px`);
        if (width === 1280) await screenshot(page, name);
        else if (name === 'order') await screenshot(page, 'order-375');
      }
      assert.deepEqual(problems, []);
      await context.close();
    });
  }

  test('the draw page (needs phase 2 for a draw to show)', { skip: needsDraws }, async () => {
    const { api } = ctx;
    const now = Date.now();
    const draw = await api.call('POST', '/admin/draws', {
      token: await api.admin(),
      body: {
        product_id: seeded.product.id, quantity: 3, payment_window_seconds: 600,
        entry_starts_at: new Date(now - 60_000).toISOString(), entry_ends_at: new Date(now + 3_600_000).toISOString(),
      },
    });
    const { context, page, problems } = await openPage(ctx.browser, { width: 375, height: 740 });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/draws/${draw.id}`);
    await page.getByRole('heading', { name: `Draw ${draw.id}` }).waitFor();
    assert.equal(await sideScroll(page), 0);
    await page.setViewportSize({ width: 1280, height: 800 });
    await screenshot(page, 'draw');
    assert.deepEqual(problems, []);
    await context.close();
  });
});
