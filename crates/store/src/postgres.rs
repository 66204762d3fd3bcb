//! PostgreSQL: the production engine. Many instances share one database; row locks make the
//! guarded updates safe, and the background jobs claim rows with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use ecommerce_domain::StoreError;
use ecommerce_domain::store::StoreResult;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::{EngineSql, PoolOptions, migrator, refusing_writes, store_err};

type EngineStore = PgStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as PgTx;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl EngineSql for PgStore {
    type Db = Postgres;

    // Every instance runs the expiry job and the relay: each skips the rows another has claimed.
    row_claiming_statements!(" for update skip locked");

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// A transaction-scoped advisory lock on a hash of the name.
    ///
    /// A transaction dropped without commit is rolled back by the pool a moment later, not at
    /// once, so the lock is tried a few times over ~50 ms: a retry right after a failed request
    /// must find the key free, not in progress.
    async fn try_lock_key(conn: &mut PgConnection, name: &str) -> StoreResult<bool> {
        const ATTEMPTS: u32 = 10;
        for attempt in 1..=ATTEMPTS {
            let locked =
                sqlx::query_scalar::<Postgres, bool>("select pg_try_advisory_xact_lock(hashtextextended($1, 0))")
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

    /// A standby (in recovery) or a read-only server refuses every write: not ready.
    async fn probe_writes(&self) -> StoreResult<()> {
        let (in_recovery, read_only) = sqlx::query_as::<Postgres, (bool, String)>(
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
        migrator(embedded_migrations!("postgres"))
            .run(&self.pool)
            .await
            .map_err(StoreError::new)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
