//! The outbox relay, run by every instance: lease unsent events, publish them in commit order,
//! mark them sent only once the sink has them. A sink outage delays events; the lease runs out
//! and the events are tried again (here or on another instance), so none is lost. Duplicates
//! after a crash carry the same event id (`Nats-Msg-Id`), which JetStream drops.

use std::time::Duration;

use ecommerce_domain::Timestamp;
use ecommerce_domain::store::{OutboxEvent, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// Stream and subjects on JetStream.
pub const STREAM: &str = "ECOMMERCE_ORDERS";
pub const SUBJECTS: &str = "ecommerce.order.*";

/// How long a leased batch is ours before another relay may take it.
const LEASE: Duration = Duration::from_secs(10);
const BATCH: i64 = 100;

pub enum Sink {
    File(String),
    Nats(async_nats::jetstream::Context),
}

impl Sink {
    pub async fn connect_nats(url: &str) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| format!("cannot reach NATS at {url}: {e}"))?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(3));
        Ok(Sink::Nats(js))
    }

    async fn ensure_stream(js: &async_nats::jetstream::Context) -> Result<(), String> {
        let config = async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECTS.into()],
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Gets the sink ready for a batch: the events file is opened once per batch, not per event.
    async fn open(&self) -> Result<Open<'_>, String> {
        match self {
            Sink::File(path) => tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .map(Open::File)
                .map_err(|e| format!("cannot open {path}: {e}")),
            Sink::Nats(js) => Ok(Open::Nats(js)),
        }
    }
}

/// A sink ready to take the events of one batch.
enum Open<'a> {
    File(tokio::fs::File),
    Nats(&'a async_nats::jetstream::Context),
}

impl Open<'_> {
    /// Publishes one event and waits for the sink to have it (a whole line in the file, or the
    /// broker's acknowledgement).
    async fn publish(&mut self, event: &OutboxEvent) -> Result<(), String> {
        match self {
            Open::File(file) => {
                let mut line = event.payload.clone().into_bytes();
                line.push(b'\n');
                file.write_all(&line).await.map_err(|e| e.to_string())?;
                file.flush().await.map_err(|e| e.to_string())
            }
            Open::Nats(js) => {
                let subject = format!("ecommerce.{}", event.event_type);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", event.event_id.as_str());
                let ack = js
                    .publish_with_headers(subject, headers, event.payload.clone().into())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(drop).map_err(|e| e.to_string())
            }
        }
    }
}

/// Relays one batch; returns how many events were sent. Tests call this to drain the outbox.
pub async fn relay_once<S: Store>(store: &S, sink: &Sink) -> Result<usize, String> {
    let now = Timestamp::now();
    let lease_until = Timestamp(now.millis() + LEASE.as_millis() as i64);
    let events = store
        .lease_outbox(now, lease_until, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if events.is_empty() {
        return Ok(0);
    }
    let mut sent = Vec::with_capacity(events.len());
    let mut failure = None;
    match sink.open().await {
        Ok(mut open) => {
            for event in &events {
                // Stop at the first failure: a later event may belong to the same order.
                match open.publish(event).await {
                    Ok(()) => sent.push(event.seq),
                    Err(err) => {
                        failure = Some(err);
                        break;
                    }
                }
            }
        }
        Err(err) => failure = Some(err),
    }
    store
        .mark_outbox_sent(&sent, Timestamp::now())
        .await
        .map_err(|e| e.to_string())?;
    metrics::counter!("outbox_events_sent_total").increment(sent.len() as u64);
    match failure {
        Some(err) => {
            metrics::counter!("outbox_publish_failures_total").increment(1);
            Err(err)
        }
        None => Ok(sent.len()),
    }
}

/// Runs the relay until shutdown, backing off while the sink fails.
pub async fn run<S: Store>(store: S, sink: Sink, idle: Duration, mut shutdown: watch::Receiver<bool>) {
    if let Sink::Nats(js) = &sink {
        let mut wait = Duration::from_millis(200);
        while let Err(err) = Sink::ensure_stream(js).await {
            tracing::warn!(error = %err, "JetStream stream not ready; retrying");
            if sleep_or_shutdown(wait, &mut shutdown).await {
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    let mut backoff = Duration::ZERO;
    loop {
        let pause = match relay_once(&store, &sink).await {
            Ok(n) if n as i64 == BATCH => Duration::ZERO,
            Ok(_) => {
                backoff = Duration::ZERO;
                idle
            }
            Err(err) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                backoff
            }
        };
        if sleep_or_shutdown(pause, &mut shutdown).await {
            return;
        }
    }
}

/// Exports the outbox backlog and the age of its oldest event every few seconds, whatever the
/// state of the sink (an unreachable broker is exactly when they matter).
pub async fn report_backlog<S: Store>(store: S, mut shutdown: watch::Receiver<bool>) {
    loop {
        match store.outbox_backlog().await {
            Ok(backlog) => {
                metrics::gauge!("outbox_backlog").set(backlog.unsent as f64);
                let age = backlog
                    .oldest_created_at
                    .map_or(0, |t| (Timestamp::now().millis() - t.millis()).max(0));
                metrics::gauge!("outbox_oldest_unsent_age_seconds").set(age as f64 / 1000.0);
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the outbox backlog"),
        }
        if sleep_or_shutdown(Duration::from_secs(2), &mut shutdown).await {
            return;
        }
    }
}

/// Sleeps; `true` when shutdown was asked for meanwhile.
pub async fn sleep_or_shutdown(pause: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    if pause.is_zero() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = shutdown.changed() => true,
    }
}

/// `ecommerce events tail`: prints every event on the stream as one JSON line, from the start.
pub async fn tail(url: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot reach NATS at {url}: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| format!("no stream {STREAM}: {e}"))?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        println!("{}", String::from_utf8_lossy(&message.payload));
    }
    Ok(())
}
