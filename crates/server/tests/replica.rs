//! Read replicas (`DATABASE_READ_URL`) against a real streaming replica: a private primary and
//! a standby made by `pg_basebackup -R`, on loopback ports (`scripts/replica.sh`, which this
//! test starts when it is not running; CI stops it afterwards).
//!
//! Token-free catalog reads go to the replica, everything exact to the primary, and an
//! instance's own writes show in its next read even while the replica lags (its replay is
//! paused here to make the lag as long as the test wants). Skipped when `pg_basebackup` is
//! missing, except under `CI=true`, where that fails.
//!
//! The test sets `ECOMMERCE_TEST_PG_URL` to the private primary, so it runs in a plain `#[test]`
//! that sets it before any other thread exists, and this file holds no other PostgreSQL test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ecommerce_testkit::*;

const PRIMARY: &str = "postgres://postgres@127.0.0.1:55432/postgres";
const REPLICA: &str = "postgres://postgres@127.0.0.1:55433/{database}";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/replica.sh")
}

/// Starts the pair; `false` (skip) when PostgreSQL's server tools are missing outside CI.
fn start_pair() -> bool {
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    let tools = ["pg_basebackup", "initdb", "pg_ctl"].iter().all(|tool| {
        Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || ls /usr/lib/postgresql/*/bin/{tool}"),
            ])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !tools {
        assert!(
            !ci,
            "the replica test needs pg_basebackup, initdb and pg_ctl when CI=true"
        );
        eprintln!("SKIPPED: pg_basebackup/initdb/pg_ctl not found");
        return false;
    }
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .output()
        .expect("run scripts/replica.sh");
    assert!(
        out.status.success(),
        "scripts/replica.sh start failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A statement on the replica's copy of the test database (replay control), through `psql`.
async fn on_replica(database: &str, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "55433",
                "-U",
                "postgres",
                "-d",
                database,
                "-Atc",
                sql,
            ])
            .output()
            .expect("run psql");
        if out.status.success() {
            return;
        }
        // The database itself reaches the replica by replication, a moment after it was created.
        assert!(
            Instant::now() < deadline,
            "{sql} on the replica: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replay paused on the replica until dropped (also when the test fails: a replica left paused
/// would never see the next test's database).
struct ReplayPaused;

impl ReplayPaused {
    /// Waits until the replica has replayed everything the primary wrote so far, then pauses.
    async fn start(database: &str) -> Self {
        let lsn = psql(55432, "postgres", "select pg_current_wal_insert_lsn()");
        let deadline = Instant::now() + Duration::from_secs(10);
        while psql(
            55433,
            "postgres",
            &format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        ) != "t"
        {
            assert!(Instant::now() < deadline, "the replica did not reach {lsn}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        on_replica(database, "select pg_wal_replay_pause()").await;
        ReplayPaused
    }
}

/// One value from `psql` on a port of the pair.
fn psql(port: u16, database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-Atc",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "55433",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
            ])
            .arg("select pg_wal_replay_resume() where pg_is_wal_replay_paused()")
            .output();
    }
}

async fn price_seen(app: &TestApp, id: i64, token: Option<&str>) -> Value {
    app.get(&format!("/api/v1/products/{id}"), token).await.json(200)["price"].clone()
}

#[test]
fn catalog_reads_use_the_replica_and_own_writes_show_while_it_lags() {
    if !start_pair() {
        return;
    }
    // SAFETY: no other thread exists yet in this test (the runtime is built below), and no other
    // test of this binary reads the variable.
    unsafe { std::env::set_var("ECOMMERCE_TEST_PG_URL", PRIMARY) };
    use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(replica_scenario());
}

async fn replica_scenario() {
    assert!(Engine::Postgres.available().await, "the private primary answers");
    drop(ReplayPaused); // left paused by an earlier run that was killed
    let app = TestApp::builder(Engine::Postgres)
        .env("DATABASE_READ_URL", REPLICA)
        .spawn()
        .await;
    let database = app.db().pg_name().expect("a PostgreSQL database").to_owned();
    let id = app.new_product("Replicated", 10_000, 10).await;
    // Own write: shown at once, whatever the replica has replayed.
    assert_eq!(price_seen(&app, id, None).await, json!(10_000));

    // Freeze the replica, then change the row behind the app's back (no instance wrote it, so
    // none waits for the replica): a token-free read shows the replica's value, an admin read
    // the primary's.
    let paused = ReplayPaused::start(&database).await;
    app.db()
        .query_i64("update product set price = 7777 where id = $1 returning price", &[id])
        .await;
    let admin = app.admin_token().await;
    assert_eq!(
        price_seen(&app, id, None).await,
        json!(10_000),
        "token-free reads come from the replica"
    );
    assert_eq!(
        price_seen(&app, id, Some(&admin)).await,
        json!(7777),
        "admin reads come from the primary"
    );

    // A write through the instance while the replica is frozen shows in its next read
    // (the replica is behind it, so the read goes to the primary), in the list too.
    app.restock(id, 5).await.expect_status(200);
    let seen = app.product(id).await.json(200);
    assert_eq!((seen["stock"].clone(), seen["price"].clone()), (json!(15), json!(7777)));
    let page = app.list_products("").await.json(200);
    assert_eq!(page["items"][0]["stock"], json!(15));

    // Exact things never touch the replica: a charge and a payment while it is frozen.
    let user = app.buyer().await;
    let funded = app.balance(&user).await;
    app.fund(&user, 100_000).await;
    assert_eq!(app.balance(&user).await, funded + 100_000);
    let order = app.new_order(&user, &[(id, 2)]).await;
    app.pay_ok(&user, order, None).await;
    assert_eq!(app.stock_of(id).await, 13);
    assert_eq!(app.balance(&user).await, funded + 100_000 - 2 * 7777);

    // Once it replays again, the replica serves the reads and shows everything.
    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if app.stock_of(id).await == 13 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.db().assert_invariants().await;
}
