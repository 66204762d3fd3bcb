//! Logs on stderr: `RUST_LOG` filters (default `info,sqlx=warn`), `ECOMMERCE_LOG_FORMAT` picks
//! text or JSON lines, and colours are used only on a terminal without `NO_COLOR`. And the HELP
//! texts of the metrics the server itself records ([`describe_metrics`]).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber; a second call (tests building several apps) keeps the first.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(use_colour()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Colours only for a person at a terminal: never into files, pipes or journald.
fn use_colour() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_colour && std::io::stderr().is_terminal()
}

/// The HELP text of every metric the binary records (the API's are in
/// [`ecommerce_api::describe_metrics`]); call once the recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    ecommerce_api::describe_metrics();
    describe_gauge!("outbox_backlog", "Events in the outbox not yet delivered");
    describe_gauge!(
        "outbox_oldest_unsent_age_seconds",
        Unit::Seconds,
        "Age of the oldest undelivered event in the outbox, 0 when none"
    );
    describe_counter!("outbox_events_sent_total", "Events this instance delivered to the sink");
    describe_counter!(
        "outbox_publish_failures_total",
        "Relay batches that stopped because the sink refused an event"
    );
    describe_gauge!("http_connections_open", "HTTP connections this instance holds open");
    describe_counter!(
        "http_connections_refused_total",
        "HTTP connections answered 503 and closed because the connection limit was reached"
    );
    describe_counter!(
        "http_connections_timed_out_total",
        "HTTP connections closed by a timeout, by phase: header (a request head too slow) or idle"
    );
}
