//! The HTTP layer: routes, extractors, DTOs with OpenAPI schemas, and error mapping. Generic
//! over the storage engine, which the server binary picks once from `DATABASE_URL`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ecommerce_domain::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod cache;
pub mod cart;
pub mod catalog;
mod compression;
pub mod cors;
pub mod coupons;
pub mod draws;
pub mod error;
pub mod extract;
pub mod hashing;
mod http_cache;
pub mod idempotency;
mod openapi;
pub mod ops;
pub mod orders;
pub mod rate_limit;
pub mod wallet;

pub use cors::CorsOrigins;
pub use error::{ApiError, Problem};
pub use openapi::openapi;

/// The media type of every error answer (RFC 9457).
pub const PROBLEM: &str = "application/problem+json";

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A `201 Created` answer: the new resource's path in `Location` (RFC 9110 §15.3.2), its JSON in
/// the body.
pub struct Created<T>(pub String, pub T);

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        let Created(location, body) = self;
        let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
        match HeaderValue::try_from(location) {
            Ok(location) => {
                response.headers_mut().insert(axum::http::header::LOCATION, location);
                response
            }
            Err(err) => ApiError::internal(format!("a Location that is no header value: {err}")).into_response(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a pending order can be paid.
    pub order_ttl_seconds: i64,
    /// Longest staleness of `/products/popular`; zero disables the cache.
    pub popular_cache: Duration,
    /// Longest staleness of a product read through another instance's change (the catalog
    /// cache, `ECOMMERCE_CATALOG_CACHE_MS`), also the longest a sold-out product's remembered
    /// stock is trusted by the payment's gate; zero disables both.
    pub catalog_cache: Duration,
    /// A request running longer is answered 503.
    pub request_timeout: Duration,
    /// Origins whose pages may call the API from a browser (`ECOMMERCE_CORS_ORIGINS`).
    pub cors_origins: CorsOrigins,
    /// The rate limits and the trusted proxies.
    pub rate_limits: rate_limit::RateLimitConfig,
    /// How long a token check trusts what it read of an account ([`auth::TOKEN_CHECK_TTL`]).
    pub token_check_ttl: Duration,
    /// The bearer token `/metrics` requires (`ECOMMERCE_METRICS_TOKEN`); `None`: open.
    pub metrics_token: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            order_ttl_seconds: 900,
            popular_cache: Duration::from_secs(5),
            catalog_cache: Duration::from_millis(1_000),
            request_timeout: Duration::from_secs(30),
            cors_origins: CorsOrigins::None,
            rate_limits: rate_limit::RateLimitConfig::default(),
            token_check_ttl: auth::TOKEN_CHECK_TTL,
            metrics_token: None,
        }
    }
}

/// What every request can reach: the store, the token keys, the settings and the caches.
pub struct AppContext<S> {
    pub store: S,
    /// The store token-free catalog reads use ([`Store::catalog_reads`]: a replica, or `store`).
    pub catalog_store: S,
    pub auth: auth::TokenKeys,
    pub config: ApiConfig,
    pub metrics: Option<PrometheusHandle>,
    pub popular: catalog::PopularCache,
    pub catalog: Arc<cache::CatalogCache>,
    pub coupons: coupons::CouponCache,
    pub sold_out: orders::SoldOutGate,
    pub readiness: ops::Readiness,
    /// This instance's counters for the live figures (`GET /api/v1/admin/live`).
    pub live: Arc<admin::LiveCounters>,
    /// Checks tokens against their account, with a short cache.
    pub tokens: auth::TokenCheck,
    pub limits: rate_limit::RateLimits,
    pub draw_entries: draws::EntryBatcher,
}

/// Shared by every request; cheap to clone.
pub struct AppState<S>(Arc<AppContext<S>>);

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> Deref for AppState<S> {
    type Target = AppContext<S>;

    fn deref(&self) -> &AppContext<S> {
        &self.0
    }
}

impl<S: Store> AppState<S> {
    pub fn new(store: S, jwt_secret: &[u8], config: ApiConfig, metrics: Option<PrometheusHandle>) -> Self {
        let catalog = Arc::new(cache::CatalogCache::new(config.catalog_cache));
        if catalog.is_enabled() {
            store.product_changes().subscribe(catalog.clone());
        }
        Self(Arc::new(AppContext {
            catalog_store: store.catalog_reads(),
            store,
            auth: auth::TokenKeys::new(jwt_secret),
            metrics,
            popular: catalog::PopularCache::default(),
            catalog,
            coupons: coupons::CouponCache::default(),
            sold_out: orders::SoldOutGate::default(),
            readiness: ops::Readiness::default(),
            live: Arc::default(),
            tokens: auth::TokenCheck::new(config.token_check_ttl),
            limits: rate_limit::RateLimits::new(&config.rate_limits),
            config,
            draw_entries: draws::EntryBatcher::default(),
        }))
    }
}

