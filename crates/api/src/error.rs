//! The one API error type: every failure leaves as `application/problem+json` (RFC 9457) with a
//! stable `code`. Domain errors are translated here exactly once, by an exhaustive match; server
//! faults are logged with their cause and answered without it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ecommerce_domain::Error;
use serde::Serialize;
use utoipa::ToSchema;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// A bearer token was sent and refused: the 401's challenge says `error="invalid_token"`.
    token_refused: bool,
    /// `Retry-After` in whole seconds (at least 1): when the client may try again (every 503
    /// and 429 has one).
    retry_after: Option<u64>,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[schema(example = "urn:ecommerce:problem:OUT_OF_STOCK")]
    pub r#type: String,
    #[schema(example = "Conflict")]
    pub title: String,
    #[schema(example = 409)]
    pub status: u16,
    #[schema(example = "not enough stock for product 7")]
    pub detail: String,
    /// The stable, machine-readable error code.
    #[schema(example = "OUT_OF_STOCK")]
    pub code: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            token_refused: false,
            retry_after: None,
        }
    }

    /// The same error with another `detail`.
    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            ..self
        }
    }

    /// The seconds this error's `Retry-After` says, if it has one.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// Answers with `Retry-After: seconds` (at least 1).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid bearer token is required",
        )
    }

    /// `401 UNAUTHORIZED` for a bearer token that was sent but is not valid (malformed, badly
    /// signed, expired or revoked). The body is the same as [`ApiError::unauthorized`]'s.
    pub fn invalid_token() -> Self {
        Self {
            token_refused: true,
            ..Self::unauthorized()
        }
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this resource belongs to another user",
        )
    }

    /// A server fault: the cause goes to the log, the client sees only that it failed.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the server failed to handle this request",
        )
    }

    /// `503 SERVICE_UNAVAILABLE` with `Retry-After: 1`: a passing condition (a full queue, a
    /// database outage or lock), worth retrying, unlike a 500.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", detail).with_retry_after(1)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        use StatusCode as S;
        let err = match err {
            Error::Store(cause) => return cause.into(),
            other => other,
        };
        let (status, code) = match &err {
            Error::Validation(_) => (S::BAD_REQUEST, "VALIDATION_FAILED"),
            Error::InvalidChargeAmount => (S::BAD_REQUEST, "INVALID_CHARGE_AMOUNT"),
            Error::BalanceLimitExceeded => (S::BAD_REQUEST, "BALANCE_LIMIT_EXCEEDED"),
            Error::CartEmpty => (S::BAD_REQUEST, "CART_EMPTY"),
            Error::InvalidCredentials => (S::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Error::UserNotFound => (S::NOT_FOUND, "USER_NOT_FOUND"),
            Error::ProductNotFound => (S::NOT_FOUND, "PRODUCT_NOT_FOUND"),
            Error::CouponNotFound => (S::NOT_FOUND, "COUPON_NOT_FOUND"),
            Error::OrderNotFound => (S::NOT_FOUND, "ORDER_NOT_FOUND"),
            Error::EmailTaken => (S::CONFLICT, "EMAIL_TAKEN"),
            Error::OutOfStock(_) => (S::CONFLICT, "OUT_OF_STOCK"),
            Error::ProductNotOnSale(_) => (S::CONFLICT, "PRODUCT_NOT_ON_SALE"),
            Error::InsufficientBalance => (S::CONFLICT, "INSUFFICIENT_BALANCE"),
            Error::PurchaseLimitExceeded(_) => (S::CONFLICT, "PURCHASE_LIMIT_EXCEEDED"),
            Error::CouponNotIssuable => (S::CONFLICT, "COUPON_NOT_ISSUABLE"),
            Error::CouponAlreadyIssued => (S::CONFLICT, "COUPON_ALREADY_ISSUED"),
            Error::CouponSoldOut => (S::CONFLICT, "COUPON_SOLD_OUT"),
            Error::CouponAlreadyUsed => (S::CONFLICT, "COUPON_ALREADY_USED"),
            Error::CouponExpired => (S::CONFLICT, "COUPON_EXPIRED"),
            Error::OrderExpired => (S::CONFLICT, "ORDER_EXPIRED"),
            Error::OrderNotPending => (S::CONFLICT, "ORDER_NOT_PENDING"),
            Error::OrderNotPaid => (S::CONFLICT, "ORDER_NOT_PAID"),
            Error::DrawNotFound => (S::NOT_FOUND, "DRAW_NOT_FOUND"),
            Error::EntryNotFound => (S::NOT_FOUND, "ENTRY_NOT_FOUND"),
            Error::DrawNotOpen => (S::CONFLICT, "DRAW_NOT_OPEN"),
            Error::AlreadyEntered => (S::CONFLICT, "ALREADY_ENTERED"),
            Error::RequestInProgress => (S::CONFLICT, "REQUEST_IN_PROGRESS"),
            Error::IdempotencyKeyReused => (S::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
            Error::RateLimited { retry_after_seconds } => {
                let seconds = (*retry_after_seconds).max(1);
                return Self {
                    retry_after: Some(seconds),
                    ..Self::new(S::TOO_MANY_REQUESTS, "RATE_LIMITED", err.to_string())
                };
            }
            Error::TooManyPendingOrders(_) => (S::CONFLICT, "TOO_MANY_PENDING_ORDERS"),
            Error::CartFull(_) => (S::CONFLICT, "CART_FULL"),
            Error::Store(_) => (S::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        Self::new(status, code, err.to_string())
    }
}

impl From<ecommerce_domain::StoreError> for ApiError {
    fn from(err: ecommerce_domain::StoreError) -> Self {
        if err.unavailable {
            tracing::warn!(error = %err, "database unavailable");
            Self::unavailable("the database is unavailable; try again shortly")
        } else {
            Self::internal(err)
        }
    }
}

impl ApiError {
    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        Problem {
            r#type: format!("urn:ecommerce:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

/// Every 401 names the scheme to authenticate with (RFC 9110 §11.6.1); a refused token also says
/// so (RFC 6750 §3.1), so that a client knows to sign in again rather than to add a token.
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");
const BEARER_INVALID_TOKEN: HeaderValue = HeaderValue::from_static(r#"Bearer error="invalid_token""#);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::PROBLEM));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.token_refused {
                BEARER_INVALID_TOKEN
            } else {
                BEARER
            };
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(error: ApiError) -> Option<String> {
        let response = error.into_response();
        response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[test]
    fn every_401_carries_a_bearer_challenge_and_a_refused_token_says_so() {
        assert_eq!(challenge(ApiError::unauthorized()).as_deref(), Some("Bearer"));
        assert_eq!(
            challenge(ApiError::invalid_token()).as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
        assert_eq!(challenge(Error::InvalidCredentials.into()).as_deref(), Some("Bearer"));
        assert_eq!(challenge(ApiError::forbidden()), None);
        assert_eq!(
            ApiError::invalid_token().problem().detail,
            ApiError::unauthorized().problem().detail,
            "the body does not change"
        );
    }
}
