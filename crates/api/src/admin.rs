//! The operators' reads (the console at `/admin/`): every product, coupon, order and account
//! whatever its state, the live figures and the units sold per hour. Admin token only: no token
//! or a bad one is 401, a customer's is 403, before any parameter is looked at.
//!
//! **Live figures** come from two places, each cheap. The database gives what every instance
//! shares: the orders paid per second over the last [`RATE_WINDOW`] (a count on the index of
//! `paid_at`, so it reads only those orders), the outbox backlog and the age of its oldest unsent
//! event (one query on the partial index of unsent events). This instance's own counters
//! ([`LiveCounters`]) give what it served since it started: orders paid, payments refused by
//! reason, and requests, whose rate is the change of the counter since a sample taken by an
//! earlier call about [`RATE_WINDOW`] ago. Behind a load balancer each instance answers its own
//! counters; the figures of the whole shop are their sum (`GET /metrics`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use ecommerce_domain::account::Role;
use ecommerce_domain::admin::{self, Account, HourlySales, SalesWindow};
use ecommerce_domain::catalog::ProductStatus;
use ecommerce_domain::order::OrderStatus;
use ecommerce_domain::store::Store;
use ecommerce_domain::{Timestamp, UserId, check_range};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::catalog::{ProductPage, ProductResponse};
use crate::coupons::{CouponPage, CouponResponse};
use crate::error::Result;
use crate::extract::{Admin, PageQuery, Paging, PathParams, query_rejection};
use crate::openapi::operations;
use crate::orders::{OrderPage, OrderResponse};

operations!(
    list_all_products::<S>,
    list_all_coupons::<S>,
    list_all_orders::<S>,
    find_users::<S>,
    get_user_account::<S>,
    live_figures::<S>,
    hourly_sales::<S>,
);

// ---------------------------------------------------------------------------------------------
// This instance's counters

/// The rates of the live figures are measured over about this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Samples kept for the rates, whatever the number of callers.
const MAX_SAMPLES: usize = 64;

/// What this instance has served since it started, counted as it happens (a few atomic adds per
/// request) and read by `GET /api/v1/admin/live`.
#[derive(Default)]
pub struct LiveCounters {
    requests: AtomicU64,
    orders_paid: AtomicU64,
    /// Refused payments by error code: a handful of codes, so a small map.
    payment_failures: Mutex<BTreeMap<&'static str, u64>>,
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    requests: u64,
}

impl LiveCounters {
    /// One request answered (any route).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// One order paid (not a replayed answer).
    pub fn order_paid(&self) {
        self.orders_paid.fetch_add(1, Ordering::Relaxed);
    }

    /// One payment refused with `code`.
    pub fn payment_failed(&self, code: &'static str) {
        if let Ok(mut failures) = self.payment_failures.lock() {
            *failures.entry(code).or_default() += 1;
        }
    }

    pub fn orders_paid(&self) -> u64 {
        self.orders_paid.load(Ordering::Relaxed)
    }

