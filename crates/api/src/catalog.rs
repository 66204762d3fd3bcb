//! Products (public reads, admin writes) and the best sellers of the last days.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::catalog::{
    self, Audience, NewProduct, PatchRequest, Product, ProductPatch, ProductRequest, ProductStatus,
    parse_restock_quantity,
};
use ecommerce_domain::ranking::{self, Window};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{Krw, ProductId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cache::SingleFlight;
use crate::error::{ApiError, Result};
use crate::extract::{Admin, Json, MaybeAuth, PageQuery, Paging, PathParams, non_null, nullable, query_rejection};
use crate::openapi::operations;
use crate::{AppState, Created};

operations!(
    list_products::<S>,
    popular_products::<S>,
    get_product::<S>,
    create_product::<S>,
    patch_product::<S>,
    restock_product::<S>,
);

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: i64,
    pub name: String,
    /// KRW.
    pub price: i64,
    /// Units left.
    pub stock: i64,
    pub status: ProductStatus,
    /// RFC 3339: before it the product is unreleased and exists only for admins; null when it
    /// was released at its creation.
    #[schema(format = DateTime)]
    pub sale_starts_at: Option<String>,
    /// The most units one user may hold in `PAID` orders (1 to 1000); null when unlimited.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_per_user: Option<i64>,
}

impl From<Product> for ProductResponse {
    fn from(p: Product) -> Self {
        Self {
            id: p.id.0,
            name: p.name,
            price: p.price.0,
            stock: p.stock,
            status: p.status,
            sale_starts_at: p.sale_starts_at.map(Timestamp::to_rfc3339),
            max_per_user: p.max_per_user,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductResponse>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProductRequest {
    /// 1 to 200 characters after trimming.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// 0 to 100,000,000 KRW.
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub price: i64,
    /// 0 to 1,000,000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub stock: i64,
    /// RFC 3339, optional: the product is unreleased (it exists only for admins) until then.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub sale_starts_at: Option<String>,
    /// 1 to 1000, optional: the most units one user may hold in `PAID` orders.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_per_user: Option<i64>,
}

/// Any subset of the fields; `{}` changes nothing. `null` is not a value of `name`, `price` and
/// `status`; it clears `sale_starts_at` and `max_per_user`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchProductRequest {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub price: Option<i64>,
    #[serde(default, deserialize_with = "non_null")]
    pub status: Option<ProductStatus>,
    /// RFC 3339, or null to release the product now.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sale_starts_at: Option<Option<String>>,
    /// 1 to 1000, or null to lift the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub max_per_user: Option<Option<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RestockRequest {
    /// 1 to 1,000,000; stock never exceeds 10,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

/// List the products on sale
///
/// Products with status `ON_SALE`, ascending by id (the one list that is oldest first), paged by
/// `limit` and `after`. Unreleased products (`sale_starts_at` still ahead) are listed only for
/// an admin token (such answers are `Cache-Control: private, no-store`).
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(PageQuery),
    responses(
        (status = 200, description = "Products on sale, ascending by id", body = ProductPage, example = json!({
            "items": [
                {"id": 7, "name": "Linen shirt", "price": 39000, "stock": 120, "status": "ON_SALE",
                    "sale_starts_at": null, "max_per_user": null},
                {"id": 8, "name": "Wool coat", "price": 189000, "stock": 12, "status": "ON_SALE",
                    "sale_starts_at": "2026-03-01T09:00:00.000Z", "max_per_user": 2}
            ],
            "next_after": null
        })),
    ))]
pub async fn list_products<S: Store>(
    State(app): State<AppState<S>>,
    MaybeAuth(actor): MaybeAuth,
    Paging(page): Paging,
) -> Result<axum::Json<ProductPage>> {
    // Catalog cache hook (crate::cache): non-admins read through the cache.
    let products = app
        .read_products_on_sale(Audience::of(actor), Timestamp::now(), page)
        .await?;
    let next_after = page.next_after(&products, |p| p.id.0);
    Ok(axum::Json(ProductPage {
        items: products.iter().cloned().map(Into::into).collect(),
        next_after,
    }))
}

/// Get a product
///
/// The product whatever its status, also when it is `STOPPED`. An unreleased product
/// (`sale_starts_at` still ahead) is `PRODUCT_NOT_FOUND` but with an admin token.
#[utoipa::path(get, path = "/api/v1/products/{product_id}", tag = "catalog",
    params(("product_id" = i64, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = ProductResponse, example = product_example),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
    ))]
