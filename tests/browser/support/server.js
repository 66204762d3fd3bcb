// A real server for one test file: the built `ecommerce` binary on 127.0.0.1:0 with a fresh
// SQLite file in a temporary folder. It is ready when it prints its "listening" line (no sleep).

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export const ADMIN = { email: 'console-admin@example.com', password: 'Console-admin-7391' };

/** The binary `cargo build -p ecommerce` made (honours CARGO_TARGET_DIR), or $ECOMMERCE_BIN. */
export function binaryPath() {
  if (process.env.ECOMMERCE_BIN) return process.env.ECOMMERCE_BIN;
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target');
  return path.join(target, 'debug', 'ecommerce');
}

/** Starts a server; resolves to { url, stop } once it listens. */
export async function startServer(extraEnv = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'ecommerce-console-'));
  const child = spawn(binaryPath(), [], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      RUST_LOG: process.env.RUST_LOG || 'warn',
      ECOMMERCE_ADDR: '127.0.0.1:0',
      DATABASE_URL: `sqlite://${path.join(dir, 'ecommerce.db')}`,
      ECOMMERCE_EVENTS_FILE: path.join(dir, 'events.jsonl'),
      ECOMMERCE_ADMIN_EMAIL: ADMIN.email,
      ECOMMERCE_ADMIN_PASSWORD: ADMIN.password,
      ECOMMERCE_RATE_LIMIT_AUTH: '0',
      ECOMMERCE_RATE_LIMIT_USER: '0',
      ECOMMERCE_CATALOG_CACHE_MS: '0',
      ECOMMERCE_POPULAR_CACHE_SECONDS: '0',
      ...extraEnv,
    },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-8000); });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const match = /^ecommerce listening on (http:\/\/\S+)/.exec(line);
      if (match) resolve(match[1]);
    });
    child.once('error', reject);
    exited.then(({ code, signal }) =>
      reject(new Error(`the server exited (${code ?? signal}) before listening:\n${stderr}`)));
  });

  return {
    url,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
