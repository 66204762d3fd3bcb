//! Operations: health probes, Prometheus metrics, Swagger UI and the event contract.
//!
//! Three probes, for three questions:
//! - `/health/live`: is the process serving? It touches nothing else, so an orchestrator that
//!   restarts on it does not restart every instance when the database is down.
//! - `/health/ready`: should traffic come here? The database answers *and* takes writes (SQLite:
//!   its write lock can be taken; PostgreSQL: a primary, not in recovery, not read-only), within
//!   [`READY_TIMEOUT`]. One check runs at a time per instance and its verdict is reused for
//!   [`READY_REUSE`], so a flood of probes costs the database one check a second.
//! - `/health`: the contract's original probe, unchanged: the database answers.

use std::time::{Duration, Instant};

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

operations!(health::<S>, health_live, health_ready::<S>);

/// How long `/health` waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/health/ready` waits for its whole check: under the one second orchestrators wait
/// for a probe by default.
pub const READY_TIMEOUT: Duration = Duration::from_millis(900);
/// How long a readiness verdict is reused.
pub const READY_REUSE: Duration = Duration::from_secs(1);

/// The event contract: the AsyncAPI 3 document of the order events, as committed.
pub const ASYNCAPI_JSON: &str = include_str!("../../../docs/asyncapi.json");

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
/// balancers and orchestrators; no token needed. `/health/live` and `/health/ready` split it for
/// orchestrators.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = HealthResponse, example = json!({"status": "ok"})),
    ))]
pub async fn health<S: Store>(State(app): State<AppState<S>>) -> Response {
    match tokio::time::timeout(HEALTH_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => ok(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health check failed");
            ApiError::unavailable("the database does not answer").into_response()
        }
        Err(_) => ApiError::unavailable("the database does not answer").into_response(),
    }
}

fn ok() -> Response {
    axum::Json(HealthResponse { status: "ok" }).into_response()
}

/// Liveness: the process serves
///
/// `200 {"status": "ok"}` whenever the process answers at all; it asks nothing of the database,
/// so a database outage does not make an orchestrator restart the instance. For liveness probes.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses(
        (status = 200, description = "The process serves", body = HealthResponse, example = json!({"status": "ok"})),
    ))]
pub async fn health_live() -> Response {
    ok()
}

/// Readiness: the instance can serve every request
///
/// `200 {"status": "ok"}` when the database answers and takes writes (SQLite: the write lock can
/// be taken; PostgreSQL: the server is a primary, neither in recovery nor read-only), all within
/// 0.9 seconds; else `503 SERVICE_UNAVAILABLE`. For readiness probes and load balancers. The
/// verdict is reused for a second, so probes may come as often as they like.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "The database answers and takes writes", body = HealthResponse,
            example = json!({"status": "ok"})),
    ))]
pub async fn health_ready<S: Store>(State(app): State<AppState<S>>) -> Response {
    let check = async {
        app.store.ping().await.map_err(|err| ("does not answer", err))?;
        app.store
            .check_writable()
            .await
            .map_err(|err| ("does not take writes", err))
    };
    let verdict = app
        .readiness
        .verdict(async {
            match tokio::time::timeout(READY_TIMEOUT, check).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err((what, err))) => {
                    tracing::warn!(error = %err, "readiness check failed: the database {what}");
                    Err(what)
                }
                Err(_) => {
                    tracing::warn!(timeout = ?READY_TIMEOUT, "readiness check timed out");
                    Err("does not answer in time")
                }
            }
        })
        .await;
    match verdict {
        Ok(()) => ok(),
        Err(what) => ApiError::unavailable(format!("the database {what}")).into_response(),
    }
}

/// The last readiness verdict of this instance (see the module documentation).
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), &'static str>)>>,
}

impl Readiness {
    /// A verdict younger than [`READY_REUSE`], or the one `check` gives now. Probes arriving
    /// while a check runs wait for it and take its verdict.
    async fn verdict(&self, check: impl Future<Output = Result<(), &'static str>>) -> Result<(), &'static str> {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = *last
            && at.elapsed() < READY_REUSE
        {
            return verdict;
        }
        let verdict = check.await;
        *last = Some((Instant::now(), verdict));
        verdict
    }
}

/// `GET /api-docs/asyncapi.json`: the event contract. Not in the OpenAPI document, like the
/// OpenAPI document itself.
pub async fn asyncapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        ASYNCAPI_JSON,
    )
        .into_response()
}

