//! The outbox backlog and the age of its oldest unsent event, as gauges for `/metrics`, whatever
//! the state of the sink (an unreachable broker is exactly when they matter).

use std::time::Duration;

use ecommerce_domain::store::{OutboxBacklog, Store};
use ecommerce_domain::{StoreError, Timestamp};

use super::Shutdown;

/// How often the gauges are refreshed.
pub const EVERY: Duration = Duration::from_secs(2);

/// Reads the backlog at `now` and sets the gauges; returns it.
pub async fn step<S: Store>(store: &S, now: Timestamp) -> Result<OutboxBacklog, StoreError> {
    let backlog = store.outbox_backlog().await?;
    metrics::gauge!("outbox_backlog").set(backlog.unsent as f64);
    let age = backlog
        .oldest_created_at
        .map_or(0, |t| (now.millis() - t.millis()).max(0));
    metrics::gauge!("outbox_oldest_unsent_age_seconds").set(age as f64 / 1000.0);
    Ok(backlog)
}

/// Runs [`step`] every [`EVERY`] until shutdown.
pub async fn run<S: Store>(store: S, mut shutdown: Shutdown) {
    loop {
        if let Err(err) = step(&store, Timestamp::now()).await {
            tracing::warn!(error = %err, "cannot read the outbox backlog");
        }
        if shutdown.sleep(EVERY).await {
            return;
        }
    }
}
