//! The baseline of DESIGN.md: a bare axum endpoint answering fixed JSON bytes on every path (so
//! the `popular` scenario can run against it unchanged). No database, no middleware.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

pub struct BareOptions {
    pub addr: String,
    pub body: Bytes,
    /// The server stops by itself after this long, so a forgotten one does not linger.
    pub exit_after: Duration,
}

pub async fn serve(opts: BareOptions) -> Result<(), String> {
    let body = opts.body;
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(CONTENT_TYPE, "application/json")], body).into_response() }
    });
    let listener = tokio::net::TcpListener::bind(&opts.addr)
        .await
        .map_err(|e| format!("bind {}: {e}", opts.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("bare-server listening on http://{local}");
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
            _ = tokio::time::sleep(opts.exit_after) => eprintln!("bare-server: --exit-after reached"),
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}

/// The bytes to serve: a file, a URL fetched once (e.g. a real `/products/popular` answer), or a
/// small default document.
pub async fn load_body(file: Option<String>, url: Option<String>) -> Result<Bytes, String> {
    if let Some(path) = file {
        return std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| format!("{path}: {e}"));
    }
    if let Some(url) = url {
        let url = crate::client::check_loopback(&url)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let reply = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        return reply.bytes().await.map_err(|e| format!("{url}: {e}"));
    }
    Ok(Bytes::from_static(br#"{"days":3,"items":[]}"#))
}
