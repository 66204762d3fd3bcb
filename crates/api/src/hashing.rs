//! The password-hashing queue (audit H1): a few dedicated threads, one per core by default, and a
//! bounded number of jobs waiting for them.
//!
//! - **Bounded.** At most `threads + queue` jobs are admitted at once (a semaphore); the next one
//!   is refused at once with `503 SERVICE_UNAVAILABLE` and `Retry-After`, instead of waiting
//!   behind thousands of others. A flood of logins costs the server at most that many hashes in
//!   flight and that many passwords in memory.
//! - **Cancellable.** A job whose request has gone (the client disconnected, or the request
//!   timed out: its future was dropped) leaves the queue at once and hashes nothing.
//! - **Reused threads.** Hashes always run on the same threads, so their multi-megabyte buffers
//!   are reused instead of being left behind on every thread of the blocking pool, and at most
//!   one hash per core runs at a time (more only costs memory and starves other requests).
//! - **Second in line for the CPU.** The hashing threads run at niceness
//!   [`HASHING_NICENESS`]: the threads answering other requests go first.
//!
//! One pool serves the process: [`configure`] sizes it before its first use
//! (`ECOMMERCE_HASH_THREADS`, `ECOMMERCE_HASH_QUEUE`), [`run`] queues a job on it.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::ApiError;

/// `Retry-After` of a refused job, in seconds: the queue drains in milliseconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// How many jobs may wait per hashing thread, by default: about 2 s of work (a hash takes about
/// 15 ms), so that a burst of a few hundred sign-ups at once (a shop opening) is served, while a
/// flood leaves at most that much work behind and a login never waits longer.
pub const QUEUE_PER_THREAD: usize = 128;

/// The size of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashing threads (hashes running at once).
    pub threads: usize,
    /// Jobs waiting for a thread, beyond those running; the next one is refused.
    pub queue: usize,
}

impl Default for HashingLimits {
    /// One thread per core, [`QUEUE_PER_THREAD`] waiting jobs per thread.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            threads,
            queue: threads * QUEUE_PER_THREAD,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The niceness of the hashing threads: when the cores are busy, the threads that answer
/// requests (`/health` among them) run first and hashes take what is left, so that a flood of
/// sign-ins slows sign-ins, not the rest of the service.
pub const HASHING_NICENESS: i32 = 10;

/// Gives the calling thread [`HASHING_NICENESS`] (Linux, where niceness is per thread); a failure
/// only leaves it at the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
        let failed = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, HASHING_NICENESS) != 0
        };
        if failed {
            tracing::debug!("cannot lower the priority of a password hashing thread");
        }
    }
}

/// Hashing threads behind a bounded admission.
///
/// Two semaphores: `admission` (threads + queue places) is taken with `try_acquire`, so a full
/// pool refuses at once; `running` (one per thread) is awaited, which is the queue: a request
/// that goes away while it waits there leaves it at once (tokio's semaphore forgets a dropped
/// waiter), giving its place back and leaving no job behind. A job is handed to the threads only
/// with a `running` permit, so it never waits in the channel.
pub struct HashingPool {
    admission: Arc<Semaphore>,
    running: Arc<Semaphore>,
    sender: Mutex<mpsc::Sender<Job>>,
    limits: HashingLimits,
}

impl HashingPool {
    /// Starts `limits.threads` threads (at least one). Fails only when no thread can start.
    pub fn new(limits: HashingLimits) -> std::io::Result<Self> {
        let threads = limits.threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        let mut last_error = None;
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let next = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(err) => last_error = Some(err),
            }
        }
        if started == 0 {
            return Err(last_error.unwrap_or_else(|| std::io::Error::other("no hashing thread")));
        }
        let limits = HashingLimits {
            threads: started,
            queue: limits.queue,
        };
        Ok(Self {
            admission: Arc::new(Semaphore::new(limits.threads + limits.queue)),
            running: Arc::new(Semaphore::new(limits.threads)),
            sender: Mutex::new(sender),
            limits,
        })
    }

    /// The limits in force (the threads that did start).
    pub fn limits(&self) -> HashingLimits {
        self.limits
    }

    /// Jobs admitted and not finished (running or waiting).
    pub fn in_use(&self) -> usize {
        self.limits.threads + self.limits.queue - self.admission.available_permits()
    }

    /// Runs `job` on a hashing thread and answers its result, or refuses it at once with `503`
    /// and `Retry-After` when the pool is full. When the returned future is dropped before a
    /// thread takes the job, the job is not run and its place is free at once.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let place = match self.admission.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                metrics::counter!("password_hash_rejected_total").increment(1);
                return Err(busy());
            }
        };
        let mut gone = Abandoned(true);
        // The queue: dropping this future while it waits here drops the job with it.
        let thread = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("password hashing pool closed"))?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let permits: (OwnedSemaphorePermit, OwnedSemaphorePermit) = (place, thread);
            if reply.is_closed() {
                return;
            }
            let result = job();
            // Free the places before answering, so that the answered caller finds them free.
            drop(permits);
            let _ = reply.send(result);
        });
        self.sender
            .lock()
            .map_err(|_| ApiError::internal("password hashing queue poisoned"))?
            .send(job)
            .map_err(ApiError::internal)?;
        let result = answer.await.map_err(ApiError::internal);
        gone.0 = false;
        result
    }
}

