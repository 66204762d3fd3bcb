//! Coupons: admin creation, public reads, first-come-first-served issue, the user's coupons.
//!
//! A rush on one coupon must not queue every request on the database: the quantity is spread
//! over shard rows (see the store), and once an instance sees a coupon sold out it answers from
//! memory. Coupons are never put back into stock, so "sold out" never becomes false, and the set
//! of holders is final by then: a request concludes "sold out" only when a fresh read shows every
//! shard empty, and an uncommitted decrement would still show its old value (and make the request
//! wait for it), so every issue that succeeded has committed. The holders are read once, right
//! after that, to keep `COUPON_ALREADY_ISSUED` ahead of `COUPON_SOLD_OUT` without a query.
//! The issue window is part of the cached definition (a coupon never changes once created), so
//! the sold-out gate answers `COUPON_NOT_ISSUABLE` between the two from memory too.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use ecommerce_domain::account::require_user;
use ecommerce_domain::coupon::{self, Coupon, CouponRequest, DiscountType, NewCoupon, UserCoupon, UserCouponStatus};
use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{CouponId, Error, Timestamp, UserId, check_range};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::Result;
use crate::extract::{Admin, Json, PageQuery, Paging, PathParams, UserScope, query_rejection};
use crate::openapi::operations;
use crate::{AppState, Created};

operations!(
    create_coupon::<S>,
    list_coupons::<S>,
    get_coupon::<S>,
    issue_coupon::<S>,
    list_user_coupons::<S>,
);

/// Holder sets larger than this are not kept in memory; such coupons ask the database instead.
const MAX_CACHED_HOLDERS: usize = 200_000;

/// Per-instance knowledge: coupon definitions (immutable once created) and sold-out coupons with
/// their final holders (`None` when too many to keep).
#[derive(Default)]
pub struct CouponCache {
    definitions: RwLock<HashMap<CouponId, Coupon>>,
    sold_out: RwLock<HashMap<CouponId, Option<HashSet<UserId>>>>,
}

/// What the cache knows about a user asking for a sold-out coupon.
enum SoldOut {
    NotKnown,
    Holder(bool),
    AskDatabase,
}

impl CouponCache {
    fn definition(&self, id: CouponId) -> Option<Coupon> {
        self.definitions.read().ok()?.get(&id).cloned()
    }

    fn remember(&self, coupon: &Coupon) {
        if let Ok(mut map) = self.definitions.write() {
            map.insert(coupon.id, coupon.clone());
        }
    }

    fn sold_out(&self, id: CouponId, user: UserId) -> SoldOut {
        let Ok(map) = self.sold_out.read() else {
            return SoldOut::NotKnown;
        };
        match map.get(&id) {
            None => SoldOut::NotKnown,
            Some(Some(holders)) => SoldOut::Holder(holders.contains(&user)),
            Some(None) => SoldOut::AskDatabase,
        }
    }

