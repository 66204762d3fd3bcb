//! Compressed answers (`gzip`, `br`) for clients that accept them.
//!
//! Only answers of at least [`MIN_BYTES`] and of a textual type are compressed: below that the
//! headers and the work cost more than the bytes saved, and images are compressed already.
//! tower-http's defaults are kept for the levels (gzip 6, brotli 4: fast, and close to the best
//! ratio on JSON).
//!
//! tower-http answers `406 Not Acceptable` when a client refuses every coding it offers,
//! `identity` included (`Accept-Encoding: identity;q=0`). This API has always answered such
//! clients in plain form, so [`keep_identity_acceptable`] drops that header first.

use axum::extract::Request;
use axum::http::{Extensions, HeaderMap, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};

/// Smallest body that is compressed.
pub const MIN_BYTES: u64 = 1024;

/// The compression layer: gzip and brotli, textual bodies of at least [`MIN_BYTES`] (tower-http's
/// default floor, 32 bytes, would compress nearly every problem document).
pub(crate) fn layer() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new().compress_when(SizeAbove::new(MIN_BYTES).and(textual))
}

/// JSON (problems included), text (HTML, CSS, the metrics), JavaScript and SVG.
fn textual(_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/javascript"
        || essence == "image/svg+xml"
}

/// Removes an `Accept-Encoding` that accepts none of `gzip`, `br` and `identity`, so that the
/// client gets the plain answer it always got instead of a 406.
pub(crate) async fn keep_identity_acceptable(mut req: Request, next: Next) -> Response {
    if refuses_all_we_offer(req.headers()) {
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    next.run(req).await
}

/// True when `Accept-Encoding` gives `gzip` and `br` no positive weight and refuses `identity`
/// (explicitly, or by `*;q=0` without naming it).
fn refuses_all_we_offer(headers: &HeaderMap) -> bool {
    let mut listed = false;
    let (mut gzip, mut br, mut identity, mut any) = (None, None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let weight = parts.find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")));
            // An unreadable weight counts as a refusal, as tower-http ignores such an entry.
            let accepted = weight.map_or(Some(true), |w| w.trim().parse::<f32>().ok().map(|q| q > 0.0));
            let accepted = accepted.unwrap_or(false);
            listed = true;
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(accepted),
                "br" => br = Some(accepted),
                "identity" => identity = Some(accepted),
                "*" => any = Some(accepted),
                _ => {}
            }
        }
    }
    if !listed {
        return false;
    }
    let named_or_any = |coding: Option<bool>| coding.or(any).unwrap_or(false);
    let identity_ok = identity.or(any).unwrap_or(true);
    !named_or_any(gzip) && !named_or_any(br) && !identity_ok
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn refused(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        refuses_all_we_offer(&headers)
    }

    #[test]
    fn only_a_header_refusing_gzip_br_and_identity_is_dropped() {
        for kept in [
            &[][..],
            &["gzip"],
            &["br;q=0.5, identity;q=0"],
            &["deflate"],
            &["identity"],
            &["zstd, identity;q=0.1"],
            &["*"],
            &["*;q=0", "gzip"],
            &["identity;q=0, *;q=0.2"],
        ] {
            assert!(!refused(kept), "{kept:?} is left as it is");
        }
        for dropped in [
            &["identity;q=0"][..],
            &["*;q=0"],
            &["deflate, identity;q=0"],
            &["gzip;q=0, br;q=0.000, identity;q=0"],
            &["gzip;q=zero, identity;q=0"],
        ] {
            assert!(refused(dropped), "{dropped:?} is dropped");
        }
    }
}

#[cfg(test)]
mod layer_tests {
    use std::io::Read;

    use axum::http::StatusCode;

    use crate::CorsOrigins;
    use crate::testing::{app, header_of, send};

    async fn get(path: &str, accept: Option<&str>) -> (StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
        send(&app(CorsOrigins::None), |r| {
            let r = r.uri(path);
            match accept {
                Some(accept) => r.header("accept-encoding", accept),
                None => r,
            }
        })
        .await
    }

    #[tokio::test]
    async fn large_json_is_compressed_for_clients_that_accept_gzip_or_br() {
        let (_, _, plain) = get("/api/v1/products", None).await;
        assert!(plain.len() > super::MIN_BYTES as usize, "the sample is large enough");

        let (status, headers, body) = get("/api/v1/products", Some("gzip")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_of(&headers, "content-encoding").as_deref(), Some("gzip"));
        assert!(
            header_of(&headers, "vary")
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        );
        assert_eq!(header_of(&headers, "content-length"), Some(body.len().to_string()));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut unzipped)
            .expect("gzip");
        assert_eq!(unzipped, plain);
        assert!(body.len() * 3 < plain.len(), "{} of {} bytes", body.len(), plain.len());

        let (_, headers, body) = get("/api/v1/products", Some("gzip;q=0.5, br")).await;
        assert_eq!(header_of(&headers, "content-encoding").as_deref(), Some("br"));
        let mut unbrotlied = Vec::new();
        brotli::Decompressor::new(&body[..], 4096)
            .read_to_end(&mut unbrotlied)
            .expect("brotli");
        assert_eq!(unbrotlied, plain);
    }

    #[tokio::test]
    async fn small_answers_and_clients_without_accept_encoding_get_the_plain_body() {
        for (path, accept) in [
            ("/api/v1/products/7", Some("gzip, br")),
            ("/api/v1/coupons/9", Some("gzip, br")),
            ("/api/v1/products", None),
            ("/api/v1/products", Some("identity")),
            ("/api/v1/products", Some("deflate")),
        ] {
            let (_, headers, _) = get(path, accept).await;
            assert!(header_of(&headers, "content-encoding").is_none(), "{path} {accept:?}");
        }
    }

    #[tokio::test]
    async fn a_client_refusing_every_coding_still_gets_the_plain_answer_not_406() {
        let (status, headers, body) = get("/api/v1/products", Some("identity;q=0")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(header_of(&headers, "content-encoding").is_none());
        let (_, _, plain) = get("/api/v1/products", None).await;
        assert_eq!(body, plain);
    }

    #[tokio::test]
    async fn each_coding_has_its_own_etag_and_revalidates_with_it() {
        let (_, plain, _) = get("/api/v1/products", None).await;
        let (_, zipped, _) = get("/api/v1/products", Some("gzip")).await;
        let (plain_tag, zipped_tag) = (header_of(&plain, "etag"), header_of(&zipped, "etag"));
        assert!(plain_tag.is_some() && zipped_tag.is_some());
        assert_ne!(plain_tag, zipped_tag);
        let zipped_tag = zipped_tag.unwrap_or_default();
        let (status, headers, body) = send(&app(CorsOrigins::None), |r| {
            r.uri("/api/v1/products")
                .header("accept-encoding", "gzip")
                .header("if-none-match", &zipped_tag)
        })
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(header_of(&headers, "etag"), Some(zipped_tag));
    }
}