/// Every resource module, listed once: its routes are mounted and its operations documented.
macro_rules! resources {
    ($($module:ident),+ $(,)?) => {
        fn resource_routes<S: Store>() -> Router<AppState<S>> {
            Router::new()$(.merge($module::routes()))+
        }

        fn document_resources(doc: &mut utoipa::openapi::OpenApi) {
            $($module::document(doc);)+
        }
    };
}

resources!(ops, accounts, catalog, wallet, cart, coupons, orders, admin, draws);

/// Every route of the service with its middleware.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    let keys = state.clone();
    let is_admin: http_cache::AdminCheck = Arc::new(move |headers| {
        extract::bearer_token(headers)
            .and_then(|token| keys.auth.verify(token))
            .is_some_and(|claims| claims.role == ecommerce_domain::account::Role::Admin)
    });
    let policy = HttpPolicy {
        timeout: state.config.request_timeout,
        cors: cors::CorsPolicy::new(&state.config.cors_origins),
        cache: http_cache::CachePolicy::new(state.config.popular_cache.as_secs(), is_admin),
        live: state.live.clone(),
    };
    let api = resource_routes()
        // Inside CORS (a preflight is never limited), around every resource route.
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit::enforce::<S>))
        // Not in the OpenAPI document: for the scraper, not for clients.
        .route("/metrics", get(ops::metrics_text::<S>))
        // Not in the OpenAPI document, like the OpenAPI document itself.
        .route("/api-docs/asyncapi.json", get(ops::asyncapi_document))
        .with_state(state);
    with_http_layers(api.merge(ops::swagger_ui()).merge(ecommerce_console::routes()), policy)
}

/// What the layers shared by every route need to know.
struct HttpPolicy {
    timeout: Duration,
    /// `None`: no CORS headers at all.
    cors: Option<Arc<cors::CorsPolicy>>,
    cache: Arc<http_cache::CachePolicy>,
    /// Counts every answer for the live figures.
    live: Arc<admin::LiveCounters>,
}

/// The HTTP-level behaviour shared by every route and by the answers to unknown routes.
///
/// `Router::layer` wraps each route after routing, so every layer sees the route's
/// [`MatchedPath`]; requests that match no route get the fallback, wrapped the same way. From the
/// outside in: metrics (so that the answers of every inner layer count), the request id, the
/// request span with its access log line, CORS (a preflight is answered there, before anything
/// that could refuse it), the caching headers and conditional reads (outside compression, so that
/// an `ETag` names the bytes as sent), compression, the panic guard (inside the span, so that its
/// log line carries the request id), the timeout, the body limit.
fn with_http_layers(routes: Router, policy: HttpPolicy) -> Router {
    let HttpPolicy {
        timeout,
        cors,
        cache,
        live,
    } = policy;
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            enforce_timeout(timeout, req, next)
        }))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(compression::layer())
        .layer(middleware::from_fn(compression::keep_identity_acceptable))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            http_cache::http_cache(cache.clone(), req, next)
        }));
    let routes = match cors {
        Some(cors) => routes.layer(middleware::from_fn(move |req: Request, next: Next| {
            cors::cors(cors.clone(), req, next)
        })),
        None => routes,
    };
    routes
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(access_log)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(middleware::from_fn(assign_request_id))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            record_metrics(live.clone(), req, next)
        }))
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

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template a request matched, or one label for every request that matched none (so
/// that unknown paths cannot grow the metrics or the logs).
fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// A client's `X-Request-Id` is kept when it is 1 to 64 of `[A-Za-z0-9._-]`, so that it cannot
/// forge log lines; otherwise the request gets a new UUID. Either way the answer carries it.
async fn assign_request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| is_acceptable_request_id(value.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
        });
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.run(req).await;
    response.headers_mut().entry(REQUEST_ID).or_insert(id);
    response
}

fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), route = %route_of(req), request_id = %id)
}

