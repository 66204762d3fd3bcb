// Which phase-2 routes exist. Every part has landed, so every test runs and every failed load
// counts as a console error. The flags stay so that a part built later the same way (written in
// the console first, its routes after) can be gated again: set its flag to false, and its tests
// are skipped with the reason and its routes' 404s are not counted until it lands.
//
// - ADMIN_API: the console's admin reads (docs/API.md, "Admin API"): every product, coupon,
//   order and user, live figures, units sold per hour.
// - DROPS: products' `sale_starts_at` and `max_per_user`, coupons' issue window (API.md,
//   "Limited drops").
// - DRAWS: draws, `GET /admin/draws` and `/admin/draws/{id}/entries` (API.md, "Draws").
// - LOGOUT: `POST /auth/logout` (the console calls it when the operator signs out).

const ADMIN_API = true;
const DROPS = true;
const DRAWS = true;
const LOGOUT = true;

/** Whether any phase-2 test runs (the phase-2 spec starts its server only then). */
export const phase2 = ADMIN_API || DROPS || DRAWS;

const reason = (what) => `needs ${what} (not landed yet); enable in tests/browser/support/phase2.js`;

/** Use as `test(name, { skip: needsAdminApi }, fn)`. */
export const needsAdminApi = ADMIN_API ? false : reason('the admin API of the console');
export const needsDrops = DROPS ? false : reason('the drops fields: sale_starts_at, max_per_user, coupon issue windows');
export const needsDraws = DRAWS ? false : reason('the draws routes');

/** Routes that answer 404 until their part lands: their failed loads are not console errors. */
const PENDING = [
  [ADMIN_API, /\/api\/v1\/admin\/(products|coupons|orders|users|live|sales)\b/],
  [DRAWS, /\/api\/v1\/(admin\/)?draws\b/],
  [LOGOUT, /\/api\/v1\/auth\/logout$/],
];

export const allowPending = (url) => PENDING.some(([landed, pattern]) => !landed && pattern.test(url));
