//! The prepaid balance: read, charge (idempotent), history.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use ecommerce_domain::store::Store;
use ecommerce_domain::wallet::{self, BalanceEntry, EntryKind};
use ecommerce_domain::{Krw, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Result};
use crate::extract::{Json, PageQuery, Paging, UserScope};
use crate::idempotency::{self, KeyedRequest, Route, parse_body, required_key};
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
    let balance = wallet::balance(&app.store, scope.addressed()).await?;
    Ok(axum::Json(BalanceResponse {
        user_id: scope.user_id.0,
        balance: balance.0,
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
    let entries = wallet::balance_history(&app.store, scope.addressed(), page).await?;
    let next_after = page.next_after(&entries, |e| e.id.0);
    Ok(axum::Json(BalanceHistoryPage {
        items: entries.into_iter().map(Into::into).collect(),
        next_after,
    }))
}
