//! Harness of the storage conformance suite: a fresh database per test on each engine, and the
//! small fixtures the tests build their worlds from.
//!
//! The database lifecycle is the workspace's test kit (`ecommerce_testkit::TestDb`): SQLite gets
//! a new file in its own temporary folder, PostgreSQL a fresh database on the server named by
//! `ECOMMERCE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); both are
//! removed when the test ends, also on panic. When PostgreSQL is unreachable its half is
//! skipped, unless `CI=true`, where it fails.

#![allow(dead_code)] // not every test binary uses every fixture

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use ecommerce_domain::account::{self, Actor, Addressed, NewUser, Role};
use ecommerce_domain::catalog::{self, NewProduct, Product};
use ecommerce_domain::coupon::{self, Coupon, CouponRequest, DiscountType, NewCoupon};
use ecommerce_domain::order::{self, LineRequest, Order, OrderSource};
use ecommerce_domain::paging::Page;
use ecommerce_domain::payment::{self, Settled};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::wallet;
use ecommerce_domain::{CouponId, Error, Krw, OrderId, ProductId, StoreError, Timestamp, UserCouponId, UserId};
use ecommerce_store::{PgStore, PoolOptions, SqliteStore};

/// Small pools: the PostgreSQL server allows 100 connections and tests run in parallel.
pub const POOL: PoolOptions = PoolOptions { max_connections: 5 };

/// An engine under test: how to open it, and a peek below the port where a rule has no read.
pub trait Engine: Store {
    fn open(url: &str) -> impl Future<Output = Result<Self, StoreError>> + Send;
    /// What is left in each counter row of a coupon, by shard number.
    fn coupon_shards(&self, coupon: CouponId) -> impl Future<Output = Vec<i64>> + Send;
    /// Runs a statement below the port, to put the database in a state no code path makes.
    fn execute(&self, sql: &'static str) -> impl Future<Output = ()> + Send;
}

const SHARDS_SQL: &str = "select remaining from coupon_shard where coupon_id = $1 order by shard";

impl Engine for PgStore {
    async fn open(url: &str) -> Result<Self, StoreError> {
        PgStore::connect(url, POOL).await
    }

    async fn coupon_shards(&self, coupon: CouponId) -> Vec<i64> {
        sqlx::query_scalar(SHARDS_SQL)
            .bind(coupon.0)
            .fetch_all(self.pool())
            .await
            .expect("read coupon shards")
    }

    async fn execute(&self, sql: &'static str) {
        sqlx::query(sql).execute(self.pool()).await.expect("execute");
    }
}

impl Engine for SqliteStore {
    async fn open(url: &str) -> Result<Self, StoreError> {
        SqliteStore::connect(url, POOL).await
    }

    async fn coupon_shards(&self, coupon: CouponId) -> Vec<i64> {
        sqlx::query_scalar(SHARDS_SQL)
            .bind(coupon.0)
            .fetch_all(self.pool())
            .await
            .expect("read coupon shards")
    }

    async fn execute(&self, sql: &'static str) {
        sqlx::query(sql).execute(self.pool()).await.expect("execute");
    }
}

/// A fresh, empty database ([`ecommerce_testkit::TestDb`], dropped with the value);
/// [`TestDb::connect`] opens (and migrates) it like a server would.
pub struct TestDb<S> {
    pub url: String,
    _db: ecommerce_testkit::TestDb,
    engine: PhantomData<fn() -> S>,
}

impl<S: Engine> TestDb<S> {
    pub async fn connect(&self) -> S {
        S::open(&self.url).await.expect("connect to the test database")
    }
}

/// Runs `test` on a fresh database of `engine`, or skips it when the engine is unavailable
/// (PostgreSQL unreachable and `CI` not `true`).
async fn run<S, F, Fut>(engine: ecommerce_testkit::Engine, test: F)
where
    F: FnOnce(TestDb<S>) -> Fut,
    Fut: Future<Output = ()>,
{
    if !engine.available().await {
        return;
    }
    let db = ecommerce_testkit::TestDb::create(engine).await;
    test(TestDb {
        url: db.url().to_owned(),
        _db: db,
        engine: PhantomData,
    })
    .await;
}

pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb<SqliteStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    run(ecommerce_testkit::Engine::Sqlite, test).await;
}

pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb<PgStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    run(ecommerce_testkit::Engine::Postgres, test).await;
}

/// Generates, for each generic test `name<S: Engine>(TestDb<S>)`, a module `name` with the
/// tests `sqlite` and `postgres` (so `cargo test name` runs both, `cargo test postgres` one engine).
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $crate::support::run_sqlite(super::$name::<ecommerce_store::SqliteStore>).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $crate::support::run_postgres(super::$name::<ecommerce_store::PgStore>).await;
            }
        }
    )*};
}

/// Like [`conformance!`] for rules that only the multi-instance engine promises.
#[macro_export]
macro_rules! postgres_only {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $crate::support::run_postgres(super::$name::<ecommerce_store::PgStore>).await;
            }
        }
    )*};
}

// ---------------------------------------------------------------------------------------------
// Fixtures. Every test runs on a fixed clock so that expiry and sales hours are exact.

/// The instant every test starts at (2027-01-15, half past an hour, so that an order's whole
/// life falls in one sales hour).
pub const T0: Timestamp = Timestamp(1_800_001_800_000);
/// Order time to live in seconds, as configured by default.
pub const TTL: i64 = 900;

/// `seconds` after [`T0`].
pub fn at(seconds: i64) -> Timestamp {
    T0.plus_seconds(seconds)
}

pub fn page(after: Option<i64>, limit: i64) -> Page {
    Page { after, limit }
}

pub fn owner(user: UserId) -> Actor {
    Actor {
        user_id: user,
        is_admin: false,
    }
}

/// `user` addressing their own account.
pub fn own(user: UserId) -> Addressed {
    Addressed {
        actor: owner(user),
        user_id: user,
    }
}

/// An admin (who need not exist) addressing `user`, so that the use case asks the store whether
/// `user` exists.
pub fn by_admin(user: UserId) -> Addressed {
    Addressed {
        actor: Actor {
            user_id: UserId(i64::MAX),
            is_admin: true,
        },
        user_id: user,
    }
}

/// A fresh event id for the outbox.
pub fn event_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("event-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A coupon definition as an admin would send it, named "Winter sale".
pub fn new_coupon(kind: DiscountType, value: i64, total: i64, valid_for_seconds: i64) -> NewCoupon {
    NewCoupon::parse(CouponRequest {
        name: "Winter sale",
        discount_type: kind,
        discount_value: value,
        total_quantity: total,
        valid_for_seconds,
        issue_starts_at: None,
        issue_ends_at: None,
    })
    .expect("valid coupon")
}

pub fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        password_hash: format!("hash of {email}"),
        name: "Kim".to_owned(),
        role: Role::User,
    }
}

pub async fn user<S: Store>(store: &S, email: &str) -> UserId {
    let mut tx = store.begin().await.expect("begin");
    let id = account::sign_up(&mut tx, &new_user(email), T0).await.expect("sign up");
    tx.commit().await.expect("commit");
    id
}

/// A user with `balance` KRW charged (in charges of at most 1,000,000).
pub async fn user_with_balance<S: Store>(store: &S, email: &str, balance: i64) -> UserId {
    let id = user(store, email).await;
    let mut left = balance;
    while left > 0 {
        charge(store, id, left.min(1_000_000)).await;
        left -= 1_000_000;
    }
    id
}

pub async fn charge<S: Store>(store: &S, user: UserId, amount: i64) -> i64 {
    let mut tx = store.begin().await.expect("begin");
    let receipt = wallet::charge(&mut tx, own(user), Krw(amount), T0)
        .await
        .expect("charge");
    tx.commit().await.expect("commit");
    receipt.balance.0
}