/// The access log: one INFO line per request, inside the request span (method, route, id).
fn access_log(response: &Response, latency: Duration, _span: &tracing::Span) {
    // Whole microseconds, shown as milliseconds with up to three decimals.
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    tracing::info!(status = response.status().as_u16(), latency_ms, "served");
}

/// Methods outside the standard set share one label, so that clients cannot grow the series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Request count and latency by method, route template and status.
async fn record_metrics(live: Arc<admin::LiveCounters>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = route_of(&req).to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    live.request();
    response
}

/// The HELP text of every metric the HTTP layer and the use cases record; call once the recorder
/// is installed. Every label's values are bounded: `method` is one of eight, `route` a route
/// template or `unmatched`, `status` a status this server answers, `reason` an error code.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method (unknown ones as OTHER), route template (unmatched for none) and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's head to its answer, by method, route template and status"
    );
    describe_counter!("orders_paid_total", "Orders paid");
    describe_counter!(
        "payment_failures_total",
        "Payments refused, by the error code that refused them"
    );
    describe_counter!("coupons_issued_total", "Coupons issued to users");
    describe_counter!(
        "password_hash_rejected_total",
        "Sign-ins and sign-ups answered 503 because the password-hashing queue was full"
    );
    describe_counter!("draws_created_total", "Draws created by admins");
    describe_counter!("draw_entries_total", "Draw entries accepted");
    describe_counter!("draws_drawn_total", "Draws drawn by this instance's draw job");
    describe_histogram!(
        "draw_entry_batch_size",
        "Draw entries written together in one transaction (group commit per draw and instance)"
    );
    describe_histogram!(
        "read_batch_size",
        "Requests answered by one coalesced read, by read (token_state: token checks; order_for_payment: the sold-out gate)"
    );
    describe_counter!(
        "password_hash_abandoned_total",
        "Sign-ins and sign-ups that went away (client gone, request timed out) before their hash was answered; not hashed unless a thread had started"
    );
}

/// Sample routes behind the service's layers, for the tests of the HTTP layer.
#[cfg(test)]
pub(crate) mod testing {
    use axum::body::{Body, Bytes, to_bytes};
    use axum::http::request::Builder;
    use axum::http::{HeaderMap, StatusCode, header};
    use tower::ServiceExt;

    use super::*;

    /// The token the sample admin check takes for an admin's.
    pub(crate) const ADMIN_TOKEN: &str = "Bearer admin-token";

