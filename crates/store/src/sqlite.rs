//! SQLite: the embedded engine, so that the server runs on a fresh machine with nothing else
//! installed. WAL lets readers run beside the writer; all writes go through one connection with
//! `BEGIN IMMEDIATE`, so a transaction holds the write lock from its first statement and
//! concurrent writers queue for the connection instead of failing with `SQLITE_BUSY`.

use std::str::FromStr;
use std::time::Duration;

use ecommerce_domain::StoreError;
use ecommerce_domain::store::StoreResult;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::{EngineSql, PoolOptions, migrator, store_err};

type EngineStore = SqliteStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as SqliteTx;

#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl EngineSql for SqliteStore {
    type Db = Sqlite;

    // One writer at a time already; no row locks to skip.
    row_claiming_statements!("");

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Write transactions already run one at a time (`BEGIN IMMEDIATE` on one connection), so a
    /// duplicate request finds the first one committed and replays it.
    async fn try_lock_key(_conn: &mut SqliteConnection, _name: &str) -> StoreResult<bool> {
        Ok(true)
    }
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
                .connect_lazy_with(connect.read_only(true)),
            writer,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Safe when several processes open one fresh file at once: sqlx takes no lock on SQLite,
    /// so the whole run holds the write lock (`BEGIN IMMEDIATE`; the migrator's own transactions
    /// become savepoints) and a second process finds the migrations applied instead of applying
    /// them again.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut lock = self.begin_write().await.map_err(store_err)?;
        migrator(embedded_migrations!("sqlite"))
            .run_direct(None, &mut *lock, false)
            .await
            .map_err(StoreError::new)?;
        lock.commit().await.map_err(store_err)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }
}
