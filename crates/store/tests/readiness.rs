//! `Store::check_writable`, the readiness probe's question: can the database take a write now?
//! Each engine is made to refuse writes the way it does in production (SQLite: another process
//! holds the write lock; PostgreSQL: a read-only server) and must say so, while `ping` still
//! answers, and be ready again once the cause is gone.

mod support;

use std::time::{Duration, Instant};

use ecommerce_domain::store::Store;
use ecommerce_store::{PgStore, SqliteStore};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, SqliteConnection};
use support::{TestDb, run_postgres, run_sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_not_writable_while_another_process_holds_the_write_lock() {
    run_sqlite(async |db: TestDb<SqliteStore>| {
        let store = db.connect().await;
        store.check_writable().await.expect("a fresh file takes writes");

        // Another "process": a connection of its own, holding the write lock.
        let mut other = SqliteConnection::connect(&db.url).await.expect("a second connection");
        other.execute("BEGIN IMMEDIATE").await.expect("take the write lock");
        let started = Instant::now();
        let refused = store.check_writable().await.expect_err("the lock is held");
        assert!(refused.unavailable, "{refused}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the probe gives up quickly: {:?}",
            started.elapsed()
        );
        store.ping().await.expect("reads still work");

        other.execute("ROLLBACK").await.expect("release the lock");
        store.check_writable().await.expect("writable again");
        let _ = other.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_probing_does_not_get_in_the_way_of_its_own_writes() {
    run_sqlite(async |db: TestDb<SqliteStore>| {
        let store = db.connect().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .setting_or_insert(&format!("probe-test-{i}"), "value")
                    .await
                    .map(drop)
                    .map_err(|err| format!("a write failed: {err}"))
            });
        }
        for _ in 0..10 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .check_writable()
                    .await
                    .map_err(|err| format!("not writable while busy with its own writes: {err}"))
            });
        }
        while let Some(outcome) = tasks.join_next().await {
            outcome.expect("the task ran").expect("writes and probes succeed");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_not_writable_when_the_server_is_read_only() {
    run_postgres(async |db: TestDb<PgStore>| {
        let store = db.connect().await;
        store.check_writable().await.expect("a primary takes writes");

        let database = db.url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut admin = PgConnection::connect(&db.url).await.expect("an admin connection");
        let read_only = |on: bool| {
            let setting = if on {
                "set default_transaction_read_only = on"
            } else {
                "reset default_transaction_read_only"
            };
            AssertSqlSafe(format!("alter database {database} {setting}"))
        };
        // A setting of the database reaches new sessions: end the store's current ones.
        let reconnect = || {
            AssertSqlSafe(format!(
                "select pg_terminate_backend(pid) from pg_stat_activity \
                 where datname = '{database}' and pid <> pg_backend_pid()"
            ))
        };

        admin
            .execute(read_only(true))
            .await
            .expect("make the database read-only");
        admin.execute(reconnect()).await.expect("end the store's sessions");
        let refused = store.check_writable().await.expect_err("read-only");
        assert!(refused.unavailable, "{refused}");
        assert!(refused.to_string().contains("read-only"), "{refused}");
        store.ping().await.expect("reads still work");

        admin.execute(read_only(false)).await.expect("writable again");
        admin.execute(reconnect()).await.expect("end the store's sessions");
        store.check_writable().await.expect("writable again");
        let _ = admin.close().await;
    })
    .await;
}
