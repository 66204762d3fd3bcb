//! The operator console at `/admin/`: one HTML page, one script, one stylesheet and an icon,
//! embedded in the binary, so it works offline and nothing is fetched at build or run time.
//!
//! The page is a plain-JavaScript client of the JSON API (`/api/v1/...`); this crate only serves
//! the files. Assets are served under names that carry a hash of their content
//! (`console.3f2a….js`), so browsers keep them for a year; the page itself is revalidated on
//! every load (`no-cache` with an `ETag`), so a new binary's page points at its new assets.
//!
//! Security: every answer from here carries a strict `Content-Security-Policy` (scripts and styles
//! only from these files, no inline code, no `eval`, connections only to this origin), refuses to
//! be framed, and sends no referrer. The console keeps the admin's bearer token in
//! `sessionStorage` and sends it as `Authorization: Bearer`; no cookie is ever set, so another
//! site cannot make the browser send an authenticated request (there is no CSRF surface).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};

/// The policy of every console answer (PLAN.md, "Console").
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the page is served; assets live under `{BASE}assets/`.
const BASE: &str = "/admin/";

/// A hashed asset never changes under its name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page is revalidated on every load (cheaply, by `ETag`).
const REVALIDATE: &str = "no-cache";

/// The page template: `{{console.js}}` and the like become the hashed asset paths.
const PAGE_TEMPLATE: &str = include_str!("../assets/index.html");

/// The files the page links to: logical name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
    ("favicon.svg", "image/svg+xml", include_bytes!("../assets/favicon.svg")),
];

/// One file as served: its URL name, type, bytes and entity tag.
struct Served {
    file: String,
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

struct Console {
    page: Served,
    assets: Vec<Served>,
}

/// Built once, on the first console request.
static CONSOLE: LazyLock<Console> = LazyLock::new(Console::build);

impl Console {
    fn build() -> Self {
        let mut page = PAGE_TEMPLATE.to_owned();
        let assets: Vec<Served> = ASSETS
            .iter()
            .map(|&(name, content_type, body)| {
                let hash = content_hash(body);
                let file = match name.rsplit_once('.') {
                    Some((stem, ext)) => format!("{stem}.{hash:016x}.{ext}"),
                    None => format!("{name}.{hash:016x}"),
                };
                page = page.replace(&format!("{{{{{name}}}}}"), &format!("{BASE}assets/{file}"));
                Served {
                    file,
                    content_type,
                    body,
                    etag: etag_of(hash),
                }
            })
            .collect();
        let body: &'static [u8] = Box::leak(page.into_bytes().into_boxed_slice());
        let page = Served {
            file: String::new(),
            content_type: "text/html; charset=utf-8",
            body,
            etag: etag_of(content_hash(body)),
        };
        Self { page, assets }
    }
}

/// The console's routes, to be merged into the application router before its fallback.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/admin",
            get(|| async { Redirect::permanent(BASE) }).fallback(method_not_allowed),
        )
        .route("/admin/", get(page).fallback(method_not_allowed))
        .route("/admin/assets/{file}", get(asset).fallback(method_not_allowed))
        .route("/admin/{*rest}", any(not_found))
        .layer(middleware::map_response(secure))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&headers, &CONSOLE.page, REVALIDATE)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match CONSOLE.assets.iter().find(|asset| asset.file == file) {
        Some(asset) => serve(&headers, asset, IMMUTABLE),
        None => not_found().await,
    }
}

/// The API's problem shape, so a wrong console URL reads like any other unknown route.
async fn not_found() -> Response {
    let body = r#"{"type":"urn:ecommerce:problem:NOT_FOUND","title":"Not Found","status":404,"detail":"no such console page","code":"NOT_FOUND"}"#;
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

/// Our own, so that it passes through [`secure`] too (the application's would not).
async fn method_not_allowed() -> Response {
    let body = r#"{"type":"urn:ecommerce:problem:METHOD_NOT_ALLOWED","title":"Method Not Allowed","status":405,"detail":"the console is only read","code":"METHOD_NOT_ALLOWED"}"#;
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::ALLOW, "GET,HEAD"),
        ],
        body,
    )
        .into_response()
}

