//! Black-box test harness: runs the real `ecommerce` binary against a fresh database and talks
//! to it over HTTP, exactly as a client would.
//!
//! - [`TestDb`] is a fresh database per test: an SQLite file in its own temporary directory, or a
//!   uniquely named PostgreSQL database (created through `ECOMMERCE_TEST_PG_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`). It is dropped when the test ends, after
//!   every server on it has been killed.
//! - [`TestApp`] is one or more server instances on one [`TestDb`], all with the same admin
//!   ([`ADMIN_EMAIL`], [`ADMIN_PASSWORD`]) and JWT secret. Each instance binds `127.0.0.1:0` and
//!   is ready when it prints `ecommerce listening on http://…` on stdout: the harness reads that
//!   line and never sleeps. Requests made through the helpers go to the instances round-robin.
//! - [`TestResponse`] is an answer with its status, headers and JSON body, and
//!   [`TestResponse::assert_problem`] checks an RFC 9457 error.
//! - [`engine_tests!`](crate::engine_tests) writes a test once and runs it on both engines, as
//!   `name::sqlite` and `name::postgres`; [`postgres_tests!`](crate::postgres_tests) on
//!   PostgreSQL only (several instances, real row locks).
//!
//! When PostgreSQL is unreachable, PostgreSQL tests print a skip note and pass, unless `CI=true`,
//! where they fail. A server's stderr (its logs, filter `ECOMMERCE_TEST_LOG`, default `info`) is
//! kept and printed when a test panics. Servers never outlive their test: they are killed and
//! reaped when the [`TestApp`] drops, before its database is dropped.
//!
//! rustfmt does not format inside the test macros' braces; to format a test file, rename each
//! `engine_tests! {` to `mod tmp {` for the run (the macros accept the trailing comma rustfmt
//! adds to long signatures).
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! engine_tests! {
//!     async fn a_new_user_has_a_zero_balance(app: TestApp) {
//!         let user = app.create_user().await;
//!         assert_eq!(app.balance(&user).await, 0);
//!     }
//!
//!     async fn three_instances_share_one_database(engine: Engine) {
//!         let app = TestApp::builder(engine).instances(3).spawn().await;
//!         // ...
//!     }
//! }
//! ```
#![allow(dead_code)] // each test crate uses a different part of the harness

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use reqwest::Method;
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
pub use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// Email of the admin every test server is started with.
pub const ADMIN_EMAIL: &str = "admin@ecommerce.test";
/// Password of the admin every test server is started with.
pub const ADMIN_PASSWORD: &str = "admin-password-1234";
/// Token signing secret shared by every instance of a test app.
pub const JWT_SECRET: &str = "black-box-test-jwt-secret-0123456789abcdef";
/// Password of the users made by [`TestApp::create_user`].
pub const USER_PASSWORD: &str = "user-password-1234";

/// Connection pool size of each test server: PostgreSQL allows 100 connections in all and test
/// binaries run in parallel.
const SERVER_DB_MAX_CONNECTIONS: &str = "8";
/// How long a server may take to print its listening line (migrations, admin hashing, a busy
/// machine running many tests at once).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one HTTP answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of a server's stderr are kept for the failure report.
const STDERR_TAIL_LINES: usize = 200;
const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// ---------------------------------------------------------------------------------------------
// Engines and databases
// ---------------------------------------------------------------------------------------------

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
                let probe = PROBE
                    .get_or_init(|| async {
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
                    })
                    .await;
                match probe {
                    Ok(()) => true,
                    Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                        panic!("PostgreSQL is required when CI=true: {why}")
                    }
                    Err(why) => {
                        eprintln!("SKIPPED (PostgreSQL unavailable): {why}");
                        false
                    }
                }
            }
        }
    }
}

/// The URL of the PostgreSQL maintenance database that test databases are created through.
pub fn pg_admin_url() -> String {
    std::env::var("ECOMMERCE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// A name no other test (in this or another process) uses at the same time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{n}_{nanos:x}", std::process::id())
}

