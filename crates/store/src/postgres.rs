//! PostgreSQL: the production engine. Many instances share one database; row locks make the
//! guarded updates safe, and the background jobs claim rows with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use ecommerce_domain::StoreError;
use ecommerce_domain::store::StoreResult;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::{PoolOptions, migrator, store_err};

type Db = Postgres;
type EngineStore = PgStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as PgTx;

/// Marks overdue pending orders; `SKIP LOCKED` lets every instance run it at once.
const EXPIRE_ORDERS_SQL: &str = "update purchase_order set status = 'EXPIRED', closed_at = $1 where id in \
     (select id from purchase_order where status = 'PENDING_PAYMENT' and expires_at <= $1 \
      order by id limit $2 for update skip locked)";

/// Leases the oldest sendable events. An event waits while an earlier event of its order is
/// unsent, so each order's events leave in commit order.
const LEASE_OUTBOX_SQL: &str = "update outbox set lease_until = $2 where seq in \
     (select o.seq from outbox o where o.sent_at is null and (o.lease_until is null or o.lease_until <= $1) \
      and not exists (select 1 from outbox e where e.order_id = o.order_id and e.sent_at is null and e.seq < o.seq) \
      order by o.seq limit $3 for update skip locked) \
     returning seq, event_id, event_type, order_id, payload";

/// Holds the idempotency key until this transaction ends, or says that another request holds
/// it: a duplicate that arrives while the first is running answers `REQUEST_IN_PROGRESS`
/// instead of queueing behind it.
///
/// A transaction dropped without commit is rolled back by the pool a moment later, not at once,
/// so the lock is tried a few times over ~50 ms: a retry right after a failed request must find
/// the key free, not in progress.
async fn try_lock_key(conn: &mut sqlx::PgConnection, name: &str) -> ecommerce_domain::store::StoreResult<bool> {
    const ATTEMPTS: u32 = 10;
    for attempt in 1..=ATTEMPTS {
        let locked = sqlx::query_scalar::<Db, bool>("select pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(store_err)?;
        if locked || attempt == ATTEMPTS {
            return Ok(locked);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(false)
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates. Safe when several instances start at once: the migrator holds an
    /// advisory lock while it runs.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url).map_err(store_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(connect);
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(&[
            (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
            (
                2,
                "idempotency key age",
                include_str!("../migrations/postgres/0002_idempotency_key_age.sql"),
            ),
        ])
        .run(&self.pool)
        .await
        .map_err(StoreError::new)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        self.pool.begin().await
    }

    /// A standby (in recovery) or a read-only server refuses every write: not ready.
    async fn probe_writes(&self) -> StoreResult<()> {
        let (in_recovery, read_only) = sqlx::query_as::<Db, (bool, String)>(
            "select pg_is_in_recovery(), current_setting('transaction_read_only')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        match (in_recovery, read_only.as_str()) {
            (true, _) => Err(refusing_writes("the PostgreSQL server is in recovery (a standby)")),
            (_, "on") => Err(refusing_writes("the PostgreSQL server is read-only")),
            _ => Ok(()),
        }
    }
}

fn refusing_writes(why: &str) -> StoreError {
    StoreError::unavailable(std::io::Error::other(why.to_owned()))
}
