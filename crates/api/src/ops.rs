//! Operations: health, Prometheus metrics, the OpenAPI document and Swagger UI.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ecommerce_domain::store::Store;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::{AppState, accounts, cart, catalog, coupons, orders, wallet};

pub fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics_text::<S>))
}

/// Swagger UI at `/swagger-ui/`, reading `/api-docs/openapi.json`; both served from the binary.
pub fn swagger_ui() -> Router {
    SwaggerUi::new("/swagger-ui")
        .url("/api-docs/openapi.json", ApiDoc::openapi())
        .into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = HealthResponse),
        (status = 503, description = "SERVICE_UNAVAILABLE: the database does not answer", body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub async fn health<S: Store>(State(app): State<AppState<S>>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => axum::Json(HealthResponse { status: "ok" }).into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health check failed");
            ApiError::unavailable("the database does not answer").into_response()
        }
        Err(_) => ApiError::unavailable("the database does not answer").into_response(),
    }
}

/// Prometheus text format.
pub async fn metrics_text<S: Store>(State(app): State<AppState<S>>) -> Response {
    match &app.metrics {
        Some(handle) => {
            let mut response = handle.render().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ecommerce",
        description = "E-commerce API: catalog, best sellers, cart, orders paid from a prepaid KRW balance, \
            first-come-first-served coupons. Every error is application/problem+json with a stable `code`.",
    ),
    modifiers(&BearerAuth),
    paths(
        health,
        accounts::create_user, accounts::create_token,
        catalog::list_products, catalog::popular_products, catalog::get_product,
        catalog::create_product, catalog::patch_product, catalog::restock_product,
        wallet::get_balance, wallet::charge_balance, wallet::balance_history,
        cart::get_cart, cart::put_cart_item, cart::remove_cart_item, cart::clear_cart,
        coupons::create_coupon, coupons::list_coupons, coupons::get_coupon, coupons::issue_coupon, coupons::list_user_coupons,
        orders::create_order, orders::list_orders, orders::get_order, orders::pay_order, orders::cancel_order, orders::refund_order,
    ),
    components(schemas(crate::Problem)),
    tags(
        (name = "accounts", description = "Sign-up and tokens"),
        (name = "catalog", description = "Products and best sellers (no token needed)"),
        (name = "balance", description = "Prepaid KRW balance"),
        (name = "cart", description = "Server-side cart"),
        (name = "coupons", description = "First-come-first-served coupons"),
        (name = "orders", description = "Orders, payment, cancel, refund"),
        (name = "admin", description = "Admin-only catalog and coupon management"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;
