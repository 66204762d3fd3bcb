//! HTTP caching: what browsers, CDNs and proxies may keep, and conditional reads.
//!
//! The rule goes by route prefix, so a new route under a prefix follows it with no edit here:
//! - **Catalog reads** (`GET`/`HEAD` under `/api/v1/products`, `/api/v1/coupons`,
//!   `/api/v1/draws`) without an admin token show the same thing to everyone. A `200` carries a
//!   strong `ETag` (a hash of the body as sent, so each content coding has its own) and
//!   `Cache-Control: no-cache` (keep it, but ask again each time), or `public, max-age=<the
//!   popular cache's age>` for `/products/popular`, whose answer each instance keeps that long
//!   anyway. A request whose `If-None-Match` matches is answered `304` with no body and the same
//!   `ETag` and `Cache-Control`.
//! - **Answers carrying a user's data** (everything under `/api/v1/users`, `/api/v1/orders`,
//!   `/api/v1/auth`, `/api/v1/admin`) and catalog reads made with an admin token (they may show
//!   unreleased products) are `private, no-store`.
//! - **Errors** on catalog routes are `no-store`: a 404 must not outlive the product's release.
//!
//! Everything else (health, metrics, the documents, the console) is left as its handler made it.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// Prefixes of the token-free catalog reads.
const CATALOG: [&str; 3] = ["/api/v1/products", "/api/v1/coupons", "/api/v1/draws"];
/// Prefixes of the routes whose answers carry a user's data.
const PERSONAL: [&str; 4] = ["/api/v1/users", "/api/v1/orders", "/api/v1/auth", "/api/v1/admin"];
/// The one catalog read that may be kept for a while.
pub(crate) const POPULAR: &str = "/api/v1/products/popular";

pub(crate) const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
pub(crate) const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-store");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// How a route's answers may be cached, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caching {
    /// A catalog read: `ETag`, conditional requests, shared caches allowed.
    Shared,
    /// `private, no-store`.
    Private,
    /// Not this module's business.
    Untouched,
}

