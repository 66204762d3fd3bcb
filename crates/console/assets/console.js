// The operator console: a plain-JavaScript client of the shop's JSON API (no framework, no build).
//
// How it holds together:
// - One page per URL hash (#/products, #/orders/12, ...). `route()` copies the page's <template>
//   into <main> and runs its function, which fills it from the API and wires its forms.
// - Every request goes through `api()`, which sends the admin's bearer token and turns a
//   problem+json answer into an ApiError; forms show it next to themselves, in words.
// - Pages that update by themselves poll with `view.every()`; leaving the page stops the timers
//   and aborts its requests.
//
// The token: kept in sessionStorage only (gone when the tab closes), sent only in the
// Authorization header, never put in a URL, a cookie or the console log. With no cookie the
// browser never attaches credentials on its own, so another site cannot forge a request on the
// operator's behalf: there is no cross-site request (CSRF) surface to protect.
'use strict';

const TOKEN_KEY = 'ecommerce.console.token';
const EMAIL_KEY = 'ecommerce.console.email';
const PAGE_SIZE = 50;
const REFUSED = 'Access refused: this account is not an admin. The console is for operators only.';

let token = sessionStorage.getItem(TOKEN_KEY);
let view = null; // the page on screen: { signal, every, done }
let notice = null; // why the operator was signed out, shown once on the sign-in page

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** A mistake found before sending anything (a time that does not parse, an empty search). */
class InputError extends Error {}

async function api(method, path, body, signal = view && view.signal) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method, headers, signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, null, 'The server could not be reached. Is it running?');
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.ok) return data;
  const problem = new ApiError(response.status, (data && data.code) || `HTTP_${response.status}`,
    (data && data.detail) || response.statusText || 'the request failed');
  // An admin token is never refused an admin route: a 403 means the account is not an admin.
  if (token && response.status === 403) signOut(REFUSED);
  else if (token && response.status === 401) signOut('Your session has ended. Please sign in again.');
  throw problem;
}

/** The payload of a JWT (not verified here: the server checks every request). */
function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}

function tokenUsable(jwt) {
  const c = jwt && claims(jwt);
  return Boolean(c && c.role === 'ADMIN' && (!c.exp || c.exp * 1000 > Date.now()));
}

