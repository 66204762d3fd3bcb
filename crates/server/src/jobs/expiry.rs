//! Order expiry: pending orders past their `expires_at` are stored `EXPIRED` (reads already
//! show them so; this makes it durable and gives their stock back).

use std::time::Duration;

use ecommerce_domain::store::Store;
use ecommerce_domain::{StoreError, Timestamp};

use super::Shutdown;

/// Orders expired per round; a full round is followed by another at once.
pub const BATCH: i64 = 500;

/// Expires up to [`BATCH`] orders overdue at `now`; returns how many.
pub async fn step<S: Store>(store: &S, now: Timestamp) -> Result<u64, StoreError> {
    store.expire_orders(now, BATCH).await
}

/// Runs [`step`] every `every` until shutdown.
pub async fn run<S: Store>(store: S, every: Duration, mut shutdown: Shutdown) {
    loop {
        let pause = match step(&store, Timestamp::now()).await {
            Ok(n) if n as i64 == BATCH => Duration::ZERO,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(expired = n, "expired overdue orders");
                }
                every
            }
            Err(err) => {
                tracing::warn!(error = %err, "order expiry failed");
                every
            }
        };
        if shutdown.sleep(pause).await {
            return;
        }
    }
}
