//! SQLite: the embedded engine, so that the server runs on a fresh machine with nothing else
//! installed. WAL lets readers run beside the writer; all writes go through one connection with
//! `BEGIN IMMEDIATE`, so a transaction holds the write lock from its first statement and
//! concurrent writers queue for the connection instead of failing with `SQLITE_BUSY`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use ecommerce_domain::StoreError;
use ecommerce_domain::changes::ProductChanges;
use ecommerce_domain::store::StoreResult;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::{EngineSql, PoolOptions, migrator, store_err};

type EngineStore = SqliteStore;

#[allow(clippy::duplicate_mod)] // compiled once per engine on purpose
#[path = "shared.rs"]
mod shared;

pub use shared::EngineTx as SqliteTx;

/// How long the readiness probe waits for SQLite's write lock.
const PROBE_LOCK_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// How the readiness probe opens its own connection to the file (shared: the store is
    /// cloned for every request).
    probe: std::sync::Arc<SqliteConnectOptions>,
    /// One process per file: its own commits are the only changes it needs to hear of.
    changes: ProductChanges,
}

impl EngineSql for SqliteStore {
    type Db = Sqlite;

    // One writer at a time already; no row locks to skip.
    row_claiming_statements!("");

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn changes(&self) -> &ProductChanges {
        &self.changes
    }

    fn catalog_store(&self) -> Self {
        self.clone()
    }

    async fn catalog_reader(&self) -> StoreResult<&SqlitePool> {
        Ok(&self.reader)
    }

    async fn after_product_commit(&self) {}

    /// Another process on the same file hears of nothing; the caches' time bound covers it.
    async fn announce_changes(_conn: &mut SqliteConnection, _payload: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Write transactions already run one at a time (`BEGIN IMMEDIATE` on one connection), so a
    /// duplicate request finds the first one committed and replays it.
    async fn try_lock_key(_conn: &mut SqliteConnection, _name: &str) -> StoreResult<bool> {
        Ok(true)
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

/// Opens the pool of the one writer connection.
///
/// Switching a fresh file to WAL (the `journal_mode` pragma each connection runs) needs an
/// exclusive lock that SQLite's busy handler does not wait for: while another process holds any
/// lock on the file, the switch fails at once with `SQLITE_BUSY`. That happens when several
/// instances open one fresh file at once; the ones that lose try again a moment later, when the
/// file is in WAL mode already and the pragma has nothing left to do.
async fn open_writer(connect: &SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(5);
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await;
        match opened {
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Creates the database file (mode 0600) and its missing folders (mode 0700) when the file does
/// not exist yet: it holds password hashes and possibly the token signing secret (audit M2).
/// SQLite gives its `-wal` and `-shm` files the database file's mode. An existing file keeps its
/// mode; one that others may read is reported.
fn create_private(file: &std::path::Path) -> std::io::Result<()> {
    let name = file.as_os_str();
    if name.is_empty() || name == ":memory:" {
        return Ok(());
    }
    if let Some(folder) = file.parent()
        && !folder.as_os_str().is_empty()
        && !folder.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(folder)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(file) {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        file = %file.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the database file may be read by other users; `chmod 600` it (and its -wal and -shm files)"
                    );
                }
            }
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// `SQLITE_BUSY`, whatever its extended code.
fn is_busy(err: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_BUSY),
        _ => false,
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
        create_private(connect.get_filename()).map_err(StoreError::new)?;
        let writer = open_writer(&connect).await.map_err(store_err)?;
        let store = Self {
            reader: SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(connect.clone().read_only(true)),
            writer,
            probe: std::sync::Arc::new(connect.busy_timeout(PROBE_LOCK_WAIT)),
            changes: ProductChanges::default(),
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;

    /// A fresh file on which another connection holds the write lock: the switch to WAL cannot
    /// wait for it (SQLite answers `SQLITE_BUSY` at once), so connecting must try again
    /// instead of failing. This is what an instance meets when another one opened the same
    /// fresh file a moment earlier.
    #[tokio::test]
    async fn connecting_waits_out_a_lock_held_while_the_file_is_new() {
        let folder = std::env::temp_dir().join(format!("ecommerce_sqlite_busy_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).expect("create the folder");
        let url = format!("sqlite://{}", folder.join("fresh.db").display());

        let mut other = SqliteConnection::connect_with(
            &SqliteConnectOptions::from_str(&url)
                .expect("url")
                .create_if_missing(true),
        )
        .await
        .expect("open the file the way an older instance would");
        other.execute("begin immediate").await.expect("take the write lock");

        let connecting = tokio::spawn({
            let url = url.clone();
            async move { SqliteStore::connect(&url, PoolOptions::default()).await.map(drop) }
        });
        // Hold the lock long enough for the first attempts to meet it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!connecting.is_finished(), "connecting must wait for the lock, not fail");
        other.execute("commit").await.expect("release the lock");
        let outcome = connecting.await.expect("join");
        let _ = std::fs::remove_dir_all(&folder);
        outcome.expect("connect once the lock is gone");
    }

    /// The file holds password hashes and maybe the signing secret: only its owner may read it,
    /// and SQLite's side files follow (audit M2).
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_file_and_its_folder_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("ecommerce_sqlite_mode_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let folder = root.join("data");
        let file = folder.join("shop.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", file.display()), PoolOptions::default())
            .await
            .expect("connect");
        sqlx::query("insert into app_setting (name, value) values ('probe', 'x')")
            .execute(store.pool())
            .await
            .expect("a write, so that the -wal file exists");
        let mode = |path: &std::path::Path| {
            std::fs::metadata(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let modes = [
            mode(&folder),
            mode(&file),
            mode(&folder.join("shop.db-wal")),
            mode(&folder.join("shop.db-shm")),
        ];
        drop(store);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(modes, [0o700, 0o600, 0o600, 0o600], "folder, file, -wal, -shm");
    }
}
