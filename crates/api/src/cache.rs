//! The catalog cache (`ECOMMERCE_CATALOG_CACHE_MS`) and the single flight that every cache of
//! this crate loads through.
//!
//! **What is cached.** What a caller without an admin token sees: a product by id (also "not
//! found") and the pages of products on sale, per instance, in memory, at most
//! [`MAX_DETAILS`] products and [`MAX_PAGES`] pages. Admin-token reads bypass the cache (the
//! handlers decide: see `catalog.rs`).
//!
//! **Freshness.** An entry is served while younger than the bound, counted from the moment its
//! load *started* (so the value is one the database held at most that long ago). Before that,
//! a change of the product drops it: the store publishes every committed change of a product
//! row on its feed ([`ecommerce_domain::changes`]): this instance's own writes at once, before
//! the writer's request answers; other instances' writes as PostgreSQL delivers their `NOTIFY`.
//! A changed product drops its own entry and every page (any page may gain or lose it).
//!
//! **No stale refill.** Each key has a generation, bumped under the map's lock by every
//! invalidation that concerns it; a load stores its answer only when the generation did not
//! move since the load started, so a load that raced a write never puts the old value back.
//!
//! **No stampede.** Concurrent misses of one key share one load ([`SingleFlight`]): the first
//! request loads, the others wait for its answer. A request joins only a load that started
//! after the last invalidation of its key, so it never receives a value older than a write it
//! saw answered.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ecommerce_domain::catalog::{self, Audience, Product};
use ecommerce_domain::changes::{ProductChange, ProductChangeSubscriber};
use ecommerce_domain::paging::Page;
use ecommerce_domain::store::{Store, StoreResult};
use ecommerce_domain::{Error, ProductId, Timestamp};
use tokio::sync::OnceCell;

use crate::AppState;

/// Most products kept.
pub const MAX_DETAILS: usize = 10_000;
/// Most pages of the list kept.
pub const MAX_PAGES: usize = 1_000;
/// Generations of product ids are kept in this many stripes (an id bumps its stripe's).
const STRIPES: usize = 64;

// ---------------------------------------------------------------------------------------------
// Single flight

/// One load per key at a time: concurrent callers of [`SingleFlight::run`] with the same key
/// and generation share the first one's load and its answer.
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Flight<V>>>,
}

struct Flight<V> {
    generation: u64,
    answer: Arc<OnceCell<V>>,
    /// Callers that started or joined this flight.
    callers: usize,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// `load`'s answer, or the answer of the load of `key` already running for this
    /// `generation`. A failed load fails only its own caller; a waiting caller then runs its
    /// own `load` (and so does one whose leader was cancelled).
    pub async fn run<E, Fut>(&self, key: K, generation: u64, load: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let answer = {
            let mut flights = self.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match flights.get_mut(&key) {
                Some(flight) if flight.generation == generation => {
                    flight.callers += 1;
                    flight.answer.clone()
                }
                _ => {
                    let answer = Arc::new(OnceCell::new());
                    flights.insert(
                        key.clone(),
                        Flight {
                            generation,
                            answer: answer.clone(),
                            callers: 1,
                        },
                    );
                    answer
                }
            }
        };
        let outcome = answer.get_or_try_init(load).await.cloned();
        // The answer is in the cache (or failed): the next miss starts a new flight.
        let mut flights = self.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(&f.answer, &answer)) {
            flights.remove(&key);
        }
        outcome
    }

    /// Loads in flight (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or_default()
    }

    /// Callers that share the load of `key` now running.
    pub fn callers(&self, key: &K) -> usize {
        self.flights
            .lock()
            .ok()
            .and_then(|f| f.get(key).map(|flight| flight.callers))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// The catalog cache

/// An answer and when its load started.
struct Entry<V> {
    loaded_at: Instant,
    value: V,
}

/// A map whose entries an invalidation drops, with the generation that says whether a load
/// that started earlier may still store its answer.
struct Generational<K, V> {
    entries: HashMap<K, Entry<V>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Generational<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn fresh(&self, key: &K, max_age: Duration) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| e.loaded_at.elapsed() < max_age)
            .map(|e| e.value.clone())
    }

    fn insert(&mut self, key: K, entry: Entry<V>, max_age: Duration) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.loaded_at.elapsed() < max_age);
            if self.entries.len() >= self.capacity {
                // Full of fresh entries: start over rather than track use (simple, bounded).
                self.entries.clear();
            }
        }
        self.entries.insert(key, entry);
    }
}

/// A page of the list: `(after, limit)`.
type PageKey = (Option<i64>, i64);

