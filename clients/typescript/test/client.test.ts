// The client against a real server: sign-up and sign-in, an idempotent charge replayed, an order
// and its payment, typed problems, paging, and a coupon rush of 50 concurrent calls.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ApiProblem, EcommerceClient, newIdempotencyKey } from "../src/index.js";
import { ADMIN_EMAIL, ADMIN_PASSWORD, type TestServer, startServer } from "./server.js";

const PASSWORD = "a long passphrase 1";

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

let made = 0;
function uniqueEmail(): string {
  made += 1;
  return `ts-${process.pid}-${Date.now()}-${made}@example.com`;
}

function client(): EcommerceClient {
  return new EcommerceClient({ baseUrl: server.baseUrl });
}

async function shopper(): Promise<EcommerceClient> {
  const shop = client();
  const email = uniqueEmail();
  await shop.signUp({ email, password: PASSWORD, name: "Mina" });
  await shop.signIn(email, PASSWORD);
  return shop;
}

async function admin(): Promise<EcommerceClient> {
  const operator = client();
  await operator.signIn(ADMIN_EMAIL, ADMIN_PASSWORD);
  return operator;
}

async function newProduct(operator: EcommerceClient, price: number, stock: number): Promise<number> {
  const { data } = await operator.api.POST("/api/v1/admin/products", {
    body: { name: `Linen shirt ${made}`, price, stock },
  });
  assert.ok(data);
  return data.id;
}

/** Asserts that `call` fails with the problem `code` and `status`; answers the problem. */
async function problem(call: Promise<unknown>, code: string, status: number): Promise<ApiProblem> {
  let caught: unknown;
  await assert.rejects(call, (error: unknown) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof ApiProblem, `an ApiProblem, not ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.status, status);
  assert.equal(typeof caught.detail, "string");
  return caught;
}

test("a sign-up, then signing in, reads the account back", async () => {
  const shop = client();
  const email = uniqueEmail();
  const user = await shop.signUp({ email, password: PASSWORD, name: "Mina" });
  assert.deepEqual(user, { id: user.id, email, name: "Mina" });
  const token = await shop.signIn(email.toUpperCase(), PASSWORD);
  assert.equal(token.token_type, "Bearer");
  assert.equal(token.user_id, user.id);
  assert.equal(shop.token, token.access_token);
  assert.deepEqual(await shop.account(), user);
  await problem(shop.signUp({ email, password: PASSWORD, name: "Again" }), "EMAIL_TAKEN", 409);
  await problem(client().signIn(email, "not the password"), "INVALID_CREDENTIALS", 401);
});

test("a charge replayed with one key moves the balance once", async () => {
  const shop = await shopper();
  const key = newIdempotencyKey();
  const first = await shop.charge(50_000, { idempotencyKey: key });
  assert.equal(first.charged_amount, 50_000);
  assert.equal(first.balance, 50_000);
  const replayed = await shop.charge(50_000, { idempotencyKey: key });
  assert.deepEqual(replayed, first);
  assert.equal((await shop.balance()).balance, 50_000);
  await problem(shop.charge(60_000, { idempotencyKey: key }), "IDEMPOTENCY_KEY_REUSED", 422);
  // Without a key the client makes one up: two calls, two charges.
  await shop.charge(1_000);
  await shop.charge(1_000);
  assert.equal((await shop.balance()).balance, 52_000);
  await problem(shop.charge(999), "INVALID_CHARGE_AMOUNT", 400);
});

test("an order and its payment", async () => {
  const operator = await admin();
  const product = await newProduct(operator, 39_000, 5);
  const shop = await shopper();
  await shop.charge(100_000);
  const order = await shop.createOrder({ items: [{ product_id: product, quantity: 2 }] });
  assert.equal(order.status, "PENDING_PAYMENT");
  assert.equal(order.total_amount, 78_000);
  const key = newIdempotencyKey();
  const paid = await shop.pay(order.id, { idempotencyKey: key });
  assert.equal(paid.status, "PAID");
  assert.equal(paid.paid_amount, 78_000);
  assert.deepEqual(await shop.pay(order.id, { idempotencyKey: key }), paid, "the same payment, replayed");
  assert.equal((await shop.balance()).balance, 22_000);
  assert.equal((await shop.product(product)).stock, 3);
  await problem(shop.pay(order.id), "ORDER_NOT_PENDING", 409);
});

test("errors are typed problems with the request id", async () => {
  const found = await problem(client().product(999_999), "PRODUCT_NOT_FOUND", 404);
  assert.match(found.requestId ?? "", /^[0-9a-f-]{36}$/);
  const shop = await shopper();
  const other = await shopper();
  await problem(shop.balance(other.userId), "FORBIDDEN", 403);
  await problem(client().balance(1), "UNAUTHORIZED", 401);
  await problem(shop.createOrder({ items: [{ product_id: 999_999, quantity: 1 }] }), "PRODUCT_NOT_FOUND", 404);
});

test("lists page with limit and after", async () => {
  const operator = await admin();
  await newProduct(operator, 1_000, 1);
  await newProduct(operator, 1_000, 1);
  const first = await client().products({ limit: 1 });
  assert.equal(first.items.length, 1);
  assert.notEqual(first.next_after, null);
  const second = await client().products({ limit: 1, after: first.next_after ?? undefined });
  assert.ok((second.items[0]?.id ?? 0) > (first.items[0]?.id ?? 0), "oldest first");
  await problem(client().products({ limit: 0 }), "VALIDATION_FAILED", 400);
});

test("a coupon rush of 50 concurrent calls issues exactly the coupon's quantity", async () => {
  const operator = await admin();
  const { data: coupon } = await operator.api.POST("/api/v1/admin/coupons", {
    body: { name: "Rush 10%", discount_type: "RATE", discount_value: 10, total_quantity: 10, valid_for_seconds: 3_600 },
  });
  assert.ok(coupon);
  const shoppers = await Promise.all(Array.from({ length: 50 }, () => shopper()));
  const outcomes = await Promise.allSettled(shoppers.map((shop) => shop.issueCoupon(coupon.id)));
  const issued = outcomes.filter((outcome) => outcome.status === "fulfilled");
  assert.equal(issued.length, 10, "exactly the coupon's quantity");
  for (const outcome of outcomes) {
    if (outcome.status === "rejected") {
      assert.ok(outcome.reason instanceof ApiProblem, String(outcome.reason));
      assert.equal(outcome.reason.code, "COUPON_SOLD_OUT");
    }
  }
  assert.equal((await client().coupon(coupon.id)).remaining_quantity, 0);
});
