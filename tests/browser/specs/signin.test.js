// Signing in: an admin gets the console, anyone else is refused in words and keeps no token.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openPage, signIn } from '../support/browser.js';
import { allowPending } from '../support/phase2.js';
import { useServer } from '../support/harness.js';

describe('sign-in', { timeout: 60_000 }, () => {
  const ctx = useServer();

  test('an admin signs in, sees the menu, and signs out again', async () => {
    const { context, page, problems } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    for (const name of ['Products', 'Coupons', 'Draws', 'Orders', 'Users', 'Live']) {
      await page.getByRole('link', { name, exact: true }).waitFor();
    }
    const stored = await page.evaluate(() => Object.keys(sessionStorage));
    assert.ok(stored.includes('ecommerce.console.token'), 'the token is kept in sessionStorage');
    const cookies = await context.cookies();
    assert.deepEqual(cookies, [], 'the console sets no cookie');
    assert.ok(!page.url().includes('ey'), 'no token in the URL');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ecommerce.console.token')), null);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a customer account is refused with a message and its token discarded', async () => {
    const customer = await ctx.api.user('Not an operator');
    const { context, page, problems } = await openPage(ctx.browser);
    await page.goto(`${ctx.url}/admin/`);
    await page.getByLabel('Email').fill(customer.email);
    await page.getByLabel('Password').fill(customer.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /not an admin/);
    assert.equal(await page.getByRole('link', { name: 'Products' }).count(), 0, 'no menu for a customer');
    assert.deepEqual(await page.evaluate(() => Object.keys(sessionStorage)), []);
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('a wrong password is shown in words with its code', async () => {
    const { context, page } = await openPage(ctx.browser);
    await page.goto(`${ctx.url}/admin/`);
    await page.getByLabel('Email').fill('console-admin@example.com');
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /INVALID_CREDENTIALS/);
    await context.close();
  });

  test('the sign-in survives a reload but not a new tab session', async () => {
    const { context, page } = await openPage(ctx.browser, { allow: allowPending });
    await signIn(page, ctx.url);
    await page.reload();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    const other = await context.browser().newContext();
    const fresh = await other.newPage();
    await fresh.goto(`${ctx.url}/admin/`);
    await fresh.getByRole('button', { name: 'Sign in' }).waitFor();
    await other.close();
    await context.close();
  });
});