/// The caching rule of a request to `path` (before looking at its token).
pub(crate) fn caching(method: &Method, path: &str) -> Caching {
    let under = |prefix: &&str| {
        path.strip_prefix(*prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if CATALOG.iter().any(under) {
        if *method == Method::GET || *method == Method::HEAD {
            Caching::Shared
        } else {
            Caching::Private
        }
    } else if PERSONAL.iter().any(under) {
        Caching::Private
    } else {
        Caching::Untouched
    }
}

/// Tells whether a request carries an admin's token.
pub(crate) type AdminCheck = Arc<dyn Fn(&HeaderMap) -> bool + Send + Sync>;

pub(crate) struct CachePolicy {
    /// `Cache-Control` of `/products/popular`.
    popular: HeaderValue,
    is_admin: AdminCheck,
}

impl CachePolicy {
    pub(crate) fn new(popular_max_age_seconds: u64, is_admin: AdminCheck) -> Arc<Self> {
        let popular = HeaderValue::from_str(&format!("public, max-age={popular_max_age_seconds}")).unwrap_or(NO_CACHE);
        Arc::new(Self { popular, is_admin })
    }
}

/// The middleware.
pub(crate) async fn http_cache(policy: Arc<CachePolicy>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let caching = match caching(req.method(), path) {
        Caching::Shared if (policy.is_admin)(req.headers()) => Caching::Private,
        other => other,
    };
    match caching {
        Caching::Untouched => next.run(req).await,
        Caching::Private => {
            let mut response = next.run(req).await;
            response.headers_mut().insert(header::CACHE_CONTROL, PRIVATE);
            response
        }
        Caching::Shared => {
            let cache_control = if path == POPULAR {
                policy.popular.clone()
            } else {
                NO_CACHE
            };
            let if_none_match = req.headers().get_all(header::IF_NONE_MATCH).iter().cloned().collect();
            let response = next.run(req).await;
            validated(response, cache_control, if_none_match).await
        }
    }
}

/// A catalog answer with its `ETag` and `Cache-Control`, or `304` when the client has it.
async fn validated(response: Response, cache_control: HeaderValue, if_none_match: Vec<HeaderValue>) -> Response {
    if response.status() != StatusCode::OK {
        let mut response = response;
        if response.status().is_client_error() || response.status().is_server_error() {
            response.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
        }
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Catalog answers are pages of at most 100 items: small enough to hold once.
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => return ApiError::internal(format!("reading a catalog answer: {err}")).into_response(),
    };
    let etag = entity_tag(&bytes);
    parts.headers.insert(header::ETAG, etag.clone());
    parts.headers.insert(header::CACHE_CONTROL, cache_control);
    if if_none_match
        .iter()
        .any(|value| matches_any(value.as_bytes(), etag.as_bytes()))
    {
        parts.status = StatusCode::NOT_MODIFIED;
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_ENCODING] {
            parts.headers.remove(name);
        }
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A strong entity tag: the first 128 bits of the body's SHA-256, in hex. The same bytes give
/// the same tag on every instance.
fn entity_tag(body: &[u8]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut tag = Vec::with_capacity(34);
    tag.push(b'"');
    for byte in &digest[..16] {
        tag.push(HEX[usize::from(byte >> 4)]);
        tag.push(HEX[usize::from(byte & 0xf)]);
    }
    tag.push(b'"');
    HeaderValue::from_bytes(&tag).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether an `If-None-Match` value (`*` or a list of entity tags) matches `etag`, by the weak
/// comparison RFC 9110 prescribes for it (`W/"x"` matches `"x"`). A malformed list matches
/// nothing, so the client simply gets the full answer.
fn matches_any(if_none_match: &[u8], etag: &[u8]) -> bool {
    let ours = opaque_tag(etag);
    let mut rest = trim_start(if_none_match);
    if trim_end(rest) == b"*" {
        return true;
    }
    while !rest.is_empty() {
        let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(after_quote) = tag.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = after_quote.iter().position(|b| *b == b'"') else {
            return false;
        };
        if Some(&after_quote[..end]) == ours {
            return true;
        }
        rest = trim_whitespace(&after_quote[end + 1..]);
        match rest.split_first() {
            Some((b',', tail)) => rest = trim_start(tail),
            Some(_) => return false,
            None => {}
        }
    }
    false
}

/// The text between the quotes of an entity tag, weak or strong.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    tag.strip_prefix(b"W/")
        .unwrap_or(tag)
        .strip_prefix(b"\"")?
        .strip_suffix(b"\"")
}

/// Skips white space and empty list elements.
fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b','))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_prefix_and_method() {
        use Caching::*;
        for (method, path, expected) in [
            (Method::GET, "/api/v1/products", Shared),
            (Method::HEAD, "/api/v1/products/7", Shared),
            (Method::GET, "/api/v1/products/popular", Shared),
            (Method::GET, "/api/v1/coupons/3", Shared),
            (Method::GET, "/api/v1/draws", Shared),
            (Method::POST, "/api/v1/products", Private),
            (Method::GET, "/api/v1/productsearch", Untouched),
            (Method::GET, "/api/v1/users/1/orders", Private),
            (Method::POST, "/api/v1/users", Private),
            (Method::POST, "/api/v1/auth/token", Private),
            (Method::GET, "/api/v1/orders/5", Private),
            (Method::GET, "/api/v1/admin/products", Private),
            (Method::GET, "/health", Untouched),
            (Method::GET, "/api-docs/openapi.json", Untouched),
        ] {
            assert_eq!(caching(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn entity_tags_are_strong_quoted_hashes_of_the_bytes() {
        let tag = entity_tag(b"{\"id\":1}");
        let text = tag.to_str().expect("ASCII");
        assert_eq!(text.len(), 34);
        assert!(text.starts_with('"') && text.ends_with('"'), "{text}");
        assert_eq!(entity_tag(b"{\"id\":1}"), tag);
        assert_ne!(entity_tag(b"{\"id\":2}"), tag);
    }

    #[test]
    fn if_none_match_takes_star_lists_and_weak_tags() {
        let etag = br#""abc""#;
        for value in [
            r#""abc""#,
            r#"W/"abc""#,
            "*",
            " * ",
            r#""x", "abc""#,
            r#""x",W/"abc""#,
            r#"  "x" ,  "y", "abc"  "#,
            r#", "abc""#,
        ] {
            assert!(matches_any(value.as_bytes(), etag), "{value} matches");
        }
        for value in [
            r#""abd""#,
            "abc",
            r#""ab"c""#,
            r#""x" "abc""#,
            r#""abc"#,
            "",
            r#"W/"x", *"#,
            r#"w/"abc""#,
        ] {
            assert!(!matches_any(value.as_bytes(), etag), "{value} does not match");
        }
        assert!(matches_any(br#""abc""#, br#"W/"abc""#), "weak comparison both ways");
    }
}

#[cfg(test)]
mod layer_tests {
    use axum::http::{HeaderMap, StatusCode};

    use crate::CorsOrigins;
    use crate::testing::{ADMIN_TOKEN, app, header_of, send};

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, axum::body::Bytes) {
        send(&app(CorsOrigins::None), |mut r| {
            r = r.uri(path);
            for (name, value) in headers {
                r = r.header(*name, *value);
            }
            r
        })
        .await
    }

    #[tokio::test]
    async fn catalog_reads_carry_a_stable_strong_etag_and_no_cache() {
        let (status, headers, body) = get("/api/v1/products", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.is_empty());
        let etag = header_of(&headers, "etag").expect("an ETag");
        assert!(etag.starts_with('"') && etag.ends_with('"'), "strong: {etag}");
        assert_eq!(header_of(&headers, "cache-control").as_deref(), Some("no-cache"));
        let (_, again, _) = get("/api/v1/products", &[]).await;
        assert_eq!(header_of(&again, "etag"), Some(etag));
        let (_, other, _) = get("/api/v1/products/7", &[]).await;
        assert_ne!(header_of(&other, "etag"), header_of(&headers, "etag"));
    }

    #[tokio::test]
    async fn a_matching_if_none_match_is_answered_304_with_no_body_and_the_same_validators() {
        let (_, headers, _) = get("/api/v1/products/7", &[]).await;
        let etag = header_of(&headers, "etag").expect("an ETag");
        for sent in [
            etag.clone(),
            format!("W/{etag}"),
            format!(r#""something-else", {etag}"#),
            "*".to_owned(),
        ] {
            let (status, headers, body) = get("/api/v1/products/7", &[("if-none-match", &sent)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{sent}");
            assert!(body.is_empty());
            assert_eq!(header_of(&headers, "etag").as_deref(), Some(etag.as_str()));
            assert_eq!(header_of(&headers, "cache-control").as_deref(), Some("no-cache"));
            assert!(header_of(&headers, "content-type").is_none());
        }
        let (status, _, body) = get("/api/v1/products/7", &[("if-none-match", r#""stale""#)]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.is_empty());
    }

    #[tokio::test]
    async fn head_carries_the_same_etag_as_get() {
        let (_, got, _) = get("/api/v1/products", &[]).await;
        let (status, headed, body) = send(&app(CorsOrigins::None), |r| r.method("HEAD").uri("/api/v1/products")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header_of(&headed, "etag"), header_of(&got, "etag"));
        assert_eq!(header_of(&headed, "content-length"), header_of(&got, "content-length"));
    }

    #[tokio::test]
    async fn best_sellers_may_be_kept_for_the_popular_cache_age() {
        let (_, headers, _) = get("/api/v1/products/popular", &[]).await;
        assert_eq!(
            header_of(&headers, "cache-control").as_deref(),
            Some("public, max-age=5")
        );
        assert!(header_of(&headers, "etag").is_some());
    }

    #[tokio::test]
    async fn catalog_reads_with_an_admin_token_are_private_and_others_with_a_token_are_not() {
        let (status, headers, _) = get("/api/v1/products", &[("authorization", ADMIN_TOKEN)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, "cache-control").as_deref(),
            Some("private, no-store")
        );
        assert!(header_of(&headers, "etag").is_none());
        let (_, headers, _) = get("/api/v1/products", &[("authorization", "Bearer a-shopper")]).await;
        assert_eq!(header_of(&headers, "cache-control").as_deref(), Some("no-cache"));
        assert!(header_of(&headers, "etag").is_some());
    }

    #[tokio::test]
    async fn errors_are_not_stored_and_have_no_etag() {
        for conditional in [None, Some("*")] {
            let headers: Vec<(&str, &str)> = conditional.map(|v| ("if-none-match", v)).into_iter().collect();
            let (status, headers, _) = get("/api/v1/coupons/9", &headers).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(header_of(&headers, "cache-control").as_deref(), Some("no-store"));
            assert!(header_of(&headers, "etag").is_none());
        }
    }

    #[tokio::test]
    async fn a_users_answers_are_private_and_operations_are_left_alone() {
        let (_, headers, _) = get("/api/v1/users/1/cart", &[]).await;
        assert_eq!(
            header_of(&headers, "cache-control").as_deref(),
            Some("private, no-store")
        );
        assert!(header_of(&headers, "etag").is_none());
        let (status, headers, _) = send(&app(CorsOrigins::None), |r| {
            r.method("DELETE").uri("/api/v1/users/1/cart")
        })
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            header_of(&headers, "cache-control").as_deref(),
            Some("private, no-store")
        );
        let (_, headers, _) = get("/health", &[]).await;
        assert!(header_of(&headers, "cache-control").is_none());
        assert!(header_of(&headers, "etag").is_none());
    }
}
