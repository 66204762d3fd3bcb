//! Orders and their life: create (direct or from the cart), pay, cancel, refund, read.
//!
//! **Hot products.** Once a payment fails `OUT_OF_STOCK`, this instance remembers the stock it
//! then read for the product ([`SoldOutGate`]); a payment that needs more than that is refused
//! from reads alone ([`payment::refusal_without_writes`]: the order with its limits and tallies
//! in one statement, then the coupon if one is given), with no transaction and no row lock, so a sold-out drop does not queue
//! thousands of doomed payments on the product's row. What it remembers is looked at again in
//! the database once older than `ECOMMERCE_CATALOG_CACHE_MS`, and forgotten at once on a
//! refund or restock through this instance: a product made sellable again is sellable on every
//! instance within that bound. `0` turns the gate off, and payments with an `Idempotency-Key`
//! always run (their replays and key errors come first).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::account::Actor;
use ecommerce_domain::order::{self, LineRequest, Order, OrderSource, OrderStatus};
use ecommerce_domain::payment::{self, Allowance};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{Error, OrderId, ProductId, Timestamp, UserCouponId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::batch::Coalesced;
use crate::error::{ApiError, Result};
use crate::extract::{
    Auth, Json, OptionalJson, PageQuery, Paging, PathParams, UserScope, idempotency_key, non_null, query_rejection,
};
use crate::idempotency::{self, KeyedRequest, Route, parse_body};
use crate::openapi::operations;

/// Per-instance: the stock last seen of products that failed a payment `OUT_OF_STOCK`, and the
/// gate's reads of orders, coalesced ([`crate::batch`]: a drop's refusals arrive by thousands).
pub struct SoldOutGate {
    seen: RwLock<HashMap<ProductId, (i64, Instant)>>,
    orders: Coalesced<OrderId, (Order, Vec<Allowance>)>,
}

impl Default for SoldOutGate {
    fn default() -> Self {
        Self {
            seen: RwLock::default(),
            orders: Coalesced::new("order_for_payment"),
        }
    }
}

impl SoldOutGate {
    /// The order with its owner's allowances, read in the next batch (alone if it failed).
    async fn order<S: Store>(&self, store: &S, id: OrderId) -> Result<Option<(Order, Vec<Allowance>)>> {
        let read = self
            .orders
            .read(
                id,
                |ids: Vec<OrderId>| async move { store.orders_for_payment(&ids).await },
            )
            .await;
        match read {
            Some(found) => Ok(found),
            None => Ok(store.order_for_payment(id).await?),
        }
    }

    fn is_empty(&self) -> bool {
        self.seen.read().map_or(true, |seen| seen.is_empty())
    }

    /// The remembered stock of `product`, with how long ago it was read.
    fn get(&self, product: ProductId) -> Option<(i64, Duration)> {
        let seen = self.seen.read().ok()?;
        seen.get(&product).map(|&(stock, at)| (stock, at.elapsed()))
    }

    fn saw(&self, product: ProductId, stock: i64) {
        if let Ok(mut seen) = self.seen.write() {
            seen.insert(product, (stock, Instant::now()));
        }
    }

    /// Forgets the products (a refund or restock made them sellable again).
    pub fn forget(&self, products: impl IntoIterator<Item = ProductId>) {
        if let Ok(mut seen) = self.seen.write() {
            for product in products {
                seen.remove(&product);
            }
        }
    }

    /// The stock of each remembered product of `products`, read again from the database when
    /// older than `max_age`; products it does not remember are absent.
    async fn fresh_stock<S: Store>(
        &self,
        store: &S,
        products: &[ProductId],
        max_age: Duration,
    ) -> Result<HashMap<ProductId, i64>> {
        let mut known = HashMap::new();
        for &product in products {
            match self.get(product) {
                None => {}
                Some((stock, age)) if age < max_age => {
                    known.insert(product, stock);
                }
                Some(_) => match store.product(product).await? {
                    Some(now) => {
                        self.saw(product, now.stock);
                        known.insert(product, now.stock);
                    }
                    None => self.forget([product]),
                },
            }
        }
        Ok(known)
    }
}

/// The answer of a payment the gate can refuse without a write, if it is one.
async fn gate_refusal<S: Store>(
    app: &AppState<S>,
    id: OrderId,
    actor: Actor,
    coupon: Option<UserCouponId>,
) -> Result<Option<ApiError>> {
    let max_age = app.config.catalog_cache;
    if max_age.is_zero() || app.sold_out.is_empty() {
        return Ok(None);
    }
    // One read: the order, its lines and the owner's allowances.
    let Some((order, allowances)) = app.sold_out.order(&app.store, id).await? else {
        return Ok(None);
    };
    let products: Vec<ProductId> = order.lines.iter().map(|l| l.product_id).collect();
    let known = app.sold_out.fresh_stock(&app.store, &products, max_age).await?;
    if known.is_empty() {
        return Ok(None);
    }
    let refusal =
        payment::refusal_without_writes(&app.store, &order, &allowances, actor, coupon, Timestamp::now(), |p| {
            known.get(&p).copied()
        })
        .await?;
    Ok(refusal.map(ApiError::from))
}

operations!(
    create_order::<S>,
    list_orders::<S>,
    get_order::<S>,
    pay_order::<S>,
    cancel_order::<S>,
    refund_order::<S>,
);

#[derive(Debug, Deserialize, ToSchema)]
pub struct OrderLineRequest {
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Exactly one of `items` (1 to 50 lines, each product at most once) and `"from_cart": true`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrderRequest {
    #[serde(default, deserialize_with = "non_null")]
    pub items: Option<Vec<OrderLineRequest>>,
    #[serde(default, deserialize_with = "non_null")]
    pub from_cart: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PayOrderRequest {
    /// The user coupon to apply; null or absent for none.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub user_coupon_id: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemResponse {
    pub product_id: i64,
    pub name: String,
    /// Fixed when the order was made.
    pub unit_price: i64,
    pub quantity: i64,
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: i64,
    pub user_id: i64,
    /// A pending order past `expires_at` reads EXPIRED.
    pub status: OrderStatus,
    pub items: Vec<OrderItemResponse>,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub paid_amount: i64,
    pub user_coupon_id: Option<i64>,
    pub created_at: String,
    pub expires_at: String,
    pub paid_at: Option<String>,
}

impl OrderResponse {
    pub fn new(order: Order, now: Timestamp) -> Self {
        Self {
            id: order.id.0,
            user_id: order.user_id.0,
            status: order.status(now),
            items: order
                .lines
                .into_iter()
                .map(|l| OrderItemResponse {
                    product_id: l.product_id.0,
                    name: l.name,
                    unit_price: l.unit_price.0,
                    quantity: l.quantity,
                    amount: l.amount.0,
                })
                .collect(),
            total_amount: order.total_amount.0,
            discount_amount: order.discount_amount.0,
            paid_amount: order.paid_amount.0,
            user_coupon_id: order.user_coupon_id.map(|c| c.0),
            created_at: order.created_at.to_rfc3339(),
            expires_at: order.expires_at.to_rfc3339(),
            paid_at: order.paid_at.map(Timestamp::to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderResponse>,
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Filter by (computed) status.
    pub status: Option<OrderStatus>,
}

/// Create an order
///
/// Either `items` (1 to 50 lines, each product at most once) or `"from_cart": true` (every line
/// of the cart). Prices are fixed now; stock and `max_per_user` (quantity + what the user already
/// paid for) are checked but not reserved, and the order waits `PENDING_PAYMENT` until it is
/// paid, cancelled or expires. The cart is left as it is. An unreleased product does not exist
/// (`PRODUCT_NOT_FOUND`) but for an admin; errors come as `PRODUCT_NOT_FOUND` →
/// `PRODUCT_NOT_ON_SALE` → `PURCHASE_LIMIT_EXCEEDED` → `OUT_OF_STOCK`.
/// A user has at most 100 orders waiting for payment: one more is `409 TOO_MANY_PENDING_ORDERS`.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/orders", tag = "orders",
    request_body(content = CreateOrderRequest, example = json!({"items": [{"product_id": 7, "quantity": 2}, {"product_id": 8, "quantity": 1}]})),
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")), security(("bearer" = [])),
    responses(
        (status = 201, description = "Order saved PENDING_PAYMENT", body = OrderResponse,
            headers(("Location" = String, description = "The order's path, `/api/v1/orders/{order_id}`")),
            example = pending_order_example),
        (status = 400, description = "CART_EMPTY"),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
        (status = 409, description = "PRODUCT_NOT_ON_SALE, PURCHASE_LIMIT_EXCEEDED, OUT_OF_STOCK, TOO_MANY_PENDING_ORDERS"),
    ))]
pub async fn create_order<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Json(body): Json<CreateOrderRequest>,
) -> Result<Response> {
    let source = match (body.items, body.from_cart) {
        (Some(items), None | Some(false)) => OrderSource::Lines(
            items
                .into_iter()
                .map(|l| LineRequest {
                    product_id: ProductId(l.product_id),
                    quantity: l.quantity,
                })
                .collect(),
        ),
        (None, Some(true)) => OrderSource::Cart,
        _ => {
            return Err(ApiError::validation(
                "send exactly one of `items` and `\"from_cart\": true`",
            ));
        }
    };
    let now = Timestamp::now();
    let mut tx = app.store.begin().await?;
    let order = order::create_order(&mut tx, scope.addressed(), &source, now, app.config.order_ttl_seconds).await?;
    tx.commit().await?;
    let location = format!("/api/v1/orders/{}", order.id);
    let mut response = (StatusCode::CREATED, axum::Json(OrderResponse::new(order, now))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// List the user's orders
///
/// Newest first, optionally only those with a `status` (a pending order past `expires_at` is
/// `EXPIRED`).
#[utoipa::path(get, path = "/api/v1/users/{user_id}/orders", tag = "orders",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"), OrderQuery, PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's orders, newest first", body = OrderPage,
            example = json!({"items": [paid_order_example()], "next_after": null})),
    ))]
pub async fn list_orders<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    query: std::result::Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<OrderPage>> {
    let Query(query) = query.map_err(query_rejection)?;
    let now = Timestamp::now();
    let orders = order::list_orders(&app.store, scope.addressed(), query.status, now, page).await?;
    let next_after = page.next_after(&orders, |o| o.id.0);
    Ok(axum::Json(OrderPage {
        items: orders.into_iter().map(|o| OrderResponse::new(o, now)).collect(),
        next_after,
    }))
}

/// Get an order
///
/// Its owner or an admin; another user's order is `ORDER_NOT_FOUND`.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = i64, Path, description = "Order id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderResponse, example = paid_order_example),
        (status = 404, description = "ORDER_NOT_FOUND"),
    ))]
