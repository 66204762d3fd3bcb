//! Extractors that turn requests into typed input or into our problem+json errors, in the
//! contract's precedence: authentication (401) → ownership (403) → shape and values (400).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use ecommerce_domain::UserId;
use ecommerce_domain::account::{Actor, Addressed};
use ecommerce_domain::paging::Page;
use ecommerce_domain::store::Store;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, Result};

/// JSON body whose rejections are our problem documents. The body must be a JSON object: serde
/// would otherwise accept an array holding the fields in order.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "the request body is larger than 64 KiB",
                )
            } else {
                ApiError::validation(rejection.body_text())
            }
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::validation("the request body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(ApiError::validation(rejection.body_text())),
        }
    }
}

/// `application/json`, with parameters, or any `+json` type.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// An optional JSON body: none at all means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, St: Send + Sync> FromRequest<St> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self> {
        let empty_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let no_body = empty_length
            || (req.headers().get(header::CONTENT_LENGTH).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none());
        if no_body {
            return Ok(OptionalJson(T::default()));
        }
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(OptionalJson(value))
    }
}

/// Parses an id from a path segment: a positive 64-bit integer in its one decimal spelling (no
/// sign, no leading zero: `+2` and `002` are not `2`), else 400.
pub fn parse_id(raw: &str, name: &str) -> Result<i64> {
    let canonical = raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
    match raw.parse::<i64>() {
        Ok(id) if id > 0 && canonical => Ok(id),
        _ => Err(ApiError::validation(format!(
            "{name} must be a positive 64-bit integer"
        ))),
    }
}

/// Path parameters as raw strings, parsed one by one so that errors come in contract order.
pub struct PathParams(pub HashMap<String, String>);

impl<St: Send + Sync> FromRequestParts<St> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(map)| PathParams(map))
            .map_err(|e| ApiError::validation(e.body_text()))
    }
}

impl PathParams {
    pub fn id(&self, name: &str) -> Result<i64> {
        let raw = self.0.get(name).map(String::as_str).unwrap_or_default();
        parse_id(raw, name)
    }
}

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Actor);

impl<S: Store> FromRequestParts<AppState<S>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        let token = bearer_token(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        state.auth.verify(token).map(Auth).ok_or_else(ApiError::invalid_token)
    }
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// A caller with the admin role.
pub struct Admin(pub Actor);

impl<S: Store> FromRequestParts<AppState<S>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        let Auth(actor) = Auth::from_request_parts(parts, state).await?;
        if actor.is_admin {
            Ok(Admin(actor))
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// A `/users/{user_id}/…` route: the caller owns the path or is an admin. Other path parameters
/// stay unparsed in `params` so that a bad one answers 400 only after ownership passed. Whether
/// the addressed account exists is the domain's question ([`ecommerce_domain::account::require_user`]),
/// asked by the use cases.
pub struct UserScope {
    pub actor: Actor,
    pub user_id: UserId,
    pub params: PathParams,
}

impl<S: Store> FromRequestParts<AppState<S>> for UserScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        let Auth(actor) = Auth::from_request_parts(parts, state).await?;
        let params = PathParams::from_request_parts(parts, state).await?;
        let raw = params.0.get("user_id").map(String::as_str).unwrap_or_default();
        // Another user's path is 403 whether or not it exists, and whatever its shape.
        match raw.parse::<i64>() {
            Ok(id) if id == actor.user_id.0 || actor.is_admin => {}
            _ if !actor.is_admin => return Err(ApiError::forbidden()),
            _ => {}
        }
        let user_id = UserId(parse_id(raw, "user_id")?);
        Ok(UserScope { actor, user_id, params })
    }
}

impl UserScope {
    /// The account this request is about, and who asks.
    pub fn addressed(&self) -> Addressed {
        Addressed {
            actor: self.actor,
            user_id: self.user_id,
        }
    }
}

/// `?limit=&after=`: the keyset paging of every list, as documented.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Keyset cursor: the `next_after` of the previous page.
    #[param(minimum = 1)]
    pub after: Option<i64>,
}

/// [`PageQuery`] checked into a [`Page`].
pub struct Paging(pub Page);

impl<St: Send + Sync> FromRequestParts<St> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self> {
        let Query(raw) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(query_rejection)?;
        Ok(Paging(Page::new(raw.after, raw.limit)?))
    }
}

pub fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::validation(rejection.body_text())
}

/// Reads `Idempotency-Key`: 1..=255 visible ASCII characters. `Ok(None)` when absent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::validation(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Deserializes a present field that must not be `null`: absent → `None`, `null` → error.
pub fn non_null<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn path_ids_have_one_spelling() {
        assert_eq!(parse_id("2", "id").ok(), Some(2));
        assert_eq!(parse_id("9223372036854775807", "id").ok(), Some(i64::MAX));
        for raw in ["+2", "002", "0", "-1", "", " 2", "2 ", "2.0", "9223372036854775808"] {
            assert!(parse_id(raw, "id").is_err(), "{raw:?} was accepted");
        }
    }
}