pub async fn product<S: Store>(store: &S, name: &str, price: i64, stock: i64) -> Product {
    let mut tx = store.begin().await.expect("begin");
    let new = NewProduct::simple(name, Krw(price), stock).expect("valid product");
    let product = catalog::create_product(&mut tx, &new, T0)
        .await
        .expect("create product");
    tx.commit().await.expect("commit");
    product
}

pub async fn coupon<S: Store>(store: &S, kind: DiscountType, value: i64, total: i64, valid_for_seconds: i64) -> Coupon {
    let mut tx = store.begin().await.expect("begin");
    let new = new_coupon(kind, value, total, valid_for_seconds);
    let coupon = coupon::create_coupon(&mut tx, &new, T0).await.expect("create coupon");
    tx.commit().await.expect("commit");
    coupon
}

/// Issues `coupon` to `user` at [`T0`] through the use case.
pub async fn issue<S: Store>(store: &S, user: UserId, coupon: &Coupon) -> UserCouponId {
    let mut tx = store.begin().await.expect("begin");
    let issued = coupon::issue_coupon(&mut tx, own(user), coupon, T0, 0)
        .await
        .expect("issue coupon");
    tx.commit().await.expect("commit");
    issued.id
}

/// A direct order of `lines` (product, quantity) made at `now`.
pub async fn order<S: Store>(store: &S, user: UserId, lines: &[(ProductId, i64)], now: Timestamp) -> Order {
    let lines = lines
        .iter()
        .map(|&(product_id, quantity)| LineRequest { product_id, quantity })
        .collect();
    let mut tx = store.begin().await.expect("begin");
    let order = order::create_order(&mut tx, own(user), &OrderSource::Lines(lines), now, TTL)
        .await
        .expect("create order");
    tx.commit().await.expect("commit");
    order
}

/// Pays through the use case as the owner; commits on success, rolls back on failure.
pub async fn pay<S: Store>(
    store: &S,
    order: OrderId,
    user: UserId,
    coupon: Option<UserCouponId>,
    now: Timestamp,
) -> Result<Settled, Error> {
    let mut tx = store.begin().await.expect("begin");
    let settled = payment::pay(&mut tx, order, owner(user), coupon, now, event_id()).await?;
    tx.commit().await.expect("commit");
    Ok(settled)
}

pub async fn refund<S: Store>(store: &S, order: OrderId, user: UserId, now: Timestamp) -> Result<Settled, Error> {
    let mut tx = store.begin().await.expect("begin");
    let settled = payment::refund(&mut tx, order, owner(user), now, event_id()).await?;
    tx.commit().await.expect("commit");
    Ok(settled)
}

pub async fn cancel<S: Store>(store: &S, order: OrderId, user: UserId, now: Timestamp) -> Result<Order, Error> {
    let mut tx = store.begin().await.expect("begin");
    let cancelled = order::cancel_order(&mut tx, order, owner(user), now).await?;
    tx.commit().await.expect("commit");
    Ok(cancelled)
}

pub async fn stock<S: Store>(store: &S, product: ProductId) -> i64 {
    store
        .product(product)
        .await
        .expect("read product")
        .expect("product exists")
        .stock
}

/// How many of the coupon are left to issue.
pub async fn remaining<S: Store>(store: &S, coupon: CouponId) -> i64 {
    store
        .coupon(coupon)
        .await
        .expect("read coupon")
        .expect("coupon exists")
        .remaining_quantity
}

pub async fn balance<S: Store>(store: &S, user: UserId) -> i64 {
    store.balance(user).await.expect("read balance").expect("user exists").0
}

/// Joins every task, re-raising the first panic.
pub async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => panic!("task failed: {err}"),
            },
        }
    }
    results
}

/// An id of the same kind that names nothing in these small test worlds.
pub trait Unknown {
    fn unknown(self) -> Self;
}

macro_rules! unknown_ids {
    ($($id:ident),+) => {$(
        impl Unknown for $id {
            fn unknown(self) -> Self {
                $id(self.0 + 1000)
            }
        }
    )+};
}

unknown_ids!(UserId, ProductId, OrderId, CouponId, UserCouponId);
