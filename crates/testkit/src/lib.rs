//! The test kit of the workspace (dev-only): test databases, the black-box server harness,
//! typed HTTP helpers for every route, and the invariant checks.
//!
//! - [`TestDb`] is a fresh database per test: an SQLite file in its own temporary folder, or a
//!   uniquely named PostgreSQL database, dropped when the test ends (see [`db`]).
//! - [`TestApp`] is one or more real `ecommerce` processes on one [`TestDb`], all with the same
//!   admin ([`ADMIN_EMAIL`], [`ADMIN_PASSWORD`]) and JWT secret. Each instance binds
//!   `127.0.0.1:0` and is ready when it prints `ecommerce listening on http://…` on stdout: the
//!   harness reads that line and never sleeps. Servers start with the acceptance runs' settings:
//!   `ECOMMERCE_RATE_LIMIT_AUTH=0`, `ECOMMERCE_RATE_LIMIT_USER=0`, `ECOMMERCE_CATALOG_CACHE_MS=0`
//!   (override with [`TestAppBuilder::env`]). A server's stderr (filter `ECOMMERCE_TEST_LOG`,
//!   default `info`) is printed when the test panics.
//! - [`routes`] has one helper per route; [`json`] reads ids, pages and timestamps.
//! - [`invariants`] checks `DESIGN.md`'s invariants in a database, for tests and for `loadgen`.
//! - [`engine_tests!`] and [`postgres_tests!`] list test functions by name and generate
//!   `name::sqlite` / `name::postgres` tests, so test bodies are plain `async fn`s that rustfmt
//!   formats:
//!
//! ```ignore
//! use ecommerce_testkit::*;
//!
//! engine_tests!(a_new_user_has_a_zero_balance, three_instances_share_one_database);
//!
//! async fn a_new_user_has_a_zero_balance(app: TestApp) {
//!     let user = app.create_user().await;
//!     assert_eq!(app.balance(&user).await, 0);
//! }
//!
//! async fn three_instances_share_one_database(engine: Engine) {
//!     let app = TestApp::builder(engine).instances(3).spawn().await;
//!     // ...
//! }
//! ```

use std::future::Future;

pub mod app;
pub mod db;
pub mod invariants;
pub mod json;
pub mod response;
pub mod routes;
pub mod server;

pub use app::{Method, TestApp, TestAppBuilder, TestUser};
pub use db::{Engine, ProductWriteBlock, TestDb, pg_admin_execute, pg_admin_url, unique_suffix};
pub use json::*;
pub use response::{Fetch, TestResponse};
pub use routes::{cart_item_path, cart_path, coupon_body, draw_body, orders_path, rfc3339_in};
pub use serde_json::{Value, json};
pub use server::{server_binary, server_command, use_server_binary};

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
pub const SERVER_DB_MAX_CONNECTIONS: u32 = 8;

/// What a test listed in [`engine_tests!`] receives: a [`TestApp`] with one instance and
/// default settings, or the bare [`Engine`] to build its own.
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

/// Lists test functions `async fn name(app: TestApp)` or `async fn name(engine: Engine)` and
/// runs each on both engines: a test `name` becomes the tests `name::sqlite` and
/// `name::postgres` (filter with `-E 'test(postgres)'`).
#[macro_export]
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
                $crate::run_on($crate::Engine::Sqlite, super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
                $crate::run_on($crate::Engine::Postgres, super::$name).await;
            }
        }
    )*};
}

/// Like [`engine_tests!`] on PostgreSQL only (several instances, real row locks): a test
/// `name` becomes `name::postgres`.
#[macro_export]
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::use_server_binary(env!("CARGO_BIN_EXE_ecommerce"));
                $crate::run_on($crate::Engine::Postgres, super::$name).await;
            }
        }
    )*};
}
