// Coupons: created from the console with every field; the API holds what was typed.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openPage, signIn } from '../support/browser.js';
import { allowPending } from '../support/phase2.js';
import { useServer } from '../support/harness.js';

describe('coupons', { timeout: 60_000 }, () => {
  const ctx = useServer();

  test('a coupon is created with its discount, quantity and validity', async () => {
    const { context, page, problems } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.getByRole('link', { name: 'Coupons', exact: true }).click();
    await page.getByLabel('Name').fill('Spring 10%');
    await page.getByLabel('Discount type').selectOption('RATE');
    await page.getByLabel('Discount value').fill('10');
    await page.getByLabel('Total quantity').fill('100');
    await page.getByLabel('Valid for seconds').fill('86400');
    await page.getByRole('button', { name: 'Create' }).click();
    const created = page.getByRole('status').filter({ hasText: 'created' });
    await created.waitFor();
    const id = Number(/Coupon (\d+) created/.exec(await created.innerText())[1]);
    const coupon = await ctx.api.call('GET', `/coupons/${id}`);
    assert.deepEqual(
      [coupon.name, coupon.discount_type, coupon.discount_value, coupon.total_quantity, coupon.remaining_quantity, coupon.valid_for_seconds],
      ['Spring 10%', 'RATE', 10, 100, 100, 86400],
    );
    assert.equal(await page.getByLabel('Name').inputValue(), '', 'the form is ready for the next coupon');
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a percentage over 100 is refused before anything is sent', async () => {
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/coupons`);
    await page.getByLabel('Discount type').selectOption('RATE');
    assert.equal(await page.getByLabel('Discount value').getAttribute('max'), '100');
    await page.getByLabel('Discount type').selectOption('FIXED');
    assert.equal(await page.getByLabel('Discount value').getAttribute('max'), '10000000');
    await context.close();
  });

  test('a time that is not RFC 3339 is explained without a request', async () => {
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.goto(`${ctx.url}/admin/#/coupons`);
    await page.getByLabel('Name').fill('Bad window');
    await page.getByLabel('Discount value').fill('1000');
    await page.getByLabel('Total quantity').fill('1');
    await page.getByLabel('Valid for seconds').fill('60');
    await page.getByLabel('Issue starts at').fill('next tuesday');
    let posted = false;
    page.on('request', (request) => { if (request.method() === 'POST') posted = true; });
    await page.getByRole('button', { name: 'Create' }).click();
    const alert = page.locator('#coupon-create').getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /Issue starts at: write a time like 2026-12-01T09:00:00Z/);
    assert.equal(posted, false);
    await context.close();
  });
});
