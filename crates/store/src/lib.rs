//! Storage adapters: [`postgres::PgStore`] and [`sqlite::SqliteStore`] implement the domain's
//! storage port.
//!
//! The SQL the engines agree on (nearly all of it) lives once, in `shared.rs`, which each engine
//! module compiles against its own `sqlx` database type. Each engine module adds only what really
//! differs: connecting, how a write transaction begins, and the statements that need
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL.

use std::borrow::Cow;

use ecommerce_domain::StoreError;
use sqlx::migrate::{Migration, MigrationType, Migrator};

pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 16 }
    }
}

fn store_err(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::unavailable(err)
        }
        other => StoreError::new(other),
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError {
        source: format!("unexpected {what} in the database: {value:?}").into(),
        unavailable: false,
    }
}

/// Embedded migrations: the binary carries its schema, so nothing is read from disk at start-up.
fn migrator(sources: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = sources
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
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
