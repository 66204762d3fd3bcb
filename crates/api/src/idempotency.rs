//! `Idempotency-Key` handling. The key row is inserted in the same transaction as the business
//! writes and gets the final answer before commit, so a retry either replays that answer or
//! (when the first attempt rolled back) runs again. Money moves exactly once, across instances.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::store::{IdempotencyScope, KeyClaim, Tx};
use ecommerce_domain::{Error, Timestamp};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Result};

/// A hash of the request: the route's own parts and the body as a JSON value (key order and
/// white space do not matter).
pub fn request_hash(parts: &[&str], body: &Value) -> String {
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

/// The outcome of claiming a key: go on with the transaction, or answer at once.
pub enum Claimed<T> {
    /// First use: do the work in this transaction and call [`finish`] before commit.
    Fresh(T),
    /// The stored answer of an earlier request with this key and body.
    Answered(Response),
}

/// Claims the key inside `tx`. Anything but a first use rolls back at once, so that the key's
/// lock is free the moment the answer leaves.
pub async fn claim<T: Tx>(mut tx: T, scope: &IdempotencyScope, hash: &str) -> Result<Claimed<T>> {
    let outcome = match tx.claim_idempotency_key(scope, hash, Timestamp::now()).await? {
        KeyClaim::Fresh => return Ok(Claimed::Fresh(tx)),
        KeyClaim::Replay { status, body } => Ok(Claimed::Answered(stored_response(status, body))),
        KeyClaim::Reused => Err(Error::IdempotencyKeyReused.into()),
        KeyClaim::InProgress => Err(Error::RequestInProgress.into()),
    };
    let _ = tx.rollback().await;
    outcome
}

/// Rolls back before answering with `err`: a 4xx changed nothing, and a retry with the same key
/// must find it free straight away.
pub async fn abort(tx: impl Tx, err: impl Into<ApiError>) -> ApiError {
    let _ = tx.rollback().await;
    err.into()
}

/// Serializes the answer, stores it under the key (when there is one) and commits.
pub async fn finish<T: Serialize>(
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
