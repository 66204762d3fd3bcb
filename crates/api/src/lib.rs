//! The HTTP layer: routes, extractors, DTOs with OpenAPI schemas, and error mapping. Generic
//! over the storage engine, which the server binary picks once from `DATABASE_URL`.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub mod accounts;
pub mod auth;
pub mod cart;
pub mod catalog;
pub mod coupons;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod ops;
pub mod orders;
pub mod wallet;

pub use error::{ApiError, Problem};
pub use ops::ApiDoc;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a pending order can be paid.
    pub order_ttl_seconds: i64,
    /// Longest staleness of `/products/popular`; zero disables the cache.
    pub popular_cache: Duration,
    /// A request running longer is answered 503.
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            order_ttl_seconds: 900,
            popular_cache: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Inner<S> {
    pub store: S,
    pub auth: auth::TokenKeys,
    pub config: ApiConfig,
    pub metrics: Option<PrometheusHandle>,
    pub popular: catalog::PopularCache,
    pub coupons: coupons::CouponCache,
}

/// Shared by every request; cheap to clone.
pub struct AppState<S>(Arc<Inner<S>>);

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> Deref for AppState<S> {
    type Target = Inner<S>;

    fn deref(&self) -> &Inner<S> {
        &self.0
    }
}

impl<S: Store> AppState<S> {
    pub fn new(store: S, jwt_secret: &[u8], config: ApiConfig, metrics: Option<PrometheusHandle>) -> Self {
        Self(Arc::new(Inner {
            store,
            auth: auth::TokenKeys::new(jwt_secret),
            config,
            metrics,
            popular: catalog::PopularCache::default(),
            coupons: coupons::CouponCache::default(),
        }))
    }
}

/// Every route of the service with its middleware.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    let timeout = state.config.request_timeout;
    let api = Router::new()
        .merge(ops::routes())
        .merge(accounts::routes())
        .merge(catalog::routes())
        .merge(wallet::routes())
        .merge(cart::routes())
        .merge(coupons::routes())
        .merge(orders::routes())
        .with_state(state);
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(api)
        .merge(ops::swagger_ui())
        .merge(ecommerce_console::routes())
        .route_layer(middleware::from_fn(note_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            enforce_timeout(timeout, req, next)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(middleware::from_fn(record_metrics))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
}

async fn enforce_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long").into_response(),
    }
}

/// Where the router writes the matched route template for [`record_metrics`], which runs
/// outside the router (and outside the timeout and panic layers, so their answers count too).
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

async fn note_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(req).await
}

/// Request count and latency by route template and status.
async fn record_metrics(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    let route = slot.0.get().cloned().unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}
