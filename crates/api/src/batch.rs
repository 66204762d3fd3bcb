//! Reads of one kind coalesced: when many requests need the same kind of row at the same moment
//! (a drop's thousands of first requests), one statement reads the rows of all of them.
//!
//! The first request to wait starts a reader task, which reads every key waiting at that
//! moment, then the keys that arrived meanwhile, until none waits. There is no timer: a lone
//! request is read at once, and a batch grows only while the previous read runs. A request that
//! joins while a read is in flight waits for the next one, so what it gets was read after it
//! arrived. The reader task is its own (spawned): a request that goes away does not stop the
//! reads of the others.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Keys read together at most.
pub const MAX_BATCH: usize = 256;

/// One kind of coalesced read, keyed by `K`, giving `V`.
pub struct Coalesced<K, V> {
    pending: Arc<Mutex<Pending<K, V>>>,
    /// Names the read in the `read_batch_size` histogram.
    name: &'static str,
}

struct Pending<K, V> {
    waiting: Vec<(K, oneshot::Sender<Answer<V>>)>,
    /// A reader task is running.
    reading: bool,
}

/// What a batch answers one key: `Read(None)` when no row has it, `Failed` when the batch's
/// read failed (the caller then reads alone, and so meets its own error).
enum Answer<V> {
    Read(Option<V>),
    Failed,
}

impl<K, V> Coalesced<K, V>
where
    K: Copy + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    pub fn new(name: &'static str) -> Self {
        Self {
            pending: Arc::new(Mutex::new(Pending {
                waiting: Vec::new(),
                reading: false,
            })),
            name,
        }
    }

    /// `key`'s row, read in the next batch by `read_many` (which answers the rows it found, by
    /// key); `None` when that batch failed, and the caller should read alone.
    pub async fn read<F, Fut, E>(&self, key: K, read_many: F) -> Option<Option<V>>
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
        E: 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let lead = {
            let mut pending = lock(&self.pending);
            pending.waiting.push((key, sender));
            !std::mem::replace(&mut pending.reading, true)
        };
        if lead {
            tokio::spawn(read_waiting(self.pending.clone(), self.name, read_many));
        }
        match receiver.await {
            Ok(Answer::Read(value)) => Some(value),
            Ok(Answer::Failed) | Err(_) => None,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the waiting keys, batch after batch, until none waits.
async fn read_waiting<K, V, F, Fut, E>(pending: Arc<Mutex<Pending<K, V>>>, name: &'static str, read_many: F)
where
    K: Copy + Eq + Hash,
    V: Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, E>>,
{
    loop {
        let batch: Vec<_> = {
            let mut pending = lock(&pending);
            if pending.waiting.is_empty() {
                pending.reading = false;
                return;
            }
            let take = pending.waiting.len().min(MAX_BATCH);
            pending.waiting.drain(..take).collect()
        };
        let mut keys: Vec<K> = batch.iter().map(|(key, _)| *key).collect();
        metrics::histogram!("read_batch_size", "read" => name).record(keys.len() as f64);
        dedup(&mut keys);
        match read_many(keys).await {
            Ok(rows) => {
                for (key, sender) in batch {
                    let _ = sender.send(Answer::Read(rows.get(&key).cloned()));
                }
            }
            Err(_) => {
                for (_, sender) in batch {
                    let _ = sender.send(Answer::Failed);
                }
            }
        }
    }
}

/// Removes repeated keys, keeping the first of each.
fn dedup<K: Copy + Eq + Hash>(keys: &mut Vec<K>) {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.retain(|key| seen.insert(*key));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_share_statements_and_each_gets_its_own_row() {
        let reads = Arc::new(Coalesced::<u32, String>::new("test"));
        let statements = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50u32)
            .map(|n| {
                let reads = reads.clone();
                let statements = statements.clone();
                tokio::spawn(async move {
                    reads
                        .read(n % 40, move |keys: Vec<u32>| {
                            let statements = statements.clone();
                            async move {
                                statements.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                let rows = keys
                                    .into_iter()
                                    .filter(|k| !k.is_multiple_of(10))
                                    .map(|k| (k, format!("row {k}")));
                                Ok::<_, ()>(rows.collect())
                            }
                        })
                        .await
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            let key = n as u32 % 40;
            let expected = (!key.is_multiple_of(10)).then(|| format!("row {key}"));
            assert_eq!(task.await.expect("task"), Some(expected), "key {key}");
        }
        let statements = statements.load(Ordering::SeqCst);
        assert!(statements < 50, "{statements} reads for 50 requests");
    }

    #[tokio::test]
    async fn a_failed_batch_tells_each_caller_to_read_alone_and_the_next_batch_runs() {
        let reads = Coalesced::<u32, u32>::new("test");
        let failed = reads
            .read(1, |_keys: Vec<u32>| async { Err::<HashMap<u32, u32>, _>("down") })
            .await;
        assert_eq!(failed, None);
        let read = reads
            .read(2, |keys: Vec<u32>| async move {
                Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 10)).collect())
            })
            .await;
        assert_eq!(read, Some(Some(20)));
    }

    #[test]
    fn repeated_keys_are_read_once() {
        let mut keys = vec![3, 1, 3, 2, 1];
        dedup(&mut keys);
        assert_eq!(keys, [3, 1, 2]);
    }
}