pub async fn get_order<S: Store>(
    State(app): State<AppState<S>>,
    Auth(actor): Auth,
    params: PathParams,
) -> Result<axum::Json<OrderResponse>> {
    let id = OrderId(params.id("order_id")?);
    let order = order::get_order(&app.store, id, actor).await?;
    Ok(axum::Json(OrderResponse::new(order, Timestamp::now())))
}

/// Pay an order
///
/// In one transaction: the quantities are counted against each product's `max_per_user`, the
/// stock of every line is taken, the coupon's discount applied to the whole order, the balance
/// debited by `paid_amount`, the coupon marked `USED`, a `PAYMENT` history line written, the paid
/// products removed from the cart and an `order.paid` event recorded. On any failure nothing
/// changes and the order stays `PENDING_PAYMENT`. Errors come in this order: order state,
/// coupon, `PURCHASE_LIMIT_EXCEEDED` (several pending orders of one user paid at once stop
/// exactly at the limit), stock, balance. Once a product is sold out, an instance refuses its
/// payments `OUT_OF_STOCK` without a write; a restock or refund makes it sellable again on every
/// instance within `ECOMMERCE_CATALOG_CACHE_MS`. The body is optional (none, `{}` and
/// `{"user_coupon_id": null}` mean no coupon), and so is `Idempotency-Key`, with the rules
/// of balance charges.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/payment", tag = "orders",
    request_body(content = Option<PayOrderRequest>, description = "Optional: the user coupon to apply",
        example = json!({"user_coupon_id": 91})),
    params(("order_id" = i64, Path, description = "Order id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "Optional; 1 to 255 visible ASCII characters, new for each intended payment")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paid", body = OrderResponse, example = paid_order_example),
        (status = 404, description = "ORDER_NOT_FOUND, COUPON_NOT_FOUND"),
        (status = 409, description = "ORDER_NOT_PENDING, ORDER_EXPIRED, COUPON_ALREADY_USED, COUPON_EXPIRED, PURCHASE_LIMIT_EXCEEDED, OUT_OF_STOCK, INSUFFICIENT_BALANCE"),
    ))]
