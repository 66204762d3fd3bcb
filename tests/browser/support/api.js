// The JSON API from the test itself, to set up data and to check what the console did.

import { randomUUID } from 'node:crypto';
import { ADMIN } from './server.js';

export class Api {
  constructor(url) {
    this.url = url;
  }

  async call(method, path, { body, token, headers = {} } = {}) {
    const response = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = response.status === 204 ? null : await response.json();
    if (!response.ok) throw new Error(`${method} ${path} → ${response.status} ${JSON.stringify(data)}`);
    return data;
  }

  async token(email, password) {
    return (await this.call('POST', '/auth/token', { body: { email, password } })).access_token;
  }

  async admin() {
    this.adminToken ??= await this.token(ADMIN.email, ADMIN.password);
    return this.adminToken;
  }

  /** A new customer with a token: { id, email, password, name, token }. */
  async user(name = 'Shopper') {
    const email = `${randomUUID()}@example.com`;
    const password = `pw-${randomUUID()}`;
    const { id } = await this.call('POST', '/users', { body: { email, password, name } });
    return { id, email, password, name, token: await this.token(email, password) };
  }

  async product(fields) {
    return this.call('POST', '/admin/products', { body: fields, token: await this.admin() });
  }

  async coupon(fields) {
    return this.call('POST', '/admin/coupons', { body: fields, token: await this.admin() });
  }

  charge(user, amount) {
    return this.call('POST', `/users/${user.id}/balance/charges`, {
      body: { amount }, token: user.token, headers: { 'Idempotency-Key': randomUUID() },
    });
  }

  /** A paid order of `quantity` units of `product`. */
  async paidOrder(user, product, quantity) {
    const order = await this.call('POST', `/users/${user.id}/orders`, {
      body: { items: [{ product_id: product.id, quantity }] }, token: user.token,
    });
    return this.call('POST', `/orders/${order.id}/payment`, { body: {}, token: user.token });
  }

  async getProduct(id) {
    return this.call('GET', `/products/${id}`, { token: await this.admin() });
  }
}
