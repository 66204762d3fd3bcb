// The wrapper's retries, with a scripted fetch (no server): a charge that meets a network failure
// or a 503 is sent again with the same Idempotency-Key; other failures are not retried.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiProblem, EcommerceClient } from "../src/index.js";

const CHARGED = { user_id: 7, charged_amount: 5_000, balance: 5_000 };

function problem(status: number, code: string): Response {
  const body = { type: `urn:ecommerce:problem:${code}`, title: "Error", status, detail: code.toLowerCase(), code };
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", "retry-after": "0" },
  });
}

/** A client whose fetch answers from `script` in turn and records each request's key. */
function scripted(script: Array<() => Response>): { client: EcommerceClient; keys: Array<string | null> } {
  const keys: Array<string | null> = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    keys.push(request.headers.get("idempotency-key"));
    const next = script.shift();
    if (!next) {
      throw new Error("no more scripted answers");
    }
    return next();
  };
  const client = new EcommerceClient({ baseUrl: "http://api.test", token: "t", fetch });
  client.userId = 7;
  return { client, keys };
}

const ok = () => new Response(JSON.stringify(CHARGED), { status: 200, headers: { "content-type": "application/json" } });

test("a charge is sent again with the same key after a network failure and a 503", async () => {
  const { client, keys } = scripted([
    () => {
      throw new TypeError("fetch failed");
    },
    () => problem(503, "SERVICE_UNAVAILABLE"),
    ok,
  ]);
  assert.deepEqual(await client.charge(5_000), CHARGED);
  assert.equal(keys.length, 3);
  assert.ok(keys[0], "a key was made up");
  assert.deepEqual(new Set(keys), new Set([keys[0]]), "the same key each time");
});

test("a refusal is not retried, and retries stop after the configured number", async () => {
  const refused = scripted([() => problem(409, "INSUFFICIENT_BALANCE"), ok]);
  await assert.rejects(refused.client.pay(1), (error: unknown) => error instanceof ApiProblem && error.code === "INSUFFICIENT_BALANCE");
  assert.equal(refused.keys.length, 1);

  const busy = scripted([
    () => problem(409, "REQUEST_IN_PROGRESS"),
    () => problem(409, "REQUEST_IN_PROGRESS"),
    () => problem(409, "REQUEST_IN_PROGRESS"),
    ok,
  ]);
  await assert.rejects(busy.client.charge(5_000, { idempotencyKey: "mine" }), (error: unknown) => error instanceof ApiProblem && error.code === "REQUEST_IN_PROGRESS");
  assert.deepEqual(busy.keys, ["mine", "mine", "mine"], "1 try and 2 retries, with the caller's key");
});

test("an error body that is no problem document still becomes an ApiProblem", async () => {
  const { client } = scripted([() => new Response("<html>Bad gateway</html>", { status: 502, statusText: "Bad Gateway" })]);
  await assert.rejects(client.product(1), (error: unknown) => error instanceof ApiProblem && error.code === "HTTP_502" && error.status === 502);
});