pub async fn pay_order<S: Store>(
    State(app): State<AppState<S>>,
    Auth(actor): Auth,
    params: PathParams,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<Value>,
) -> Result<Response> {
    let raw_id = params.id("order_id")?;
    let id = OrderId(raw_id);
    let key = idempotency_key(&headers)?;
    let request: PayOrderRequest = match &body {
        Value::Null => PayOrderRequest::default(),
        value => parse_body(value)?,
    };
    if let Some(coupon) = request.user_coupon_id
        && coupon <= 0
    {
        return Err(ApiError::validation("user_coupon_id must be a positive 64-bit integer"));
    }
    let coupon = request.user_coupon_id.map(UserCouponId);
    if key.is_none()
        && let Some(refusal) = gate_refusal(&app, id, actor, coupon).await?
    {
        metrics::counter!("payment_failures_total", "reason" => refusal.code).increment(1);
        app.live.payment_failed(refusal.code);
        return Err(refusal);
    }
    let keyed =
        key.map(|key| KeyedRequest::new(Route::OrderPayment, actor.user_id, key, &[&raw_id.to_string()], &body));
    let mut sold_out = None;
    let answer = idempotency::once(&app.store, keyed.as_ref(), async |tx| {
        let now = Timestamp::now();
        match payment::pay(tx, id, actor, coupon, now, new_event_id()).await {
            Ok(settled) => Ok(OrderResponse::new(settled.order, now)),
            Err(err) => {
                if let Error::OutOfStock(product) = err {
                    sold_out = Some(product);
                }
                let err = ApiError::from(err);
                metrics::counter!("payment_failures_total", "reason" => err.code).increment(1);
                app.live.payment_failed(err.code);
                Err(err)
            }
        }
    })
    .await;
    if let Some(product) = sold_out
        && !app.config.catalog_cache.is_zero()
        && let Ok(Some(now)) = app.store.product(product).await
    {
        app.sold_out.saw(product, now.stock);
    }
    let answer = answer?;
    if !answer.replayed {
        metrics::counter!("orders_paid_total").increment(1);
        app.live.order_paid();
    }
    Ok(answer.response)
}

