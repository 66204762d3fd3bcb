//! PostgreSQL: the production engine. Many instances share one database; row locks make the
//! guarded updates safe, and the background jobs claim rows with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ecommerce_domain::StoreError;
use ecommerce_domain::changes::{ProductChange, ProductChanges, decode_change};
use ecommerce_domain::store::StoreResult;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::{EngineSql, PoolOptions, migrator, refusing_writes, store_err};

type EngineStore = PgStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as PgTx;

/// The channel on which committed product changes are announced (`NOTIFY`).
pub const CHANGES_CHANNEL: &str = "ecommerce_product_changes";

#[derive(Clone)]
pub struct PgStore {
    /// The primary: transactions, and the reads outside one unless this is a catalog store.
    pool: PgPool,
    /// What reads outside a transaction use: `pool`, or the replica in [`Store::catalog_reads`].
    reads: PgPool,
    /// A streaming replica for token-free catalog reads (`DATABASE_READ_URL`).
    replica: Option<PgPool>,
    /// Whether `reads` is the replica.
    on_replica: bool,
    /// Read-your-writes across a replica, in WAL bytes (see [`ReplicaWatermark`]).
    watermark: Arc<ReplicaWatermark>,
    changes: ProductChanges,
}

/// How far a replica must have replayed before catalog reads may use it.
///
/// `needed` is the primary's WAL insert position right after the last product change this
/// instance committed or heard of by notification: a replica that has replayed less may not
/// show it yet, so catalog reads go to the primary until it has (an instance's own writes show
/// in its next read, and a notified change does not come back stale from the replica into the
/// cache). `replayed` is the furthest position the replica was seen at, which spares asking
/// again while it is ahead of `needed`.
#[derive(Debug, Default)]
struct ReplicaWatermark {
    needed: AtomicI64,
    replayed: AtomicI64,
}

/// The primary's WAL insert position, in bytes.
const CURRENT_LSN: &str = "select cast(pg_current_wal_insert_lsn() - '0/0'::pg_lsn as bigint)";
/// A standby's replay position in bytes (null on a primary).
const REPLAYED_LSN: &str = "select cast(pg_last_wal_replay_lsn() - '0/0'::pg_lsn as bigint)";

impl EngineSql for PgStore {
    type Db = Postgres;

    // Every instance runs the expiry job and the relay: each skips the rows another has claimed.
    row_claiming_statements!(" for update skip locked");

    fn reader(&self) -> &PgPool {
        &self.reads
    }

    fn changes(&self) -> &ProductChanges {
        &self.changes
    }

    fn catalog_store(&self) -> Self {
        match &self.replica {
            Some(replica) => Self {
                reads: replica.clone(),
                on_replica: true,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    async fn catalog_reader(&self) -> StoreResult<&PgPool> {
        if !self.on_replica {
            return Ok(&self.reads);
        }
        let needed = self.watermark.needed.load(Ordering::SeqCst);
        if self.watermark.replayed.load(Ordering::SeqCst) >= needed {
            return Ok(&self.reads);
        }
        match sqlx::query_scalar::<Postgres, Option<i64>>(REPLAYED_LSN)
            .fetch_one(&self.reads)
            .await
        {
            // Not a standby (pointed at a primary): nothing to wait for.
            Ok(None) => {
                self.watermark.replayed.fetch_max(i64::MAX, Ordering::SeqCst);
                Ok(&self.reads)
            }
            Ok(Some(replayed)) => {
                self.watermark.replayed.fetch_max(replayed, Ordering::SeqCst);
                Ok(if replayed >= needed { &self.reads } else { &self.pool })
            }
            Err(err) => {
                tracing::warn!(error = %err, "the read replica does not answer; reading the primary");
                Ok(&self.pool)
            }
        }
    }

    async fn after_product_commit(&self) {
        if self.replica.is_some() {
            self.raise_watermark(&self.pool).await;
        }
    }

    async fn announce_changes(conn: &mut PgConnection, payload: &str) -> StoreResult<()> {
        sqlx::query::<Postgres>("select pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(conn)
            .await
            .map(drop)
            .map_err(store_err)
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

fn lazy_pool(url: &str, options: PoolOptions) -> Result<PgPool, StoreError> {
    let connect = PgConnectOptions::from_str(url).map_err(store_err)?;
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect))
}

impl PgStore {
    /// Connects and migrates. Safe when several instances start at once: the migrator holds an
    /// advisory lock while it runs.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        let pool = lazy_pool(url, options)?;
        let store = Self {
            reads: pool.clone(),
            pool,
            replica: None,
            on_replica: false,
            watermark: Arc::default(),
            changes: ProductChanges::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Sends token-free catalog reads ([`Store::catalog_reads`]) to the server at `url`, a
    /// streaming replica of this store's database (`DATABASE_READ_URL`). Connects lazily; while
    /// the replica does not answer, or lags behind a product change this instance wrote or
    /// heard of, those reads go to the primary.
    pub fn with_read_replica(mut self, url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        self.replica = Some(lazy_pool(url, options)?);
        Ok(self)
    }

    /// Follows the product changes other instances announce, publishing them on this store's
    /// feed, until the task is aborted. It listens on a connection of its own to the primary
    /// and reconnects after a loss; since notifications may have been missed meanwhile, every
    /// (re)connection publishes [`ProductChange::All`] (the caches' time bound covers the gap).
    pub fn spawn_change_listener(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match store.listen_until_lost().await {
                    Ok(()) => {
                        tracing::warn!("lost the product change listener's connection; reconnecting");
                        pause = Duration::from_millis(100);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in = ?pause, "cannot listen for product changes");
                    }
                }
                store.changes.publish(ProductChange::All);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// One connection's life: `Ok` when it was lost, `Err` when it could not be made.
    async fn listen_until_lost(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANGES_CHANNEL).await?;
        // Anything committed before this point and not yet seen is covered here.
        self.changes.publish(ProductChange::All);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if self.replica.is_some() {
                        // The change is committed: the replica must replay this far first.
                        self.raise_watermark(&mut listener).await;
                    }
                    match decode_change(notification.payload()) {
                        Some(ids) => self.changes.publish(ProductChange::Products(&ids)),
                        None => self.changes.publish(ProductChange::All),
                    }
                }
                Ok(None) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// Notes the primary's current WAL position as one the replica must reach; on failure,
    /// sends catalog reads to the primary until the next position is read.
    async fn raise_watermark<'c, E: sqlx::Executor<'c, Database = Postgres>>(&self, primary: E) {
        match sqlx::query_scalar::<Postgres, i64>(CURRENT_LSN)
            .fetch_one(primary)
            .await
        {
            Ok(lsn) => {
                // A position read now is past every change committed before: it also replaces
                // the "unknown" a failure left.
                let _ = self
                    .watermark
                    .needed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |needed| {
                        Some(if needed == i64::MAX { lsn } else { needed.max(lsn) })
                    });
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the primary's WAL position; catalog reads use the primary");
                self.watermark.needed.store(i64::MAX, Ordering::SeqCst);
            }
        }
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
