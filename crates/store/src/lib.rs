//! Storage adapters: [`postgres::PgStore`] and [`sqlite::SqliteStore`] implement the domain's
//! storage port.
//!
//! The SQL the engines agree on (nearly all of it) lives once, in `shared.rs`, which each engine
//! module compiles against its own `sqlx` database type. What an engine gives `shared.rs` is
//! stated once, by the private trait [`EngineSql`]: its database type, the pool reads use, how a
//! write transaction begins, the idempotency-key lock, and the lock clause of the two statements
//! that claim rows several instances contend for (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! nothing on SQLite, where writes run one at a time anyway). `crates/store/README.md` explains
//! how an engine of another SQL dialect would fit.
//!
//! Migrations are listed once for both engines ([`embedded_migrations!`]); a file missing from
//! either folder does not compile, and a test fails on a file that the list misses.

use std::borrow::Cow;
use std::future::Future;

use ecommerce_domain::StoreError;
use ecommerce_domain::store::StoreResult;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Database, Pool, Transaction};

/// The two statements whose text differs between engines, by the row-lock clause `$skip_locked`
/// only; an engine's `impl EngineSql` expands this with its clause.
macro_rules! row_claiming_statements {
    ($skip_locked:literal) => {
        /// Marks overdue pending orders `EXPIRED`, oldest first, at most `$2` of them; returns
        /// the `draw_id` of each (null for an ordinary order), whose units go back to stock.
        const EXPIRE_ORDERS: &'static str = concat!(
            "update purchase_order set status = 'EXPIRED', closed_at = $1 where id in \
             (select id from purchase_order where status = 'PENDING_PAYMENT' and expires_at <= $1 \
              order by id limit $2",
            $skip_locked,
            ") returning draw_id"
        );

        /// Leases the oldest sendable events until `$2`. An event waits while an earlier event of
        /// its order is unsent, so each order's events leave in commit order.
        const LEASE_OUTBOX: &'static str = concat!(
            "update outbox set lease_until = $2 where seq in \
             (select o.seq from outbox o where o.sent_at is null and (o.lease_until is null or o.lease_until <= $1) \
              and not exists (select 1 from outbox e where e.order_id = o.order_id and e.sent_at is null and e.seq < o.seq) \
              order by o.seq limit $3",
            $skip_locked,
            ") returning seq, event_id, event_type, order_id, payload"
        );
    };
}

/// Every migration, oldest first, as `(version, description, file name, SQL)`, embedded from
/// `migrations/<engine>/`: the binary carries its schema and reads nothing from disk. Both
/// folders hold the same file names, so one list serves both.
macro_rules! embedded_migrations {
    ($engine:literal) => {
        embedded_migrations!(@ $engine;
            1, "init", "0001_init.sql";
            2, "idempotency key age", "0002_idempotency_key_age.sql";
            3, "drops", "0003_drops.sql";
            4, "draws", "0004_draws.sql";
            5, "token hygiene", "0005_token_hygiene.sql";
            6, "admin list indexes", "0006_admin_list_indexes.sql";
        )
    };
    (@ $engine:literal; $($version:literal, $description:literal, $file:literal;)+) => {
        &[$((
            $version,
            $description,
            $file,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $engine, "/", $file)),
        )),+]
    };
}

pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What an engine module provides to `shared.rs`, which implements the storage port once on top.
trait EngineSql {
    type Db: Database;

    /// See [`row_claiming_statements!`].
    const EXPIRE_ORDERS: &'static str;
    /// See [`row_claiming_statements!`].
    const LEASE_OUTBOX: &'static str;

    /// The pool that reads outside a transaction use.
    fn reader(&self) -> &Pool<Self::Db>;

    /// Begins a write transaction.
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;

    /// Holds the lock named `name` until the transaction on `conn` ends, or answers `false` at
    /// once when another transaction holds it: a duplicate request must not queue behind the
    /// first one.
    fn try_lock_key(
        conn: &mut <Self::Db as Database>::Connection,
        name: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The store's product-change feed (see [`ecommerce_domain::changes`]).
    fn changes(&self) -> &ecommerce_domain::changes::ProductChanges;

    /// The pool a catalog read ([`ecommerce_domain::store::Store::product`],
    /// [`ecommerce_domain::store::Store::products_on_sale`]) outside a transaction uses: the
    /// reader, unless it is a replica that has not yet replayed a change this instance wrote or
    /// heard of (then the primary, so that such a change shows in the next read).
    fn catalog_reader(&self) -> impl Future<Output = StoreResult<&Pool<Self::Db>>> + Send;

    /// Runs after a transaction that changed products committed (PostgreSQL with a replica:
    /// notes the primary's WAL position that the replica must reach before it serves catalog
    /// reads again).
    fn after_product_commit(&self) -> impl Future<Output = ()> + Send;

    /// The same store with the reader that token-free catalog reads use (a replica's pool when
    /// there is one).
    fn catalog_store(&self) -> Self;

    /// Tells the other instances, from inside the transaction on `conn`, that it changed these
    /// products (`payload` as [`ecommerce_domain::changes::encode_change`] writes it): delivered
    /// only if the transaction commits. Nothing on an engine without cross-process notifications.
    fn announce_changes(
        conn: &mut <Self::Db as Database>::Connection,
        payload: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Answers when the database can take a write now (the readiness probe's question, see
    /// [`ecommerce_domain::store::Store::check_writable`]); writes nothing.
    fn probe_writes(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The error of a database that answers but refuses writes: worth a 503, like an outage.
fn refusing_writes(why: &str) -> StoreError {
    StoreError::unavailable(std::io::Error::other(why.to_owned()))
}

/// Which engine a `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else {
            None
        }
    }
}

/// Pool settings shared by both engines.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
}

impl PoolOptions {
    /// The pool size when none is configured.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The one translation of sqlx errors: whether the database is unavailable for a moment (worth
/// a 503 with `Retry-After` and a retry) or something else went wrong (a 500).
///
/// Unavailable: no connection (pool timed out or closed, I/O, TLS, a crashed SQLite worker); on
/// PostgreSQL a connection the server ended or refused (57P01 admin shutdown, 57P02 crash
/// shutdown, 57P03 cannot connect now, class 08 connection exceptions, 53300 too many
/// connections) and a transaction it rolled back to break a conflict (40001 serialization
/// failure, 40P01 deadlock); on SQLite a lock held past the busy timeout (`SQLITE_BUSY`,
/// `SQLITE_LOCKED`, with any extended code).
fn store_err(err: sqlx::Error) -> StoreError {
    if is_transient(&err) {
        StoreError::unavailable(err)
    } else {
        StoreError::new(err)
    }
}

fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                is_transient_sqlstate(pg.code())
            } else if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                sqlx::error::DatabaseError::code(lite)
                    .and_then(|code| code.parse::<i64>().ok())
                    .is_some_and(is_transient_sqlite_code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of a passing condition (see [`store_err`]).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
}

/// SQLite result codes (primary or extended) of a lock held too long.
fn is_transient_sqlite_code(code: i64) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
}

