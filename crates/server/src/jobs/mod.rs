//! Background jobs, run by every instance: each is a `step()` that does one round of work (tests
//! call it to drain a queue) and a `run()` loop that the app starts and stops.
//!
//! - [`expiry`]: overdue pending orders become `EXPIRED`.
//! - [`draw`]: draws whose entry window ended are drawn, exactly once.
//! - [`purge`]: idempotency keys older than the retention are forgotten.
//! - [`relay`]: the outbox is published to the events file or JetStream.
//! - [`backlog`]: the outbox backlog gauges for `/metrics`.
//!
//! The store makes running them on every instance at once safe (leases, guarded updates).

use std::time::Duration;

use ecommerce_domain::store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod backlog;
pub mod draw;
pub mod expiry;
pub mod purge;
pub mod relay;

pub use relay::Sink;

/// What the jobs need from the settings.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub expiry_interval: Duration,
    pub draw_interval: Duration,
    pub relay_interval: Duration,
    pub events_max_age: Duration,
    /// Copies of the stream on a NATS cluster.
    pub events_replicas: usize,
}

/// The running jobs of one app.
pub struct Jobs {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Jobs {
    pub fn start<S: Store>(store: S, sink: Sink, settings: &JobSettings) -> Jobs {
        let (stop, stopped) = watch::channel(false);
        let shutdown = || Shutdown(stopped.clone());
        let handles = vec![
            tokio::spawn(relay::run(
                store.clone(),
                sink,
                settings.relay_interval,
                crate::events::StreamSettings {
                    max_age: settings.events_max_age,
                    replicas: settings.events_replicas,
                },
                shutdown(),
            )),
            tokio::spawn(expiry::run(store.clone(), settings.expiry_interval, shutdown())),
            tokio::spawn(draw::run(store.clone(), settings.draw_interval, shutdown())),
            tokio::spawn(purge::run(store.clone(), shutdown())),
            tokio::spawn(backlog::run(store, shutdown())),
        ];
        Jobs { stop, handles }
    }

    /// Asks every job to stop and waits up to `grace` for each to finish its round.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        for job in self.handles {
            if tokio::time::timeout(grace, job).await.is_err() {
                tracing::warn!("a background job did not stop within {grace:?}");
            }
        }
    }
}

/// A job's view of the app's shutdown.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Sleeps for `pause`; `true` when shutdown was asked for (before or meanwhile), or when the
    /// app that started the job is gone.
    pub async fn sleep(&mut self, pause: Duration) -> bool {
        if *self.0.borrow() {
            return true;
        }
        if pause.is_zero() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = self.0.changed() => true,
        }
    }
}

/// Exponential back-off with jitter, for retrying a failing dependency: each wait is drawn
/// between half and all of `initial × 2^failures` (capped at `max`), so that instances that
/// failed together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait before the next try after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.initial.saturating_mul(1 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_half_to_all_of_its_ceiling_and_stops_at_the_max() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for ceiling_ms in [200, 400, 800, 1600, 3200, 5000, 5000] {
            let wait = backoff.next_wait();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} outside {ceiling:?}/2..={ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(200));
    }

    #[test]
    fn two_backoffs_do_not_wait_alike() {
        let waits = |_| {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            (0..6).map(|_| backoff.next_wait()).collect::<Vec<_>>()
        };
        let runs: Vec<_> = (0..4).map(waits).collect();
        assert!(runs.windows(2).any(|pair| pair[0] != pair[1]), "jitter: {runs:?}");
    }
}