/// Counts a request that went away before its hash was answered (while `.0` is true at drop).
struct Abandoned(bool);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.0 {
            metrics::counter!("password_hash_abandoned_total").increment(1);
        }
    }
}

/// The answer to a job refused because the queue is full.
pub fn busy() -> ApiError {
    ApiError::unavailable("too many sign-ins and sign-ups at once; try again in a second")
        .with_retry_after(RETRY_AFTER_SECONDS)
}

static LIMITS: OnceLock<HashingLimits> = OnceLock::new();
static POOL: OnceLock<Option<HashingPool>> = OnceLock::new();

/// Sizes the process's pool; only the first call before the pool's first use counts (a process
/// may build several apps, e.g. in tests). Answers the limits in force.
pub fn configure(limits: HashingLimits) -> HashingLimits {
    *LIMITS.get_or_init(|| limits)
}

/// The process's pool, started on first use.
fn pool() -> Result<&'static HashingPool, ApiError> {
    POOL.get_or_init(|| {
        let limits = *LIMITS.get_or_init(HashingLimits::default);
        match HashingPool::new(limits) {
            Ok(pool) => Some(pool),
            Err(err) => {
                tracing::error!(error = %err, "no password hashing thread could start");
                None
            }
        }
    })
    .as_ref()
    .ok_or_else(|| ApiError::internal("no password hashing thread could start"))
}

/// Runs `job` on the process's pool (see [`HashingPool::run`]).
pub async fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    pool()?.run(job).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::*;

    /// A job that blocks its thread until `release` is sent (or dropped).
    fn blocker() -> (impl FnOnce() -> u32 + Send + 'static, mpsc::Sender<()>) {
        let (release, wait) = mpsc::channel::<()>();
        (
            move || {
                let _ = wait.recv();
                7
            },
            release,
        )
    }

    /// Waits until `pool` has admitted `count` jobs (the spawned tasks ran up to their queueing).
    async fn until_in_use(pool: &HashingPool, count: usize) {
        while pool.in_use() < count {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_with_503_and_retry_after() {
        let pool = Arc::new(HashingPool::new(HashingLimits { threads: 1, queue: 1 }).expect("a thread"));
        let (running, release_running) = blocker();
        let (waiting, release_waiting) = blocker();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(running).await }
        });
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(waiting).await }
        });
        until_in_use(&pool, 2).await;

        let refused = pool.run(|| 1).await.expect_err("the pool is full");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "SERVICE_UNAVAILABLE");
        let response = axum::response::IntoResponse::into_response(refused);
        assert_eq!(response.headers()["retry-after"], "1");

        release_running.send(()).expect("the first job waits");
        release_waiting.send(()).expect("the second job waits");
        assert_eq!(first.await.expect("join").expect("ran"), 7);
        assert_eq!(second.await.expect("join").expect("ran"), 7);
        assert_eq!(pool.run(|| 3).await.expect("room again"), 3, "the permits come back");
    }

    #[tokio::test]
    async fn a_job_whose_request_has_gone_is_not_run() {
        let pool = Arc::new(HashingPool::new(HashingLimits { threads: 1, queue: 4 }).expect("a thread"));
        let (running, release_running) = blocker();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(running).await }
        });
        until_in_use(&pool, 1).await;

        let ran = Arc::new(AtomicBool::new(false));
        let abandoned = tokio::spawn({
            let pool = pool.clone();
            let ran = ran.clone();
            async move { pool.run(move || ran.store(true, Ordering::SeqCst)).await }
        });
        until_in_use(&pool, 2).await;
        // The request goes away while its job waits behind the running one: its place is free
        // at once.
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(pool.in_use(), 1, "the abandoned job left the queue");

        release_running.send(()).expect("the first job waits");
        first.await.expect("join").expect("ran");
        // A job queued after the abandoned one runs, so the thread has passed it by then.
        assert_eq!(pool.run(|| 5).await.expect("runs"), 5);
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job was run");
        assert_eq!(pool.in_use(), 0, "its permit was given back");
    }
}