pub async fn get_product<S: Store>(
    State(app): State<AppState<S>>,
    MaybeAuth(actor): MaybeAuth,
    params: PathParams,
) -> Result<axum::Json<ProductResponse>> {
    let id = ProductId(params.id("product_id")?);
    // Catalog cache hook (crate::cache): non-admins read through the cache.
    let product = app.read_product(Audience::of(actor), id, Timestamp::now()).await?;
    Ok(axum::Json(product.into()))
}

/// Create a product (admin)
///
/// A new product is `ON_SALE`. With `sale_starts_at` it stays unreleased until then: it exists
/// only for admins, and is released at that instant on every instance. With `max_per_user` no
/// user may hold more than that many units in `PAID` orders.
#[utoipa::path(post, path = "/api/v1/admin/products", tag = "admin",
    request_body(content = CreateProductRequest, example = json!({"name": "Linen shirt", "price": 39000, "stock": 120,
        "sale_starts_at": null, "max_per_user": 2})),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Product created, ON_SALE", body = ProductResponse,
            headers(("Location" = String, description = "The product's path, `/api/v1/products/{product_id}`")),
            example = product_example),
    ))]
pub async fn create_product<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    Json(body): Json<CreateProductRequest>,
) -> Result<Created<ProductResponse>> {
    let product = NewProduct::parse(ProductRequest {
        name: &body.name,
        price: Krw(body.price),
        stock: body.stock,
        sale_starts_at: body.sale_starts_at.as_deref(),
        max_per_user: body.max_per_user,
    })?;
    let mut tx = app.store.begin().await?;
    let created = catalog::create_product(&mut tx, &product, Timestamp::now()).await?;
    tx.commit().await?;
    Ok(Created(format!("/api/v1/products/{}", created.id), created.into()))
}

/// Change a product (admin)
///
/// Any of `name`, `price`, `status`, `sale_starts_at` and `max_per_user`; `{}` changes nothing,
/// an absent field is left as it is and `null` clears `sale_starts_at` (released now) or
/// `max_per_user` (no limit). `STOPPED` takes the product off sale: it can no longer be put in
/// a cart or ordered. Lowering `max_per_user` below what a user bought refuses only that
/// user's next purchases.
#[utoipa::path(patch, path = "/api/v1/admin/products/{product_id}", tag = "admin",
    request_body(content = PatchProductRequest, example = json!({"price": 35000, "status": "STOPPED"})),
    params(("product_id" = i64, Path, description = "Product id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The product after the change", body = ProductResponse, example = json!(
            {"id": 7, "name": "Linen shirt", "price": 35000, "stock": 120, "status": "STOPPED",
                "sale_starts_at": null, "max_per_user": null})),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
    ))]
pub async fn patch_product<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    params: PathParams,
    Json(body): Json<PatchProductRequest>,
) -> Result<axum::Json<ProductResponse>> {
    let id = ProductId(params.id("product_id")?);
    let patch = ProductPatch::parse(PatchRequest {
        name: body.name.as_deref(),
        price: body.price.map(Krw),
        status: body.status,
        sale_starts_at: body.sale_starts_at.as_ref().map(Option::as_deref),
        max_per_user: body.max_per_user,
    })?;
    let mut tx = app.store.begin().await?;
    let product = catalog::patch_product(&mut tx, id, &patch).await?;
    tx.commit().await?;
    Ok(axum::Json(product.into()))
}

/// Restock a product (admin)
///
/// Adds `quantity` units to the stock; the stock never exceeds 10,000,000 (beyond is
/// `VALIDATION_FAILED`).
#[utoipa::path(post, path = "/api/v1/admin/products/{product_id}/restock", tag = "admin",
    request_body(content = RestockRequest, example = json!({"quantity": 30})),
    params(("product_id" = i64, Path, description = "Product id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The product with its new stock", body = ProductResponse, example = json!(
            {"id": 7, "name": "Linen shirt", "price": 39000, "stock": 150, "status": "ON_SALE",
                "sale_starts_at": null, "max_per_user": null})),
        (status = 404, description = "PRODUCT_NOT_FOUND"),
    ))]
