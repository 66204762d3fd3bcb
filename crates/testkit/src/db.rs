//! Test databases: an SQLite file in its own temporary folder, or a fresh PostgreSQL database
//! created through `ECOMMERCE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and dropped `WITH (FORCE)` when the [`TestDb`] drops, also when the test panicked.
//!
//! PostgreSQL is probed once per process: when it is unreachable its tests print a skip note and
//! pass, unless `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::sync::OnceCell;

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The storage engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// Whether tests on this engine can run here. PostgreSQL is probed once per process: when it
    /// is unreachable this prints a skip note and returns false, or panics when `CI=true`.
    pub async fn available(self) -> bool {
        match self {
            Engine::Sqlite => true,
            Engine::Postgres => {
                static PROBE: OnceCell<Result<(), String>> = OnceCell::const_new();
                let probe = PROBE.get_or_init(probe_postgres).await;
                match probe {
                    Ok(()) => true,
                    Err(why) if ci() => panic!("PostgreSQL is required when CI=true: {why}"),
                    Err(why) => {
                        eprintln!("SKIPPED (PostgreSQL unavailable): {why}");
                        false
                    }
                }
            }
        }
    }
}

/// `CI=true`: every engine is mandatory.
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

async fn probe_postgres() -> Result<(), String> {
    let url = pg_admin_url();
    let connect = sqlx::PgConnection::connect(&url);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(format!("cannot connect to {url}: {err}")),
        Err(_) => Err(format!("cannot connect to {url}: timed out")),
    }
}

/// The URL of the PostgreSQL maintenance database that test databases are created through.
pub fn pg_admin_url() -> String {
    std::env::var("ECOMMERCE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// A name no other test (in this or another process) uses at the same time.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{n}_{nanos:x}", std::process::id())
}

/// A fresh, empty database for one test; dropped with the value.
///
/// Also owns a temporary folder (the SQLite file, the event files of the servers), removed on
/// drop.
pub struct TestDb {
    engine: Engine,
    url: String,
    /// The PostgreSQL database name, to drop.
    pg_name: Option<String>,
    dir: TempDir,
}

impl TestDb {
    /// Creates the database. Panics when the engine is unreachable: check
    /// [`Engine::available`] first (the test macros do).
    pub async fn create(engine: Engine) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("ecommerce-test-")
            .tempdir()
            .expect("create a temporary directory");
        match engine {
            Engine::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("ecommerce.db").display());
                TestDb {
                    engine,
                    url,
                    pg_name: None,
                    dir,
                }
            }
            Engine::Postgres => {
                let name = format!("ecommerce_test_{}", unique_suffix());
                pg_admin_execute(&format!(r#"create database "{name}""#)).await;
                TestDb {
                    engine,
                    url: with_database(&pg_admin_url(), &name),
                    pg_name: Some(name),
                    dir,
                }
            }
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The PostgreSQL database name (`None` on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// The `DATABASE_URL` of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A folder that lives as long as the database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside [`TestDb::dir`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a statement returning one integer on either engine (a `select`, or a write with
    /// `returning`), with integer binds. Write `$1`-style placeholders and plain
    /// `count(*)`/`coalesce(sum(…), 0)`: a `select`'s answer is read as `bigint` on both engines
    /// (PostgreSQL's `numeric` sums are cast by the query runner).
    ///
    /// ```ignore
    /// let sum = db.query_i64("select coalesce(sum(amount), 0) from balance_entry where user_id = $1", &[id]).await;
    /// ```
    pub async fn query_i64(&self, sql: &str, binds: &[i64]) -> i64 {
        let db = crate::invariants::Db::connect_writable(&self.url)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let value = db.scalar(sql, binds).await.unwrap_or_else(|err| panic!("{err}"));
        db.close().await;
        value
    }

    /// The integers of the first column of every row of `sql` (ids, mostly), on either engine.
    pub async fn query_ids(&self, sql: &str, binds: &[i64]) -> Vec<i64> {
        let db = crate::invariants::Db::connect_writable(&self.url)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let values = db.column(sql, binds).await.unwrap_or_else(|err| panic!("{err}"));
        db.close().await;
        values
    }

    /// Blocks every write to the `product` table until [`ProductWriteBlock::release`]: SQLite
    /// holds the database's write lock (`BEGIN IMMEDIATE`), PostgreSQL
    /// `LOCK TABLE product IN EXCLUSIVE MODE`. Reads go on. A request that answers while it is
    /// held wrote nothing to products (on SQLite, nothing at all).
    pub async fn block_product_writes(&self) -> ProductWriteBlock {
        match self.engine {
            Engine::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .unwrap_or_else(|err| panic!("open {}: {err}", self.url));
                conn.execute("begin immediate").await.expect("take the write lock");
                ProductWriteBlock::Sqlite(conn)
            }
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .unwrap_or_else(|err| panic!("connect to {}: {err}", self.url));
                conn.execute("begin").await.expect("begin");
                conn.execute("lock table product in exclusive mode")
                    .await
                    .expect("lock the product table");
                ProductWriteBlock::Postgres(conn)
            }
        }
    }

    /// Asserts every invariant of [`crate::invariants::database`] on this database.
    #[track_caller]
    pub fn assert_invariants(&self) -> impl std::future::Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move { assert_all_hold(crate::invariants::database(&self.url).await, caller) }
    }

    /// Asserts, for each `(product_id, stocked)`, that units in paid orders plus the stock left
    /// is what was stocked ([`crate::invariants::stock_accounts_for`]).
    #[track_caller]
    pub fn assert_stock_accounts_for<'a>(
        &'a self,
        stocked: &'a [(i64, i64)],
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move { assert_all_hold(crate::invariants::stock_accounts_for(&self.url, stocked).await, caller) }
    }
}

/// Asserts that every broken check is reported with its name and what was found.
fn assert_all_hold(checks: Vec<crate::invariants::Check>, caller: &std::panic::Location<'_>) {
    let failed: Vec<String> = checks
        .into_iter()
        .filter(|check| !check.ok)
        .map(|check| check.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "invariants broken (checked at {caller}):\n{}",
        failed.join("\n")
    );
}

/// Runs one statement on the PostgreSQL maintenance database (create, drop, alter database).
pub async fn pg_admin_execute(sql: &str) {
    let admin_url = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|err| panic!("connect to {admin_url}: {err}"));
    conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    let _ = conn.close().await;
}

/// `postgres://user@host:port/old?params` with the database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, format!("?{query}")),
        None => (url, String::new()),
    };
    let host_start = address.find("://").map_or(0, |i| i + 3);
    let root = match address[host_start..].find('/') {
        Some(slash) => &address[..host_start + slash],
        None => address,
    };
    format!("{root}/{name}{query}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin_url = pg_admin_url();
        // Drop may run inside the test's runtime, which cannot be blocked on: use a runtime of
        // our own on another thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async move {
                    let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                    let sql = format!(r#"drop database if exists "{name}" with (force)"#);
                    conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                    conn.close().await
                })
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test database: {dropped:?}");
        }
    }
}

/// A held write block of [`TestDb::block_product_writes`].
pub enum ProductWriteBlock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl ProductWriteBlock {
    /// Rolls back and closes the connection: writes go on.
    pub async fn release(self) {
        match self {
            ProductWriteBlock::Sqlite(mut conn) => {
                conn.execute("rollback").await.expect("roll back");
                conn.close().await.expect("close");
            }
            ProductWriteBlock::Postgres(mut conn) => {
                conn.execute("rollback").await.expect("roll back");
                conn.close().await.expect("close");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5432", "t1"), "postgres://h:5432/t1");
    }
}
