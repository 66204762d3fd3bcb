//! CORS: which browser pages on other origins may call the API (`ECOMMERCE_CORS_ORIGINS`).
//!
//! With no origins configured the layer is not installed at all, so answers carry no CORS header
//! and a preflight is answered like any other `OPTIONS` (405). For an allowed origin:
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered `204`
//!   here, before any rate limit, authentication or handler, allowing every method the API serves
//!   and the request headers it reads;
//! - every other answer gets `Access-Control-Allow-Origin` and exposes the response headers a
//!   script needs (`Location`, `Retry-After`, `ETag`, `X-Request-Id`, `Idempotent-Replayed`).
//!
//! A request from any other origin passes through untouched and gets no `Access-Control-*`
//! header, so the browser withholds the answer from the page. With a list of origins the answer
//! depends on `Origin`, so every answer says `Vary: Origin` (a shared cache must not hand one
//! origin's answer to another). Tokens travel in `Authorization`, never in cookies, so credentials
//! mode is never allowed and `*` is safe to offer.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// `ECOMMERCE_CORS_ORIGINS`: nothing (the default), `*`, or a comma-separated list of origins
/// such as `https://shop.example.com,http://localhost:3000`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all.
    #[default]
    None,
    /// Any origin.
    Any,
    /// Exactly these origins (`scheme://host[:port]`, lower-case, no trailing slash).
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let items: Vec<&str> = list.split(',').map(str::trim).filter(|item| !item.is_empty()).collect();
        match items.as_slice() {
            [] => Ok(Self::None),
            ["*"] => Ok(Self::Any),
            _ => items
                .into_iter()
                .map(parse_origin)
                .collect::<Result<_, _>>()
                .map(Self::List),
        }
    }
}

/// An origin as a browser sends it: `http://` or `https://`, a host, an optional port, nothing
/// else. Browsers send it lower-case; the list is compared that way.
fn parse_origin(item: &str) -> Result<String, String> {
    let origin = item.trim_end_matches('/').to_ascii_lowercase();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{item:?} is not an origin: it starts with http:// or https://"))?;
    let well_formed = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !well_formed {
        return Err(format!(
            "{item:?} is not an origin: scheme://host[:port] with no path (or * alone)"
        ));
    }
    Ok(origin)
}

/// Methods a preflight may ask for: every method a route of the API takes.
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE");
/// Request headers the API reads beyond the CORS-safelisted ones.
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-Id");
/// Response headers a script may read beyond the CORS-safelisted ones.
const EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("Location, Retry-After, ETag, X-Request-Id, Idempotent-Replayed");
/// How long a browser may reuse a preflight's answer (Chromium caps it at two hours).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// The configured policy, ready to answer.
pub(crate) struct CorsPolicy {
    origins: CorsOrigins,
}

impl CorsPolicy {
    /// `None` when no origin is allowed: then no CORS layer is installed.
    pub(crate) fn new(origins: &CorsOrigins) -> Option<Arc<Self>> {
        match origins {
            CorsOrigins::None => None,
            CorsOrigins::List(list) if list.is_empty() => None,
            origins => Some(Arc::new(Self {
                origins: origins.clone(),
            })),
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its origin is allowed.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        match &self.origins {
            CorsOrigins::None => None,
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(list) => {
                let sent = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(sent))
                    .then(|| origin.clone())
            }
        }
    }

    /// Whether answers differ by `Origin` (not with `*`, which is the same for everyone).
    fn varies(&self) -> bool {
        matches!(self.origins, CorsOrigins::List(_))
    }
}

/// The middleware: answers preflights from allowed origins, marks the other answers.
pub(crate) async fn cors(policy: Arc<CorsPolicy>, req: Request, next: Next) -> Response {
    let allow_origin = policy.allow_origin(req.headers());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match &allow_origin {
        Some(_) if preflight => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
            response
        }
        Some(_) => {
            let mut response = next.run(req).await;
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
            response
        }
        None => next.run(req).await,
    };
    let headers = response.headers_mut();
    if let Some(origin) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if policy.varies() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_nothing_any_origin_or_a_list_of_origins() {
        assert_eq!("".parse::<CorsOrigins>(), Ok(CorsOrigins::None));
        assert_eq!(" , ".parse::<CorsOrigins>(), Ok(CorsOrigins::None));
        assert_eq!("*".parse::<CorsOrigins>(), Ok(CorsOrigins::Any));
        assert_eq!(
            "https://Shop.example.com/, http://localhost:3000,http://[::1]:8080".parse::<CorsOrigins>(),
            Ok(CorsOrigins::List(vec![
                "https://shop.example.com".into(),
                "http://localhost:3000".into(),
                "http://[::1]:8080".into(),
            ]))
        );
        for bad in [
            "shop.example.com",
            "https://shop.example.com/path",
            "https://",
            "*, https://shop.example.com",
            "ftp://shop.example.com",
            "https://shop example.com",
        ] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad:?} is refused");
        }
    }
}

#[cfg(test)]
mod layer_tests {
    use axum::http::{HeaderMap, StatusCode};

    use super::*;
    use crate::testing::{app, header_of, send};

    const SHOP: &str = "https://shop.example.com";