    pub fn payment_failures(&self) -> BTreeMap<&'static str, u64> {
        self.payment_failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Takes a sample now and answers the requests per second since the oldest sample within
    /// the window (the newest one older than it, so that calls a few seconds apart still measure
    /// over a span). Zero until a sample from an earlier call exists.
    pub fn requests_per_second(&self, now: Instant) -> f64 {
        let current = Sample {
            at: now,
            requests: self.requests.load(Ordering::Relaxed),
        };
        let Ok(mut samples) = self.samples.lock() else {
            return 0.0;
        };
        // Keep the newest sample older than the window as the base; drop the ones before it.
        while samples.len() >= 2 && samples[1].at + RATE_WINDOW <= now {
            samples.pop_front();
        }
        let base = samples.front().copied();
        samples.push_back(current);
        while samples.len() > MAX_SAMPLES {
            samples.pop_front();
        }
        let Some(base) = base else {
            return 0.0;
        };
        let seconds = now.saturating_duration_since(base.at).as_secs_f64();
        if seconds < 0.001 {
            return 0.0;
        }
        current.requests.saturating_sub(base.requests) as f64 / seconds
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// An account as operators see it: with its balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserResponse {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// KRW.
    pub balance: i64,
    pub created_at: String,
}

impl From<Account> for AdminUserResponse {
    fn from(a: Account) -> Self {
        Self {
            id: a.id.0,
            email: a.email,
            name: a.name,
            role: a.role,
            balance: a.balance.0,
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserPage {
    pub items: Vec<AdminUserResponse>,
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// ON_SALE or STOPPED; all when absent.
    pub status: Option<ProductStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminOrderQuery {
    /// Filter by (computed) status.
    pub status: Option<OrderStatus>,
    /// Only this user's orders.
    #[param(minimum = 1)]
    pub user_id: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Only the account with this email (case-insensitive); it must look like an email.
    #[param(max_length = 254)]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    /// When these figures were read.
    pub generated_at: String,
    /// Orders paid through this instance since it started.
    pub orders_paid_total: u64,
    /// Orders paid per second over the last 10 seconds, by every instance (from the database).
    pub orders_paid_per_second: f64,
    /// Payments this instance refused since it started, by error code (codes with none are
    /// absent).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub payment_failures: BTreeMap<&'static str, u64>,
    /// Requests this instance answered per second, over about the last 10 seconds.
    pub requests_per_second: f64,
    /// Events of the outbox not yet delivered (every instance's).
    pub outbox_backlog: i64,
    /// Age of the oldest undelivered event in seconds; null when there is none.
    pub outbox_oldest_unsent_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HourlySalesItem {
    /// The start of the hour, RFC 3339 UTC.
    pub hour: String,
    /// Units sold in orders paid that hour, minus units refunded that hour.
    pub quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HourlySalesResponse {
    pub hours: i64,
    /// One item per hour, oldest first, the current hour last.
    pub items: Vec<HourlySalesItem>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesQuery {
    /// 1 to 168 hours, default 72 (3 days), the current hour included.
    #[param(minimum = 1, maximum = 168)]
    pub hours: Option<i64>,
}

fn product_example() -> serde_json::Value {
    serde_json::json!({"id": 8, "name": "Wool coat", "price": 189000, "stock": 0, "status": "STOPPED"})
}

fn coupon_example() -> serde_json::Value {
    serde_json::json!({
        "id": 4, "name": "Drop 5000", "discount_type": "FIXED", "discount_value": 5000,
        "total_quantity": 500, "remaining_quantity": 0, "valid_for_seconds": 3600
    })
}

fn order_example() -> serde_json::Value {
    serde_json::json!({
        "id": 11, "user_id": 42, "status": "PAID",
        "items": [{"product_id": 7, "name": "Linen shirt", "unit_price": 39000, "quantity": 1, "amount": 39000}],
        "total_amount": 39000, "discount_amount": 0, "paid_amount": 39000, "user_coupon_id": null,
        "created_at": "2026-03-01T09:12:01.250Z", "expires_at": "2026-03-01T09:27:01.250Z",
        "paid_at": "2026-03-01T09:12:44.512Z"
    })
}

fn user_example() -> serde_json::Value {
    serde_json::json!({
        "id": 42, "email": "mina@example.com", "name": "Mina", "role": "USER", "balance": 961000,
        "created_at": "2026-03-01T08:00:00.000Z"
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// List every product (admin)
///
/// Every product whatever its status (or only those with `status`), newest first, paged by
/// `limit` and `after`.
#[utoipa::path(get, path = "/api/v1/admin/products", tag = "admin", params(ProductQuery, PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every product, newest first", body = ProductPage,
            example = json!({"items": [product_example()], "next_after": null})),
    ))]
pub async fn list_all_products<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    query: std::result::Result<Query<ProductQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<ProductPage>> {
    let Query(query) = query.map_err(query_rejection)?;
    let products = app.store.all_products(query.status, page).await?;
    let next_after = page.next_after(&products, |p| p.id.0);
    Ok(axum::Json(ProductPage {
        items: products.into_iter().map(ProductResponse::from).collect(),
        next_after,
    }))
}

/// List every coupon (admin)
///
/// Every coupon, sold-out ones too, with its `remaining_quantity`, newest first.
#[utoipa::path(get, path = "/api/v1/admin/coupons", tag = "admin", params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every coupon, newest first", body = CouponPage,
            example = json!({"items": [coupon_example()], "next_after": null})),
    ))]
pub async fn list_all_coupons<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    Paging(page): Paging,
) -> Result<axum::Json<CouponPage>> {
    let coupons = app.store.all_coupons(page).await?;
    let next_after = page.next_after(&coupons, |c| c.id.0);
    Ok(axum::Json(CouponPage {
        items: coupons.into_iter().map(CouponResponse::from).collect(),
        next_after,
    }))
}

/// List every user's orders (admin)
///
/// Orders of every user, newest first, optionally only those with a `status` (computed: a
/// pending order past `expires_at` is `EXPIRED`) and only those of `user_id` (none for a user
/// that does not exist).
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "admin", params(AdminOrderQuery, PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Orders of every user, newest first", body = OrderPage,
            example = json!({"items": [order_example()], "next_after": null})),
    ))]