/// A stored value that no code path writes.
fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError {
        source: format!("unexpected {what} in the database: {value:?}").into(),
        unavailable: false,
    }
}

type EmbeddedMigration = (i64, &'static str, &'static str, &'static str);

fn migrator(migrations: &[EmbeddedMigration]) -> Migrator {
    let migrations = migrations
        .iter()
        .map(|&(version, description, _, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sqlx::SqlStr::from_static(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn files_in(engine: &str) -> BTreeSet<String> {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(engine);
        std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("read {}: {e}", folder.display()))
            .map(|entry| entry.expect("folder entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn listed(migrations: &[EmbeddedMigration]) -> BTreeSet<String> {
        migrations.iter().map(|m| m.2.to_owned()).collect()
    }

    #[test]
    fn every_migration_file_is_embedded_for_its_engine() {
        assert_eq!(
            files_in("postgres"),
            listed(embedded_migrations!("postgres")),
            "add the new file to embedded_migrations! (lib.rs)"
        );
        assert_eq!(
            files_in("sqlite"),
            listed(embedded_migrations!("sqlite")),
            "add the new file to embedded_migrations! (lib.rs)"
        );
    }

    #[test]
    fn both_engines_have_the_same_migration_files() {
        assert_eq!(files_in("postgres"), files_in("sqlite"));
    }

    #[test]
    fn versions_follow_the_file_names_in_order() {
        let migrations: &[EmbeddedMigration] = embedded_migrations!("sqlite");
        for (i, &(version, _, file, _)) in migrations.iter().enumerate() {
            assert_eq!(version, i as i64 + 1, "versions count up from 1 without gaps");
            assert!(
                file.starts_with(&format!("{version:04}_")),
                "{file} should start with {version:04}_"
            );
        }
    }

    /// The catalog caches hear of a change only through `EngineTx::product_changed`: every
    /// method of `shared.rs` whose SQL writes the `product` table must call it, so a new writer
    /// (a draw taking stock, say) cannot forget.
    #[test]
    fn every_product_write_reports_the_change() {
        let source = include_str!("shared.rs");
        let writes = [
            "update product ",
            "insert into product ",
            "delete from product ",
            "(return_stock)",
        ];
        let mut checked = 0;
        for method in source.split("async fn ").skip(1) {
            let name = method.split('(').next().unwrap_or_default();
            let lower = method.to_lowercase();
            if writes.iter().any(|w| lower.contains(w)) {
                checked += 1;
                assert!(
                    method.contains("self.product_changed(") || method.contains("tx.product_changed("),
                    "`{name}` writes the product table: call self.product_changed(id) in it"
                );
            }
        }
        assert!(
            checked >= 5,
            "the scan found only {checked} product writers: is it still reading the right file?"
        );
    }

    #[test]
    fn passing_database_conditions_are_unavailable_others_are_not() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001", "53300", "40001", "40P01"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "22021", "42P01", "XX000"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED, SQLITE_LOCKED_SHAREDCACHE (262)
        for code in [5, 517, 6, 262] {
            assert!(is_transient_sqlite_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_READONLY (8), SQLITE_CORRUPT (11)
        for code in [2067, 8, 11] {
            assert!(!is_transient_sqlite_code(code), "{code}");
        }
        assert!(store_err(sqlx::Error::PoolTimedOut).unavailable);
        assert!(!store_err(sqlx::Error::RowNotFound).unavailable);
    }

    #[test]
    fn the_lock_clause_is_the_only_difference_between_the_engines() {
        let pg = <PgStore as EngineSql>::LEASE_OUTBOX;
        let lite = <SqliteStore as EngineSql>::LEASE_OUTBOX;
        assert_eq!(pg.replace(" for update skip locked", ""), lite);
        assert_eq!(
            <PgStore as EngineSql>::EXPIRE_ORDERS.replace(" for update skip locked", ""),
            <SqliteStore as EngineSql>::EXPIRE_ORDERS
        );
        assert!(pg.contains("limit $3 for update skip locked)"));
    }
}
