// A storefront page on another origin, for the CORS tests: a tiny static server on its own
// loopback port serving one page that signs in and lists products through the API it is told
// (`?api=http://127.0.0.1:PORT`), with nothing but fetch() and the DOM.

import { createServer } from 'node:http';

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Storefront</title></head>
<body>
  <h1>Storefront</h1>
  <form id="sign-in">
    <label>Email <input name="email" type="email"></label>
    <label>Password <input name="password" type="password"></label>
    <button type="submit">Sign in</button>
  </form>
  <p id="status" role="status"></p>
  <ul id="products" aria-label="Products"></ul>
  <script>
    const api = new URLSearchParams(location.search).get('api');
    const status = document.getElementById('status');
    async function call(path, init = {}) {
      const response = await fetch(api + path, init);
      const body = await response.json();
      if (!response.ok) throw new Error(body.code + ': ' + body.detail);
      return { body, response };
    }
    document.getElementById('sign-in').addEventListener('submit', async (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      try {
        // JSON and Authorization both need a preflight: this page only works with CORS.
        const { body: token } = await call('/api/v1/auth/token', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ email: form.get('email'), password: form.get('password') }),
        });
        const { body: page, response } = await call('/api/v1/products?limit=10', {
          headers: { Authorization: 'Bearer ' + token.access_token },
        });
        for (const product of page.items) {
          const item = document.createElement('li');
          item.textContent = product.name + ' ' + product.price;
          document.getElementById('products').append(item);
        }
        status.textContent = 'Signed in as user ' + token.user_id + '; request ' +
          response.headers.get('X-Request-Id');
      } catch (error) {
        status.textContent = 'Failed: ' + error.message;
      }
    });
  </script>
</body>
</html>`;

/** Starts the static server on 127.0.0.1:0; resolves to { port, stop }. */
export async function startStorefront() {
  const server = createServer((request, response) => {
    if (request.method === 'GET' && new URL(request.url, 'http://x').pathname === '/') {
      response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      response.end(PAGE);
    } else {
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end('not found');
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