/** "/x?a=1&b=2", leaving out empty values. */
function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(key, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

const $ = (selector, root = document) => root.querySelector(selector);

/** h('a', {href: '#/x'}, 'text', child): an element; null attributes and children are left out. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}

/** A value as shown: '–' for none; times without their fraction of a second (still RFC 3339). */
function show(value) {
  if (value === null || value === undefined || value === '') return '–';
  return String(value).replace(/^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+(Z|[+-]\d\d:\d\d)$/, '$1$2');
}

/** A table cell value: plain text, or [text, href] for a link. */
function cell(value) {
  if (Array.isArray(value)) return h('td', {}, value[0] === null ? '–' : h('a', { href: value[1] }, value[0]));
  return h('td', typeof value === 'number' ? { class: 'num' } : {}, show(value));
}

/**
 * Fills a table body with one row per item. Rows are kept by id and rebuilt only when their
 * cells change, so polling neither moves the keyboard focus nor flickers.
 */
function fillRows(tbody, items, cells, empty = 'Nothing here yet.') {
  if (!items.length) {
    const columns = tbody.closest('table').tHead.rows[0].cells.length;
    tbody.replaceChildren(h('tr', {}, h('td', { colspan: columns, class: 'empty' }, empty)));
    return;
  }
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  const rows = items.map((item) => {
    const values = cells(item);
    const key = String(item.id ?? values[0]);
    const signature = JSON.stringify(values);
    const kept = old.get(key);
    if (kept && kept.dataset.signature === signature) return kept;
    const row = h('tr', { 'data-key': key, 'data-signature': signature }, ...values.map(cell));
    if (kept) kept.replaceWith(row); // in its place, so the rows around it stay where they are
    return row;
  });
  rows.forEach((row, i) => {
    if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
  });
  while (tbody.rows.length > rows.length) tbody.lastElementChild.remove();
}

/** Appends more rows (the next page) below the ones shown. */
function appendRows(tbody, items, cells) {
  for (const item of items) tbody.append(h('tr', { 'data-key': String(item.id) }, ...cells(item).map(cell)));
}

/** A <dl> of facts: [['Price', 12000], ['User id', ['5', '#/users/5']], ...]. */
function fillFacts(dl, facts) {
  const signature = JSON.stringify(facts);
  if (dl.dataset.signature === signature) return; // polled and unchanged: keep focus where it is
  dl.dataset.signature = signature;
  dl.replaceChildren(...facts.map(([term, value]) => {
    const dd = cell(value);
    return h('div', {}, h('dt', {}, term), h('dd', {}, ...dd.childNodes));
  }));
}

/** Shows a message in a form's message slot; `kind` is 'ok' or 'error'. */
function say(slot, kind, text) {
  if (!slot) return;
  if (slot.textContent === text && slot.dataset.kind === kind && !slot.hidden) return; // polling: say it once
  slot.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  slot.dataset.kind = kind;
  slot.className = `msg ${kind}`;
  slot.textContent = text;
  slot.hidden = false;
}

function hush(slot) {
  if (slot && !slot.hidden) {
    slot.hidden = true;
    slot.textContent = '';
  }
}

/** An error in words for the operator: the problem's detail and its code. */
function describe(error) {
  if (error instanceof ApiError) return error.code ? `${error.detail} (${error.code})` : error.detail;
  if (error instanceof InputError) return error.message;
  return `Something went wrong in the console: ${error.message}`;
}

/** Shows an error unless it is only a request cancelled by leaving the page. */
function report(slot, error) {
  if (error.name !== 'AbortError') say(slot, 'error', describe(error));
}

/** RFC 3339 from what the operator typed; "YYYY-MM-DDTHH:MM" (or with seconds) is UTC. */
function toTime(text, label) {
  let t = text.trim().replace(' ', 'T').toUpperCase();
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(t)) t += ':00Z';
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$/.test(t)) t += 'Z';
  const valid = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(t) && !Number.isNaN(Date.parse(t));
  if (!valid) throw new InputError(`${label}: write a time like 2026-12-01T09:00:00Z (UTC).`);
  return t;
}

/** The form's named fields as JSON values: numbers, RFC 3339 times, text; empty is null. */
function values(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    const raw = el.type === 'password' ? el.value : el.value.trim();
    if (raw === '') out[el.name] = null;
    else if (el.type === 'number') out[el.name] = Number(raw);
    else if (el.hasAttribute('data-time')) out[el.name] = toTime(raw, $(`label[for="${el.id}"]`, form).textContent);
    else out[el.name] = raw;
  }
  return out;
}

/** Puts values into a form's fields by name (null becomes empty). */
function setValues(form, data) {
  for (const [name, value] of Object.entries(data)) {
    if (form.elements[name]) form.elements[name].value = value === null || value === undefined ? '' : value;
  }
}

/**
 * Runs `work(values, submitter)` on submit with the form's buttons disabled, and shows the text
 * it returns (or the error) in the form's message slot.
 */
function onSubmit(form, work) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const slot = $('.msg', form);
    const buttons = [...form.querySelectorAll('button')];
    buttons.forEach((b) => { b.disabled = true; });
    hush(slot);
    try {
      const text = await work(values(form), event.submitter);
      if (text) say(slot, 'ok', text);
    } catch (error) {
      report(slot, error);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

/** Drops null fields, for create bodies where an absent optional field means "none". */
function compact(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== null));
}

/** A "More" button that loads the next page below the list. */
function pager(button, slot, tbody, load, cells) {
  let after = null;
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const page = await load(after);
      appendRows(tbody, page.items, cells);
      after = page.next_after;
      button.hidden = after === null;
    } catch (error) {
      report(slot, error);
    } finally {
      button.disabled = false;
    }
  });
  return (next) => { after = next; button.hidden = next === null || next === undefined; };
}

// ---------------------------------------------------------------------------------------------
// Pages

function signInPage(root) {
  const form = $('#signin-form', root);
  const slot = $('.msg', form);
  if (notice) say(slot, 'error', notice);
  notice = null;
  onSubmit(form, async ({ email, password }) => {
    const answer = await api('POST', '/auth/token', { email, password });
    if (!tokenUsable(answer.access_token)) {
      // Discarded at once: a customer's token never reaches storage.
      throw new InputError(REFUSED);
    }
    token = answer.access_token;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(EMAIL_KEY, email);
    route();
  });
  $('#signin-email', root).focus();
}