pub async fn restock_product<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    params: PathParams,
    Json(body): Json<RestockRequest>,
) -> Result<axum::Json<ProductResponse>> {
    let id = ProductId(params.id("product_id")?);
    let quantity = parse_restock_quantity(body.quantity)?;
    let mut tx = app.store.begin().await?;
    let product = catalog::restock(&mut tx, id, quantity).await?;
    tx.commit().await?;
    app.sold_out.forget([id]);
    Ok(axum::Json(product.into()))
}

fn product_example() -> serde_json::Value {
    serde_json::json!({"id": 7, "name": "Linen shirt", "price": 39000, "stock": 120, "status": "ON_SALE",
        "sale_starts_at": null, "max_per_user": 2})
}

// ---------------------------------------------------------------------------------------------
// Best sellers

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PopularQuery {
    /// 1 to 30, default 3.
    #[param(minimum = 1, maximum = 30)]
    pub days: Option<i64>,
    /// 1 to 50, default 5.
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PopularItem {
    /// Position, from 1.
    pub rank: i64,
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub sold_quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PopularResponse {
    pub days: i64,
    pub items: Vec<PopularItem>,
}

/// Per-instance cache of the serialized answer, by `(days, limit)`.
/// Misses of one window share one load ([`SingleFlight`]): when the answer expires, one request
/// per instance queries the database and the others wait for its answer.
#[derive(Default)]
pub struct PopularCache {
    entries: RwLock<HashMap<Window, (Instant, Bytes)>>,
    flights: SingleFlight<Window, Bytes>,
}

impl PopularCache {
    fn get(&self, key: Window, max_age: std::time::Duration) -> Option<Bytes> {
        let entries = self.entries.read().ok()?;
        entries
            .get(&key)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, bytes)| bytes.clone())
    }

    fn put(&self, key: Window, bytes: Bytes) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(key, (Instant::now(), bytes));
        }
    }
}

/// Best sellers of the last days
///
/// The products with the largest quantity in orders paid within the last `days`×24 hours
/// (refunded orders no longer count), ranked by `sold_quantity` descending, then `product_id`.
/// Unreleased products are left out, also for admins.
/// Each instance caches the answer for `ECOMMERCE_POPULAR_CACHE_SECONDS`.
#[utoipa::path(get, path = "/api/v1/products/popular", tag = "catalog", params(PopularQuery),
    responses(
        (status = 200, description = "Best sellers, rank 1 first", body = PopularResponse, example = json!({
            "days": 3,
            "items": [
                {"rank": 1, "product_id": 8, "name": "Wool coat", "price": 189000, "sold_quantity": 40},
                {"rank": 2, "product_id": 7, "name": "Linen shirt", "price": 39000, "sold_quantity": 25}
            ]
        })),
    ))]
pub async fn popular_products<S: Store>(
    State(app): State<AppState<S>>,
    query: std::result::Result<Query<PopularQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(query_rejection)?;
    let window = Window::parse(query.days, query.limit)?;
    let max_age = app.config.popular_cache;
    let cached = if max_age.is_zero() {
        None
    } else {
        app.popular.get(window, max_age)
    };
    let bytes = match cached {
        Some(bytes) => bytes,
        None if max_age.is_zero() => popular_answer(&app, window).await?,
        None => {
            app.popular
                .flights
                .run(window, 0, || async {
                    // A request that waited for the lock may find the answer already stored.
                    if let Some(bytes) = app.popular.get(window, max_age) {
                        return Ok(bytes);
                    }
                    let bytes = popular_answer(&app, window).await?;
                    app.popular.put(window, bytes.clone());
                    Ok::<_, ApiError>(bytes)
                })
                .await?
        }
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response())
}

/// The serialized best sellers of `window`, from the database.
async fn popular_answer<S: Store>(app: &AppState<S>, window: Window) -> Result<Bytes> {
    let entries = ranking::best_sellers(&app.store, window, Timestamp::now()).await?;
    let items = entries
        .into_iter()
        .zip(1..)
        .map(|(e, rank)| PopularItem {
            rank,
            product_id: e.product_id.0,
            name: e.name,
            price: e.price.0,
            sold_quantity: e.sold_quantity,
        })
        .collect();
    let response = PopularResponse {
        days: window.days,
        items,
    };
    Ok(Bytes::from(serde_json::to_vec(&response).map_err(ApiError::internal)?))
}
