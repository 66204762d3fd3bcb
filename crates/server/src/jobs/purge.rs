//! Idempotency keys are kept [`RETENTION_SECONDS`] (the contract promises at least 24 hours),
//! then forgotten; logged-out tokens are forgotten once they have expired anyway; delivered
//! outbox events are kept [`SENT_EVENTS_RETENTION_SECONDS`], then deleted, so that the outbox
//! does not grow without bound (audit L9).

use std::time::Duration;

use ecommerce_domain::store::Store;
use ecommerce_domain::{StoreError, Timestamp};

use super::Shutdown;

/// How long idempotency keys are kept.
pub const RETENTION_SECONDS: i64 = 48 * 3_600;
/// How long a delivered event stays in the outbox (for inspection), after which it is deleted.
pub const SENT_EVENTS_RETENTION_SECONDS: i64 = 7 * 86_400;
/// How often old keys are looked for; far below the retention, so none lives much longer.
pub const EVERY: Duration = Duration::from_secs(60);

/// Forgets the keys older than the retention at `now`, and the logged-out tokens that expired
/// (with a minute of margin for the token check's clock leeway); returns how many keys.
pub async fn step<S: Store>(store: &S, now: Timestamp) -> Result<u64, StoreError> {
    store.purge_revoked_tokens(now.plus_seconds(-60)).await?;
    store.purge_idempotency_keys(now.plus_seconds(-RETENTION_SECONDS)).await
}

/// Deletes the outbox events delivered longer than the retention before `now`; returns how many.
pub async fn step_outbox<S: Store>(store: &S, now: Timestamp) -> Result<u64, StoreError> {
    store
        .purge_sent_outbox(now.plus_seconds(-SENT_EVENTS_RETENTION_SECONDS))
        .await
}

/// Runs [`step`] and [`step_outbox`] every [`EVERY`] until shutdown.
pub async fn run<S: Store>(store: S, mut shutdown: Shutdown) {
    loop {
        if let Err(err) = step(&store, Timestamp::now()).await {
            tracing::warn!(error = %err, "idempotency key or revoked token purge failed");
        }
        if let Err(err) = step_outbox(&store, Timestamp::now()).await {
            tracing::warn!(error = %err, "outbox purge failed");
        }
        if shutdown.sleep(EVERY).await {
            return;
        }
    }
}
