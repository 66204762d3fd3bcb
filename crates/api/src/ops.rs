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
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ApiError;
use crate::{AppState, accounts, cart, catalog, coupons, orders, wallet};

pub fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics_text::<S>))
}

/// Swagger UI at `/swagger-ui/`, reading `/api-docs/openapi.json`; both served from the binary.
/// No online validator (its badge would call a third-party host), and the token given to
/// "Authorize" survives a reload.
pub fn swagger_ui() -> Router {
    SwaggerUi::new("/swagger-ui")
        .url("/api-docs/openapi.json", ApiDoc::openapi())
        .config(Config::default().validator_url("none").persist_authorization(true))
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

/// What every operation shares, added in one place instead of on each handler: the HTTP-level
/// problems (413 and 415 for operations with a body, 401 for operations with a token), and
/// `minimum: 1` on every `*_id` path parameter (ids are positive 64-bit integers).
struct CommonProblems;

impl CommonProblems {
    fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
            .into()
    }
}

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if operation.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| Self::problem("PAYLOAD_TOO_LARGE: the body is over 64 KiB"));
                    responses.entry("415".into()).or_insert_with(|| {
                        Self::problem("UNSUPPORTED_MEDIA_TYPE: a body without Content-Type: application/json")
                    });
                }
                if operation.security.is_some() {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| Self::problem("UNAUTHORIZED: no or a bad token"));
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    let utoipa::openapi::RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    if parameter.parameter_in == ParameterIn::Path && parameter.name.ends_with("_id") {
                        let id = ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                            .minimum(Some(1))
                            .build();
                        parameter.schema = Some(id.into());
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ecommerce",
        description = "E-commerce API: catalog, best sellers, cart, orders paid from a prepaid KRW balance, \
            first-come-first-served coupons. Every error is application/problem+json with a stable `code`.",
    ),
    modifiers(&BearerAuth, &CommonProblems),
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