/// A fresh, empty database for one test; dropped with the value.
///
/// Also owns a temporary directory (the SQLite file, the event files of the servers), removed
/// on drop.
pub struct TestDb {
    engine: Engine,
    url: String,
    /// The PostgreSQL database name, to drop.
    pg_name: Option<String>,
    dir: TempDir,
}

impl TestDb {
    /// Creates the database. Panics when the engine is unreachable: check
    /// [`Engine::available`] first (the [`engine_tests!`](crate::engine_tests) macro does).
    pub async fn create(engine: Engine) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("ecommerce-test-")
            .tempdir()
            .expect("create a temporary directory");
        match engine {
            Engine::Sqlite => {
                let path = dir.path().join("ecommerce.db");
                let url = format!("sqlite://{}", path.display());
                TestDb {
                    engine,
                    url,
                    pg_name: None,
                    dir,
                }
            }
            Engine::Postgres => {
                let name = format!("ecommerce_test_{}", unique_suffix());
                let admin_url = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|err| panic!("connect to {admin_url}: {err}"));
                conn.execute(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
                    .await
                    .unwrap_or_else(|err| panic!("create database {name}: {err}"));
                let _ = conn.close().await;
                let url = database_url_with_name(&admin_url, &name);
                TestDb {
                    engine,
                    url,
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

    /// The `DATABASE_URL` the servers get.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A directory that lives as long as the database.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A small pool straight to the PostgreSQL database, to check invariants behind the server.
    pub async fn pg_pool(&self) -> sqlx::PgPool {
        assert_eq!(self.engine, Engine::Postgres, "pg_pool on an SQLite test database");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// A small pool straight to the SQLite database, to check invariants behind the server.
    pub async fn sqlite_pool(&self) -> sqlx::SqlitePool {
        assert_eq!(self.engine, Engine::Sqlite, "sqlite_pool on a PostgreSQL test database");
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .expect("open the test database")
    }

    /// Runs a query returning one integer (`bigint`) on either engine, with integer binds.
    /// Write `$1`-style placeholders; wrap sums in `coalesce(…, 0)` and cast PostgreSQL sums
    /// (`numeric`) with `::bigint`.
    ///
    /// ```ignore
    /// let sum = db.query_i64("select coalesce(sum(amount), 0)::bigint from balance_entry where user_id = $1", &[id]).await;
    /// ```
    pub async fn query_i64(&self, sql: &str, binds: &[i64]) -> i64 {
        let sql = sql.to_owned();
        match self.engine {
            Engine::Postgres => {
                let pool = self.pg_pool().await;
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()));
                for bind in binds {
                    query = query.bind(*bind);
                }
                let value = query
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|err| panic!("{sql}: {err}"));
                pool.close().await;
                value
            }
            Engine::Sqlite => {
                // SQLite has no `::bigint` casts; they are not needed there.
                let sql = sql.replace("::bigint", "");
                let pool = self.sqlite_pool().await;
                let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()));
                for bind in binds {
                    query = query.bind(*bind);
                }
                let value = query
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|err| panic!("{sql}: {err}"));
                pool.close().await;
                value
            }
        }
    }
}