    /// A product list of about 3 KiB, a small product, best sellers, a missing coupon, a user's
    /// page and a health route, behind the layers configured as `cors` says.
    pub(crate) fn app(cors: CorsOrigins) -> Router {
        let page: String = (1..=40)
            .map(|id| {
                format!(r#"{{"id":{id},"name":"Linen shirt {id}","price":39000,"stock":120,"status":"ON_SALE"}}"#)
            })
            .collect::<Vec<_>>()
            .join(",");
        let page = format!(r#"{{"items":[{page}],"next_after":null}}"#);
        let routes = Router::new()
            .route("/api/v1/products", get(move || async move { json(page.clone()) }))
            .route(
                "/api/v1/products/{product_id}",
                get(async || json(r#"{"id":7,"name":"Linen shirt"}"#.to_owned())),
            )
            .route(
                "/api/v1/products/popular",
                get(async || json(r#"{"days":3,"items":[]}"#.to_owned())),
            )
            .route(
                "/api/v1/coupons/{coupon_id}",
                get(async || ApiError::from(ecommerce_domain::Error::CouponNotFound)),
            )
            .route(
                "/api/v1/users/{user_id}/cart",
                get(async || json(r#"{"items":[],"total_amount":0}"#.to_owned()))
                    .delete(async || StatusCode::NO_CONTENT),
            )
            .route("/health", get(async || json(r#"{"status":"ok"}"#.to_owned())));
        let is_admin: http_cache::AdminCheck =
            Arc::new(|headers: &HeaderMap| headers.get(header::AUTHORIZATION).is_some_and(|v| v == ADMIN_TOKEN));
        let policy = HttpPolicy {
            timeout: Duration::from_secs(5),
            cors: cors::CorsPolicy::new(&cors),
            cache: http_cache::CachePolicy::new(5, is_admin),
            live: Arc::default(),
        };
        with_http_layers(routes, policy)
    }

    fn json(body: String) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    /// Sends `request` (built on a fresh builder) to `app` and reads the whole answer.
    pub(crate) async fn send(app: &Router, request: impl FnOnce(Builder) -> Builder) -> (StatusCode, HeaderMap, Bytes) {
        let request = request(Request::builder())
            .body(Body::empty())
            .expect("a valid request");
        let response = app.clone().oneshot(request).await.expect("the router never fails");
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.expect("a readable body");
        (parts.status, parts.headers, body)
    }

    /// Every value of `name`, joined as one list.
    pub(crate) fn header_of(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, OnceLock};

    use axum::body::Body;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    /// Two routes wrapped exactly as the service's routes are.
    fn app() -> Router {
        let routes = Router::new()
            .route("/items/{item_id}", get(async || "item"))
            .route("/boom", get(async || -> &'static str { panic!("the handler failed") }));
        let policy = HttpPolicy {
            timeout: Duration::from_secs(5),
            cors: None,
            cache: http_cache::CachePolicy::new(5, Arc::new(|_| false)),
            live: Arc::default(),
        };
        with_http_layers(routes, policy)
    }

    async fn send(method: &str, uri: &str, request_id: Option<&str>) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        app()
            .oneshot(request.body(Body::empty()).expect("a valid request"))
            .await
            .expect("the router never fails")
    }

    fn request_id_of(response: &Response) -> String {
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("every answer carries X-Request-Id")
            .to_owned()
    }

    #[tokio::test]
    async fn a_well_formed_client_request_id_is_kept() {
        let response = send("GET", "/items/1", Some("trace-42.a_B")).await;
        assert_eq!(request_id_of(&response), "trace-42.a_B");
        let longest = "a".repeat(64);
        let response = send("GET", "/items/1", Some(&longest)).await;
        assert_eq!(request_id_of(&response), longest);
    }

    #[tokio::test]
    async fn a_missing_or_malformed_request_id_is_replaced_by_a_uuid() {
        let too_long = "a".repeat(65);
        for sent in [
            None,
            Some(""),
            Some("zz}: forged line"),
            Some("a/b"),
            Some(too_long.as_str()),
        ] {
            let response = send("GET", "/items/1", sent).await;
            let id = request_id_of(&response);
            assert!(
                uuid::Uuid::parse_str(&id).is_ok() && id.len() == 36,
                "{sent:?} was answered with {id:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_panic_is_answered_500_problem_with_the_request_id() {
        let response = send("GET", "/boom", Some("panic-1")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(request_id_of(&response), "panic-1");
        assert_eq!(response.headers()["content-type"], PROBLEM);
    }

    fn metrics() -> &'static PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE.get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the only recorder of this test process")
        })
    }

    #[tokio::test]
    async fn metrics_label_the_route_template_and_fold_unknown_methods_and_routes() {
        let handle = metrics();
        send("GET", "/items/7", None).await;
        send("BLAH", "/items/7", None).await;
        send("GET", "/nowhere/at/all", None).await;
        let text = handle.render();
        for series in [
            r#"http_requests_total{method="GET",route="/items/{item_id}",status="200"}"#,
            r#"http_requests_total{method="OTHER",route="/items/{item_id}",status="405"}"#,
            r#"http_requests_total{method="GET",route="unmatched",status="404"}"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        assert!(!text.contains("BLAH") && !text.contains("/nowhere"), "{text}");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines logged while `run` runs on this thread, with the server's default filter.
    async fn logged(run: impl AsyncFnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        run().await;
        drop(guard);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn each_request_logs_one_info_line_with_method_route_status_latency_and_id() {
        let lines = logged(async || {
            send("GET", "/items/7", Some("log-test-1")).await;
        })
        .await;
        let mine: Vec<&String> = lines.iter().filter(|l| l.contains("log-test-1")).collect();
        assert_eq!(mine.len(), 1, "one line per request: {lines:#?}");
        let line = mine[0];
        for part in [
            " INFO ",
            "method=GET",
            "route=/items/{item_id}",
            "status=200",
            "latency_ms=",
        ] {
            assert!(line.contains(part), "{part:?} in {line}");
        }
    }

    #[tokio::test]
    async fn a_panic_is_logged_inside_the_request_span() {
        let lines = logged(async || {
            send("GET", "/boom", Some("panic-2")).await;
        })
        .await;
        let error = lines
            .iter()
            .find(|l| l.contains(" ERROR "))
            .unwrap_or_else(|| panic!("an error line: {lines:#?}"));
        assert!(error.contains("request_id=panic-2"), "{error}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("request_id=panic-2") && l.contains("status=500")),
            "{lines:#?}"
        );
    }
}
