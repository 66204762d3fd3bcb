//! The draw: every draw whose entry window has ended is drawn, exactly once whatever the number
//! of instances. Each draw is one transaction (`ecommerce_domain::draw::run_draw`) that claims
//! it with a guarded `UPDATE … WHERE drawn_at IS NULL`: an instance that loses the claim rolls
//! back and moves on, and an instance that dies mid-draw leaves it undrawn for the next round
//! (of any instance). The seed of each draw comes from the operating system's CSPRNG (through
//! `rand`'s thread RNG) and is stored with the draw, for audits.

use std::time::Duration;

use ecommerce_domain::store::{Store, Tx};
use ecommerce_domain::{Error, Timestamp, draw};

use super::Shutdown;

/// Draws looked at per round.
pub const BATCH: i64 = 20;

/// Draws every draw due at `now` (up to [`BATCH`]); returns how many this call drew. A draw
/// that fails (its transaction rolls back) does not keep the others from being drawn: the first
/// error is answered after every due draw was tried.
pub async fn step<S: Store>(store: &S, now: Timestamp) -> Result<u64, Error> {
    let mut drawn = 0;
    let mut first_error = None;
    for id in store.due_draws(now, BATCH).await? {
        match draw_one(store, id, now).await {
            Ok(true) => drawn += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(draw_id = %id, error = %err, "a draw failed; it stays undrawn for the next round");
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) if drawn == 0 => Err(err),
        _ => Ok(drawn),
    }
}

/// Draws one draw in its own transaction; `false` when another instance drew it first.
async fn draw_one<S: Store>(store: &S, id: ecommerce_domain::DrawId, now: Timestamp) -> Result<bool, Error> {
    let seed: [u8; 32] = rand::random();
    let mut tx = store.begin().await?;
    match draw::run_draw(&mut tx, id, now, &seed).await? {
        Some(outcome) => {
            tx.commit().await?;
            metrics::counter!("draws_drawn_total").increment(1);
            tracing::info!(
                draw_id = %id,
                entries = outcome.draw.entry_count,
                winners = outcome.winners.len(),
                "drew a draw"
            );
            Ok(true)
        }
        None => {
            tx.rollback().await?;
            Ok(false)
        }
    }
}

/// Runs [`step`] every `every` until shutdown.
pub async fn run<S: Store>(store: S, every: Duration, mut shutdown: Shutdown) {
    loop {
        if let Err(err) = step(&store, Timestamp::now()).await {
            tracing::warn!(error = %err, "drawing failed");
        }
        if shutdown.sleep(every).await {
            return;
        }
    }
}