/// The per-instance cache of products and pages of products on sale. Off (every read goes to
/// the store) when the bound is zero.
pub struct CatalogCache {
    max_age: Duration,
    details: RwLock<Generational<ProductId, Option<Product>>>,
    pages: RwLock<Generational<PageKey, Arc<Vec<Product>>>>,
    /// Changed under `details`' write lock.
    detail_generations: [AtomicU64; STRIPES],
    /// Changed under `pages`' write lock.
    page_generation: AtomicU64,
    detail_flights: SingleFlight<ProductId, Option<Product>>,
    page_flights: SingleFlight<PageKey, Arc<Vec<Product>>>,
    loads: AtomicU64,
}

fn stripe(id: ProductId) -> usize {
    id.0.rem_euclid(STRIPES as i64) as usize
}

impl CatalogCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            details: RwLock::new(Generational::new(MAX_DETAILS)),
            pages: RwLock::new(Generational::new(MAX_PAGES)),
            detail_generations: std::array::from_fn(|_| AtomicU64::new(0)),
            page_generation: AtomicU64::new(0),
            detail_flights: SingleFlight::default(),
            page_flights: SingleFlight::default(),
            loads: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.max_age.is_zero()
    }

    /// How many loads went to the store since start (for tests and metrics).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The product as [`Store::product`] answers it, at most the bound old.
    pub async fn product<S: Store>(&self, store: &S, id: ProductId) -> StoreResult<Option<Product>> {
        if !self.is_enabled() {
            return store.product(id).await;
        }
        if let Some(hit) = read(&self.details).fresh(&id, self.max_age) {
            return Ok(hit);
        }
        let generation = self.detail_generations[stripe(id)].load(Ordering::SeqCst);
        self.detail_flights
            .run(id, generation, || async move {
                let loaded_at = Instant::now();
                self.loads.fetch_add(1, Ordering::Relaxed);
                let value = store.product(id).await?;
                let mut details = write(&self.details);
                if self.detail_generations[stripe(id)].load(Ordering::SeqCst) == generation {
                    details.insert(
                        id,
                        Entry {
                            loaded_at,
                            value: value.clone(),
                        },
                        self.max_age,
                    );
                }
                Ok(value)
            })
            .await
    }

    /// The page of every `ON_SALE` product, unreleased ones included, as
    /// [`Store::products_on_sale`] answers it with no release cut-off, at most the bound old. The
    /// release rule is applied to it after the cache (see [`AppState::read_products_on_sale`]),
    /// so that a product is released at its instant and not up to the bound later.
    pub async fn products_on_sale<S: Store>(&self, store: &S, page: Page) -> StoreResult<Arc<Vec<Product>>> {
        if !self.is_enabled() {
            return store.products_on_sale(page, None).await.map(Arc::new);
        }
        let key = (page.after, page.limit);
        if let Some(hit) = read(&self.pages).fresh(&key, self.max_age) {
            return Ok(hit);
        }
        let generation = self.page_generation.load(Ordering::SeqCst);
        self.page_flights
            .run(key, generation, || async move {
                let loaded_at = Instant::now();
                self.loads.fetch_add(1, Ordering::Relaxed);
                let value = Arc::new(store.products_on_sale(page, None).await?);
                let mut pages = write(&self.pages);
                if self.page_generation.load(Ordering::SeqCst) == generation {
                    pages.insert(
                        key,
                        Entry {
                            loaded_at,
                            value: value.clone(),
                        },
                        self.max_age,
                    );
                }
                Ok(value)
            })
            .await
    }

    fn drop_products(&self, ids: &[ProductId]) {
        {
            let mut details = write(&self.details);
            for &id in ids {
                self.detail_generations[stripe(id)].fetch_add(1, Ordering::SeqCst);
                details.entries.remove(&id);
            }
        }
        self.drop_pages();
    }

    fn drop_pages(&self) {
        let mut pages = write(&self.pages);
        self.page_generation.fetch_add(1, Ordering::SeqCst);
        pages.entries.clear();
    }

    fn drop_all(&self) {
        {
            let mut details = write(&self.details);
            for generation in &self.detail_generations {
                generation.fetch_add(1, Ordering::SeqCst);
            }
            details.entries.clear();
        }
        self.drop_pages();
    }
}