fn pending_order_example() -> Value {
    serde_json::json!({
        "id": 12, "user_id": 42, "status": "PENDING_PAYMENT",
        "items": [
            {"product_id": 7, "name": "Linen shirt", "unit_price": 39000, "quantity": 2, "amount": 78000},
            {"product_id": 8, "name": "Wool coat", "unit_price": 189000, "quantity": 1, "amount": 189000}
        ],
        "total_amount": 267000, "discount_amount": 0, "paid_amount": 0, "user_coupon_id": null,
        "created_at": "2026-03-01T10:00:00.000Z", "expires_at": "2026-03-01T10:15:00.000Z", "paid_at": null
    })
}

fn paid_order_example() -> Value {
    serde_json::json!({
        "id": 11, "user_id": 42, "status": "PAID",
        "items": [{"product_id": 7, "name": "Linen shirt", "unit_price": 39000, "quantity": 1, "amount": 39000}],
        "total_amount": 39000, "discount_amount": 3900, "paid_amount": 35100, "user_coupon_id": 91,
        "created_at": "2026-03-01T09:12:01.250Z", "expires_at": "2026-03-01T09:27:01.250Z",
        "paid_at": "2026-03-01T09:12:44.512Z"
    })
}

/// A fresh id for an event of the outbox.
fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Moves the order named in the path to its next state with `run`, in one transaction.
async fn transition_order<S: Store>(
    app: &AppState<S>,
    actor: Actor,
    params: &PathParams,
    run: impl AsyncFnOnce(&mut S::Tx, OrderId, Actor, Timestamp) -> std::result::Result<Order, Error>,
) -> Result<axum::Json<OrderResponse>> {
    let id = OrderId(params.id("order_id")?);
    let now = Timestamp::now();
    let mut tx = app.store.begin().await?;
    let order = run(&mut tx, id, actor, now).await?;
    tx.commit().await?;
    Ok(axum::Json(OrderResponse::new(order, now)))
}

