//! The outbox relay: lease unsent events, publish them in commit order, mark them sent only once
//! the sink has them durably (the events file is synced to disk first). A sink outage delays
//! events: a failed batch gives its lease back and is tried again after the back-off (here or on
//! another instance), so none is lost; a relay that dies leaves its lease to run out. Duplicates after a crash carry the same
//! event id (`Nats-Msg-Id`), which JetStream drops within its duplicate window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use ecommerce_domain::Timestamp;
use ecommerce_domain::store::{OutboxEvent, Store};
use tokio::io::AsyncWriteExt;

use super::{Backoff, Shutdown};
use crate::events;

/// How long a leased batch is ours before another relay may take it.
pub const LEASE: Duration = Duration::from_secs(10);
/// Events per round; a full round is followed by another at once.
pub const BATCH: i64 = 100;

/// Where the events go.
pub enum Sink {
    /// A JSON-lines file, one event per line.
    File(PathBuf),
    /// NATS JetStream, stream [`events::STREAM`].
    JetStream(jetstream::Context),
}

impl Sink {
    /// The events file, its folder created when missing.
    pub fn file(path: &Path) -> anyhow::Result<Sink> {
        if let Some(folder) = path.parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create the folder of the events file {}", path.display()))?;
        }
        Ok(Sink::File(path.to_owned()))
    }

    /// A JetStream context on `url`; the connection is made (and remade) in the background, so
    /// an unreachable broker delays events but not the start.
    pub async fn jetstream(url: &str) -> anyhow::Result<Sink> {
        Ok(Sink::JetStream(events::jetstream(url).await?))
    }

    /// Gets the sink ready for a batch: the events file is opened once per batch, not per event.
    async fn open(&self) -> anyhow::Result<Open<'_>> {
        match self {
            Sink::File(path) => private_append(path)
                .await
                .map(Open::File)
                .with_context(|| format!("cannot open the events file {}", path.display())),
            Sink::JetStream(js) => Ok(Open::JetStream(js)),
        }
    }
}

/// Opens the events file for appending, creating it readable by its owner only.
async fn private_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

/// A sink ready to take the events of one batch.
enum Open<'a> {
    File(tokio::fs::File),
    JetStream(&'a jetstream::Context),
}

impl Open<'_> {
    /// Makes the batch's events durable before they are marked sent: the file's data reaches
    /// the disk (an OS crash or power loss cannot take back lines marked sent); JetStream's
    /// acknowledgements already mean that.
    async fn sync(&mut self) -> anyhow::Result<()> {
        match self {
            Open::File(file) => file.sync_data().await.context("cannot sync the events file"),
            Open::JetStream(_) => Ok(()),
        }
    }

    /// Publishes one event and waits for the sink to have it (a whole line in the file, or the
    /// broker's acknowledgement).
    async fn publish(&mut self, event: &OutboxEvent) -> anyhow::Result<()> {
        match self {
            Open::File(file) => {
                let mut line = event.payload.clone().into_bytes();
                line.push(b'\n');
                file.write_all(&line).await.context("cannot write to the events file")?;
                file.flush().await.context("cannot write to the events file")
            }
            Open::JetStream(js) => {
                let subject = format!("{}{}", events::SUBJECT_PREFIX, event.event_type);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", event.event_id.as_str());
                let ack = js
                    .publish_with_headers(subject, headers, event.payload.clone().into())
                    .await
                    .context("cannot publish to JetStream")?;
                ack.await.map(drop).context("JetStream did not acknowledge an event")
            }
        }
    }
}

/// Relays one batch; returns how many events were sent. Tests call it to drain the outbox.
pub async fn step<S: Store>(store: &S, sink: &Sink) -> anyhow::Result<usize> {
    let now = Timestamp::now();
    let lease_until = Timestamp(now.millis() + LEASE.as_millis() as i64);
    let events = store
        .lease_outbox(now, lease_until, BATCH)
        .await
        .context("cannot lease outbox events")?;
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
            if !sent.is_empty()
                && let Err(err) = open.sync().await
            {
                // Not known to be durable: sent again later (at least once, same event ids).
                sent.clear();
                failure = Some(err);
            }
        }
        Err(err) => failure = Some(err),
    }
    store
        .mark_outbox_sent(&sent, Timestamp::now())
        .await
        .context("cannot mark outbox events sent")?;
    metrics::counter!("outbox_events_sent_total").increment(sent.len() as u64);
    match failure {
        Some(err) => {
            metrics::counter!("outbox_publish_failures_total").increment(1);
            // Give the rest of the batch back, so that the next round (after the back-off, here
            // or on another instance) retries it without waiting out the lease.
            let unsent: Vec<i64> = events
                .iter()
                .map(|event| event.seq)
                .filter(|seq| !sent.contains(seq))
                .collect();
            if let Err(release) = store.release_outbox(&unsent).await {
                tracing::warn!(error = %release, "cannot release the lease of unsent events");
            }
            Err(err)
        }
        None => Ok(sent.len()),
    }
}

/// Runs the relay until shutdown: makes sure the JetStream stream exists (with the retention and
/// replicas of `stream`), then relays, idling `idle` when the outbox is empty and backing off while the
/// sink fails.
pub async fn run<S: Store>(
    store: S,
    sink: Sink,
    idle: Duration,
    stream: events::StreamSettings,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    if let Sink::JetStream(js) = &sink {
        while let Err(err) = events::ensure_stream(js, stream).await {
            let wait = backoff.next_wait();
            tracing::warn!(
                error = format!("{err:#}"),
                retry_in_ms = wait.as_millis() as u64,
                "JetStream stream not ready"
            );
            if shutdown.sleep(wait).await {
                return;
            }
        }
        backoff.reset();
    }
    loop {
        let pause = match step(&store, &sink).await {
            Ok(n) if n as i64 == BATCH => {
                backoff.reset();
                Duration::ZERO
            }
            Ok(_) => {
                backoff.reset();
                idle
            }
            Err(err) => {
                let wait = backoff.next_wait();
                tracing::warn!(
                    error = format!("{err:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "outbox relay failed"
                );
                wait
            }
        };
        if shutdown.sleep(pause).await {
            return;
        }
    }
}
