//! `Idempotency-Key` handling, written once for every route that takes a key ([`Route`]).
//!
//! A handler reads the key ([`required_key`] or [`crate::extract::idempotency_key`]), takes the
//! body as a JSON value (the hash covers the value, not the bytes) and parses it ([`parse_body`]),
//! then hands the business work to [`once`]. There the key row is inserted in the same
//! transaction as the business writes and gets the final answer before commit, so a retry either
//! replays that answer or (when the first attempt rolled back) runs again. Money moves exactly
//! once, across instances.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::store::{IdempotencyScope, KeyClaim, Store, Tx};
use ecommerce_domain::{Error, Timestamp, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Result};
use crate::extract::idempotency_key;

/// The routes that take an `Idempotency-Key`. Keys are per user and per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    BalanceCharge,
    OrderPayment,
}

impl Route {
    /// The name keys of this route are stored under; changing it forgets every stored key.
    fn stored_name(self) -> &'static str {
        match self {
            Route::BalanceCharge => "balance.charge",
            Route::OrderPayment => "order.payment",
        }
    }
}

/// The `Idempotency-Key` of a route that requires one: `IDEMPOTENCY_KEY_MISSING` without it.
pub fn required_key(headers: &HeaderMap) -> Result<String> {
    idempotency_key(headers)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_MISSING",
            "send an Idempotency-Key header",
        )
    })
}

/// The body, read as a JSON value for the hash, as the route's request type.
pub fn parse_body<T: DeserializeOwned>(body: &Value) -> Result<T> {
    serde_json::from_value(body.clone()).map_err(|e| ApiError::validation(e.to_string()))
}

/// A hash of the request: the route's own parts and the body as a JSON value (key order and
/// white space do not matter).
fn request_hash(parts: &[&str], body: &Value) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    write_canonical(body, &mut hasher);
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn write_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(Value::String(key.clone()).to_string().as_bytes());
                hasher.update(b":");
                write_canonical(&map[key], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                write_canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

/// A request with a key: the key scoped to its user and route, and the hash of what was asked.
pub struct KeyedRequest {
    scope: IdempotencyScope,
    hash: String,
}

impl KeyedRequest {
    /// `parts` are what identifies the request besides its body (such as the order id of a
    /// payment); they are hashed with the body.
    pub fn new(route: Route, user: UserId, key: String, parts: &[&str], body: &Value) -> Self {
        Self {
            scope: IdempotencyScope {
                user_id: user,
                route: route.stored_name(),
                key,
            },
            hash: request_hash(parts, body),
        }
    }
}

/// Marks an answer that is the stored answer of an earlier request with the same key (as
/// Stripe's API does), so that a client can tell a replay from a first run.
pub const REPLAYED: header::HeaderName = header::HeaderName::from_static("idempotent-replayed");

/// What [`once`] answered.
pub struct Answer {
    pub response: Response,
    /// The stored answer of an earlier request with the same key and body: nothing ran now.
    pub replayed: bool,
}

/// Runs `work` in one transaction and answers `200` with what it returns, once per key. With a
/// key, the first request claims it in that transaction and stores the answer before commit; a
/// later one with the same key and body gets that answer back without running anything,
/// another body `IDEMPOTENCY_KEY_REUSED`, and one while the first still runs
/// `REQUEST_IN_PROGRESS`. On any error the transaction rolls back at once, so that the key is
/// free for a retry the moment the error leaves. Without a key, `work` just runs.
pub async fn once<S: Store, T: Serialize>(
    store: &S,
    request: Option<&KeyedRequest>,
    work: impl AsyncFnOnce(&mut S::Tx) -> Result<T>,
) -> Result<Answer> {
    let mut tx = store.begin().await?;
    if let Some(request) = request {
        tx = match claim(tx, &request.scope, &request.hash).await? {
            Claimed::Fresh(tx) => tx,
            Claimed::Answered(mut response) => {
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
                return Ok(Answer {
                    response,
                    replayed: true,
                });
            }
        };
    }
    match work(&mut tx).await {
        Ok(body) => Ok(Answer {
            response: finish(tx, request.map(|r| &r.scope), StatusCode::OK, &body).await?,
            replayed: false,
        }),
        Err(err) => {
            // A 4xx changed nothing, and a retry with the same key must find it free straight away.
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// The outcome of claiming a key: go on with the transaction, or answer at once.
enum Claimed<T> {
    /// First use: do the work in this transaction and call [`finish`] before commit.
    Fresh(T),
    /// The stored answer of an earlier request with this key and body.
    Answered(Response),
}

/// Claims the key inside `tx`. Anything but a first use rolls back at once, so that the key's
/// lock is free the moment the answer leaves.
async fn claim<T: Tx>(mut tx: T, scope: &IdempotencyScope, hash: &str) -> Result<Claimed<T>> {
    let outcome = match tx.claim_idempotency_key(scope, hash, Timestamp::now()).await? {
        KeyClaim::Fresh => return Ok(Claimed::Fresh(tx)),
        KeyClaim::Replay { status, body } => Ok(Claimed::Answered(stored_response(status, body))),
        KeyClaim::Reused => Err(Error::IdempotencyKeyReused.into()),
        KeyClaim::InProgress => Err(Error::RequestInProgress.into()),
    };
    let _ = tx.rollback().await;
    outcome
}

/// Serializes the answer, stores it under the key (when there is one) and commits.
async fn finish<T: Serialize>(
    mut tx: impl Tx,
    scope: Option<&IdempotencyScope>,
    status: StatusCode,
    body: &T,
) -> Result<Response> {
    let json = serde_json::to_string(body).map_err(ApiError::internal)?;
    if let Some(scope) = scope {
        tx.save_idempotent_response(scope, status.as_u16(), &json).await?;
    }
    tx.commit().await?;
    Ok(stored_response(status.as_u16(), json))
}

fn stored_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Stored keys carry this hash for 48 hours: a change would answer IDEMPOTENCY_KEY_REUSED
    /// to a client retrying across a deploy.
    #[test]
    fn hash_is_stable_across_releases() {
        assert_eq!(
            request_hash(&["7"], &json!({"user_coupon_id": 3, "note": [null, true, "x"]})),
            "2b5c14f99379e5f4fd6cc0666649261e88eb0d09620dcec350a1a869a453e5a8"
        );
    }

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a = request_hash(&["charge"], &json!({"amount": 1000, "x": [1, {"b": 2, "a": 1}]}));
        let b = request_hash(&["charge"], &json!({"x": [1, {"a": 1, "b": 2}], "amount": 1000}));
        let c = request_hash(&["charge"], &json!({"amount": 1001, "x": [1, {"a": 1, "b": 2}]}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            a,
            request_hash(&["payment", "7"], &json!({"amount": 1000, "x": [1, {"b": 2, "a": 1}]}))
        );
    }
}