/// Cancel an order
///
/// Only a `PENDING_PAYMENT` order that has not expired.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = i64, Path, description = "Order id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = OrderResponse, example = json!({
            "id": 11, "user_id": 42, "status": "CANCELLED",
            "items": [{"product_id": 7, "name": "Linen shirt", "unit_price": 39000, "quantity": 1, "amount": 39000}],
            "total_amount": 39000, "discount_amount": 0, "paid_amount": 0, "user_coupon_id": null,
            "created_at": "2026-03-01T09:12:01.250Z", "expires_at": "2026-03-01T09:27:01.250Z", "paid_at": null
        })),
        (status = 404, description = "ORDER_NOT_FOUND"),
        (status = 409, description = "ORDER_NOT_PENDING, ORDER_EXPIRED"),
    ))]
pub async fn cancel_order<S: Store>(
    State(app): State<AppState<S>>,
    Auth(actor): Auth,
    params: PathParams,
) -> Result<axum::Json<OrderResponse>> {
    transition_order(&app, actor, &params, async |tx, id, actor, now| {
        order::cancel_order(tx, id, actor, now).await
    })
    .await
}

/// Refund an order
///
/// Only a `PAID` order, by its owner or an admin. Gives back `paid_amount` (a `REFUND` history
/// line), puts the stock back, makes the coupon `AVAILABLE` again unless it has expired, and
/// records an `order.refunded` event. `BALANCE_LIMIT_EXCEEDED` when the refund would lift the
/// balance over 10,000,000.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/refund", tag = "orders",
    params(("order_id" = i64, Path, description = "Order id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "Refunded", body = OrderResponse, example = json!({
            "id": 11, "user_id": 42, "status": "REFUNDED",
            "items": [{"product_id": 7, "name": "Linen shirt", "unit_price": 39000, "quantity": 1, "amount": 39000}],
            "total_amount": 39000, "discount_amount": 3900, "paid_amount": 35100, "user_coupon_id": 91,
            "created_at": "2026-03-01T09:12:01.250Z", "expires_at": "2026-03-01T09:27:01.250Z",
            "paid_at": "2026-03-01T09:12:44.512Z"
        })),
        (status = 400, description = "BALANCE_LIMIT_EXCEEDED"),
        (status = 404, description = "ORDER_NOT_FOUND"),
        (status = 409, description = "ORDER_NOT_PAID"),
    ))]
pub async fn refund_order<S: Store>(
    State(app): State<AppState<S>>,
    Auth(actor): Auth,
    params: PathParams,
) -> Result<axum::Json<OrderResponse>> {
    let refunded = transition_order(&app, actor, &params, async |tx, id, actor, now| {
        payment::refund(tx, id, actor, now, new_event_id())
            .await
            .map(|s| s.order)
    })
    .await?;
    app.sold_out
        .forget(refunded.0.items.iter().map(|l| ProductId(l.product_id)));
    Ok(refunded)
}