/** Forgets the token (and the email shown in the header). */
function forget() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EMAIL_KEY);
}

/** Signs out, optionally saying why on the sign-in page. */
function signOut(why = null) {
  const old = token;
  forget();
  notice = why;
  if (old && !why) {
    // Ends the token on the server too; the console forgets it whatever the answer.
    fetch('/api/v1/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${old}` } }).catch(() => {});
  }
  queueMicrotask(route);
}

const productCells = (p) => [p.id, [p.name, `#/products/${p.id}`], p.price, p.stock, p.status,
  p.sale_starts_at, p.max_per_user];

function productsPage(root) {
  const tbody = $('#product-rows', root);
  const list = $('#product-list-msg', root);
  const load = (after) => api('GET', withQuery('/admin/products', { limit: PAGE_SIZE, after }));
  const more = pager($('#product-more', root), list, tbody, load, productCells);
  const refresh = () => load(null)
    .then((page) => { hush(list); fillRows(tbody, page.items, productCells, 'No products yet.'); more(page.next_after); })
    .catch((error) => report(list, error));

  const form = $('#product-create', root);
  onSubmit(form, async (fields) => {
    const product = await api('POST', '/admin/products', compact(fields));
    form.reset();
    refresh();
    const slot = $('.msg', form);
    say(slot, 'ok', `Product ${product.id} created. `);
    slot.append(h('a', { href: `#/products/${product.id}` }, `Open product ${product.id}`));
    return null;
  });
  refresh();
}

function productPage(root, id) {
  const form = $('#product-edit', root);
  const sale = $('#product-sale', root);
  let product = null;

  function render(p) {
    product = p;
    $('#product-title', root).textContent = p.name;
    fillFacts($('#product-facts', root), [
      ['Id', p.id], ['Price', p.price], ['Stock', p.stock], ['Status', p.status],
      ['Sale starts at', p.sale_starts_at], ['Max per user', p.max_per_user],
    ]);
    setValues(form, { name: p.name, price: p.price, sale_starts_at: p.sale_starts_at, max_per_user: p.max_per_user });
    const onSale = p.status === 'ON_SALE';
    $('#product-sale-state', root).textContent = onSale
      ? 'On sale: customers can order it.' : 'Stopped: customers cannot order it.';
    $('#product-stop', root).hidden = !onSale;
    $('#product-resume', root).hidden = onSale;
    $('#product-cards', root).hidden = false; // the forms only once there is a product to change
  }

  onSubmit(form, async (fields) => {
    // Only what changed is sent, so a field the server does not know yet is never sent as null.
    const patch = {};
    for (const [name, value] of Object.entries(fields)) {
      const now = product[name] ?? null;
      const same = name === 'sale_starts_at' && value && now ? Date.parse(value) === Date.parse(now) : value === now;
      if (!same) patch[name] = value;
    }
    if (!Object.keys(patch).length) return 'Nothing to save: no field changed.';
    render(await api('PATCH', `/admin/products/${id}`, patch));
    return 'Saved.';
  });
  onSubmit($('#product-restock', root), async ({ quantity }) => {
    render(await api('POST', `/admin/products/${id}/restock`, { quantity }));
    $('#product-restock', root).reset();
    return `Added ${quantity} to stock; it is now ${product.stock}.`;
  });
  onSubmit(sale, async (_, button) => {
    const status = button && button.id === 'product-resume' ? 'ON_SALE' : 'STOPPED';
    render(await api('PATCH', `/admin/products/${id}`, { status }));
    return status === 'ON_SALE' ? 'Resumed: on sale again.' : 'Stopped.';
  });
  api('GET', `/products/${id}`).then(render).catch((error) => report($('#product-msg', root), error));
}

function couponsPage(root) {
  const form = $('#coupon-create', root);
  const value = $('#cc-value', root);
  // FIXED is KRW off (up to 10,000,000), RATE is percent off (up to 100).
  $('#cc-type', root).addEventListener('change', (event) => {
    value.max = event.target.value === 'RATE' ? '100' : '10000000';
  });
  const tbody = $('#coupon-rows', root);
  const list = $('#coupon-list-msg', root);
  const refresh = () => api('GET', withQuery('/admin/coupons', { limit: PAGE_SIZE }))
    .then((page) => {
      hush(list);
      $('#coupon-more', root).hidden = page.next_after === null;
      fillRows(tbody, page.items, (c) => [c.id, c.name,
        c.discount_type === 'RATE' ? `${c.discount_value}% off` : `${c.discount_value} KRW off`,
        c.total_quantity, c.remaining_quantity, c.valid_for_seconds, c.issue_starts_at, c.issue_ends_at],
      'No coupons yet.');
    })
    .catch((error) => report(list, error));
  onSubmit(form, async (fields) => {
    const coupon = await api('POST', '/admin/coupons', compact(fields));
    form.reset();
    value.max = '10000000';
    refresh();
    return `Coupon ${coupon.id} created with ${coupon.total_quantity} to give out.`;
  });
  view.every(2000, refresh);
}

const drawCells = (d) => [[String(d.id), `#/draws/${d.id}`], [String(d.product_id), `#/products/${d.product_id}`],
  d.quantity, d.status, d.entry_count, d.winner_count, d.entry_starts_at, d.entry_ends_at, d.drawn_at];

function drawsPage(root) {
  const tbody = $('#draw-rows', root);
  const list = $('#draw-list-msg', root);
  const refresh = () => api('GET', withQuery('/admin/draws', { limit: PAGE_SIZE }))
    .then((page) => {
      hush(list);
      $('#draw-more', root).hidden = page.next_after === null;
      fillRows(tbody, page.items, drawCells, 'No draws yet.');
    })
    .catch((error) => report(list, error));
  const form = $('#draw-create', root);
  onSubmit(form, async (fields) => {
    const draw = await api('POST', '/admin/draws', fields);
    form.reset();
    refresh();
    const slot = $('.msg', form);
    say(slot, 'ok', `Draw ${draw.id} created; ${draw.quantity} units set aside. `);
    slot.append(h('a', { href: `#/draws/${draw.id}` }, `Open draw ${draw.id}`));
    return null;
  });
  view.every(2000, refresh);
}

function drawPage(root, id) {
  const orders = new Map(); // winners' orders by id, read once each
  const entryCells = (e) => {
    const order = orders.get(e.order_id);
    return [[String(e.user_id), `#/users/${e.user_id}`], e.status, e.entered_at,
      e.order_id ? [String(e.order_id), `#/orders/${e.order_id}`] : null,
      order ? order.status : null, order ? order.paid_amount : null];
  };
  async function tick() {
    let draw;
    try {
      draw = await api('GET', `/draws/${id}`);
      hush($('#draw-msg', root));
    } catch (error) {
      report($('#draw-msg', root), error);
      return;
    }
    $('#draw-title', root).textContent = `Draw ${draw.id}`;
    fillFacts($('#draw-facts', root), [
      ['Status', draw.status], ['Product id', [String(draw.product_id), `#/products/${draw.product_id}`]],
      ['Quantity', draw.quantity], ['Entry count', draw.entry_count], ['Winner count', draw.winner_count],
      ['Entry starts at', draw.entry_starts_at], ['Entry ends at', draw.entry_ends_at],
      ['Payment window seconds', draw.payment_window_seconds], ['Drawn at', draw.drawn_at],
    ]);
    const drawn = draw.status === 'DRAWN';
    $('#entries-title', root).firstChild.textContent = drawn ? 'Winners and their orders ' : 'Newest entries ';
    try {
      const query = { status: drawn ? 'WON' : null, limit: PAGE_SIZE };
      const page = await api('GET', withQuery(`/admin/draws/${id}/entries`, query));
      // After the draw, each winner's order as it was when first shown (open it for its state now).
      await Promise.all(page.items.filter((e) => e.order_id && !orders.has(e.order_id))
        .map((e) => api('GET', `/orders/${e.order_id}`).then((o) => orders.set(e.order_id, o))));
      hush($('#entry-msg', root));
      fillRows($('#entry-rows', root), page.items.map((e) => ({ ...e, id: e.user_id })), entryCells,
        drawn ? 'Nobody won: there were no entries.' : 'No entries yet.');
    } catch (error) {
      report($('#entry-msg', root), error);
    }
  }
  view.every(2000, tick);
}

const orderCells = (o) => [[String(o.id), `#/orders/${o.id}`], [String(o.user_id), `#/users/${o.user_id}`],
  o.status, o.total_amount, o.discount_amount, o.paid_amount, o.created_at, o.paid_at];

function ordersPage(root, _, params) {
  const form = $('#order-filter', root);
  const tbody = $('#order-rows', root);
  let filter = { user_id: params.get('user_id') || null, status: params.get('status') || null };
  // With a user id the per-user route answers; without one, the admin list of every order.
  const load = (after) => {
    const query = { status: filter.status, limit: PAGE_SIZE, after };
    return filter.user_id
      ? api('GET', withQuery(`/users/${filter.user_id}/orders`, query))
      : api('GET', withQuery('/admin/orders', query));
  };
  const more = pager($('#order-more', root), $('.msg', form), tbody, load, orderCells);
  setValues(form, filter);
  async function search() {
    const page = await load(null);
    fillRows(tbody, page.items, orderCells, 'No orders match.');
    more(page.next_after);
    return null;
  }
  onSubmit(form, async (fields) => {
    filter = fields;
    // Keeps the filter in the address (for reload and links) without re-rendering the page.
    history.replaceState(null, '', withQuery('#/orders', fields));
    return search();
  });
  search().catch((error) => report($('.msg', form), error));
}

function orderPage(root, id) {
  const refund = $('#order-refund', root);
  const confirm = $('#refund-confirm', root);
  const start = $('#refund-start', root);
  let order = null;

  async function render(o) {
    order = o;
    $('#order-title', root).textContent = `Order ${o.id}`;
    const facts = [
      ['Status', o.status], ['User id', [String(o.user_id), `#/users/${o.user_id}`]],
      ['Total amount', o.total_amount], ['Discount amount', o.discount_amount], ['Paid amount', o.paid_amount],
      ['Coupon', o.user_coupon_id === null ? 'none' : `user coupon ${o.user_coupon_id}`],
      ['Created at', o.created_at], ['Expires at', o.expires_at], ['Paid at', o.paid_at],
    ];
    fillFacts($('#order-facts', root), facts);
    fillRows($('#line-rows', root), o.items.map((line) => ({ ...line, id: line.product_id })),
      (line) => [[String(line.product_id), `#/products/${line.product_id}`], line.name, line.unit_price, line.quantity, line.amount]);
    refund.hidden = o.status !== 'PAID' && !confirm.dataset.done;
    start.hidden = o.status !== 'PAID';
    if (o.user_coupon_id !== null) {
      // The coupon's name and discount come from the customer's coupons (best effort).
      const coupons = await api('GET', withQuery(`/users/${o.user_id}/coupons`, { limit: 100 })).catch(() => null);
      const coupon = coupons && coupons.items.find((c) => c.id === o.user_coupon_id);
      if (coupon) {
        const off = coupon.discount_type === 'RATE' ? `${coupon.discount_value}% off` : `${coupon.discount_value} KRW off`;
        facts[5][1] = `${coupon.name} (${off}, user coupon ${coupon.id}, ${coupon.status})`;
        fillFacts($('#order-facts', root), facts);
      }
    }
  }

  start.addEventListener('click', () => {
    $('#refund-question', root).textContent =
      `Refund ${order.paid_amount} KRW to user ${order.user_id} and put the stock back?`;
    confirm.hidden = false;
    start.hidden = true;
    $('button[type="submit"]', confirm).focus();
  });
  $('#refund-cancel', root).addEventListener('click', () => {
    confirm.hidden = true;
    start.hidden = false;
    start.focus();
  });
  onSubmit(refund, async () => {
    const refunded = await api('POST', `/orders/${id}/refund`);
    confirm.hidden = true;
    confirm.dataset.done = 'yes';
    await render(refunded);
    return `Refunded ${refunded.paid_amount} KRW to user ${refunded.user_id}; the stock is back.`;
  });
  api('GET', `/orders/${id}`).then(render).catch((error) => report($('#order-msg', root), error));
}

const historyCells = (e) => [e.id, e.type, e.amount, e.balance_after,
  e.order_id === null ? null : [String(e.order_id), `#/orders/${e.order_id}`], e.created_at];

function usersPage(root, id) {
  const form = $('#user-search', root);
  onSubmit(form, async ({ user_id: userId, email }) => {
    if (userId) return open(`#/users/${userId}`);
    if (!email) throw new InputError('Fill in a user id or an email.');
    const page = await api('GET', withQuery('/admin/users', { email }));
    if (!page.items.length) throw new InputError(`No user has the email ${email}.`);
    return open(`#/users/${page.items[0].id}`);
  });
  if (!id) return;
  setValues(form, { user_id: id });
  $('#user-found', root).hidden = false;
  $('#user-title', root).textContent = `User ${id}`;
  // Three independent reads: each one's failure shows next to its own part.
  api('GET', `/admin/users/${id}`)
    .then((u) => fillFacts($('#user-facts', root), [['Id', u.id], ['Email', u.email], ['Name', u.name],
      ['Role', u.role], ['Created at', u.created_at]]))
    .catch((error) => report($('#user-msg', root), error));
  api('GET', `/users/${id}/balance`)
    .then((b) => { $('#user-balance', root).textContent = String(b.balance); })
    .catch((error) => report($('#balance-msg', root), error));
  const tbody = $('#history-rows', root);
  const load = (after) => api('GET', withQuery(`/users/${id}/balance/history`, { limit: PAGE_SIZE, after }));
  const more = pager($('#history-more', root), $('#history-msg', root), tbody, load, historyCells);
  load(null)
    .then((page) => { fillRows(tbody, page.items, historyCells, 'No balance changes yet.'); more(page.next_after); })
    .catch((error) => report($('#history-msg', root), error));
}

function livePage(root) {
  const slot = $('#live-msg', root);
  const set = (id, text) => { $(id, root).textContent = text; };
  view.every(1500, async () => {
    try {
      const live = await api('GET', '/admin/live');
      hush(slot);
      set('#live-orders-paid', String(live.orders_paid_total));
      set('#live-orders-rate', rate(live.orders_paid_per_second));
      set('#live-requests-rate', rate(live.requests_per_second));
      set('#live-backlog', String(live.outbox_backlog));
      set('#live-oldest', live.outbox_oldest_unsent_age_seconds === null
        ? 'none' : `${Math.round(live.outbox_oldest_unsent_age_seconds)} s`);
      set('#live-updated', `Figures of ${show(live.generated_at)}; they refresh every 1.5 seconds.`);
      const failures = Object.entries(live.payment_failures).sort((a, b) => b[1] - a[1]);
      fillRows($('#failure-rows', root), failures.map(([code, n]) => ({ id: code, code, n })),
        (f) => [f.code, f.n], 'No failed payments on this instance since it started.');
    } catch (error) {
      report(slot, error);
    }
  });
  // What a drop has left: the newest coupons and products, as the coupon and product pages show.
  view.every(2000, async () => {
    try {
      const [coupons, products] = await Promise.all([
        api('GET', '/admin/coupons?limit=5'), api('GET', '/admin/products?limit=5')]);
      hush($('#left-msg', root));
      const rows = [
        ...coupons.items.map((c) => ({ id: `c${c.id}`, cells: ['Coupon', c.id, c.name, c.remaining_quantity, c.total_quantity] })),
        ...products.items.map((p) => ({ id: `p${p.id}`, cells: ['Product', [String(p.id), `#/products/${p.id}`], p.name, p.stock, null] })),
      ];
      fillRows($('#left-rows', root), rows, (row) => row.cells, 'No coupons or products yet.');
    } catch (error) {
      report($('#left-msg', root), error);
    }
  });
  view.every(30000, async () => {
    try {
      const sales = await api('GET', '/admin/sales/hourly?hours=72');
      hush($('#chart-msg', root));
      drawChart($('#chart', root), $('#chart-summary', root), sales.items);
    } catch (error) {
      report($('#chart-msg', root), error);
    }
  });
}

/** A rate with one decimal: 2.5 */
const rate = (n) => Number(n).toFixed(1);

/** Bars of units sold per hour as inline SVG, with the figures also in words. */
function drawChart(host, caption, items) {
  const NS = 'http://www.w3.org/2000/svg';
  const svgEl = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const width = 720; const height = 220; const left = 44; const bottom = 24; const top = 12;
  const max = Math.max(1, ...items.map((i) => i.quantity));
  const step = (width - left - 8) / Math.max(1, items.length);
  const y = (q) => top + (height - top - bottom) * (1 - q / max);
  const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': 'chart-summary' });
  svg.append(svgEl('line', { x1: left, x2: width, y1: y(0), y2: y(0), class: 'axis' }),
    svgEl('line', { x1: left, x2: width, y1: y(max), y2: y(max), class: 'grid' }),
    svgEl('text', { x: left - 6, y: y(max) + 4, class: 'label end' }, String(max)),
    svgEl('text', { x: left - 6, y: y(0) + 4, class: 'label end' }, '0'));
  items.forEach((item, i) => {
    const x = left + i * step;
    if (item.quantity > 0) {
      const bar = svgEl('rect', { x: x + 0.5, y: y(item.quantity), width: Math.max(1, step - 1), height: y(0) - y(item.quantity), class: 'bar' });
      bar.append(svgEl('title', {}, `${show(item.hour)}: ${item.quantity} units`));
      svg.append(bar);
    }
    if (item.hour.includes('T00:00')) svg.append(svgEl('text', { x, y: height - 6, class: 'label' }, item.hour.slice(5, 10)));
  });
  host.replaceChildren(svg);
  const total = items.reduce((sum, i) => sum + i.quantity, 0);
  const peak = items.reduce((best, i) => (i.quantity > (best ? best.quantity : 0) ? i : best), null);
  caption.textContent = peak
    ? `${total} units sold in the last ${items.length} hours; the busiest hour was ${show(peak.hour)} with ${peak.quantity}.`
    : `No units sold in the last ${items.length} hours.`;
}

// ---------------------------------------------------------------------------------------------
// Navigation

const pages = {
  products: [productsPage, productPage],
  coupons: [couponsPage, null],
  draws: [drawsPage, drawPage],
  orders: [ordersPage, orderPage],
  users: [usersPage, usersPage],
  live: [livePage, null],
};
const templates = {
  products: ['view-products', 'view-product'], coupons: ['view-coupons'], draws: ['view-draws', 'view-draw'],
  orders: ['view-orders', 'view-order'], users: ['view-users', 'view-users'], live: ['view-live'],
};

/** A page's lifetime: its requests are aborted and its timers stopped when it is left. */
function startView() {
  const controller = new AbortController();
  const timers = new Set();
  return {
    signal: controller.signal,
    /** Runs `fn` now and then `ms` after each run ends (runs never overlap). */
    every(ms, fn) {
      const run = async () => {
        if (controller.signal.aborted) return;
        try {
          if (!document.hidden) await fn();
        } finally {
          if (!controller.signal.aborted) timers.add(setTimeout(run, ms));
        }
      };
      run();
    },
    done() {
      controller.abort();
      timers.forEach(clearTimeout);
    },
  };
}

/** Goes to a page; opening the page already shown reloads it. */
function open(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
  return null;
}

function route() {
  if (view) view.done();
  view = startView();
  const signedIn = tokenUsable(token);
  if (!signedIn) forget(); // expired, or not an admin's
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [first, id] = path.split('/');
  const name = first || 'products';
  const page = signedIn ? (pages[name] || [null, null])[id ? 1 : 0] : signInPage;
  const validId = !id || /^[1-9]\d{0,18}$/.test(id);
  const template = signedIn ? (page && validId ? templates[name][id ? 1 : 0] : 'view-missing') : 'view-signin';

  $('#nav').hidden = !signedIn;
  $('#sign-out').hidden = !signedIn;
  $('#who').hidden = !signedIn;
  $('#who').textContent = signedIn ? sessionStorage.getItem(EMAIL_KEY) || '' : '';
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const root = $('#main');
  root.replaceChildren($(`#${template}`).content.cloneNode(true));
  document.title = `${$('h1', root).textContent} · Operator console`;
  if (template !== 'view-missing') page(root, id, new URLSearchParams(query));
  if (signedIn) $('h1', root).focus();
}

$('#sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
route();