/// `postgres://user@host:port/old?params` with the database name replaced.
fn database_url_with_name(url: &str, name: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, Some(params)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match params {
        Some(params) => format!("{host_part}/{name}?{params}"),
        None => format!("{host_part}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin_url = pg_admin_url();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a runtime of
        // our own on another thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime");
            runtime.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                let sql = format!(r#"drop database if exists "{name}" with (force)"#);
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test database: {dropped:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------------------------

/// One running `ecommerce` process, killed (and reaped) on drop.
struct Server {
    child: Child,
    base_url: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    async fn start(db: &TestDb, index: usize, extra_env: &[(String, String)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecommerce"));
        // Nothing from the developer's environment may redirect the test server.
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|key| key.starts_with("ECOMMERCE_") || key == "DATABASE_URL" || key == "NATS_URL")
            {
                command.env_remove(&key);
            }
        }
        let log_filter = std::env::var("ECOMMERCE_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
        command
            .env("ECOMMERCE_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", db.url())
            .env("ECOMMERCE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ECOMMERCE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ECOMMERCE_JWT_SECRET", JWT_SECRET)
            .env("ECOMMERCE_DB_MAX_CONNECTIONS", SERVER_DB_MAX_CONNECTIONS)
            .env("ECOMMERCE_EVENTS_FILE", db.dir().join(format!("events-{index}.jsonl")))
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", env!("CARGO_BIN_EXE_ecommerce")));

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || collect_lines(stderr, &tail));

        // The first stdout line says where the server listens; later ones (there should be
        // none) are kept with the logs so that the pipe never fills.
        let stdout = child.stdout.take().expect("piped stdout");
        let tail = Arc::clone(&stderr_tail);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = ready_tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                push_line(&tail, format!("[stdout] {line}"));
            }
        });

        let mut server = Server {
            child,
            base_url: String::new(),
            stderr_tail,
        };
        let first_line = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let status = server.child.wait().ok();
                panic!(
                    "server {index} exited ({status:?}) before printing its listening line; its stderr:\n{}",
                    server.stderr_text()
                )
            }
            Err(_) => panic!(
                "server {index} printed no listening line within {STARTUP_TIMEOUT:?}; its stderr:\n{}",
                server.stderr_text()
            ),
        };
        let base_url = first_line
            .strip_prefix("ecommerce listening on ")
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| {
                panic!(
                    "server {index}: first stdout line should be `ecommerce listening on http://127.0.0.1:PORT`, got {first_line:?}; stderr:\n{}",
                    server.stderr_text()
                )
            });
        server.base_url = base_url.trim_end_matches('/').to_owned();
        server
    }

    fn stderr_text(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn collect_lines(source: impl Read, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(source).lines().map_while(Result::ok) {
        push_line(tail, line);
    }
}

fn push_line(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.len() == STDERR_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The application under test
// ---------------------------------------------------------------------------------------------

/// How to start a [`TestApp`]: engine, number of instances, extra environment.
pub struct TestAppBuilder {
    engine: Engine,
    instances: usize,
    env: Vec<(String, String)>,
}

impl TestAppBuilder {
    /// How many server instances share the database (default 1). They start at the same time.
    pub fn instances(mut self, count: usize) -> Self {
        assert!(count >= 1, "a test app needs at least one instance");
        self.instances = count;
        self
    }

    /// An extra environment variable for every instance, e.g. `ECOMMERCE_ORDER_TTL_SECONDS`.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = TestDb::create(self.engine).await;
        let starts = (0..self.instances).map(|index| Server::start(&db, index, &self.env));
        let servers = futures_util::future::join_all(starts).await;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        TestApp {
            servers,
            client,
            next_instance: AtomicUsize::new(0),
            admin: OnceCell::new(),
            env: self.env,
            db,
        }
    }
}

/// One or more servers on one fresh database, and typed helpers to call them.
///
/// Helpers send each request to the next instance, round-robin; [`TestApp::request_on`] picks
/// one. Servers are killed before the database is dropped.
pub struct TestApp {
    // Field order is drop order: servers first, then the database they use.
    servers: Vec<Server>,
    /// The HTTP client, for requests the helpers do not cover.
    pub client: reqwest::Client,
    next_instance: AtomicUsize,
    admin: OnceCell<TestUser>,
    env: Vec<(String, String)>,
    db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (index, server) in self.servers.iter().enumerate() {
                eprintln!(
                    "----- stderr of server {index} ({}) -----\n{}",
                    server.base_url,
                    server.stderr_text()
                );
            }
        }
    }
}

