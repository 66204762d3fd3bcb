//! In-process tests of the HTTP layer: requests go through `ecommerce_api::router` with
//! `oneshot` (no process, no socket) on a real SQLite file. They pin what the router and the
//! extractors decide before any handler runs: the order of the checks on a user-scoped route
//! (401 → 403 → 400 → 404 → 409), the JSON extractor's rejections, and 404/405/413/415.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ecommerce_api::{ApiConfig, AppState, BODY_LIMIT};
use ecommerce_domain::Timestamp;
use ecommerce_domain::account::{NewUser, Role};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_store::{PoolOptions, SqliteStore};
use ecommerce_testkit::{Engine, TestDb, unique_email};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"in-process-test-secret-0123456789abcdef";
const PASSWORD: &str = "password-1234";

/// The router on a fresh SQLite file, with an admin.
struct Api {
    router: Router,
    _db: TestDb,
}

struct User {
    id: i64,
    token: String,
}

impl Api {
    async fn new() -> Api {
        let db = TestDb::create(Engine::Sqlite).await;
        let store = SqliteStore::connect(db.url(), PoolOptions { max_connections: 2 })
            .await
            .expect("open the test database");
        let admin = NewUser {
            email: "admin@example.com".into(),
            password_hash: ecommerce_api::auth::hash_password(PASSWORD.into()).await.expect("hash"),
            name: "Admin".into(),
            role: Role::Admin,
        };
        let mut tx = store.begin().await.expect("begin");
        tx.upsert_admin(&admin, Timestamp::now()).await.expect("admin");
        tx.commit().await.expect("commit");
        let state = AppState::new(store, SECRET, ApiConfig::default(), None);
        Api {
            router: ecommerce_api::router(state),
            _db: db,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.expect("an answer");
        let status = response.status();
        let problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(problem, "{status} must be application/problem+json: {body}");
            assert_eq!(body["status"], json!(status.as_u16()), "{body}");
        }
        (status, body)
    }

    async fn json(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::from(body.to_owned())).expect("a request"))
            .await
    }

    async fn log_in(&self, email: &str) -> User {
        let body = json!({"email": email, "password": PASSWORD}).to_string();
        let (status, token) = self.json(Method::POST, "/api/v1/auth/token", None, &body).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        User {
            id: token["user_id"].as_i64().expect("user_id"),
            token: token["access_token"].as_str().expect("token").to_owned(),
        }
    }

    async fn user(&self) -> User {
        let email = unique_email();
        let body = json!({"email": email, "password": PASSWORD, "name": "Kim"}).to_string();
        let (status, created) = self.json(Method::POST, "/api/v1/users", None, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.log_in(&email).await
    }
}

fn code(answer: &(StatusCode, Value)) -> (u16, &str) {
    (answer.0.as_u16(), answer.1["code"].as_str().unwrap_or("<no code>"))
}

#[tokio::test]
async fn a_user_scoped_route_checks_401_then_403_then_400_then_404_then_409() {
    let api = Api::new().await;
    let owner = api.user().await;
    let other = api.user().await;
    let admin = api.log_in("admin@example.com").await;
    let body = json!({"name": "Tee", "price": 1000, "stock": 1}).to_string();
    let (status, product) = api
        .json(Method::POST, "/api/v1/admin/products", Some(&admin.token), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let product = product["id"].as_i64().expect("product id");

    let orders = format!("/api/v1/users/{}/orders", owner.id);
    let malformed = "{\"items\": [";
    // No token beats everything else, even a malformed body on another user's path.
    let answer = api.json(Method::POST, &orders, None, malformed).await;
    assert_eq!(code(&answer), (401, "UNAUTHORIZED"));
    let answer = api.json(Method::POST, &orders, Some("not-a-token"), malformed).await;
    assert_eq!(code(&answer), (401, "UNAUTHORIZED"));
    // Another user's path is 403 before the body is read.
    let answer = api.json(Method::POST, &orders, Some(&other.token), malformed).await;
    assert_eq!(code(&answer), (403, "FORBIDDEN"));
    // The owner's malformed body is 400.
    let answer = api.json(Method::POST, &orders, Some(&owner.token), malformed).await;
    assert_eq!(code(&answer), (400, "VALIDATION_FAILED"));
    // A well-formed body naming an unknown product is 404, then the rules are 409.
    let unknown = json!({"items": [{"product_id": 987_654, "quantity": 1}]}).to_string();
    let answer = api.json(Method::POST, &orders, Some(&owner.token), &unknown).await;
    assert_eq!(code(&answer), (404, "PRODUCT_NOT_FOUND"));
    let too_many = json!({"items": [{"product_id": product, "quantity": 2}]}).to_string();
    let answer = api.json(Method::POST, &orders, Some(&owner.token), &too_many).await;
    assert_eq!(code(&answer), (409, "OUT_OF_STOCK"));
    let one = json!({"items": [{"product_id": product, "quantity": 1}]}).to_string();
    let answer = api.json(Method::POST, &orders, Some(&owner.token), &one).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
}

#[tokio::test]
async fn the_json_extractor_answers_400_validation_failed_for_every_malformed_body() {
    let api = Api::new().await;
    for raw in [
        "",
        "{",
        "not json",
        "[]",
        "[\"a@example.com\", \"password-1234\", \"Kim\"]",
        "\"text\"",
        "{}",
        "{\"email\": 5, \"password\": \"password-1234\", \"name\": \"Kim\"}",
        "{\"email\": \"a@example.com\", \"password\": \"password-1234\"}",
    ] {
        let answer = api.json(Method::POST, "/api/v1/users", None, raw).await;
        assert_eq!(code(&answer), (400, "VALIDATION_FAILED"), "body {raw:?}: {}", answer.1);
    }
}

#[tokio::test]
async fn http_level_failures_are_404_405_413_and_415_problems() {
    let api = Api::new().await;
    let answer = api.json(Method::GET, "/api/v1/nope", None, "").await;
    assert_eq!(code(&answer), (404, "NOT_FOUND"));
    let answer = api.json(Method::DELETE, "/api/v1/products", None, "").await;
    assert_eq!(code(&answer), (405, "METHOD_NOT_ALLOWED"));

    let huge = format!("{{\"email\": \"{}\"}}", "x".repeat(BODY_LIMIT + 1));
    let answer = api.json(Method::POST, "/api/v1/users", None, &huge).await;
    assert_eq!(code(&answer), (413, "PAYLOAD_TOO_LARGE"));

    let body = json!({"email": unique_email(), "password": PASSWORD, "name": "Kim"}).to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut request = Request::builder().method(Method::POST).uri("/api/v1/users");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let answer = api
            .send(request.body(Body::from(body.clone())).expect("a request"))
            .await;
        assert_eq!(code(&answer), (415, "UNSUPPORTED_MEDIA_TYPE"), "{content_type:?}");
    }
    let answer = api.json(Method::POST, "/api/v1/users", None, &body).await;
    assert_eq!(answer.0, StatusCode::CREATED, "with application/json it is accepted");
}
