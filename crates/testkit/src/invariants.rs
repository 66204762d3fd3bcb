//! The invariants of `DESIGN.md` ("Invariants every change keeps") read straight from the
//! database, written once: the black-box tests assert them ([`crate::TestDb::assert_invariants`]),
//! `loadgen` checks them after a run and `loadgen check` runs them for the fault scripts.
//!
//! Every query is written once for both engines: the runner reads each answer as `bigint`
//! (PostgreSQL's `sum` of `bigint` is `numeric`, so the query is wrapped in a cast there).

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

/// One checked invariant: its name, whether it holds, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.name, self.detail)
    }
}

/// A small read-only connection to either engine.
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects to a `postgres://` or `sqlite://` URL to read; SQLite files are opened
    /// read-only (the server owns them).
    pub async fn connect(url: &str) -> Result<Self, String> {
        Self::open(url, true).await
    }

    /// Connects to read and write (tests set up worlds behind the server's back).
    pub async fn connect_writable(url: &str) -> Result<Self, String> {
        Self::open(url, false).await
    }

    async fn open(url: &str, read_only: bool) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| format!("cannot connect to the PostgreSQL database: {e}"))?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("{url}: {e}"))?
                .read_only(read_only);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .map_err(|e| format!("cannot open {url}: {e}"))?;
            Ok(Db::Sqlite(pool))
        } else {
            Err("the database URL must start with postgres:// or sqlite://".to_owned())
        }
    }

    /// One integer from `sql` (one row, one column) with `$1`-style integer binds. On
    /// PostgreSQL a `select` is read through `select (…)::bigint`, so that sums (`numeric`)
    /// and counts read the same on both engines.
    pub async fn scalar(&self, sql: &str, binds: &[i64]) -> Result<i64, String> {
        let result = match self {
            Db::Postgres(pool) => {
                let is_select = sql
                    .trim_start()
                    .get(..6)
                    .is_some_and(|head| head.eq_ignore_ascii_case("select"));
                let wrapped = if is_select {
                    format!("select ({sql})::bigint")
                } else {
                    sql.to_owned()
                };
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(wrapped));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(pool).await
            }
            Db::Sqlite(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(pool).await
            }
        };
        result.map_err(|e| format!("{sql}: {e}"))
    }

    /// The integers of the first column of every row of `sql`, with `$1`-style integer binds.
    pub async fn column(&self, sql: &str, binds: &[i64]) -> Result<Vec<i64>, String> {
        let result = match self {
            Db::Postgres(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_all(pool).await
            }
            Db::Sqlite(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_all(pool).await
            }
        };
        result.map_err(|e| format!("{sql}: {e}"))
    }

    pub async fn close(self) {
        match self {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite(pool) => pool.close().await,
        }
    }

    /// A check that `sql` counts `expected` rows.
    async fn count_is(&self, name: &str, sql: &str, binds: &[i64], expected: i64) -> Check {
        match self.scalar(sql, binds).await {
            Ok(n) => Check::new(name, n == expected, format!("{n} (expected {expected})")),
            Err(e) => Check::new(name, false, e),
        }
    }
}

