//! Extractors that turn requests into typed input or into our problem+json errors, in the
//! contract's precedence: authentication (401) → ownership (403) → shape and values (400).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use ecommerce_domain::UserId;
use ecommerce_domain::account::{Actor, Addressed, TokenClaims};
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
        check_json(&bytes).map_err(ApiError::validation)?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(ApiError::validation(rejection.body_text())),
        }
    }
}

/// What every JSON body must keep before it is read into its type (contract v2, "Text limits"):
/// no object holds a key twice (parsers disagree on which one wins, so a proxy, a log and this
/// server could read different requests), and no string, key or value, holds U+0000 (PostgreSQL
/// cannot store it, and no text field has a use for it). Malformed JSON is left to the typed read,
/// whose message says where.
pub(crate) fn check_json(bytes: &[u8]) -> std::result::Result<(), String> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    /// Walks one JSON value without keeping it.
    struct Checked;

    impl<'de> DeserializeSeed<'de> for Checked {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    fn check_text<E: serde::de::Error>(text: &str) -> std::result::Result<(), E> {
        if text.contains('\0') {
            Err(E::custom("text must not hold the NUL character (\\u0000)"))
        } else {
            Ok(())
        }
    }

    impl<'de> Visitor<'de> for Checked {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<(), E> {
            check_text(text)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            while seq.next_element_seed(Checked)?.is_some() {}
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                check_text::<A::Error>(&key)?;
                if !keys.insert(key.clone()) {
                    return Err(A::Error::custom(format!("the key {key:?} appears twice in one object")));
                }
                map.next_value_seed(Checked)?;
            }
            Ok(())
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match Checked.deserialize(&mut deserializer).and_then(|()| deserializer.end()) {
        Ok(()) => Ok(()),
        Err(err) if err.is_data() => Err(err.to_string()),
        // Syntax and premature ends: the typed read says the same with its own wording.
        Err(_) => Ok(()),
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

/// The caller's token, from `Authorization: Bearer <token>`: well signed, unexpired, and still
/// standing for its account (which exists, has the token's role, has not changed its password
/// since, and has not logged the token out; see [`crate::auth::TokenCheck`]).
#[derive(Debug, Clone)]
pub struct Session(pub TokenClaims);

impl<S: Store> FromRequestParts<AppState<S>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(session.clone());
        }
        let token = bearer_token(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let claims = state.auth.verify(token).ok_or_else(ApiError::invalid_token)?;
        if !state.tokens.admits(&state.store, &claims).await? {
            return Err(ApiError::invalid_token());
        }
        let session = Session(claims);
        parts.extensions.insert(session.clone());
        Ok(session)
    }
}

/// The caller, from `Authorization: Bearer <token>` (a [`Session`]).
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Actor);

impl<S: Store> FromRequestParts<AppState<S>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        let Session(claims) = Session::from_request_parts(parts, state).await?;
        Ok(Auth(claims.actor()))
    }
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The caller on a route that needs no token: `Some` with a valid token, `None` without one.
/// A token that does not verify counts as none (the read answers what everyone sees), as the
/// caching layer also decides.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuth(pub Option<Actor>);

impl<S: Store> FromRequestParts<AppState<S>> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self> {
        if bearer_token(&parts.headers).is_none() {
            return Ok(MaybeAuth(None));
        }
        // A token that no longer stands for its account (logged out, password changed) counts as
        // none, like one that does not verify; a store failure is still an error.
        match Session::from_request_parts(parts, state).await {
            Ok(Session(claims)) => Ok(MaybeAuth(Some(claims.actor()))),
            Err(err) if err.status.is_server_error() => Err(err),
            Err(_) => Ok(MaybeAuth(None)),
        }
    }
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

/// Deserializes a field that may be `null`, telling it from an absent one (with
/// `#[serde(default)]`): absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
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
    use super::{check_json, parse_id};

    #[test]
    fn a_key_twice_in_any_object_is_refused() {
        for body in [
            r#"{"amount": 1000, "amount": 2000}"#,
            r#"{"items": [{"product_id": 1, "quantity": 1, "quantity": 2}]}"#,
            r#"{"a": {"b": 1, "b": 1}}"#,
            r#"{"amount": 1000, "am\u006funt": 2000}"#,
        ] {
            let err = check_json(body.as_bytes()).expect_err(body);
            assert!(err.contains("appears twice"), "{body}: {err}");
        }
        for body in [r#"{"a": 1, "b": {"a": 1}}"#, r#"{"a": [{"k": 1}, {"k": 2}]}"#, "{}"] {
            assert_eq!(check_json(body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn nul_in_any_string_is_refused_and_an_escaped_backslash_is_not_nul() {
        for body in [
            r#"{"name": "a\u0000b"}"#,
            r#"{"items": [{"name": "\u0000"}]}"#,
            r#"{"a\u0000": 1}"#,
            r#"{"list": ["ok", "x\u0000"]}"#,
        ] {
            let err = check_json(body.as_bytes()).expect_err(body);
            assert!(err.contains("NUL"), "{body}: {err}");
        }
        assert_eq!(check_json(br#"{"name": "a\\u0000b"}"#), Ok(()));
    }

    #[test]
    fn malformed_json_is_left_to_the_typed_read() {
        for body in ["{", r#"{"a": }"#, r#"{"a": 1} trailing"#] {
            assert_eq!(check_json(body.as_bytes()), Ok(()), "{body}");
        }
    }

    #[test]
    fn path_ids_have_one_spelling() {
        assert_eq!(parse_id("2", "id").ok(), Some(2));
        assert_eq!(parse_id("9223372036854775807", "id").ok(), Some(i64::MAX));
        for raw in ["+2", "002", "0", "-1", "", " 2", "2 ", "2.0", "9223372036854775808"] {
            assert!(parse_id(raw, "id").is_err(), "{raw:?} was accepted");
        }
    }
}
