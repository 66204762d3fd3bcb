//! The product-change feed: how caches of the catalog learn that a product row changed.
//!
//! The store owns one [`ProductChanges`] and publishes to it itself, so no use case can forget:
//! every store method that changes a product row records the product's id in its transaction,
//! and a commit publishes the ids (a rollback publishes nothing). On PostgreSQL the commit also
//! tells the other instances (`NOTIFY` sent in the same transaction, so it is delivered only on
//! commit), whose listener publishes the ids to their own feed; when that listener loses its
//! connection it publishes [`ProductChange::All`], since notifications may have been missed.
//!
//! Subscribers are called synchronously, after the commit and before the writer's request
//! answers, so an instance's own writes show in its next read. They must be quick (drop a few
//! map entries) and must not block.

use std::sync::{Arc, RwLock};

use crate::ProductId;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductChange<'a> {
    /// These products (their rows as a whole: price, status, stock, any column).
    Products(&'a [ProductId]),
    /// Anything may have changed (notifications may have been missed).
    All,
}

/// Receives every change published to a feed.
pub trait ProductChangeSubscriber: Send + Sync {
    fn changed(&self, change: ProductChange<'_>);
}

/// One feed per store (clones share it).
#[derive(Clone, Default)]
pub struct ProductChanges {
    subscribers: Arc<RwLock<Vec<Arc<dyn ProductChangeSubscriber>>>>,
}

impl ProductChanges {
    pub fn subscribe(&self, subscriber: Arc<dyn ProductChangeSubscriber>) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        subscribers.push(subscriber);
    }

    /// Tells every subscriber, in the order they subscribed.
    pub fn publish(&self, change: ProductChange<'_>) {
        if let ProductChange::Products([]) = change {
            return;
        }
        let subscribers = self.subscribers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        for subscriber in subscribers.iter() {
            subscriber.changed(change);
        }
    }
}

impl std::fmt::Debug for ProductChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.subscribers.read().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("ProductChanges").field("subscribers", &count).finish()
    }
}

/// The text of a change on the wire (PostgreSQL `NOTIFY` payload): ids separated by commas, or
/// `*` for [`ProductChange::All`]. Payloads stay under PostgreSQL's 8000-byte limit: a change
/// of more than [`MAX_IDS_IN_PAYLOAD`] products is sent as `*`.
pub fn encode_change(ids: &[ProductId]) -> String {
    if ids.len() > MAX_IDS_IN_PAYLOAD {
        return "*".to_owned();
    }
    let mut out = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.0.to_string());
    }
    out
}

/// At most this many ids in one payload (20 digits and a comma each stay below 8000 bytes).
pub const MAX_IDS_IN_PAYLOAD: usize = 300;

/// Reads [`encode_change`]'s text; anything unreadable counts as `All` (safe: it only empties
/// caches).
pub fn decode_change(payload: &str) -> Option<Vec<ProductId>> {
    payload
        .split(',')
        .map(|id| id.trim().parse::<i64>().ok().map(ProductId))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Option<Vec<i64>>>>);

    impl ProductChangeSubscriber for Recorder {
        fn changed(&self, change: ProductChange<'_>) {
            let seen = match change {
                ProductChange::Products(ids) => Some(ids.iter().map(|id| id.0).collect()),
                ProductChange::All => None,
            };
            self.0.lock().unwrap().push(seen);
        }
    }

    #[test]
    fn publishes_to_every_subscriber_and_skips_empty_changes() {
        let feed = ProductChanges::default();
        let recorder = Arc::new(Recorder::default());
        feed.clone().subscribe(recorder.clone());
        feed.publish(ProductChange::Products(&[]));
        feed.publish(ProductChange::Products(&[ProductId(3), ProductId(5)]));
        feed.publish(ProductChange::All);
        assert_eq!(*recorder.0.lock().unwrap(), vec![Some(vec![3, 5]), None]);
    }

    #[test]
    fn payload_round_trips_and_falls_back_to_all() {
        let ids = [ProductId(1), ProductId(42)];
        assert_eq!(encode_change(&ids), "1,42");
        assert_eq!(decode_change("1,42"), Some(ids.to_vec()));
        assert_eq!(decode_change("*"), None);
        assert_eq!(decode_change(""), None);
        let many: Vec<ProductId> = (0..=MAX_IDS_IN_PAYLOAD as i64).map(ProductId).collect();
        assert_eq!(encode_change(&many), "*");
        let most: Vec<ProductId> = (i64::MAX - MAX_IDS_IN_PAYLOAD as i64 + 1..=i64::MAX)
            .map(ProductId)
            .collect();
        assert!(encode_change(&most).len() < 8000);
    }
}