/// Prometheus text format. Not in the OpenAPI document: it is for the scraper, not for clients.
/// With `ECOMMERCE_METRICS_TOKEN` set, only a request bearing that token is answered (else `401`).
pub async fn metrics_text<S: Store>(State(app): State<AppState<S>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &app.config.metrics_token {
        let sent = crate::extract::bearer_token(&headers).unwrap_or_default();
        if !same_secret(sent.as_bytes(), expected.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
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

/// Compares two secrets in a time that depends only on their lengths.
fn same_secret(sent: &[u8], expected: &[u8]) -> bool {
    sent.len() == expected.len() && sent.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use ecommerce_store::{PoolOptions, SqliteStore};
    use tower::ServiceExt;

    use super::*;
    use crate::{ApiConfig, router};

    /// A SQLite file in a folder of its own, removed afterwards.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> Self {
            let folder = std::env::temp_dir().join(format!("ecommerce-ops-{}", uuid::Uuid::new_v4()));
            Self(folder)
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("ops.db").display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A router over `store` with a readiness verdict of its own.
    fn app(store: &SqliteStore) -> Router {
        router(AppState::new(store.clone(), &[7; 32], ApiConfig::default(), None))
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("a valid request");
        let response = app.clone().oneshot(request).await.expect("the router never fails");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        (status, content_type, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn live_and_ready_answer_ok_while_the_database_takes_writes() {
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let app = app(&store);
        for probe in ["/health", "/health/live", "/health/ready"] {
            let (status, content_type, body) = get(&app, probe).await;
            assert_eq!(status, StatusCode::OK, "{probe}");
            assert_eq!(content_type, "application/json", "{probe}");
            assert_eq!(body, r#"{"status":"ok"}"#, "{probe}");
        }
    }

    #[tokio::test]
    async fn ready_fails_while_another_process_holds_the_write_lock_and_live_does_not() {
        use sqlx::{Connection, Executor};
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let mut other = sqlx::SqliteConnection::connect(&db.url())
            .await
            .expect("another connection");
        other.execute("BEGIN IMMEDIATE").await.expect("the write lock");

        let locked = app(&store);
        let (status, content_type, body) = get(&locked, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, crate::PROBLEM);
        assert!(body.contains(r#""code":"SERVICE_UNAVAILABLE""#), "{body}");
        assert!(body.contains("does not take writes"), "{body}");
        assert_eq!(get(&locked, "/health/live").await.0, StatusCode::OK);
        assert_eq!(
            get(&locked, "/health").await.0,
            StatusCode::OK,
            "/health keeps its contract"
        );

        other.execute("ROLLBACK").await.expect("release the lock");
        assert_eq!(get(&app(&store), "/health/ready").await.0, StatusCode::OK);
        let _ = other.close().await;
    }

    /// A write that meets another process's write lock for longer than SQLite's busy timeout
    /// is a passing condition: `503` with `Retry-After`, never `500` (audit M4).
    #[tokio::test]
    async fn a_write_that_meets_a_held_sqlite_lock_is_answered_503_with_retry_after() {
        use sqlx::{Connection, Executor};
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let mut other = sqlx::SqliteConnection::connect(&db.url())
            .await
            .expect("another connection");
        other.execute("BEGIN IMMEDIATE").await.expect("the write lock");

        let request = Request::builder()
            .method("POST")
            .uri("/api/v1/users")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"email":"locked@example.com","password":"password-1234","name":"Locked"}"#,
            ))
            .expect("a valid request");
        let response = app(&store).oneshot(request).await.expect("the router never fails");
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        other.execute("ROLLBACK").await.expect("release the lock");
        let _ = other.close().await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
        assert!(String::from_utf8_lossy(&body).contains(r#""code":"SERVICE_UNAVAILABLE""#));
    }

    #[tokio::test]
    async fn metrics_require_the_configured_token() {
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let config = ApiConfig {
            metrics_token: Some("scrape-token-0123456789".into()),
            ..ApiConfig::default()
        };
        let app = router(AppState::new(store.clone(), &[7; 32], config, None));
        let scrape = |token: Option<&'static str>| {
            let app = app.clone();
            async move {
                let mut request = Request::builder().uri("/metrics");
                if let Some(token) = token {
                    request = request.header(header::AUTHORIZATION, token);
                }
                let response = app
                    .oneshot(request.body(Body::empty()).expect("a valid request"))
                    .await
                    .expect("the router never fails");
                response.status()
            }
        };
        assert_eq!(scrape(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            scrape(Some("Bearer wrong-token-0123456789")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            scrape(Some("Bearer scrape-token-012345678")).await,
            StatusCode::UNAUTHORIZED
        );
        // Past the token, this router has no recorder.
        assert_eq!(
            scrape(Some("Bearer scrape-token-0123456789")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&self::app(&store), "/metrics").await.0,
            StatusCode::NOT_FOUND,
            "no token configured: open"
        );
    }

    #[tokio::test]
    async fn a_readiness_verdict_is_reused_for_a_second() {
        let readiness = Readiness::default();
        let checks = AtomicU32::new(0);
        let check = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            Err("is down")
        };
        assert_eq!(readiness.verdict(check()).await, Err("is down"));
        assert_eq!(readiness.verdict(check()).await, Err("is down"));
        assert_eq!(
            checks.load(Ordering::SeqCst),
            1,
            "the second probe reused the first verdict"
        );
        *readiness.last.lock().await = Some((Instant::now() - READY_REUSE, Err("is down")));
        let _ = readiness.verdict(check()).await;
        assert_eq!(checks.load(Ordering::SeqCst), 2, "an old verdict is checked again");
    }

    #[tokio::test]
    async fn the_event_contract_is_served_as_committed() {
        let db = TempDb::new();
        let store = SqliteStore::connect(&db.url(), PoolOptions::default())
            .await
            .expect("a SQLite file");
        let (status, content_type, body) = get(&app(&store), "/api-docs/asyncapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/asyncapi.json"))
            .expect("docs/asyncapi.json");
        assert_eq!(body, committed);
        let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(document["asyncapi"], "3.0.0");
    }
}
