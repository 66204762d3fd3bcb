//! Operations: health, Prometheus metrics and Swagger UI.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::store::Store;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::operations;

operations!(health::<S>);

/// Swagger UI at `/swagger-ui/`, reading `/api-docs/openapi.json`; both served from the binary.
/// No online validator (its badge would call a third-party host), and the token given to
/// "Authorize" survives a reload.
pub fn swagger_ui() -> Router {
    SwaggerUi::new("/swagger-ui")
        .url("/api-docs/openapi.json", crate::openapi())
        .config(Config::default().validator_url("none").persist_authorization(true))
        .into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Health of the instance and its database
///
/// `200 {"status": "ok"}` when the database answers within 2 seconds, else `503`. For load
/// balancers and orchestrators; no token needed.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = HealthResponse, example = json!({"status": "ok"})),
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

/// Prometheus text format. Not in the OpenAPI document: it is for the scraper, not for clients.
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
