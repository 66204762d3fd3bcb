// Starts the real server for a test file: the built `ecommerce` binary on 127.0.0.1:0 with a fresh
// SQLite file in a folder of its own, ready once it prints its address; stopped (and the folder
// removed) by `stop()`.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ADMIN_EMAIL = "admin@ts-client.test";
export const ADMIN_PASSWORD = "admin-password-1234";

/** The repository root (this file runs from clients/typescript/dist/test/). */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

export interface TestServer {
  baseUrl: string;
  stop(): Promise<void>;
}

/** `ECOMMERCE_BIN`, else the debug build under `CARGO_TARGET_DIR` (or the repository's target/). */
function binary(): string {
  if (process.env.ECOMMERCE_BIN) {
    return process.env.ECOMMERCE_BIN;
  }
  const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
  return join(target, "debug", "ecommerce");
}

export async function startServer(env: Record<string, string> = {}): Promise<TestServer> {
  const folder = await mkdtemp(join(tmpdir(), "ecommerce-ts-client-"));
  const child = spawn(binary(), [], {
    env: {
      PATH: process.env.PATH ?? "",
      ECOMMERCE_ADDR: "127.0.0.1:0",
      DATABASE_URL: `sqlite://${join(folder, "ecommerce.db")}`,
      ECOMMERCE_EVENTS_FILE: join(folder, "events.jsonl"),
      ECOMMERCE_ADMIN_EMAIL: ADMIN_EMAIL,
      ECOMMERCE_ADMIN_PASSWORD: ADMIN_PASSWORD,
      ECOMMERCE_JWT_SECRET: "typescript-client-test-secret-0123456789",
      // As the acceptance runs: many sign-ups from one address in a few seconds.
      ECOMMERCE_RATE_LIMIT_AUTH: "0",
      ECOMMERCE_RATE_LIMIT_USER: "0",
      RUST_LOG: "warn",
      NO_COLOR: "1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stderr: string[] = [];
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr.push(chunk);
    if (stderr.length > 200) {
      stderr.shift();
    }
  });
  try {
    const baseUrl = await listening(child, () => stderr.join(""));
    return {
      baseUrl,
      async stop() {
        await stopped(child);
        await rm(folder, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await stopped(child);
    await rm(folder, { recursive: true, force: true });
    throw error;
  }
}

/** The address from the server's `ecommerce listening on http://…` line. */
function listening(child: ChildProcess, stderr: () => string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start in 30 s:\n${stderr()}`)), 30_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${binary()}: ${error.message} (build it with cargo build)`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code} before listening:\n${stderr()}`));
    });
    if (!child.stdout) {
      reject(new Error("no stdout"));
      return;
    }
    createInterface({ input: child.stdout }).on("line", (line) => {
      const found = /ecommerce listening on (http:\/\/\S+)/.exec(line);
      if (found?.[1]) {
        clearTimeout(timer);
        resolvePromise(found[1]);
      }
    });
  });
}

function stopped(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolvePromise) => {
    child.once("exit", () => resolvePromise());
    child.kill("SIGTERM");
  });
}
