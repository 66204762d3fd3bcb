//! The HTTP/1.1 server loop (audit H2 and L11): hyper's connection driver with the limits
//! axum's `serve` does not set.
//!
//! - **Connections per instance** ([`HttpLimits::max_connections`]): past it, a new connection
//!   is answered `503` problem+json with `Retry-After` in one non-blocking write and closed, so
//!   that a flood of sockets cannot exhaust the open-file limit and leave `/health` hanging.
//! - **Header timeout** ([`HttpLimits::header_timeout`]): a request head (request line and
//!   headers) must arrive within it, counted from the connection's opening or from the first byte
//!   after an idle time; a slower connection (slowloris) is closed.
//! - **Idle timeout** ([`HttpLimits::idle_timeout`]): a keep-alive connection with no request for
//!   that long is closed; it is longer than the header timeout so that a proxy's pooled upstream
//!   connections (nginx: 60 s) are not cut under it.
//! - **Head size** ([`HttpLimits::max_header_bytes`]): hyper's read buffer; a larger head gets
//!   `431`.
//! - **hyper's own errors as problem+json**: the `400`, `414` and `431` hyper writes for a
//!   request it cannot parse (it never reaches the router) are rewritten on their way out into
//!   the API's problem+json shape.
//!
//! Every request carries the peer address as axum's `ConnectInfo<SocketAddr>`. Graceful
//! shutdown: the listener closes, every connection finishes its request in flight and closes,
//! and the loop returns once all are closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// The limits of the HTTP server (`ECOMMERCE_HEADER_TIMEOUT_MS`, `ECOMMERCE_IDLE_TIMEOUT_MS`,
/// `ECOMMERCE_MAX_HEADER_BYTES`, `ECOMMERCE_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// Most connections counted (far above any open-file limit; fits the `u32` of `acquire_many`).
const MAX_PERMITS: usize = 1 << 24;

/// The answer to a connection over the limit, written at once without waiting.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/problem+json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 175\r\n\r\n\
{\"type\":\"urn:ecommerce:problem:SERVICE_UNAVAILABLE\",\"title\":\"Service Unavailable\",\"status\":503,\
\"detail\":\"too many connections; try again shortly\",\"code\":\"SERVICE_UNAVAILABLE\"}";

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets every
/// connection finish its request in flight and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let capacity = limits.max_connections.clamp(1, MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(capacity));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, mostly: wait a moment rather than spin.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            let _ = stream.try_write(REFUSAL);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            metrics::gauge!("http_connections_open").increment(1.0);
            serve_connection(stream, peer, router, limits, stopping).await;
            metrics::gauge!("http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed.
    let _ = connections.acquire_many(capacity as u32).await;
}

/// Warns when a configured connection cap is not below the process's open-file limit: `accept` would then
/// fail (and `/health` hang) before the cap refuses anything. Files besides connections: the
/// database pool, the events file, the runtime's own; 128 is a margin for them.
pub fn warn_if_over_the_file_limit(limits: &HttpLimits) {
    let Some(soft) = open_file_limit() else {
        return;
    };
    let needed = limits.max_connections as u64 + 128;
    if needed > soft {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_file_limit = soft,
            "ECOMMERCE_MAX_CONNECTIONS is not below the open-file limit (ulimit -n, systemd LimitNOFILE) \
             minus 128: raise the limit or lower the cap, or connections fail before the cap refuses them"
        );
    }
}

/// The connection cap when none is configured: `preferred`, or the open-file limit minus 128
/// when that is lower (at least 16).
pub fn default_max_connections(preferred: usize) -> usize {
    match open_file_limit() {
        Some(soft) => preferred.min(soft.saturating_sub(128).max(16) as usize),
        None => preferred,
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Drives one connection: hyper's HTTP/1.1 state machine, watched for the header and idle
/// timeouts and for shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Shared {
        state: Mutex::new(Activity::new(Instant::now())),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        rewrite: None,
    });
    let on_request = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = RequestGuard::start(on_request.clone());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = tower::ServiceExt::oneshot(router.clone(), req);
        async move {
            let response = answer.await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8_192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let check_at = activity.lock().next_check(&limits);
        tokio::select! {
            // A deadline may have moved closer (a request answered, a head begun): look again.
            () = activity.changed.notified() => {}
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                let expired = activity.lock().expired(now, &limits);
                match expired {
                    Some(Expired::Head) => {
                        metrics::counter!("http_connections_timed_out_total", "phase" => "header").increment(1);
                        return;
                    }
                    Some(Expired::Idle) if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        activity.lock().idle_since = now;
                    }
                    Some(Expired::Idle) => {
                        // Asked to close an idle time ago and still open (a client that does
                        // not read its answer): drop it.
                        metrics::counter!("http_connections_timed_out_total", "phase" => "idle").increment(1);
                        return;
                    }
                    None => {}
                }
            }
        }
    }
}