    fn cors_headers(headers: &HeaderMap) -> Vec<&str> {
        headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("access-control-"))
            .collect()
    }

    fn list() -> CorsOrigins {
        format!("{SHOP}, http://localhost:3000").parse().expect("origins")
    }

    async fn preflight(cors: CorsOrigins, origin: &str, method: &str, path: &str) -> (StatusCode, HeaderMap) {
        let (status, headers, body) = send(&app(cors), |r| {
            r.method("OPTIONS")
                .uri(path)
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header(
                    "access-control-request-headers",
                    "authorization, content-type, idempotency-key",
                )
        })
        .await;
        if status == StatusCode::NO_CONTENT {
            assert!(body.is_empty(), "a 204 has no body");
        }
        (status, headers)
    }

    #[tokio::test]
    async fn without_origins_nothing_changes_a_preflight_is_405_and_no_cors_header_is_sent() {
        let (status, headers) = preflight(CorsOrigins::None, SHOP, "GET", "/api/v1/products").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(cors_headers(&headers).is_empty(), "{headers:?}");
        let (status, headers, _) = send(&app(CorsOrigins::None), |r| {
            r.uri("/api/v1/products").header("origin", SHOP)
        })
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(cors_headers(&headers).is_empty(), "{headers:?}");
        assert!(!header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_204_with_our_methods_and_headers() {
        for (method, path) in [
            ("GET", "/api/v1/products"),
            ("POST", "/api/v1/auth/token"),
            ("DELETE", "/api/v1/users/1/cart"),
            ("PUT", "/api/v1/users/1/cart/items/7"),
        ] {
            let (status, headers) = preflight(list(), SHOP, method, path).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{method} {path}");
            assert_eq!(
                header_of(&headers, "access-control-allow-origin").as_deref(),
                Some(SHOP)
            );
            let methods = header_of(&headers, "access-control-allow-methods").unwrap_or_default();
            for expected in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                assert!(methods.contains(expected), "{expected} in {methods}");
            }
            let allowed = header_of(&headers, "access-control-allow-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            for expected in ["authorization", "content-type", "idempotency-key"] {
                assert!(allowed.contains(expected), "{expected} in {allowed}");
            }
            assert!(header_of(&headers, "access-control-max-age").is_some());
            assert!(header_of(&headers, "access-control-allow-credentials").is_none());
            assert!(header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
            assert!(
                header_of(&headers, "x-request-id").is_some(),
                "preflights are logged like any request"
            );
        }
    }

    #[tokio::test]
    async fn answers_to_an_allowed_origin_name_it_and_expose_the_headers_scripts_read() {
        let (status, headers, _) = send(&app(list()), |r| {
            r.uri("/api/v1/products").header("origin", "http://localhost:3000")
        })
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, "access-control-allow-origin").as_deref(),
            Some("http://localhost:3000")
        );
        let exposed = header_of(&headers, "access-control-expose-headers").unwrap_or_default();
        for expected in ["Location", "Retry-After", "ETag", "X-Request-Id", "Idempotent-Replayed"] {
            assert!(exposed.contains(expected), "{expected} in {exposed}");
        }
        assert!(header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
        // Errors too: a script must be able to read the problem document.
        let (status, headers, _) = send(&app(list()), |r| r.uri("/api/v1/coupons/9").header("origin", SHOP)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            header_of(&headers, "access-control-allow-origin").as_deref(),
            Some(SHOP)
        );
    }

    #[tokio::test]
    async fn other_origins_get_no_cors_header_but_the_answer_varies_by_origin() {
        for origin in ["https://evil.example.com", "https://shop.example.com.evil.com", "null"] {
            let (status, headers) = preflight(list(), origin, "POST", "/api/v1/products").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{origin}");
            assert!(cors_headers(&headers).is_empty(), "{origin}: {headers:?}");
            let (status, headers, _) = send(&app(list()), |r| r.uri("/api/v1/products").header("origin", origin)).await;
            assert_eq!(status, StatusCode::OK);
            assert!(cors_headers(&headers).is_empty(), "{origin}: {headers:?}");
            assert!(header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
        }
        let (_, headers, _) = send(&app(list()), |r| r.uri("/api/v1/products")).await;
        assert!(cors_headers(&headers).is_empty(), "{headers:?}");
        assert!(header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
    }

    #[tokio::test]
    async fn with_star_every_origin_is_allowed_and_the_answer_does_not_vary() {
        let (status, headers) = preflight(CorsOrigins::Any, "http://127.0.0.1:5173", "PATCH", "/api/v1/products").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(header_of(&headers, "access-control-allow-origin").as_deref(), Some("*"));
        let (_, headers, _) = send(&app(CorsOrigins::Any), |r| {
            r.uri("/api/v1/products").header("origin", "https://any.example")
        })
        .await;
        assert_eq!(header_of(&headers, "access-control-allow-origin").as_deref(), Some("*"));
        assert!(!header_of(&headers, "vary").unwrap_or_default().contains("Origin"));
    }

    #[tokio::test]
    async fn an_options_request_that_is_not_a_preflight_is_routed_as_before() {
        let (status, headers, _) = send(&app(list()), |r| {
            r.method("OPTIONS").uri("/api/v1/products").header("origin", SHOP)
        })
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            header_of(&headers, "access-control-allow-origin").as_deref(),
            Some(SHOP)
        );
    }
}