impl ProductChangeSubscriber for CatalogCache {
    fn changed(&self, change: ProductChange<'_>) {
        match change {
            ProductChange::Products(ids) => self.drop_products(ids),
            ProductChange::All => self.drop_all(),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The hook the catalog handlers call

/// Pages of raw (unfiltered) cached pages read for one page of released products before the
/// list is read from the database instead: unreleased products are few, so one is the rule.
const RAW_PAGES_PER_PAGE: usize = 4;

impl<S: Store> AppState<S> {
    /// The product as `audience` may see it at `now`: an admin (whose token may show unreleased
    /// products) reads the primary database directly, with no cache and no replica; anyone else
    /// reads through the cache and, when one is configured, the read replica. The release rule
    /// is applied after the cache, so a product is released at its instant.
    pub async fn read_product(&self, audience: Audience, id: ProductId, now: Timestamp) -> Result<Product, Error> {
        let product = match audience {
            Audience::Admin => self.store.product(id).await?,
            Audience::Everyone => self.catalog.product(&self.catalog_store, id).await?,
        };
        catalog::visible_product(product, audience, now)
    }

    /// A page of the `ON_SALE` products `audience` may see at `now` (see [`Self::read_product`]).
    /// The cache holds raw pages (unreleased products included); this filters them and reads
    /// on until the page is full or the list ends, so that paging stays exact.
    pub async fn read_products_on_sale(
        &self,
        audience: Audience,
        now: Timestamp,
        page: Page,
    ) -> Result<Vec<Product>, Error> {
        if audience == Audience::Admin {
            return catalog::list_products(&self.store, audience, now, page).await;
        }
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        let mut visible = Vec::with_capacity(limit);
        let mut after = page.after;
        for _ in 0..RAW_PAGES_PER_PAGE {
            let raw = self
                .catalog
                .products_on_sale(
                    &self.catalog_store,
                    Page {
                        after,
                        limit: page.limit,
                    },
                )
                .await?;
            for product in raw.iter() {
                if product.visible_to(audience, now) {
                    visible.push(product.clone());
                    if visible.len() == limit {
                        return Ok(visible);
                    }
                }
            }
            match raw.last() {
                Some(last) if raw.len() == limit => after = Some(last.id.0),
                _ => return Ok(visible),
            }
        }
        // Many unreleased products in a row: let the database filter them.
        catalog::list_products(&self.catalog_store, audience, now, page).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// N concurrent misses of one key: one load, and every caller gets its answer. The load
    /// stays open until every caller has joined the flight, so none can come too late.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_share_one_load() {
        const CALLERS: usize = 64;
        let flights = Arc::new(SingleFlight::<u32, u64>::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..CALLERS {
            let (flights, loads) = (flights.clone(), loads.clone());
            callers.push(tokio::spawn(async move {
                let watch = flights.clone();
                flights
                    .run(7, 0, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        while watch.callers(&7) < CALLERS {
                            tokio::task::yield_now().await;
                        }
                        Ok::<_, ()>(42)
                    })
                    .await
            }));
        }
        for caller in callers {
            assert_eq!(caller.await.expect("join"), Ok(42));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for every concurrent miss");
        assert_eq!(flights.in_flight(), 0, "the flight is gone once answered");
    }

    #[tokio::test]
    async fn a_failed_load_lets_the_next_caller_load() {
        let flights = SingleFlight::<u32, u64>::default();
        let first = flights.run(1, 0, || async { Err::<u64, &str>("down") }).await;
        assert_eq!(first, Err("down"));
        let second = flights.run(1, 0, || async { Ok::<u64, &str>(5) }).await;
        assert_eq!(second, Ok(5));
    }

    #[tokio::test]
    async fn a_newer_generation_does_not_join_an_older_load() {
        let flights = Arc::new(SingleFlight::<u32, u64>::default());
        let (release, mut released) = tokio::sync::watch::channel(false);
        let old = tokio::spawn({
            let flights = flights.clone();
            async move {
                flights
                    .run(1, 0, || async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<u64, ()>(1)
                    })
                    .await
            }
        });
        while flights.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        // A write happened (generation 1): this caller must not get the older load's answer.
        let newer = flights.run(1, 1, || async { Ok::<u64, ()>(2) }).await;
        assert_eq!(newer, Ok(2));
        let _ = release.send(true);
        assert_eq!(old.await.expect("join"), Ok(1));
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut map = Generational::<i64, i64>::new(3);
        for key in 0..10 {
            map.insert(
                key,
                Entry {
                    loaded_at: Instant::now(),
                    value: key,
                },
                Duration::from_secs(60),
            );
            assert!(map.entries.len() <= 3);
        }
        assert_eq!(map.fresh(&9, Duration::from_secs(60)), Some(9));
    }
}