/// The file, or `304` when the browser already holds this version.
fn serve(request: &HeaderMap, file: &'static Served, cache_control: &'static str) -> Response {
    let mut response = if matches_etag(request, &file.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, file.content_type)], file.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, file.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

/// Security headers on every console answer, 304 and 404 included.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `If-None-Match` holds this tag (weak comparison, as RFC 9110 asks for this header) or `*`.
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

fn etag_of(hash: u64) -> HeaderValue {
    // Sixteen hex digits in quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{hash:016x}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// FNV-1a, 64 bits: enough to tell versions of a few files apart, and stable across builds
/// (unlike `DefaultHasher`), so every instance of one release sends the same tags.
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let request = request.body(Body::empty()).expect("request");
        routes().oneshot(request).await.expect("infallible")
    }

    async fn text(response: Response) -> String {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn asset_paths(page: &str) -> Vec<String> {
        page.split('"')
            .filter(|part| part.starts_with("/admin/assets/"))
            .map(str::to_owned)
            .collect()
    }

    fn assert_secure(response: &Response) {
        assert_eq!(
            header(response, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(header(response, header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(header(response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(response, header::REFERRER_POLICY), "no-referrer");
    }

    #[tokio::test]
    async fn the_page_links_every_asset_by_its_hashed_name() {
        let response = get("/admin/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_secure(&response);
        assert_eq!(header(&response, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
        let page = text(response).await;
        assert!(!page.contains("{{"), "a placeholder was left in the page");
        let paths = asset_paths(&page);
        assert_eq!(paths.len(), ASSETS.len(), "{paths:?}");
        for path in paths {
            let response = get(&path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_secure(&response);
            assert_eq!(header(&response, header::CACHE_CONTROL), IMMUTABLE);
        }
    }

    #[tokio::test]
    async fn the_page_has_no_inline_script_or_style() {
        let page = text(get("/admin/", None).await).await;
        assert!(!page.contains("<style"), "inline stylesheet");
        assert!(!page.contains("style=\""), "inline style attribute");
        for script in page.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("src="), "inline script: {script}");
        }
        let handler = page.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
    }

    #[tokio::test]
    async fn a_known_etag_is_answered_304_with_the_headers() {
        let first = get("/admin/", None).await;
        let etag = header(&first, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = get("/admin/", Some(&format!("W/{etag}, \"other\""))).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_secure(&again);
        assert_eq!(header(&again, header::ETAG), etag);
        assert!(text(again).await.is_empty());
        let stale = get("/admin/", Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn admin_without_slash_redirects_to_the_page() {
        let response = get("/admin", None).await;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&response, header::LOCATION), "/admin/");
        assert_secure(&response);
    }

    #[tokio::test]
    async fn unknown_console_paths_are_problem_json_404s() {
        for path in [
            "/admin/assets/console.js",
            "/admin/assets/nope.0000000000000000.js",
            "/admin/users",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_secure(&response);
            assert_eq!(header(&response, header::CONTENT_TYPE), "application/problem+json");
            assert!(text(response).await.contains("\"code\":\"NOT_FOUND\""));
        }
    }

    #[tokio::test]
    async fn other_methods_are_405_with_the_headers() {
        for path in ["/admin", "/admin/", "/admin/assets/anything.css"] {
            let request = Request::post(path).body(Body::empty()).expect("request");
            let response = routes().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_secure(&response);
            assert_eq!(header(&response, header::ALLOW), "GET,HEAD");
            assert!(text(response).await.contains("\"code\":\"METHOD_NOT_ALLOWED\""));
        }
    }

    #[test]
    fn the_hash_is_fnv1a() {
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
