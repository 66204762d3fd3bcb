//! The cart, kept on the server so every device of the user sees the same one.

use axum::extract::State;
use axum::http::StatusCode;
use ecommerce_domain::cart::{self, CartItem};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{ProductId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::Result;
use crate::extract::{Json, UserScope};
use crate::openapi::operations;

operations!(
    get_cart::<S>,
    clear_cart::<S>,
    put_cart_item::<S>,
    remove_cart_item::<S>
);

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

fn cart_example() -> serde_json::Value {
    serde_json::json!({
        "items": [
            {"product_id": 7, "name": "Linen shirt", "price": 39000, "stock": 120, "quantity": 2, "amount": 78000},
            {"product_id": 8, "name": "Wool coat", "price": 189000, "stock": 12, "quantity": 1, "amount": 189000}
        ],
        "total_amount": 267000
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PutCartItemRequest {
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Get the cart
///
/// The items at current prices and stock, in the order they were first added. A product that
/// was carted and then scheduled for a later release is left out until its release (but for an
/// admin); it stays in the cart.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/cart", tag = "cart",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart at current prices", body = CartResponse, example = cart_example),
    ))]
pub async fn get_cart<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<axum::Json<CartResponse>> {
    Ok(axum::Json(
        cart::cart(&app.store, scope.addressed(), Timestamp::now())
            .await?
            .into(),
    ))
}

/// Set the quantity of a product in the cart
///
/// Adds the product at the end of the cart, or sets its quantity when it is there. The quantity
/// may exceed the stock (the cart shows `stock`) and `max_per_user`; a product that is not on
/// sale cannot be added, and an unreleased one does not exist (`PRODUCT_NOT_FOUND`) but for an
/// admin.
/// A cart holds at most 50 products (an order's most lines): a 51st is `409 CART_FULL`.
#[utoipa::path(put, path = "/api/v1/users/{user_id}/cart/items/{product_id}", tag = "cart",
    request_body(content = PutCartItemRequest, example = json!({"quantity": 2})),
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"), ("product_id" = i64, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Quantity set; the whole cart", body = CartResponse, example = cart_example),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
        (status = 409, description = "PRODUCT_NOT_ON_SALE, CART_FULL"),
    ))]
pub async fn put_cart_item<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Json(body): Json<PutCartItemRequest>,
) -> Result<axum::Json<CartResponse>> {
    let product = ProductId(scope.params.id("product_id")?);
    let mut tx = app.store.begin().await?;
    let cart = cart::put_cart_item(&mut tx, scope.addressed(), product, body.quantity, Timestamp::now()).await?;
    tx.commit().await?;
    Ok(axum::Json(cart.into()))
}

/// Remove a product from the cart
///
/// Also answers 204 when the product was not in the cart.
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/cart/items/{product_id}", tag = "cart",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"), ("product_id" = i64, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed (also when it was not there)"),
    ))]
pub async fn remove_cart_item<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<StatusCode> {
    let product = ProductId(scope.params.id("product_id")?);
    let mut tx = app.store.begin().await?;
    cart::remove_cart_item(&mut tx, scope.addressed(), product).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Empty the cart
///
/// Removes every item.
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/cart", tag = "cart",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")), security(("bearer" = [])),
    responses(
        (status = 204, description = "Emptied"),
    ))]
pub async fn clear_cart<S: Store>(State(app): State<AppState<S>>, scope: UserScope) -> Result<StatusCode> {
    let mut tx = app.store.begin().await?;
    cart::clear_cart(&mut tx, scope.addressed()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