/// A connection's [`Activity`], shared by its socket, its requests and its watcher.
struct Shared {
    state: Mutex<Activity>,
    /// Signalled when a deadline may have moved closer, so that the watcher does not sleep past it.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a connection is doing, for its timeouts.
#[derive(Debug)]
struct Activity {
    /// Requests handed to the router and not answered yet.
    in_flight: u32,
    /// Since when the connection waits for a request head that has not arrived whole: from its
    /// opening, and from the first byte read after an idle time.
    head_since: Option<Instant>,
    /// Since when no request is in flight and no head is coming.
    idle_since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Head,
    Idle,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            head_since: Some(now),
            idle_since: now,
        }
    }

    /// Answers whether this started the header clock.
    fn bytes_read(&mut self, now: Instant) -> bool {
        let starts = self.in_flight == 0 && self.head_since.is_none();
        if starts {
            self.head_since = Some(now);
        }
        starts
    }

    fn request_started(&mut self) {
        self.in_flight += 1;
        self.head_since = None;
    }

    fn request_finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.idle_since = now;
    }

    /// When a timeout may next have passed.
    fn next_check(&self, limits: &HttpLimits) -> Instant {
        match (self.in_flight, self.head_since) {
            // A request in flight has the router's own timeout; look again later.
            (1.., _) => Instant::now() + limits.idle_timeout.max(limits.header_timeout),
            (0, Some(since)) => since + limits.header_timeout,
            (0, None) => self.idle_since + limits.idle_timeout,
        }
    }

    fn expired(&self, now: Instant, limits: &HttpLimits) -> Option<Expired> {
        match (self.in_flight, self.head_since) {
            (1.., _) => None,
            (0, Some(since)) => (now >= since + limits.header_timeout).then_some(Expired::Head),
            (0, None) => (now >= self.idle_since + limits.idle_timeout).then_some(Expired::Idle),
        }
    }
}

/// Counts a request in flight for as long as it lives (dropped with its answer, or with the
/// request when the connection goes away).
struct RequestGuard(Arc<Shared>);

