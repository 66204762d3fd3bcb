// One server and one browser per test file, started before its tests and stopped after them
// (also when starting failed half-way, so no Chromium is left running).

import { access, constants } from 'node:fs/promises';
import { after, before } from 'node:test';
import { Api } from './api.js';
import { launch } from './browser.js';
import { binaryPath, startServer } from './server.js';

/**
 * Registers the hooks; the returned object holds { url, api, browser } once `before` ran.
 * With `enabled: false` (every test of the file skipped) nothing is started.
 */
export function useServer({ env = {}, enabled = true } = {}) {
  const ctx = {};
  before(async () => {
    if (!enabled) return;
    const binary = binaryPath();
    await access(binary, constants.X_OK).catch(() => {
      throw new Error(`${binary} is missing: run scripts/browser-tests.sh (or cargo build -p ecommerce) first`);
    });
    ctx.browser = await launch();
    ctx.server = await startServer(env);
    ctx.url = ctx.server.url;
    ctx.api = new Api(ctx.url);
  });
  after(async () => {
    await ctx.browser?.close();
    await ctx.server?.stop();
  });
  return ctx;
}