    fn mark_sold_out(&self, id: CouponId, holders: Vec<UserId>) {
        let holders = (holders.len() <= MAX_CACHED_HOLDERS).then(|| holders.into_iter().collect());
        if let Ok(mut map) = self.sold_out.write() {
            map.insert(id, holders);
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCouponRequest {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub discount_type: DiscountType,
    /// FIXED: 1 to 10,000,000 KRW; RATE: 1 to 100 percent.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub discount_value: i64,
    /// 1 to 10,000,000.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub total_quantity: i64,
    /// 1 to 31,536,000, counted from each user's issue.
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub valid_for_seconds: i64,
    /// RFC 3339, optional: issuing before it is `COUPON_NOT_ISSUABLE`.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub issue_starts_at: Option<String>,
    /// RFC 3339, optional, after `issue_starts_at` when both are given: from it on, issuing is
    /// `COUPON_NOT_ISSUABLE` and the coupon leaves `GET /api/v1/coupons`.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub issue_ends_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponResponse {
    pub id: i64,
    pub name: String,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub total_quantity: i64,
    pub remaining_quantity: i64,
    pub valid_for_seconds: i64,
    /// RFC 3339; null when issuable from its creation.
    #[schema(format = DateTime)]
    pub issue_starts_at: Option<String>,
    /// RFC 3339 (exclusive); null when the window never ends.
    #[schema(format = DateTime)]
    pub issue_ends_at: Option<String>,
}

impl From<Coupon> for CouponResponse {
    fn from(c: Coupon) -> Self {
        Self {
            id: c.id.0,
            name: c.name,
            discount_type: c.discount.kind,
            discount_value: c.discount.value,
            total_quantity: c.total_quantity,
            remaining_quantity: c.remaining_quantity,
            valid_for_seconds: c.valid_for_seconds,
            issue_starts_at: c.issue_starts_at.map(Timestamp::to_rfc3339),
            issue_ends_at: c.issue_ends_at.map(Timestamp::to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponPage {
    pub items: Vec<CouponResponse>,
    pub next_after: Option<i64>,
}

fn coupon_example() -> serde_json::Value {
    serde_json::json!({
        "id": 3, "name": "Spring 10%", "discount_type": "RATE", "discount_value": 10,
        "total_quantity": 1000, "remaining_quantity": 640, "valid_for_seconds": 604800,
        "issue_starts_at": "2026-03-01T09:00:00.000Z", "issue_ends_at": null
    })
}

fn user_coupon_example() -> serde_json::Value {
    serde_json::json!({
        "id": 91, "coupon_id": 3, "name": "Spring 10%", "discount_type": "RATE", "discount_value": 10,
        "status": "AVAILABLE", "issued_at": "2026-03-01T09:00:00.000Z", "expires_at": "2026-03-08T09:00:00.000Z",
        "used_at": null, "order_id": null
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueCouponRequest {
    #[schema(minimum = 1)]
    pub coupon_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCouponResponse {
    pub id: i64,
    pub coupon_id: i64,
    pub name: String,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    /// EXPIRED is computed on read: past `expires_at` and unused.
    pub status: UserCouponStatus,
    pub issued_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub order_id: Option<i64>,
}

impl UserCouponResponse {
    pub fn new(c: UserCoupon, now: Timestamp) -> Self {
        Self {
            id: c.id.0,
            coupon_id: c.coupon_id.0,
            status: c.status(now),
            name: c.name,
            discount_type: c.discount.kind,
            discount_value: c.discount.value,
            issued_at: c.issued_at.to_rfc3339(),
            expires_at: c.expires_at.to_rfc3339(),
            used_at: c.used_at.map(Timestamp::to_rfc3339),
            order_id: c.order_id.map(|o| o.0),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCouponPage {
    pub items: Vec<UserCouponResponse>,
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserCouponQuery {
    /// AVAILABLE, USED or EXPIRED; all when absent.
    pub status: Option<UserCouponStatus>,
}

/// Create a coupon (admin)
///
/// `FIXED` takes `discount_value` KRW off an order (at most its total), `RATE` takes
/// `discount_value` percent off (rounded down). Each user's coupon is valid for
/// `valid_for_seconds` from its issue. `issue_starts_at` and `issue_ends_at` (optional) bound
/// when it can be issued: from the start, until (not including) the end.
#[utoipa::path(post, path = "/api/v1/admin/coupons", tag = "admin",
    request_body(content = CreateCouponRequest, example = json!({
        "name": "Spring 10%", "discount_type": "RATE", "discount_value": 10,
        "total_quantity": 1000, "valid_for_seconds": 604800,
        "issue_starts_at": "2026-03-01T09:00:00Z", "issue_ends_at": null})),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Coupon created", body = CouponResponse,
            headers(("Location" = String, description = "The coupon's path, `/api/v1/coupons/{coupon_id}`")),
            example = coupon_example),
    ))]
pub async fn create_coupon<S: Store>(
    State(app): State<AppState<S>>,
    _admin: Admin,
    Json(body): Json<CreateCouponRequest>,
) -> Result<Created<CouponResponse>> {
    let coupon = NewCoupon::parse(CouponRequest {
        name: &body.name,
        discount_type: body.discount_type,
        discount_value: body.discount_value,
        total_quantity: body.total_quantity,
        valid_for_seconds: body.valid_for_seconds,
        issue_starts_at: body.issue_starts_at.as_deref(),
        issue_ends_at: body.issue_ends_at.as_deref(),
    })?;
    let mut tx = app.store.begin().await?;
    let created = coupon::create_coupon(&mut tx, &coupon, Timestamp::now()).await?;
    tx.commit().await?;
    app.coupons.remember(&created);
    Ok(Created(format!("/api/v1/coupons/{}", created.id), created.into()))
}

/// List the coupons with stock left
///
/// Newest first; sold-out coupons and coupons whose issue window has ended leave the list (they
/// stay readable by id); coupons whose window has not started are listed.
#[utoipa::path(get, path = "/api/v1/coupons", tag = "coupons", params(PageQuery),
    responses(
        (status = 200, description = "Coupons with stock left, newest first", body = CouponPage,
            example = json!({"items": [coupon_example()], "next_after": null})),
    ))]
pub async fn list_coupons<S: Store>(
    State(app): State<AppState<S>>,
    Paging(page): Paging,
) -> Result<axum::Json<CouponPage>> {
    let coupons = coupon::listed_coupons(&app.store, Timestamp::now(), page).await?;
    let next_after = page.next_after(&coupons, |c| c.id.0);
    Ok(axum::Json(CouponPage {
        items: coupons.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Get a coupon
///
/// Also a sold-out one, with `remaining_quantity` 0.
#[utoipa::path(get, path = "/api/v1/coupons/{coupon_id}", tag = "coupons",
    params(("coupon_id" = i64, Path, description = "Coupon id")),
    responses(
        (status = 200, description = "The coupon", body = CouponResponse, example = coupon_example),
        (status = 404, description = "COUPON_NOT_FOUND"),
    ))]
pub async fn get_coupon<S: Store>(
    State(app): State<AppState<S>>,
    params: PathParams,
) -> Result<axum::Json<CouponResponse>> {
    let id = CouponId(params.id("coupon_id")?);
    let coupon = app.store.coupon(id).await?.ok_or(Error::CouponNotFound)?;
    Ok(axum::Json(coupon.into()))
}

/// Issue a coupon to the user
///
/// First come, first served: never more than `total_quantity` issued and each user at most once,
/// also under thousands of simultaneous requests across instances, and only within the issue
/// window. Errors come as `COUPON_ALREADY_ISSUED` → `COUPON_NOT_ISSUABLE` → `COUPON_SOLD_OUT`.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/coupons", tag = "coupons",
    request_body(content = IssueCouponRequest, example = json!({"coupon_id": 3})),
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token")), security(("bearer" = [])),
    responses(
        (status = 201, description = "Issued", body = UserCouponResponse, example = user_coupon_example),
        (status = 404, description = "COUPON_NOT_FOUND"),
        (status = 409, description = "COUPON_ALREADY_ISSUED, COUPON_NOT_ISSUABLE, COUPON_SOLD_OUT"),
    ))]
pub async fn issue_coupon<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    Json(body): Json<IssueCouponRequest>,
) -> Result<(StatusCode, axum::Json<UserCouponResponse>)> {
    let coupon_id = CouponId(check_range(body.coupon_id, 1..=i64::MAX, "coupon_id")?);
    let coupon = match app.coupons.definition(coupon_id) {
        Some(coupon) => coupon,
        None => {
            let coupon = app.store.coupon(coupon_id).await?.ok_or(Error::CouponNotFound)?;
            app.coupons.remember(&coupon);
            coupon
        }
    };
    let holder = match app.coupons.sold_out(coupon_id, scope.user_id) {
        SoldOut::NotKnown => None,
        SoldOut::Holder(holder) => Some(holder),
        SoldOut::AskDatabase => Some(app.store.has_user_coupon(scope.user_id, coupon_id).await?),
    };
    let now = Timestamp::now();
    if let Some(holder) = holder {
        require_user(&app.store, scope.addressed()).await?;
        if holder {
            return Err(Error::CouponAlreadyIssued.into());
        }
        coupon.check_issuable(now)?;
        return Err(Error::CouponSoldOut.into());
    }
    let mut tx = app.store.begin().await?;
    let issued = coupon::issue_coupon(&mut tx, scope.addressed(), &coupon, now, rand::random()).await;
    let user_coupon = match issued {
        Ok(user_coupon) => user_coupon,
        Err(Error::CouponSoldOut) => {
            drop(tx);
            app.coupons
                .mark_sold_out(coupon_id, app.store.coupon_holders(coupon_id).await?);
            return Err(Error::CouponSoldOut.into());
        }
        Err(other) => return Err(other.into()),
    };
    tx.commit().await?;
    metrics::counter!("coupons_issued_total").increment(1);
    Ok((
        StatusCode::CREATED,
        axum::Json(UserCouponResponse::new(user_coupon, now)),
    ))
}

/// List the user's coupons
///
/// Newest first, optionally only those with a `status`; `EXPIRED` is computed on read.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/coupons", tag = "coupons",
    params(("user_id" = i64, Path, description = "User id: the caller's own, or any with an admin token"), UserCouponQuery, PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's coupons, newest first", body = UserCouponPage,
            example = json!({"items": [user_coupon_example()], "next_after": null})),
    ))]
pub async fn list_user_coupons<S: Store>(
    State(app): State<AppState<S>>,
    scope: UserScope,
    query: std::result::Result<Query<UserCouponQuery>, axum::extract::rejection::QueryRejection>,
    Paging(page): Paging,
) -> Result<axum::Json<UserCouponPage>> {
    let Query(query) = query.map_err(query_rejection)?;
    let now = Timestamp::now();
    let coupons = coupon::user_coupons(&app.store, scope.addressed(), query.status, now, page).await?;
    let next_after = page.next_after(&coupons, |c| c.id.0);
    Ok(axum::Json(UserCouponPage {
        items: coupons.into_iter().map(|c| UserCouponResponse::new(c, now)).collect(),
        next_after,
    }))
}
