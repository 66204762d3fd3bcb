//! The prepaid balance: read, charge (idempotent), history.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use ecommerce_domain::store::Store;
use ecommerce_domain::wallet::{self, BalanceEntry, EntryKind};
use ecommerce_domain::{Krw, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::catalog::PageQuery;
use crate::error::{ApiError, Result};
use crate::extract::{Json, Paging, UserScope};
use crate::idempotency::{self, KeyedRequest, Route, parse_body, required_key};

const PROBLEM: &str = "application/problem+json";

pub fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/api/v1/users/{user_id}/balance", get(get_balance::<S>))
        .route("/api/v1/users/{user_id}/balance/charges", post(charge_balance::<S>))
        .route("/api/v1/users/{user_id}/balance/history", get(balance_history::<S>))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub user_id: i64,
    /// KRW.
    pub balance: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChargeRequest {
    /// 1,000 to 1,000,000 KRW.
    #[schema(example = 50_000)]
    #[schema(minimum = 1_000, maximum = 1_000_000)]
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeResponse {
    pub user_id: i64,
    pub charged_amount: i64,
    pub balance: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceEntryResponse {
    pub id: i64,
    pub r#type: EntryKind,
    /// The signed change to the balance: CHARGE and REFUND positive, PAYMENT negative or 0.
    pub amount: i64,
    pub balance_after: i64,
    pub order_id: Option<i64>,
    pub created_at: String,
}

impl From<BalanceEntry> for BalanceEntryResponse {
    fn from(e: BalanceEntry) -> Self {
        Self {
            id: e.id.0,
            r#type: e.kind,
            amount: e.amount.0,
            balance_after: e.balance_after.0,
            order_id: e.order_id.map(|o| o.0),
            created_at: e.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceHistoryPage {
    pub items: Vec<BalanceEntryResponse>,
    pub next_after: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance", tag = "balance",
    params(("user_id" = i64, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The balance (0 for a new user)", body = BalanceResponse),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn get_balance<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
) -> Result<axum::Json<BalanceResponse>> {
    let balance = wallet::balance(&app.store, scope.addressed()).await?;
    Ok(axum::Json(BalanceResponse {
        user_id: scope.user_id.0,
        balance: balance.0,
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{user_id}/balance/charges", tag = "balance", request_body = ChargeRequest,
    params(("user_id" = i64, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters; the same key with the same body replays the first answer")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Charged (or the replayed first answer)", body = ChargeResponse),
        (status = 400, description = "INVALID_CHARGE_AMOUNT, BALANCE_LIMIT_EXCEEDED, IDEMPOTENCY_KEY_MISSING, VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
        (status = 409, description = "REQUEST_IN_PROGRESS", body = crate::Problem, content_type = PROBLEM),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn charge_balance<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    headers: HeaderMap,
    body: std::result::Result<Json<Value>, ApiError>,
) -> Result<Response> {
    let key = required_key(&headers)?;
    let Json(value) = body?;
    let request: ChargeRequest = parse_body(&value)?;
    let keyed = KeyedRequest::new(Route::BalanceCharge, scope.user_id, key, &[], &value);
    let who = scope.addressed();
    let answer = idempotency::once(&app.store, Some(&keyed), async |tx| {
        let receipt = wallet::charge(tx, who, Krw(request.amount), Timestamp::now()).await?;
        Ok(ChargeResponse {
            user_id: who.user_id.0,
            charged_amount: receipt.charged_amount.0,
            balance: receipt.balance.0,
        })
    })
    .await?;
    Ok(answer.response)
}

#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance/history", tag = "balance",
    params(("user_id" = i64, Path), PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "Balance changes, newest first", body = BalanceHistoryPage),
        (status = 400, description = "VALIDATION_FAILED", body = crate::Problem, content_type = PROBLEM),
        (status = 401, description = "UNAUTHORIZED", body = crate::Problem, content_type = PROBLEM),
        (status = 403, description = "FORBIDDEN", body = crate::Problem, content_type = PROBLEM),
        (status = 404, description = "USER_NOT_FOUND", body = crate::Problem, content_type = PROBLEM),
    ))]
pub async fn balance_history<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Paging(page): Paging,
) -> Result<axum::Json<BalanceHistoryPage>> {
    let entries = wallet::balance_history(&app.store, scope.addressed(), page).await?;
    let next_after = page.next_after(&entries, |e| e.id.0);
    Ok(axum::Json(BalanceHistoryPage {
        items: entries.into_iter().map(Into::into).collect(),
        next_after,
    }))
}
