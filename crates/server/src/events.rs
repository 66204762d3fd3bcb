//! The event stream on NATS JetStream, for the data platform: the stream's definition (created
//! by every relaying instance) and `ecommerce events tail`, which replays and follows it.
//!
//! The stream keeps events by age (limits retention, file storage, `max_age` from
//! `ECOMMERCE_EVENTS_MAX_AGE_DAYS`), not by consumption, so any number of readers can replay
//! it from any point; see `docs/EVENTS.md`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::config::{TailArgs, redact_url};

/// The stream of order events.
pub const STREAM: &str = "ECOMMERCE_ORDERS";
/// Every event's subject is this prefix and its type (`ecommerce.order.paid`).
pub const SUBJECT_PREFIX: &str = "ecommerce.";
/// The subjects the stream takes.
pub const SUBJECTS: &str = "ecommerce.order.*";
/// A re-published event (same `Nats-Msg-Id`) within this window is dropped by the broker.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(300);
/// Events per pull of `events tail`.
const TAIL_BATCH: usize = 100;

/// How the server creates the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Zero keeps events forever (`ECOMMERCE_EVENTS_MAX_AGE_DAYS`).
    pub max_age: Duration,
    /// Copies kept by a NATS cluster (`ECOMMERCE_EVENTS_REPLICAS`); 1 on a single server.
    pub replicas: usize,
}

impl StreamSettings {
    /// One copy, kept this long.
    pub fn single(max_age: Duration) -> Self {
        Self { max_age, replicas: 1 }
    }
}

/// The stream as the server creates it.
pub fn stream_config(settings: StreamSettings) -> stream::Config {
    let StreamSettings { max_age, replicas } = settings;
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECTS.into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one to this configuration (a changed
/// `ECOMMERCE_EVENTS_MAX_AGE_DAYS` or `ECOMMERCE_EVENTS_REPLICAS` takes effect on the next start).
pub async fn ensure_stream(js: &jetstream::Context, settings: StreamSettings) -> anyhow::Result<()> {
    js.create_or_update_stream(stream_config(settings))
        .await
        .map(drop)
        .with_context(|| format!("cannot create or update the stream {STREAM}"))
}

/// A JetStream context on `url` that connects (and reconnects) in the background, logging
/// connection changes once each, with the broker's address (its password hidden).
pub async fn jetstream(url: &str) -> anyhow::Result<jetstream::Context> {
    let shown = redact_urls(url);
    let logged = shown.clone();
    let client = async_nats::ConnectOptions::new()
        .name("ecommerce")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let broker = logged.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(%broker, "connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%broker, "lost the connection to NATS; events wait in the outbox")
                    }
                    async_nats::Event::ClientError(err) => tracing::debug!(%broker, error = %err, "NATS client error"),
                    other => tracing::debug!(%broker, event = %other, "NATS event"),
                }
            }
        })
        .connect(server_list(url))
        .await
        .with_context(|| format!("cannot use NATS at {shown}"))?;
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(3));
    Ok(js)
}

/// The brokers of `NATS_URL`: one URL, or several separated by commas (the nodes of a cluster;
/// the client also learns the others from the one it reaches).
pub fn server_list(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(str::to_owned)
        .collect()
}

/// [`server_list`] with every password hidden.
fn redact_urls(url: &str) -> String {
    server_list(url)
        .iter()
        .map(|one| redact_url(one))
        .collect::<Vec<_>>()
        .join(",")
}

/// `ecommerce events tail`: prints the events of the stream as JSON lines, one per event, from
/// the first kept (or `--from-sequence`, `--since`), then follows new ones until SIGTERM or
/// Ctrl-C. With `--durable NAME` each event is acknowledged after its line is written and
/// flushed, so that the next run with that name resumes after the last line printed.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let Some(url) = args.nats_url.as_deref() else {
        bail!("set NATS_URL (or --nats-url) to the broker to tail, e.g. nats://127.0.0.1:4222");
    };
    let shown = redact_urls(url);
    let client = async_nats::ConnectOptions::new()
        .name("ecommerce events tail")
        .connection_timeout(Duration::from_secs(5))
        .connect(server_list(url))
        .await
        .with_context(|| format!("cannot reach NATS at {shown}"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(STREAM)
        .await
        .with_context(|| format!("no stream {STREAM} on {shown}: a server started with NATS_URL creates it"))?;
    let consumer = open_consumer(&stream, &args).await?;
    let acks = args.durable.is_some();

    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    let mut stopping = false;
    let mut out = std::io::stdout();
    while !stopping {
        let batch = consumer
            .batch()
            .max_messages(TAIL_BATCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .context("cannot pull events from the stream")?;
        tokio::pin!(batch);
        // A stop request lets the current pull finish, so every event handed to us is printed
        // and acknowledged, and a resumed durable consumer repeats none.
        loop {
            tokio::select! {
                message = batch.next() => match message {
                    None => break,
                    Some(Ok(message)) => {
                        match print_line(&mut out, &message.payload) {
                            Ok(()) => {}
                            // The reader went away (`| head`): nothing more to do.
                            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                            Err(err) => return Err(err).context("cannot write to stdout"),
                        }
                        if acks {
                            message
                                .double_ack()
                                .await
                                .map_err(|e| anyhow::anyhow!("{e}"))
                                .context("the broker did not take the acknowledgement")?;
                        }
                    }
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "pull ended early");
                        break;
                    }
                },
                () = &mut stop, if !stopping => stopping = true,
            }
        }
    }
    Ok(())
}

fn print_line(out: &mut std::io::Stdout, payload: &[u8]) -> std::io::Result<()> {
    let mut out = out.lock();
    out.write_all(payload)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The pull consumer of a tail: a new ephemeral one, or the durable one of that name (created
/// at the start position on first use, resumed afterwards).
async fn open_consumer(stream: &stream::Stream, args: &TailArgs) -> anyhow::Result<consumer::PullConsumer> {
    let deliver_policy = match (args.from_sequence, args.since) {
        (Some(start_sequence), _) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
        (None, Some(start_time)) => consumer::DeliverPolicy::ByStartTime { start_time },
        (None, None) => consumer::DeliverPolicy::All,
    };
    let Some(name) = &args.durable else {
        return stream
            .create_consumer(consumer::pull::Config {
                deliver_policy,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .context("cannot create a consumer on the stream");
    };
    if let Ok(existing) = stream.get_consumer::<consumer::pull::Config>(name).await {
        if args.from_sequence.is_some() || args.since.is_some() {
            tracing::warn!(durable = %name, "resuming where this consumer stopped; --from-sequence/--since only apply to a new one");
        }
        return Ok(existing);
    }
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create the durable consumer {name}"))
}
