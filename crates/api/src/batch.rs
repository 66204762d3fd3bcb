//! Reads of one kind coalesced: when many requests need the same kind of row at the same moment
//! (a drop's thousands of first requests), one statement reads the rows of all of them.
//!
//! The first request to wait leads: it reads its own key and every key waiting at that moment
//! in one statement, answers them, and hands the lead to the first of the keys that arrived
//! meanwhile, which does the same. There is no timer and no task of its own: a lone request is
//! read at once, in its own task, and a batch grows only while the previous read runs. A request
//! that joins while a read is in flight waits for the next one, so what it gets was read after
//! it arrived. A leader that goes away (its client left) hands the lead on as well; the keys of
//! the batch it was reading are told to read alone.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Keys read together at most.
pub const MAX_BATCH: usize = 256;

/// One kind of coalesced read, keyed by `K`, giving `V`.
pub struct Coalesced<K, V> {
    pending: Mutex<Pending<K, V>>,
    /// Names the read in the `read_batch_size` histogram.
    name: &'static str,
}

struct Pending<K, V> {
    waiting: Vec<(K, oneshot::Sender<Answer<V>>)>,
    /// A request is leading: reading a batch, or about to.
    leading: bool,
}

/// What a waiting key is told: its row (`None` when no row has it), to read alone (the batch's
/// read failed, so the caller meets its own error), or to lead the next batch.
enum Answer<V> {
    Read(Option<V>),
    Failed,
    Lead,
}

impl<K, V> Coalesced<K, V>
where
    K: Copy + Eq + Hash,
    V: Clone,
{
    pub fn new(name: &'static str) -> Self {
        Self {
            pending: Mutex::new(Pending {
                waiting: Vec::new(),
                leading: false,
            }),
            name,
        }
    }

    /// `key`'s row, read in the next batch by `read_many` (which answers the rows it found, by
    /// key); `None` when that batch failed, and the caller should read alone.
    pub async fn read<F, Fut, E>(&self, key: K, read_many: F) -> Option<Option<V>>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let receiver = {
            let mut pending = lock(&self.pending);
            if pending.leading {
                let (sender, receiver) = oneshot::channel();
                pending.waiting.push((key, sender));
                Some(receiver)
            } else {
                pending.leading = true;
                None
            }
        };
        if let Some(receiver) = receiver {
            let mut waiting = Waiting {
                pending: &self.pending,
                receiver,
            };
            match (&mut waiting.receiver).await {
                Ok(Answer::Read(value)) => return Some(value),
                Ok(Answer::Lead) => {}
                Ok(Answer::Failed) | Err(_) => return None,
            }
        }
        self.lead(key, read_many).await
    }

    /// Reads `key` and every key waiting now, answers them, and hands the lead on.
    async fn lead<F, Fut, E>(&self, key: K, read_many: F) -> Option<Option<V>>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        // Handing on happens on every way out, also when this future is dropped mid-read.
        let _hand_on = HandOn(&self.pending);
        let batch: Vec<_> = {
            let mut pending = lock(&self.pending);
            let take = pending.waiting.len().min(MAX_BATCH - 1);
            pending.waiting.drain(..take).collect()
        };
        let mut keys: Vec<K> = std::iter::once(key).chain(batch.iter().map(|(k, _)| *k)).collect();
        metrics::histogram!("read_batch_size", "read" => self.name).record(keys.len() as f64);
        dedup(&mut keys);
        match read_many(keys).await {
            Ok(rows) => {
                for (waiting, sender) in batch {
                    let _ = sender.send(Answer::Read(rows.get(&waiting).cloned()));
                }
                Some(rows.get(&key).cloned())
            }
            Err(_) => {
                for (_, sender) in batch {
                    let _ = sender.send(Answer::Failed);
                }
                None
            }
        }
    }
}

/// A key waiting for its answer. Dropped before it took its answer (its client left), it
/// passes on a lead it was handed, so that the others never wait for a leader that is gone.
struct Waiting<'a, K, V> {
    pending: &'a Mutex<Pending<K, V>>,
    receiver: oneshot::Receiver<Answer<V>>,
}

impl<K, V> Drop for Waiting<'_, K, V> {
    fn drop(&mut self) {
        if let Ok(Answer::Lead) = self.receiver.try_recv() {
            drop(HandOn(self.pending));
        }
    }
}

/// On drop: the first waiting key leads next, or nobody leads when none waits. A waiter that
/// has gone (its receiver dropped) is skipped.
struct HandOn<'a, K, V>(&'a Mutex<Pending<K, V>>);

impl<K, V> Drop for HandOn<'_, K, V> {
    fn drop(&mut self) {
        let mut pending = lock(self.0);
        while !pending.waiting.is_empty() {
            let (_, sender) = pending.waiting.remove(0);
            if sender.send(Answer::Lead).is_ok() {
                return;
            }
        }
        pending.leading = false;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes repeated keys, keeping the first of each.
fn dedup<K: Copy + Eq + Hash>(keys: &mut Vec<K>) {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.retain(|key| seen.insert(*key));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
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
                        .read(n % 40, |keys: Vec<u32>| {
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

    #[tokio::test]
    async fn a_leader_that_goes_away_hands_the_lead_to_the_next_key() {
        let reads = Arc::new(Coalesced::<u32, u32>::new("test"));
        let (started, read_started) = oneshot::channel();
        let leader = tokio::spawn({
            let reads = reads.clone();
            let started = Mutex::new(Some(started));
            async move {
                reads
                    .read(1, |_keys: Vec<u32>| {
                        if let Some(started) = lock(&started).take() {
                            let _ = started.send(());
                        }
                        // A read that never ends: the client leaves first.
                        std::future::pending::<Result<HashMap<u32, u32>, ()>>()
                    })
                    .await
            }
        });
        read_started.await.expect("the leader reads");
        let follower = tokio::spawn({
            let reads = reads.clone();
            async move {
                reads
                    .read(2, |keys: Vec<u32>| async move {
                        Ok::<_, ()>(keys.into_iter().map(|k| (k, k + 100)).collect())
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        leader.abort();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
            .await
            .expect("the follower was not left waiting")
            .expect("task");
        assert_eq!(answer, Some(Some(102)));
        // And the next lone read leads at once.
        let alone = reads
            .read(3, |keys: Vec<u32>| async move {
                Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect())
            })
            .await;
        assert_eq!(alone, Some(Some(3)));
    }

    #[test]
    fn repeated_keys_are_read_once() {
        let mut keys = vec![3, 1, 3, 2, 1];
        dedup(&mut keys);
        assert_eq!(keys, [3, 1, 2]);
    }
}