impl RequestGuard {
    fn start(activity: Arc<Shared>) -> Self {
        activity.lock().request_started();
        Self(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.lock().request_finished(Instant::now());
        self.0.changed.notify_one();
    }
}

/// The socket, seen by hyper: reads mark activity, and hyper's own error answers are rewritten.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Shared>,
    /// A rewritten error answer being written: its bytes, how many are written, and the length
    /// of hyper's original (what hyper is told was written).
    rewrite: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let started = this.activity.lock().bytes_read(Instant::now());
            if started {
                this.activity.changed.notify_one();
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_none()
            && let Some(replacement) = problem_for_hyper_error(buf)
        {
            this.rewrite = Some((replacement, 0, buf.len()));
        }
        if this.rewrite.is_some() {
            return this.poll_write_rewrite(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// hyper hands over an answer's head and its body chunks as they are (its `Queue` write
    /// strategy), so that a connection's write buffer holds heads only: copied into it whole
    /// (`Flatten`), every body grew the buffer up to `max_buf_size`, and it kept that size for
    /// as long as the connection lived. hyper's own error answers have no body: their head is the
    /// first buffer, which is what the rewrite looks at.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_none()
            && let Some(first) = bufs.iter().find(|buf| !buf.is_empty())
            && let Some(replacement) = problem_for_hyper_error(first)
        {
            let original = bufs.iter().map(|buf| buf.len()).sum();
            this.rewrite = Some((replacement, 0, original));
        }
        if this.rewrite.is_some() {
            return this.poll_write_rewrite(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Tracked {
    /// Writes the rewritten error answer; once it is written whole, tells hyper that its own
    /// answer was.
    fn poll_write_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, original)) = &mut self.rewrite else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let original = *original;
        self.rewrite = None;
        Poll::Ready(Ok(original))
    }
}

/// When `buf` is an error answer that hyper wrote itself (a request it could not parse: it
/// never reached the router, so it has no `x-request-id`), the same status as problem+json.
fn problem_for_hyper_error(buf: &[u8]) -> Option<Vec<u8>> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (status, reason, code, detail) = match status {
        b"400" => (
            400,
            "Bad Request",
            "VALIDATION_FAILED",
            "the request is not valid HTTP/1.1",
        ),
        b"414" => (414, "URI Too Long", "URI_TOO_LONG", "the request target is too long"),
        b"431" => (
            431,
            "Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
            "the request headers are too large or too many",
        ),
        _ => return None,
    };
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.contains("\r\nx-request-id:") || head.contains("\r\ncontent-type:") {
        return None;
    }
    let body = format!(
        r#"{{"type":"urn:ecommerce:problem:{code}","title":"{reason}","status":{status},"detail":"{detail}","code":"{code}"}}"#
    );
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut text))
            .await
            .expect("closed in time")
            .expect("read");
        text
    }

    /// Handlers get the peer address as `ConnectInfo`; at shutdown the listener closes and the
    /// request in flight is finished before `serve` returns.
    #[tokio::test]
    async fn handlers_see_the_peer_and_shutdown_finishes_the_request_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let started = Arc::new(Notify::new());
        let (release, released) = oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/slow",
                get({
                    let started = started.clone();
                    move || async move {
                        started.notify_one();
                        if let Some(released) = released.lock().await.take() {
                            let _ = released.await;
                        }
                        "done"
                    }
                }),
            );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, LIMITS, async move {
            let _ = stopped.await;
        }));

        let mut client = TcpStream::connect(address).await.expect("connect");
        let me = client.local_addr().expect("own address");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let answer = read_to_close(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&me.to_string()), "{answer} names {me}");

        let mut slow = TcpStream::connect(address).await.expect("connect");
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        started.notified().await;
        stop.send(()).expect("the server runs");
        // The listener goes away while the request is in flight…
        let mut refused = false;
        for _ in 0..500 {
            if TcpStream::connect(address).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "the listener stayed open after shutdown");
        assert!(!server.is_finished(), "serve waits for the request in flight");
        // …which is answered, and the connection closed.
        release.send(()).expect("the handler waits");
        let answer = read_to_close(&mut slow).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("serve returns once every connection is closed")
            .expect("join");
    }

    const LIMITS: HttpLimits = HttpLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        max_header_bytes: 65_536,
        max_connections: 10,
    };

    #[cfg(target_os = "linux")]
    #[test]
    fn the_open_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn the_refusal_is_a_complete_problem_answer() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["code"], "SERVICE_UNAVAILABLE");
    }

    #[test]
    fn a_connection_must_send_its_head_within_the_header_timeout_then_may_idle_longer() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        assert_eq!(activity.next_check(&LIMITS), start + LIMITS.header_timeout);
        assert_eq!(activity.expired(start + Duration::from_secs(9), &LIMITS), None);
        assert_eq!(
            activity.expired(start + Duration::from_secs(10), &LIMITS),
            Some(Expired::Head)
        );

        activity.request_started();
        assert_eq!(activity.expired(start + Duration::from_secs(500), &LIMITS), None);
        let answered = start + Duration::from_secs(1);
        activity.request_finished(answered);
        assert_eq!(activity.expired(answered + Duration::from_secs(30), &LIMITS), None);
        assert_eq!(
            activity.expired(answered + Duration::from_secs(75), &LIMITS),
            Some(Expired::Idle)
        );

        // The next request's first byte starts the header clock again.
        let next = answered + Duration::from_secs(20);
        activity.bytes_read(next);
        assert_eq!(activity.next_check(&LIMITS), next + LIMITS.header_timeout);
        assert_eq!(
            activity.expired(next + Duration::from_secs(10), &LIMITS),
            Some(Expired::Head)
        );
    }

    #[test]
    fn only_hypers_own_error_answers_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = String::from_utf8(problem_for_hyper_error(hyper_431).expect("rewritten")).expect("utf-8");
        assert!(rewritten.starts_with("HTTP/1.1 431 "), "{rewritten}");
        assert!(
            rewritten.contains("content-type: application/problem+json"),
            "{rewritten}"
        );
        let (_, body) = rewritten.split_once("\r\n\r\n").expect("a body");
        let problem: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(problem["status"], 431);

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\nx-request-id: a\r\ncontent-length: 2\r\n\r\n{}";
        assert!(problem_for_hyper_error(ours).is_none());
        assert!(problem_for_hyper_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
