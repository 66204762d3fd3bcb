//! The server's background jobs run in-process on a test database: tests call a job's `step()`
//! instead of waiting for the server's own loop.

#![allow(dead_code)] // each test binary uses some of them

use ecommerce::jobs::{Sink, draw, expiry, relay};
use ecommerce_domain::Timestamp;
use ecommerce_store::{PgStore, PoolOptions, SqliteStore};
use ecommerce_testkit::{Engine, TestDb};

/// A small pool of its own on the test database, beside the servers'.
pub enum Jobs {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// A server setting that keeps a job's own loop from running again after start-up, so that
/// the test's steps are the only ones (a day, in milliseconds).
pub const NEVER_MS: u32 = 86_400_000;

impl Jobs {
    pub async fn open(db: &TestDb) -> Jobs {
        let pool = PoolOptions { max_connections: 2 };
        match db.engine() {
            Engine::Sqlite => Jobs::Sqlite(
                SqliteStore::connect(db.url(), pool)
                    .await
                    .expect("open the test database"),
            ),
            Engine::Postgres => Jobs::Postgres(PgStore::connect(db.url(), pool).await.expect("open the test database")),
        }
    }

    /// One round of order expiry at `now`; how many orders it expired.
    pub async fn expire_orders(&self, now: Timestamp) -> u64 {
        let expired = match self {
            Jobs::Sqlite(store) => expiry::step(store, now).await,
            Jobs::Postgres(store) => expiry::step(store, now).await,
        };
        expired.expect("order expiry")
    }

    /// One round of the draw job at `now`; how many draws it drew.
    pub async fn run_draws(&self, now: Timestamp) -> u64 {
        let drawn = match self {
            Jobs::Sqlite(store) => draw::step(store, now).await,
            Jobs::Postgres(store) => draw::step(store, now).await,
        };
        drawn.expect("draw job")
    }

    /// One relay round: how many events were sent, or why the round failed.
    pub async fn relay_once(&self, sink: &Sink) -> anyhow::Result<usize> {
        match self {
            Jobs::Sqlite(store) => relay::step(store, sink).await,
            Jobs::Postgres(store) => relay::step(store, sink).await,
        }
    }

    /// Relays until the outbox is empty; how many events were sent.
    pub async fn drain_outbox(&self, sink: &Sink) -> usize {
        let mut sent = 0;
        loop {
            let batch = match self {
                Jobs::Sqlite(store) => relay::step(store, sink).await,
                Jobs::Postgres(store) => relay::step(store, sink).await,
            };
            match batch.expect("relay a batch") {
                0 => return sent,
                n => sent += n,
            }
        }
    }
}
