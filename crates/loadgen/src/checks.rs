//! Invariants read straight from the database after a run (DESIGN.md, "Invariants").

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;

use crate::stats::Check;

enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    async fn connect(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres") {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| format!("connect {url}: {e}"))?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            // Read only: the server owns the file.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("{url}: {e}"))?
                .read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .map_err(|e| format!("connect {url}: {e}"))?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(format!("--database-url: neither postgres:// nor sqlite:// ({url})"))
        }
    }

    /// One `bigint` from `sql` with at most one `bigint` parameter.
    async fn scalar(&self, sql: &str, param: Option<i64>) -> Result<i64, String> {
        let result = match self {
            Db::Postgres(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
                if let Some(p) = param {
                    query = query.bind(p);
                }
                query.fetch_one(pool).await
            }
            Db::Sqlite(pool) => {
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()));
                if let Some(p) = param {
                    query = query.bind(p);
                }
                query.fetch_one(pool).await
            }
        };
        result.map_err(|e| format!("{sql}: {e}"))
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }
}

/// A check that a count query answers `expected`.
async fn count_is(db: &Db, name: &str, sql: &str, param: Option<i64>, expected: i64) -> Check {
    match db.scalar(sql, param).await {
        Ok(n) => Check::new(name, n == expected, format!("{n} (expected {expected})")),
        Err(e) => Check::new(name, false, e),
    }
}

/// Checks that hold after any scenario: stock, balances, one event per paid order.
pub async fn database(url: &str) -> Vec<Check> {
    let db = match Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("database reachable", false, e)],
    };
    // SUM(bigint) is NUMERIC on PostgreSQL: cast it back to compare as bigint.
    let sum = if db.is_postgres() {
        "coalesce((select sum(amount) from balance_entry e where e.user_id = a.id), 0)::bigint"
    } else {
        "coalesce((select sum(amount) from balance_entry e where e.user_id = a.id), 0)"
    };
    vec![
        count_is(
            &db,
            "no product with negative stock",
            "select count(*) from product where stock < 0",
            None,
            0,
        )
        .await,
        count_is(
            &db,
            "every balance == sum of its history",
            &format!("select count(*) from account a where balance <> {sum}"),
            None,
            0,
        )
        .await,
        count_is(
            &db,
            "every paid order has exactly one order.paid event",
            "select count(*) from purchase_order o where o.status in ('PAID', 'REFUNDED') and \
             (select count(*) from outbox x where x.order_id = o.id and x.event_type = 'order.paid') <> 1",
            None,
            0,
        )
        .await,
    ]
}

/// A rush issues exactly min(requests, total) coupons, never more than the total.
pub async fn coupon_count(url: &str, coupon_id: i64, requests: i64, total: i64) -> Vec<Check> {
    let db = match Db::connect(url).await {
        Ok(db) => db,
        Err(e) => return vec![Check::new("database reachable", false, e)],
    };
    let expected = requests.min(total);
    match db
        .scalar("select count(*) from user_coupon where coupon_id = $1", Some(coupon_id))
        .await
    {
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
    }
}
