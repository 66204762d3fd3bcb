//! The cart, kept on the server so every device of the user sees the same one.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use ecommerce_domain::ProductId;
use ecommerce_domain::cart::{self, CartItem};
use ecommerce_domain::store::{Store, Tx};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::Result;
use crate::extract::{Json, UserScope};

const PROBLEM: &str = "application/problem+json";

pub fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route(
            "/api/v1/users/{user_id}/cart",
            get(get_cart::<S>).delete(clear_cart::<S>),
        )
        .route(
            "/api/v1/users/{user_id}/cart/items/{product_id}",
            put(put_cart_item::<S>).merge(delete(remove_cart_item::<S>)),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartItemResponse {
    pub product_id: i64,
    pub name: String,
    /// Current price.
    pub price: i64,
    /// Current stock; the quantity may exceed it.
    pub stock: i64,
    pub quantity: i64,
    /// price × quantity.
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartResponse {
    /// In the order items were first added.
    pub items: Vec<CartItemResponse>,
    pub total_amount: i64,
}

impl From<Vec<CartItem>> for CartResponse {
    fn from(items: Vec<CartItem>) -> Self {
        let total_amount = cart::total_amount(&items).0;
        let items = items
            .into_iter()
            .map(|i| CartItemResponse {
                amount: i.amount().0,
                product_id: i.product.id.0,
                name: i.product.name,
                price: i.product.price.0,
                stock: i.product.stock,
                quantity: i.quantity,
            })
            .collect();
        Self { items, total_amount }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PutCartItemRequest {
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

#[utoipa::path(get, path = "/api/v1/users/{user_id}/cart", tag = "cart", params(("user_id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart at current prices", body = CartResponse),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn get_cart<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<axum::Json<CartResponse>> {
    Ok(axum::Json(cart::cart(&app.store, scope.addressed()).await?.into()))
}

#[utoipa::path(put, path = "/api/v1/users/{user_id}/cart/items/{product_id}", tag = "cart", request_body = PutCartItemRequest,
    params(("user_id" = i64, Path), ("product_id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Quantity set; the whole cart", body = CartResponse),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "PRODUCT_NOT_FOUND, USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
        (status = 409, description = "PRODUCT_NOT_ON_SALE", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn put_cart_item<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Json(body): Json<PutCartItemRequest>,
) -> Result<axum::Json<CartResponse>> {
    let product = ProductId(scope.params.id("product_id")?);
    let mut tx = app.store.begin().await?;
    let cart = cart::put_cart_item(&mut tx, scope.addressed(), product, body.quantity).await?;
    tx.commit().await?;
    Ok(axum::Json(cart.into()))
}

#[utoipa::path(delete, path = "/api/v1/users/{user_id}/cart/items/{product_id}", tag = "cart",
    params(("user_id" = i64, Path), ("product_id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed (also when it was not there)"),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn remove_cart_item<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<StatusCode> {
    let product = ProductId(scope.params.id("product_id")?);
    let mut tx = app.store.begin().await?;
    cart::remove_cart_item(&mut tx, scope.addressed(), product).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/users/{user_id}/cart", tag = "cart", params(("user_id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Emptied"),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn clear_cart<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<StatusCode> {
    let mut tx = app.store.begin().await?;
    cart::clear_cart(&mut tx, scope.addressed()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