/// `(name, query counting the rows that break it)`: each must count 0.
const BROKEN_ROWS: &[(&str, &str)] = &[
    (
        "no product with negative stock",
        "select count(*) from product where stock < 0",
    ),
    (
        "every balance == sum of its history",
        "select count(*) from account a
         where a.balance <> coalesce((select sum(e.amount) from balance_entry e where e.user_id = a.id), 0)",
    ),
    (
        "every balance within 0..=10,000,000",
        "select count(*) from account where balance < 0 or balance > 10000000",
    ),
    (
        "every history line's balance_after == the running sum",
        "select count(*) from (
             select balance_after,
                    sum(amount) over (partition by user_id order by id) as running
             from balance_entry
         ) lines
         where balance_after <> running",
    ),
    (
        "every paid order has exactly one order.paid event",
        "select count(*) from purchase_order o
         where o.status in ('PAID', 'REFUNDED')
           and (select count(*) from outbox x where x.order_id = o.id and x.event_type = 'order.paid') <> 1",
    ),
    (
        "no order.paid event for an order that was never paid",
        "select count(*) from outbox x
         where x.event_type = 'order.paid'
           and not exists (select 1 from purchase_order o
                           where o.id = x.order_id and o.status in ('PAID', 'REFUNDED'))",
    ),
    (
        "hourly sales == units in paid orders, per product",
        "select count(*) from (
             select product_id, sum(quantity) as sold from product_sales_hourly group by product_id
         ) h
         where h.sold <> coalesce((select sum(l.quantity) from order_line l
                                   join purchase_order o on o.id = l.order_id
                                   where o.status = 'PAID' and l.product_id = h.product_id), 0)",
    ),
    (
        "purchase tally == units in the user's paid orders, per user and product",
        "select count(*) from (
             select o.user_id, l.product_id, sum(l.quantity) as paid from order_line l
             join purchase_order o on o.id = l.order_id
             where o.status = 'PAID' group by o.user_id, l.product_id
         ) p
         where p.paid <> coalesce((select t.quantity from purchase_tally t
                                   where t.user_id = p.user_id and t.product_id = p.product_id), 0)",
    ),
    (
        "no purchase tally without the paid units behind it",
        "select count(*) from purchase_tally t
         where t.quantity <> coalesce((select sum(l.quantity) from order_line l
                                       join purchase_order o on o.id = l.order_id
                                       where o.status = 'PAID' and o.user_id = t.user_id
                                         and l.product_id = t.product_id), 0)",
    ),
    (
        "no coupon issued beyond its total_quantity",
        "select count(*) from coupon c
         where (select count(*) from user_coupon u where u.coupon_id = c.id) > c.total_quantity",
    ),
    (
        "coupon shards + issued == total_quantity",
        "select count(*) from coupon c
         where coalesce((select sum(s.remaining) from coupon_shard s where s.coupon_id = c.id), 0)
             + (select count(*) from user_coupon u where u.coupon_id = c.id) <> c.total_quantity",
    ),
    (
        "no coupon shard below zero",
        "select count(*) from coupon_shard where remaining < 0",
    ),
    (
        "every draw's entry_count == its entries",
        "select count(*) from draws d
         where d.entry_count <> (select count(*) from draw_entries e where e.draw_id = d.id)",
    ),
    (
        "every drawn draw has min(quantity, entries) winners, each WON with one order of the draw",
        "select count(*) from draws d
         where d.drawn_at is not null and (
             d.winner_count <> (case when d.quantity < d.entry_count then d.quantity else d.entry_count end)
             or d.winner_count <> (select count(*) from draw_entries e where e.draw_id = d.id and e.status = 'WON')
             or d.winner_count <> (select count(*) from purchase_order o where o.draw_id = d.id)
             or exists (select 1 from draw_entries e where e.draw_id = d.id and e.status = 'ENTERED')
             or exists (select 1 from draw_entries e where e.draw_id = d.id and e.status = 'WON'
                        and not exists (select 1 from purchase_order o
                                        where o.id = e.order_id and o.draw_id = d.id and o.user_id = e.user_id)))",
    ),
    (
        "no entry of an undrawn draw is decided",
        "select count(*) from draw_entries e join draws d on d.id = e.draw_id
         where d.drawn_at is null and (e.status <> 'ENTERED' or e.order_id is not null)",
    ),
    (
        "nobody holds a coupon twice",
        "select count(*) from (
             select 1 from user_coupon group by user_id, coupon_id having count(*) > 1
         ) twice",
    ),
    (
        "a user coupon is used by at most one paid order",
        "select count(*) from (
             select 1 from purchase_order
             where status = 'PAID' and user_coupon_id is not null
             group by user_coupon_id having count(*) > 1
         ) reused",
    ),
];

/// Checks that hold after anything at all: stock, balances and their history, events, coupons.
pub async fn database(url: &str) -> Vec<Check> {
    let db = match Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("database reachable", false, e)],
    };
    let mut checks = Vec::with_capacity(BROKEN_ROWS.len());
    for (name, sql) in BROKEN_ROWS {
        checks.push(db.count_is(name, sql, &[], 0).await);
    }
    db.close().await;
    checks
}

/// A rush of `requests` distinct users on one coupon of `total` issues exactly
/// `min(requests, total)`, never more than the total.
pub async fn coupon_rush(url: &str, coupon_id: i64, requests: i64, total: i64) -> Vec<Check> {
    let db = match Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("database reachable", false, e)],
    };
    let expected = requests.min(total);
    let sql = "select count(*) from user_coupon where coupon_id = $1";
    let checks = match db.scalar(sql, &[coupon_id]).await {
        Ok(n) => vec![
            Check::new(
                "user_coupon rows == min(requests, total)",
                n == expected,
                format!("{n} rows (expected {expected})"),
            ),
            Check::new(
                "user_coupon rows <= total",
                n <= total,
                format!("{n} rows, total {total}"),
            ),
        ],
        Err(e) => vec![Check::new("user_coupon rows == min(requests, total)", false, e)],
    };
    db.close().await;
    checks
}

/// For each `(product_id, stocked)`: units in paid orders, units held by draws and the stock
/// left add up to what was stocked.
pub async fn stock_accounts_for(url: &str, stocked: &[(i64, i64)]) -> Vec<Check> {
    let db = match Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("database reachable", false, e)],
    };
    // Units set aside by draws count as stocked: a draw not drawn yet holds its quantity, a
    // winner's pending order its unit.
    let sql = "select (select stock from product where id = $1)
                    + coalesce((select sum(l.quantity) from order_line l
                                join purchase_order o on o.id = l.order_id
                                where o.status = 'PAID' and l.product_id = $1), 0)
                    + coalesce((select sum(d.quantity) from draws d
                                where d.product_id = $1 and d.drawn_at is null), 0)
                    + (select count(*) from purchase_order o join draws d on d.id = o.draw_id
                       where d.product_id = $1 and o.status = 'PENDING_PAYMENT')";
    let mut checks = Vec::with_capacity(stocked.len());
    for &(product, stocked) in stocked {
        let name = format!("product {product}: sold + left == stocked");
        checks.push(db.count_is(&name, sql, &[product], stocked).await);
    }
    db.close().await;
    checks
}