/// A signed-up user (or the admin) with a fresh access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestApp {
    /// One instance on a fresh database.
    pub async fn spawn(engine: Engine) -> TestApp {
        TestApp::builder(engine).spawn().await
    }

    /// `count` instances on one fresh database.
    pub async fn spawn_n(engine: Engine, count: usize) -> TestApp {
        TestApp::builder(engine).instances(count).spawn().await
    }

    pub fn builder(engine: Engine) -> TestAppBuilder {
        TestAppBuilder {
            engine,
            instances: 1,
            env: Vec::new(),
        }
    }

    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    pub fn db(&self) -> &TestDb {
        &self.db
    }

    pub fn instance_count(&self) -> usize {
        self.servers.len()
    }

    /// `http://127.0.0.1:PORT` of instance `index`.
    pub fn base_url(&self, index: usize) -> &str {
        &self.servers[index].base_url
    }

    /// The JSON-lines event file of instance `index` (used when `NATS_URL` is unset).
    pub fn events_file(&self, index: usize) -> PathBuf {
        self.db.dir().join(format!("events-{index}.jsonl"))
    }

    /// Starts one more instance on the same database; returns its index.
    pub async fn add_instance(&mut self) -> usize {
        let index = self.servers.len();
        let server = Server::start(&self.db, index, &self.env).await;
        self.servers.push(server);
        index
    }

    /// Kills instance `index` (its slot stays, so indexes do not shift; requests to it fail).
    pub fn kill_instance(&mut self, index: usize) {
        let server = &mut self.servers[index];
        let _ = server.child.kill();
        let _ = server.child.wait();
    }

    fn pick_instance(&self) -> usize {
        self.next_instance.fetch_add(1, Ordering::Relaxed) % self.servers.len()
    }

    /// A request to the next instance (round-robin). `path` starts with `/`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_on(self.pick_instance(), method, path)
    }

    /// A request to instance `index`.
    pub fn request_on(&self, index: usize, method: Method, path: &str) -> RequestBuilder {
        assert!(path.starts_with('/'), "path {path:?} must start with /");
        self.client
            .request(method, format!("{}{path}", self.servers[index].base_url))
    }

    /// `GET path`, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::GET, path), token).fetch().await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::POST, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `POST path` with no body at all.
    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::POST, path), token).fetch().await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::PATCH, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        with_token(self.request(Method::PUT, path), token)
            .json(body)
            .fetch()
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        with_token(self.request(Method::DELETE, path), token).fetch().await
    }

    // ----- accounts ----------------------------------------------------------------------

    /// `POST /api/v1/users` with the three fields.
    pub async fn sign_up(&self, email: &str, password: &str, name: &str) -> TestResponse {
        let body = json!({"email": email, "password": password, "name": name});
        self.post("/api/v1/users", None, &body).await
    }

    /// `POST /api/v1/auth/token`.
    pub async fn token(&self, email: &str, password: &str) -> TestResponse {
        let body = json!({"email": email, "password": password});
        self.post("/api/v1/auth/token", None, &body).await
    }

    /// Signs up a new user with a unique email and [`USER_PASSWORD`], and logs it in.
    pub async fn create_user(&self) -> TestUser {
        let email = unique_email();
        self.sign_up(&email, USER_PASSWORD, "Test User")
            .await
            .expect_status(201);
        self.log_in(&email, USER_PASSWORD).await
    }

    /// Logs in; panics unless the answer is 200 with a token.
    pub async fn log_in(&self, email: &str, password: &str) -> TestUser {
        let response = self.token(email, password).await;
        let body = response.expect_status(200);
        TestUser {
            id: body["user_id"].as_i64().expect("user_id in the token answer"),
            email: email.to_owned(),
            password: password.to_owned(),
            token: body["access_token"]
                .as_str()
                .expect("access_token in the token answer")
                .to_owned(),
        }
    }

    /// The admin the servers were started with, logged in once per test app.
    pub async fn admin(&self) -> &TestUser {
        self.admin
            .get_or_init(|| self.log_in(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await
    }

    // ----- catalog -----------------------------------------------------------------------

    /// Creates a product as the admin; panics unless 201. Returns the product.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> Value {
        let body = json!({"name": name, "price": price, "stock": stock});
        let token = self.admin().await.token.clone();
        self.post("/api/v1/admin/products", Some(&token), &body)
            .await
            .expect_status(201)
            .clone()
    }

    /// `PATCH /api/v1/admin/products/{id}` as the admin.
    pub async fn patch_product(&self, product_id: i64, body: &Value) -> TestResponse {
        let token = self.admin().await.token.clone();
        let path = format!("/api/v1/admin/products/{product_id}");
        self.patch(&path, Some(&token), body).await
    }

    /// `POST /api/v1/admin/products/{id}/restock` as the admin.
    pub async fn restock(&self, product_id: i64, quantity: i64) -> TestResponse {
        let token = self.admin().await.token.clone();
        let path = format!("/api/v1/admin/products/{product_id}/restock");
        self.post(&path, Some(&token), &json!({"quantity": quantity})).await
    }

    /// `GET /api/v1/products/{id}` without a token.
    pub async fn product(&self, product_id: i64) -> TestResponse {
        self.get(&format!("/api/v1/products/{product_id}"), None).await
    }

    /// `GET /api/v1/products{query}` without a token; `query` is `""` or `"?limit=…"`.
    pub async fn list_products(&self, query: &str) -> TestResponse {
        self.get(&format!("/api/v1/products{query}"), None).await
    }

    // ----- balance -----------------------------------------------------------------------

    /// `POST /api/v1/users/{user.id}/balance/charges {"amount"}` with `Idempotency-Key: key`.
    pub async fn charge(&self, user: &TestUser, amount: i64, key: &str) -> TestResponse {
        self.charge_on(self.pick_instance(), user, amount, key).await
    }

    /// [`TestApp::charge`] sent to instance `index`.
    pub async fn charge_on(&self, index: usize, user: &TestUser, amount: i64, key: &str) -> TestResponse {
        let path = format!("/api/v1/users/{}/balance/charges", user.id);
        self.request_on(index, Method::POST, &path)
            .bearer_auth(&user.token)
            .header("Idempotency-Key", key)
            .json(&json!({"amount": amount}))
            .fetch()
            .await
    }

    /// The user's balance; panics unless 200.
    pub async fn balance(&self, user: &TestUser) -> i64 {
        let path = format!("/api/v1/users/{}/balance", user.id);
        let response = self.get(&path, Some(&user.token)).await;
        let body = response.expect_status(200);
        assert_eq!(body["user_id"], json!(user.id), "balance of the wrong user: {body}");
        body["balance"].as_i64().expect("balance is an integer")
    }

    /// `GET /api/v1/users/{user.id}/balance/history{query}` as the user.
    pub async fn balance_history(&self, user: &TestUser, query: &str) -> TestResponse {
        let path = format!("/api/v1/users/{}/balance/history{query}", user.id);
        self.get(&path, Some(&user.token)).await
    }

    /// Every page of a list, following `next_after` with `limit` items per page.
    /// `path` has no query string. Panics unless every page is 200.
    pub async fn all_pages(&self, path: &str, token: Option<&str>, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let page_path = match after {
                Some(after) => format!("{path}?limit={limit}&after={after}"),
                None => format!("{path}?limit={limit}"),
            };
            let response = self.get(&page_path, token).await;
            let page = response.expect_status(200);
            let page_items = page["items"].as_array().expect("items is an array");
            items.extend(page_items.iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = Some(next),
                None => return items,
            }
            assert!(items.len() < 100_000, "paging through {path} does not end");
        }
    }
}