pub async fn list_all_orders<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    query: std::result::Result<Query<AdminOrderQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<OrderPage>> {
    let Query(query) = query.map_err(query_rejection)?;
    let now = Timestamp::now();
    let orders = match query.user_id {
        Some(user) => {
            let user = UserId(check_range(user, 1..=i64::MAX, "user_id")?);
            app.store.orders(user, query.status, now, page).await?
        }
        None => app.store.all_orders(query.status, now, page).await?,
    };
    let next_after = page.next_after(&orders, |o| o.id.0);
    Ok(axum::Json(OrderPage {
        items: orders.into_iter().map(|o| OrderResponse::new(o, now)).collect(),
        next_after,
    }))
}

/// List or find users (admin)
///
/// Every account, newest first, with its balance; with `email`, only the account with that
/// email (compared case-insensitively), so a page of one or none.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(UserQuery, PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Accounts, newest first", body = AdminUserPage,
            example = json!({"items": [user_example()], "next_after": null})),
    ))]
pub async fn find_users<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    query: std::result::Result<Query<UserQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<AdminUserPage>> {
    let Query(query) = query.map_err(query_rejection)?;
    let accounts = admin::find_accounts(&app.store, query.email.as_deref(), page).await?;
    let next_after = page.next_after(&accounts, |a| a.id.0);
    Ok(axum::Json(AdminUserPage {
        items: accounts.into_iter().map(AdminUserResponse::from).collect(),
        next_after,
    }))
}

/// Get a user (admin)
///
/// The account with its role, balance and sign-up time.
#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}", tag = "admin",
    params(("user_id" = i64, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = AdminUserResponse, example = user_example),
    ))]
pub async fn get_user_account<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    params: PathParams,
) -> Result<axum::Json<AdminUserResponse>> {
    let id = UserId(params.id("user_id")?);
    Ok(axum::Json(admin::get_account(&app.store, id).await?.into()))
}

/// Live figures (admin)
///
/// What the console's Live page shows. From the database (every instance): orders paid per
/// second over the last 10 seconds, the outbox backlog and the age of its oldest undelivered
/// event. From this instance since it started: orders paid, refused payments by reason, and
/// requests per second over about the last 10 seconds between calls (0 on the first call).
#[utoipa::path(get, path = "/api/v1/admin/live", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The figures now", body = LiveResponse, example = json!({
            "generated_at": "2026-12-01T09:00:00.123Z", "orders_paid_total": 1520,
            "orders_paid_per_second": 2.5, "payment_failures": {"INSUFFICIENT_BALANCE": 4, "OUT_OF_STOCK": 9},
            "requests_per_second": 812.3, "outbox_backlog": 1, "outbox_oldest_unsent_age_seconds": 0.4
        })),
    ))]
