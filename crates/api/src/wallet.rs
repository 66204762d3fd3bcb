//! The prepaid balance: read, charge (idempotent), history.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ecommerce_domain::store::{IdempotencyScope, Store};
use ecommerce_domain::wallet::{BalanceEntry, EntryKind};
use ecommerce_domain::{Error, Timestamp, usecase};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Result};
use crate::extract::{Json, PageQuery, Paging, UserScope, idempotency_key};
use crate::idempotency::{Claimed, abort, claim, finish, request_hash};
use crate::openapi::operations;

operations!(get_balance::<S>, charge_balance::<S>, balance_history::<S>);

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

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryKindDto {
    Charge,
    Payment,
    Refund,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceEntryResponse {
    pub id: i64,
    pub r#type: EntryKindDto,
    /// The signed change to the balance: CHARGE and REFUND positive, PAYMENT negative or 0.
    pub amount: i64,
    pub balance_after: i64,
    pub order_id: Option<i64>,
    pub created_at: String,
}

impl From<BalanceEntry> for BalanceEntryResponse {
    fn from(e: BalanceEntry) -> Self {
        let kind = match e.kind {
            EntryKind::Charge => EntryKindDto::Charge,
            EntryKind::Payment => EntryKindDto::Payment,
            EntryKind::Refund => EntryKindDto::Refund,
        };
        Self {
            id: e.id,
            r#type: kind,
            amount: e.amount,
            balance_after: e.balance_after,
            order_id: e.order_id,
            created_at: e.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceHistoryPage {
    pub items: Vec<BalanceEntryResponse>,
    pub next_after: Option<i64>,
}

/// Get the balance
///
/// The user's prepaid balance in KRW; 0 for a new user.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance", tag = "balance",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The balance", body = BalanceResponse, example = json!({"user_id": 42, "balance": 150000})),
    ))]
pub async fn get_balance<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
) -> Result<axum::Json<BalanceResponse>> {
    let balance = app.store.balance(scope.user_id).await?.ok_or(Error::UserNotFound)?;
    Ok(axum::Json(BalanceResponse {
        user_id: scope.user_id,
        balance,
    }))
}

/// Charge the balance
///
/// Adds 1,000 to 1,000,000 KRW; the balance never exceeds 10,000,000. Idempotent: the same
/// `Idempotency-Key` with the same body answers the first answer again and the balance moves
/// once; with another body it is `IDEMPOTENCY_KEY_REUSED`; while the first request with the key
/// still runs, `REQUEST_IN_PROGRESS`. Keys are per user and kept at least 24 hours.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/balance/charges", tag = "balance",
    request_body(content = ChargeRequest, example = json!({"amount": 50000})),
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1 to 255 visible ASCII characters, new for each intended charge")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Charged, or the first answer replayed", body = ChargeResponse,
            example = json!({"user_id": 42, "charged_amount": 50000, "balance": 200000})),
        (status = 400, description = "INVALID_CHARGE_AMOUNT, BALANCE_LIMIT_EXCEEDED"),
    ))]
pub async fn charge_balance<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    headers: HeaderMap,
    body: std::result::Result<Json<Value>, ApiError>,
) -> Result<Response> {
    let key = idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_MISSING",
            "send an Idempotency-Key header",
        )
    })?;
    let Json(value) = body?;
    let request: ChargeRequest =
        serde_json::from_value(value.clone()).map_err(|e| ApiError::validation(e.to_string()))?;
    let idempotency = IdempotencyScope {
        user_id: scope.user_id,
        route: "balance.charge",
        key,
    };
    let tx = app.store.begin().await?;
    let mut tx = match claim(tx, &idempotency, &request_hash(&[], &value)).await? {
        Claimed::Fresh(tx) => tx,
        Claimed::Answered(response) => return Ok(response),
    };
    let receipt = match usecase::charge(&mut tx, scope.user_id, request.amount, Timestamp::now()).await {
        Ok(receipt) => receipt,
        Err(err) => return Err(abort(tx, err).await),
    };
    let body = ChargeResponse {
        user_id: scope.user_id,
        charged_amount: receipt.charged_amount,
        balance: receipt.balance,
    };
    finish(tx, Some(&idempotency), StatusCode::OK, &body).await
}

/// List the balance history
///
/// Every change to the balance, newest first. Amounts are signed: `CHARGE` and `REFUND`
/// positive, `PAYMENT` negative or 0, so the balance is the sum of the history.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/balance/history", tag = "balance",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Balance changes, newest first", body = BalanceHistoryPage, example = json!({
            "items": [
                {"id": 3, "type": "PAYMENT", "amount": -35100, "balance_after": 164900, "order_id": 11,
                    "created_at": "2026-03-01T09:12:44.512Z"},
                {"id": 2, "type": "CHARGE", "amount": 50000, "balance_after": 200000, "order_id": null,
                    "created_at": "2026-03-01T09:10:02.031Z"}
            ],
            "next_after": null
        })),
    ))]
pub async fn balance_history<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Paging(page): Paging,
) -> Result<axum::Json<BalanceHistoryPage>> {
    scope.require_user(&app).await?;
    let entries = app.store.balance_history(scope.user_id, page).await?;
    let next_after = page.next_after(&entries, |e| e.id);
    Ok(axum::Json(BalanceHistoryPage {
        items: entries.into_iter().map(Into::into).collect(),
        next_after,
    }))
}
