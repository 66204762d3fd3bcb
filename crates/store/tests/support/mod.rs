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

use ecommerce_domain::account::{NewUser, Role};
use ecommerce_domain::catalog::{NewProduct, Product};
use ecommerce_domain::coupon::{Coupon, DiscountType, NewCoupon};
use ecommerce_domain::order::{LineRequest, Order};
use ecommerce_domain::paging::Page;
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::usecase::{self, Actor, OrderSource, Settled};
use ecommerce_domain::{CouponId, Error, OrderId, ProductId, StoreError, Timestamp, UserCouponId, UserId};
use ecommerce_store::{PgStore, PoolOptions, SqliteStore};

/// Small pools: the PostgreSQL server allows 100 connections and tests run in parallel.
pub const POOL: PoolOptions = PoolOptions { max_connections: 5 };

/// An engine under test: how to open it, and a peek below the port where a rule has no read.
pub trait Engine: Store {
    fn open(url: &str) -> impl Future<Output = Result<Self, StoreError>> + Send;
    /// What is left in each counter row of a coupon, by shard number.
    fn coupon_shards(&self, coupon: CouponId) -> impl Future<Output = Vec<i64>> + Send;
}

const SHARDS_SQL: &str = "select remaining from coupon_shard where coupon_id = $1 order by shard";

impl Engine for PgStore {
    async fn open(url: &str) -> Result<Self, StoreError> {
        PgStore::connect(url, POOL).await
    }

    async fn coupon_shards(&self, coupon: CouponId) -> Vec<i64> {
        sqlx::query_scalar(SHARDS_SQL)
            .bind(coupon)
            .fetch_all(self.pool())
            .await
            .expect("read coupon shards")
    }
}

impl Engine for SqliteStore {
    async fn open(url: &str) -> Result<Self, StoreError> {
        SqliteStore::connect(url, POOL).await
    }

    async fn coupon_shards(&self, coupon: CouponId) -> Vec<i64> {
        sqlx::query_scalar(SHARDS_SQL)
            .bind(coupon)
            .fetch_all(self.pool())
            .await
            .expect("read coupon shards")
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
    let id = usecase::sign_up(&mut tx, &new_user(email), T0).await.expect("sign up");
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
    let receipt = usecase::charge(&mut tx, user, amount, T0).await.expect("charge");
    tx.commit().await.expect("commit");
    receipt.balance
}

pub async fn product<S: Store>(store: &S, name: &str, price: i64, stock: i64) -> Product {
    let mut tx = store.begin().await.expect("begin");
    let new = NewProduct::parse(name, price, stock).expect("valid product");
    let product = tx.insert_product(&new, T0).await.expect("insert product");
    tx.commit().await.expect("commit");
    product
}

pub async fn coupon<S: Store>(store: &S, kind: DiscountType, value: i64, total: i64, valid_for_seconds: i64) -> Coupon {
    let mut tx = store.begin().await.expect("begin");
    let new = NewCoupon::parse("Winter sale", kind, value, total, valid_for_seconds).expect("valid coupon");
    let coupon = tx.insert_coupon(&new, T0).await.expect("insert coupon");
    tx.commit().await.expect("commit");
    coupon
}

/// Issues `coupon` to `user` at [`T0`] through the use case.
pub async fn issue<S: Store>(store: &S, user: UserId, coupon: &Coupon) -> UserCouponId {
    let mut tx = store.begin().await.expect("begin");
    let id = usecase::issue_coupon(&mut tx, user, coupon, T0, 0)
        .await
        .expect("issue coupon");
    tx.commit().await.expect("commit");
    id
}

/// A direct order of `lines` (product, quantity) made at `now`.
pub async fn order<S: Store>(store: &S, user: UserId, lines: &[(ProductId, i64)], now: Timestamp) -> Order {
    let lines = lines
        .iter()
        .map(|&(product_id, quantity)| LineRequest { product_id, quantity })
        .collect();
    let mut tx = store.begin().await.expect("begin");
    let order = usecase::create_order(&mut tx, user, &OrderSource::Lines(lines), now, TTL)
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
    let settled = usecase::pay(&mut tx, order, owner(user), coupon, now).await?;
    tx.commit().await.expect("commit");
    Ok(settled)
}

pub async fn refund<S: Store>(store: &S, order: OrderId, user: UserId, now: Timestamp) -> Result<Settled, Error> {
    let mut tx = store.begin().await.expect("begin");
    let settled = usecase::refund(&mut tx, order, owner(user), now).await?;
    tx.commit().await.expect("commit");
    Ok(settled)
}

pub async fn cancel<S: Store>(store: &S, order: OrderId, user: UserId, now: Timestamp) -> Result<Order, Error> {
    let mut tx = store.begin().await.expect("begin");
    let cancelled = usecase::cancel(&mut tx, order, owner(user), now).await?;
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

pub async fn balance<S: Store>(store: &S, user: UserId) -> i64 {
    store.balance(user).await.expect("read balance").expect("user exists")
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