pub async fn live_figures<S: Store>(State(app): State<AppState<S>>, _admin: Admin) -> Result<axum::Json<LiveResponse>> {
    let window = RATE_WINDOW.as_secs() as i64;
    let paid_recently = app
        .store
        .orders_paid_since(Timestamp::now().plus_seconds(-window))
        .await?;
    let backlog = app.store.outbox_backlog().await?;
    let now = Timestamp::now();
    Ok(axum::Json(LiveResponse {
        generated_at: now.to_rfc3339(),
        orders_paid_total: app.live.orders_paid(),
        orders_paid_per_second: paid_recently as f64 / window as f64,
        payment_failures: app.live.payment_failures(),
        requests_per_second: app.live.requests_per_second(Instant::now()),
        outbox_backlog: backlog.unsent,
        outbox_oldest_unsent_age_seconds: backlog
            .oldest_created_at
            .map(|oldest| (now.millis() - oldest.millis()).max(0) as f64 / 1000.0),
    }))
}

/// Units sold per hour (admin)
///
/// From the hourly sales figures (paid minus refunded units): one item per hour of the last
/// `hours` (default 72), oldest first, hours without sales at 0.
#[utoipa::path(get, path = "/api/v1/admin/sales/hourly", tag = "admin", params(SalesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Units sold per hour, oldest first", body = HourlySalesResponse,
            example = json!({"hours": 2, "items": [
                {"hour": "2026-12-01T08:00:00.000Z", "quantity": 12},
                {"hour": "2026-12-01T09:00:00.000Z", "quantity": 3}
            ]})),
    ))]
pub async fn hourly_sales<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    query: std::result::Result<Query<SalesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<HourlySalesResponse>> {
    let Query(query) = query.map_err(query_rejection)?;
    let window = SalesWindow::parse(query.hours)?;
    let sales = admin::hourly_sales(&app.store, window, Timestamp::now()).await?;
    Ok(axum::Json(HourlySalesResponse {
        hours: window.hours,
        items: sales.into_iter().map(hour_item).collect(),
    }))
}

fn hour_item(sales: HourlySales) -> HourlySalesItem {
    HourlySalesItem {
        hour: Timestamp(sales.hour.0 * 3_600_000).to_rfc3339(),
        quantity: sales.quantity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_rate_is_zero_until_an_earlier_sample_exists_then_measures_the_change() {
        let live = LiveCounters::default();
        let start = Instant::now();
        assert_eq!(live.requests_per_second(start), 0.0);
        for _ in 0..30 {
            live.request();
        }
        assert_eq!(live.requests_per_second(start + Duration::from_secs(2)), 15.0);
    }

    #[test]
    fn the_request_rate_is_measured_from_the_newest_sample_older_than_the_window() {
        let live = LiveCounters::default();
        let start = Instant::now();
        live.requests_per_second(start);
        for _ in 0..100 {
            live.request();
        }
        live.requests_per_second(start + Duration::from_secs(5));
        live.requests_per_second(start + Duration::from_secs(12));
        // At 20 s the base is the sample of 5 s: the newest one at least 10 s old.
        for _ in 0..30 {
            live.request();
        }
        assert_eq!(live.requests_per_second(start + Duration::from_secs(20)), 2.0);
    }

    #[test]
    fn samples_stay_bounded_whatever_the_number_of_calls() {
        let live = LiveCounters::default();
        let start = Instant::now();
        for i in 0..1_000 {
            live.requests_per_second(start + Duration::from_millis(i));
        }
        assert!(live.samples.lock().map(|s| s.len()).unwrap_or(0) <= MAX_SAMPLES);
    }

    #[test]
    fn paid_orders_and_failures_are_counted_by_code() {
        let live = LiveCounters::default();
        live.order_paid();
        live.payment_failed("OUT_OF_STOCK");
        live.payment_failed("OUT_OF_STOCK");
        live.payment_failed("INSUFFICIENT_BALANCE");
        assert_eq!(live.orders_paid(), 1);
        let failures = live.payment_failures();
        assert_eq!(failures.get("OUT_OF_STOCK"), Some(&2));
        assert_eq!(failures.get("INSUFFICIENT_BALANCE"), Some(&1));
    }
}
