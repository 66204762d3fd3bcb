//! SQLite: the embedded engine, so that the server runs on a fresh machine with nothing else
//! installed. WAL lets readers run beside the writer; all writes go through one connection with
//! `BEGIN IMMEDIATE`, so a transaction holds the write lock from its first statement and
//! concurrent writers queue for the connection instead of failing with `SQLITE_BUSY`.

use std::str::FromStr;
use std::time::Duration;

use ecommerce_domain::StoreError;
use ecommerce_domain::store::StoreResult;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::{PoolOptions, migrator, store_err};

type Db = Sqlite;
type EngineStore = SqliteStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as SqliteTx;

/// One writer at a time already; no row locks to skip.
const EXPIRE_ORDERS_SQL: &str = "update purchase_order set status = 'EXPIRED', closed_at = $1 where id in \
     (select id from purchase_order where status = 'PENDING_PAYMENT' and expires_at <= $1 order by id limit $2)";

const LEASE_OUTBOX_SQL: &str = "update outbox set lease_until = $2 where seq in \
     (select o.seq from outbox o where o.sent_at is null and (o.lease_until is null or o.lease_until <= $1) \
      and not exists (select 1 from outbox e where e.order_id = o.order_id and e.sent_at is null and e.seq < o.seq) \
      order by o.seq limit $3) \
     returning seq, event_id, event_type, order_id, payload";

/// Write transactions already run one at a time (`BEGIN IMMEDIATE` on one connection), so a
/// duplicate request finds the first one committed and replays it.
async fn try_lock_key(_conn: &mut sqlx::SqliteConnection, _name: &str) -> ecommerce_domain::store::StoreResult<bool> {
    Ok(true)
}

/// How long the readiness probe waits for SQLite's write lock.
const PROBE_LOCK_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// How the readiness probe opens its own connection to the file (shared: the store is
    /// cloned for every request).
    probe: std::sync::Arc<SqliteConnectOptions>,
}

impl SqliteStore {
    /// Opens (creating the file and its folder when missing) and migrates.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(store_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(folder) = connect.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(StoreError::new)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(store_err)?;
        let store = Self {
            reader: SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(connect.clone().read_only(true)),
            writer,
            probe: std::sync::Arc::new(connect.busy_timeout(PROBE_LOCK_WAIT)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Safe when several processes open one fresh file at once: sqlx takes no lock on SQLite,
    /// so the whole run holds the write lock (`BEGIN IMMEDIATE`; the migrator's own transactions
    /// become savepoints) and a second process finds the migrations applied instead of applying
    /// them again.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut lock = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(store_err)?;
        migrator(&[
            (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
            (
                2,
                "idempotency key age",
                include_str!("../migrations/sqlite/0002_idempotency_key_age.sql"),
            ),
        ])
        .run_direct(None, &mut *lock, false)
        .await
        .map_err(StoreError::new)?;
        lock.commit().await.map_err(store_err)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Whether the write lock can be taken by anyone else than this process's own writer.
    ///
    /// The probe holds the writer connection while it looks (a write in flight waits a moment),
    /// so that it never races this instance's own transactions for the lock; then it takes the
    /// lock from a connection of its own, which waits at most [`PROBE_LOCK_WAIT`], and gives it
    /// back at once. Only another process holding the lock (or a file that cannot be written)
    /// makes it fail.
    async fn probe_writes(&self) -> StoreResult<()> {
        use sqlx::{ConnectOptions, Connection};
        let _own_writes_paused = self.writer.acquire().await.map_err(store_err)?;
        let mut probe = self.probe.connect().await.map_err(store_err)?;
        let locked = sqlx::query("BEGIN IMMEDIATE").execute(&mut probe).await;
        if locked.is_ok() {
            sqlx::query("ROLLBACK").execute(&mut probe).await.map_err(store_err)?;
        }
        let _ = probe.close().await;
        locked.map(drop).map_err(StoreError::unavailable)
    }
}