fn with_token(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// An email no other user of any test has.
pub fn unique_email() -> String {
    format!("user_{}@example.com", unique_suffix())
}

/// An idempotency key no other request uses.
pub fn unique_key() -> String {
    format!("key-{}", unique_suffix())
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// An HTTP answer: status, headers, raw text and the body parsed as JSON (`Value::Null` when
/// it is empty or not JSON).
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResponse {
    pub async fn from_reqwest(response: reqwest::Response) -> TestResponse {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            text,
            body,
        }
    }

    /// The `Content-Type` header, or `""`.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected status {status}, got {} with body {}",
            self.status, self.text
        );
        &self.body
    }

    /// Asserts an RFC 9457 error: this status, `Content-Type: application/problem+json`, and a
    /// body with string `type`, `title`, `detail`, the same `status` and this `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.body["code"].as_str()),
            (status, Some(code)),
            "expected {status} {code}, got {} with body {}",
            self.status,
            self.text
        );
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "an error must be application/problem+json, got content-type {:?} for {}",
            self.content_type(),
            self.text
        );
        for field in ["type", "title", "detail"] {
            assert!(
                self.body[field].is_string(),
                "problem field {field:?} must be a string in {}",
                self.text
            );
        }
        assert_eq!(
            self.body["status"],
            json!(status),
            "problem `status` must repeat the HTTP status in {}",
            self.text
        );
    }
}

