// Swagger UI (served from the binary at /swagger-ui/) runs a list operation with query
// parameters: "Try it out", limit and after filled in, "Execute", and the answer is the page the
// API serves. With SCREENSHOTS=1 the result is saved as docs/swagger-execute.png.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openPage, waitForText } from '../support/browser.js';
import { useServer } from '../support/harness.js';

const docs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs');
const ctx = useServer();

test("Swagger UI's Execute lists products with limit and after", async () => {
  const ids = [];
  for (const [name, price] of [['Linen shirt', 39000], ['Wool coat', 189000], ['Silk scarf', 59000], ['Denim jacket', 99000]]) {
    ids.push((await ctx.api.product({ name, price, stock: 10 })).id);
  }
  const { page, problems } = await openPage(ctx.browser, { width: 1280, height: 1400 });
  await page.goto(`${ctx.url}/swagger-ui/`);
  const operation = page.locator('#operations-catalog-list_products');
  await operation.locator('.opblock-summary').click();
  await operation.getByRole('button', { name: 'Try it out' }).click();
  await operation.locator('tr[data-param-name="limit"] input').fill('2');
  await operation.locator('tr[data-param-name="after"] input').fill(String(ids[0]));
  await operation.getByRole('button', { name: 'Execute' }).click();

  const live = operation.locator('.live-responses-table');
  await waitForText(live.locator('.response-col_status'), '200');
  const requestUrl = await operation.locator('.request-url pre').innerText();
  assert.equal(requestUrl, `${ctx.url}/api/v1/products?limit=2&after=${ids[0]}`);
  const body = JSON.parse(await live.locator('.response-col_description pre.microlight').first().innerText());
  assert.deepEqual(body.items.map((p) => p.id), [ids[1], ids[2]]);
  assert.equal(body.next_after, ids[2]);
  assert.deepEqual(problems, []);

  const curl = await operation.locator('.curl-command').innerText();
  assert.doesNotMatch(curl, /If-None-Match/i, 'an empty optional header is not sent');

  if (process.env.SCREENSHOTS === '1') {
    // From the operation's title to the end of the live answer (its headers included).
    await page.evaluate(() => window.scrollTo(0, 0));
    const top = await operation.boundingBox();
    const bottom = await live.boundingBox();
    await mkdir(docs, { recursive: true });
    await page.screenshot({
      path: path.join(docs, 'swagger-execute.png'),
      fullPage: true,
      clip: { x: top.x, y: top.y, width: top.width, height: bottom.y + bottom.height - top.y + 8 },
    });
  }
  await page.context().close();
});