/// Sends a request and collects the answer as a [`TestResponse`].
pub trait Fetch {
    fn fetch(self) -> impl Future<Output = TestResponse> + Send;
}

impl Fetch for RequestBuilder {
    async fn fetch(self) -> TestResponse {
        let response = self.send().await.expect("send the request");
        TestResponse::from_reqwest(response).await
    }
}

// ---------------------------------------------------------------------------------------------
// Running a test on both engines
// ---------------------------------------------------------------------------------------------

/// What a test written with [`engine_tests!`](crate::engine_tests) receives: a [`TestApp`] with
/// one instance and default settings, or the bare [`Engine`] to build its own.
pub trait TestInput: Sized {
    fn prepare(engine: Engine) -> impl Future<Output = Self>;
}

impl TestInput for Engine {
    async fn prepare(engine: Engine) -> Self {
        engine
    }
}

impl TestInput for TestApp {
    async fn prepare(engine: Engine) -> Self {
        TestApp::spawn(engine).await
    }
}

/// Runs `test` on `engine`, or skips it when the engine is unavailable (see
/// [`Engine::available`]).
pub async fn run_on<I, F, Fut>(engine: Engine, test: F)
where
    I: TestInput,
    F: FnOnce(I) -> Fut,
    Fut: Future<Output = ()>,
{
    if !engine.available().await {
        return;
    }
    test(I::prepare(engine).await).await;
}

/// Writes each test once and runs it on both engines: a test `name` becomes the module `name`
/// with the tests `name::sqlite` and `name::postgres` (filter with `cargo test postgres`).
/// The argument is either `app: TestApp` (one instance, default settings) or `engine: Engine`.
///
/// ```ignore
/// engine_tests! {
///     /// Doc comments and attributes are kept.
///     async fn a_new_user_has_a_zero_balance(app: TestApp) { /* … */ }
/// }
/// ```
#[macro_export]
macro_rules! engine_tests {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($arg:ident: $ty:ty $(,)?) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn test($arg: $ty) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::run_on($crate::common::Engine::Sqlite, test).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::run_on($crate::common::Engine::Postgres, test).await;
            }
        }
    )*};
}

/// Like [`engine_tests!`](crate::engine_tests) but on PostgreSQL only (several instances, real
/// row locks): a test `name` becomes `name::postgres`.
#[macro_export]
macro_rules! postgres_tests {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($arg:ident: $ty:ty $(,)?) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn test($arg: $ty) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::run_on($crate::common::Engine::Postgres, test).await;
            }
        }
    )*};
}
