//! The storage port. Adapters (PostgreSQL, SQLite) implement [`Store`] for reads outside a
//! transaction and [`Tx`] for one unit of work. Every write that guards an invariant reports
//! whether its guard held (`bool` / `Option`): a guard that touched no row is the failure, and
//! the use case turns it into its error code. Dropping a `Tx` without `commit` rolls it back.
//!
//! Lock order, kept by every use case so that concurrent transactions cannot deadlock:
//! idempotency key → order → user coupon → purchase tallies (ascending product id) → products
//! (ascending id) → account → cart → sales → outbox. Draws: a new entry row → the draw row; the
//! draw itself: the draw row → its entries → new orders → product.

use std::collections::HashMap;
use std::future::Future;

use crate::account::{Credentials, NewUser, TokenState, User};
use crate::admin::{Account, HourlySales};
use crate::cart::CartItem;
use crate::catalog::{NewProduct, Product, ProductPatch, ProductStatus};
use crate::changes::ProductChanges;
use crate::coupon::{Coupon, NewCoupon, NewUserCoupon, UserCoupon, UserCouponStatus};
use crate::draw::{Draw, DrawEntry, EntryStatus, NewDraw};
use crate::events::Event;
use crate::order::{NewOrder, Order, OrderStatus, Payment};
use crate::paging::Page;
use crate::payment::Allowance;
use crate::ranking::PopularEntry;
use crate::wallet::{BalanceEntry, NewBalanceEntry};
use crate::{CouponId, DrawId, Hour, Krw, OrderId, ProductId, StoreError, Timestamp, UserCouponId, UserId};

pub type StoreResult<T> = Result<T, StoreError>;

/// An `Idempotency-Key`, scoped to the user and the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    pub user_id: UserId,
    pub route: &'static str,
    pub key: String,
}

/// What the key table says about a request with this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// First use: the key is now held by this transaction; save the answer before commit.
    Fresh,
    /// Same key, same request: answer what was answered the first time.
    Replay { status: u16, body: String },
    /// Same key, another request body.
    Reused,
    /// Another request with this key has not finished.
    InProgress,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Position in the outbox (commit order).
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub order_id: OrderId,
    /// The whole envelope, JSON.
    pub payload: String,
}

/// Number of events not yet sent and the age of the oldest, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    pub unsent: i64,
    pub oldest_created_at: Option<Timestamp>,
}

pub trait Store: Clone + Send + Sync + 'static {
    type Tx: Tx;

    /// Begins a write transaction.
    fn begin(&self) -> impl Future<Output = StoreResult<Self::Tx>> + Send;
    /// Answers when the database does.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// Answers when the database can take a write now: SQLite's write lock is free to take (no
    /// other process holds it), a PostgreSQL server is a primary that is neither in recovery nor
    /// read-only. Writes nothing. An error otherwise (`unavailable` when it is the database's state).
    fn check_writable(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// The feed on which the store publishes every committed change of a product row (see
    /// [`crate::changes`]): this process's at once, other processes' when the engine can tell.
    fn product_changes(&self) -> &ProductChanges;
    /// The store that token-free catalog reads use: the same store, or one whose reads outside
    /// a transaction go to a read replica (which may lag behind the primary). Only
    /// [`Store::product`] and [`Store::products_on_sale`] are meant to be called on it.
    fn catalog_reads(&self) -> Self {
        self.clone()
    }
    /// The value stored under `key`, storing `value` first when there is none (first writer wins).
    fn setting_or_insert(&self, key: &str, value: &str) -> impl Future<Output = StoreResult<String>> + Send;

    fn credentials(&self, email: &str) -> impl Future<Output = StoreResult<Option<Credentials>>> + Send;
    fn user(&self, id: UserId) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    /// The account's password hash, role and token version, by id.
    fn credentials_of(&self, id: UserId) -> impl Future<Output = StoreResult<Option<Credentials>>> + Send;
    /// What a token of the account is checked against, with the ids of its tokens logged out
    /// and not expired at `now`; `None` when the account does not exist.
    fn token_state(&self, id: UserId, now: Timestamp) -> impl Future<Output = StoreResult<Option<TokenState>>> + Send {
        async move { Ok(self.token_states(&[id], now).await?.remove(&id)) }
    }
    /// [`Store::token_state`] of several accounts in one read; accounts that do not exist are
    /// absent.
    fn token_states(
        &self,
        ids: &[UserId],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<HashMap<UserId, TokenState>>> + Send;
    /// Forgets the logged-out tokens that expired before `before`; returns how many.
    fn purge_revoked_tokens(&self, before: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;
    fn admin_exists(&self) -> impl Future<Output = StoreResult<bool>> + Send;

    fn product(&self, id: ProductId) -> impl Future<Output = StoreResult<Option<Product>>> + Send;
    /// `ON_SALE` products, ascending by id; with `released_by`, only those whose
    /// `sale_starts_at` is unset or `<=` it (see [`crate::catalog::Audience::release_cutoff`]).
    fn products_on_sale(
        &self,
        page: Page,
        released_by: Option<Timestamp>,
    ) -> impl Future<Output = StoreResult<Vec<Product>>> + Send;

    /// `None` when the user does not exist.
    fn balance(&self, user: UserId) -> impl Future<Output = StoreResult<Option<Krw>>> + Send;
    /// Newest first.
    fn balance_history(&self, user: UserId, page: Page) -> impl Future<Output = StoreResult<Vec<BalanceEntry>>> + Send;

    /// The cart in the order items were first added.
    fn cart(&self, user: UserId) -> impl Future<Output = StoreResult<Vec<CartItem>>> + Send;

    fn coupon(&self, id: CouponId) -> impl Future<Output = StoreResult<Option<Coupon>>> + Send;
    fn user_coupon(&self, id: UserCouponId) -> impl Future<Output = StoreResult<Option<UserCoupon>>> + Send;
    /// Coupons with stock left whose issue window has not ended at `now` (`issue_ends_at` unset
    /// or after `now`), newest first.
    fn coupons_in_stock(&self, page: Page, now: Timestamp) -> impl Future<Output = StoreResult<Vec<Coupon>>> + Send;
    /// Everyone who holds the coupon.
    fn coupon_holders(&self, coupon: CouponId) -> impl Future<Output = StoreResult<Vec<UserId>>> + Send;
    fn has_user_coupon(&self, user: UserId, coupon: CouponId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The user's coupons, newest first; the status filter uses the status computed at `now`.
    fn user_coupons(
        &self,
        user: UserId,
        status: Option<UserCouponStatus>,
        now: Timestamp,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<UserCoupon>>> + Send;

    fn order(&self, id: OrderId) -> impl Future<Output = StoreResult<Option<Order>>> + Send;
    /// The order with, for each of its products, the product's `max_per_user` and the owner's
    /// purchase tally: what a payment checks before the stock, in one read.
    fn order_for_payment(
        &self,
        id: OrderId,
    ) -> impl Future<Output = StoreResult<Option<(Order, Vec<Allowance>)>>> + Send {
        async move { Ok(self.orders_for_payment(&[id]).await?.remove(&id)) }
    }
    /// [`Store::order_for_payment`] of several orders in one read; orders that do not exist are
    /// absent.
    fn orders_for_payment(
        &self,
        ids: &[OrderId],
    ) -> impl Future<Output = StoreResult<HashMap<OrderId, (Order, Vec<Allowance>)>>> + Send;
    /// The user's orders, newest first; the status filter uses the computed status.
    fn orders(
        &self,
        user: UserId,
        status: Option<OrderStatus>,
        now: Timestamp,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<Order>>> + Send;

    /// Marks pending orders past `expires_at` as `EXPIRED`, at most `batch` at once; returns how
    /// many it marked. Safe to run on every instance at once.
    fn expire_orders(&self, now: Timestamp, batch: i64) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Deletes idempotency keys created before `before`; returns how many.
    fn purge_idempotency_keys(&self, before: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Best sellers: quantity sold in hours `>= since`, at most `limit`, ranked by quantity
    /// descending then product id ascending; products whose sales netted to 0 are left out, and
    /// so are products not released by `released_by` (`sale_starts_at` after it).
    fn popular(
        &self,
        since: Hour,
        limit: i64,
        released_by: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<PopularEntry>>> + Send;

    /// Leases up to `limit` unsent events until `lease_until`, oldest first, skipping any event
    /// whose order has an earlier unsent event (per-order commit order) and events leased by
    /// another relay whose lease has not run out.
    fn lease_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<OutboxEvent>>> + Send;
    fn mark_outbox_sent(&self, seqs: &[i64], now: Timestamp) -> impl Future<Output = StoreResult<()>> + Send;
    /// Gives up the lease of these unsent events, so that the next relay round (here or on
    /// another instance) may take them at once instead of waiting out the lease.
    fn release_outbox(&self, seqs: &[i64]) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes the events sent before `before`; returns how many. Unsent events are kept.
    fn purge_sent_outbox(&self, before: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;
    fn outbox_backlog(&self) -> impl Future<Output = StoreResult<OutboxBacklog>> + Send;

    // ----- admin reads (the console): every row whatever its state, newest first ----------

    /// Every product, or those with `status`, newest first.
    fn all_products(
        &self,
        status: Option<ProductStatus>,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<Product>>> + Send;
    /// Every coupon, sold out too, newest first.
    fn all_coupons(&self, page: Page) -> impl Future<Output = StoreResult<Vec<Coupon>>> + Send;
    /// Every user's orders, newest first; the status filter uses the status computed at `now`.
    fn all_orders(
        &self,
        status: Option<OrderStatus>,
        now: Timestamp,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<Order>>> + Send;
    /// Accounts newest first; with `email` (lower-cased), only the one with that email.
    fn accounts(&self, email: Option<&str>, page: Page) -> impl Future<Output = StoreResult<Vec<Account>>> + Send;
    fn account(&self, id: UserId) -> impl Future<Output = StoreResult<Option<Account>>> + Send;
    /// Orders paid at or after `since` (of every instance), refunded ones included.
    fn orders_paid_since(&self, since: Timestamp) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Units sold per hour in hours `>= since`, ascending by hour; hours with no sales row are
    /// absent.
    fn sales_by_hour(&self, since: Hour) -> impl Future<Output = StoreResult<Vec<HourlySales>>> + Send;
    fn draw(&self, id: DrawId) -> impl Future<Output = StoreResult<Option<Draw>>> + Send;
    /// Draws newest first; only those not drawn yet when `undrawn_only`.
    fn draws(&self, undrawn_only: bool, page: Page) -> impl Future<Output = StoreResult<Vec<Draw>>> + Send;
    /// `None` when the user has not entered the draw.
    fn draw_entry(&self, draw: DrawId, user: UserId) -> impl Future<Output = StoreResult<Option<DrawEntry>>> + Send;
    /// The draw's entries, newest first (keyset on the entry id), optionally of one status.
    fn draw_entries(
        &self,
        draw: DrawId,
        status: Option<EntryStatus>,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<DrawEntry>>> + Send;
    /// Everyone who entered the draw, by user id ascending (the list a draw is audited on).
    fn draw_entrants(&self, draw: DrawId) -> impl Future<Output = StoreResult<Vec<UserId>>> + Send;
    /// Draws not drawn yet whose window ended at or before `now`, the earliest first, at most `limit`.
    fn due_draws(&self, now: Timestamp, limit: i64) -> impl Future<Output = StoreResult<Vec<DrawId>>> + Send;
}

/// One transaction. Each method is a single guarded statement (or a small fixed group).
pub trait Tx: Send {
    fn commit(self) -> impl Future<Output = StoreResult<()>> + Send;
    /// Rolls back now. Dropping a `Tx` also rolls back, but only once the connection is next used;
    /// routes whose keys or locks must be free the moment they answer call this.
    fn rollback(self) -> impl Future<Output = StoreResult<()>> + Send;

    /// Takes the key for this transaction (first use), or says what an earlier request with it
    /// left: its answer, another body, or that it is still running. A stored answer that cannot
    /// be read back is an error, never a guess.
    fn claim_idempotency_key(
        &mut self,
        scope: &IdempotencyScope,
        request_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<KeyClaim>> + Send;
    /// Stores the answer under a key this transaction claimed; it commits with the business writes.
    fn save_idempotent_response(
        &mut self,
        scope: &IdempotencyScope,
        status: u16,
        body: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// `None` when the email is taken.
    fn insert_user(
        &mut self,
        user: &NewUser,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<UserId>>> + Send;
    /// Creates the account as an admin, or makes the existing one with this email an admin with
    /// this password.
    fn upsert_admin(&mut self, user: &NewUser, now: Timestamp) -> impl Future<Output = StoreResult<UserId>> + Send;
    fn user_exists(&mut self, id: UserId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Locks the account's row until the transaction ends (a write that changes nothing), so
    /// that counting what the account holds and adding to it is one step; `false` when there is
    /// no such account. Taken in the account's place of the lock order.
    fn lock_account(&mut self, user: UserId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The user's orders waiting for payment and not expired at `now`.
    fn pending_order_count(&mut self, user: UserId, now: Timestamp) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Refuses the token `jti` of `user` until `expires_at`; logging out twice is no error.
    fn revoke_token(
        &mut self,
        jti: &str,
        user: UserId,
        expires_at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Bumps the account's token version, which refuses every token issued before.
    fn bump_token_version(&mut self, user: UserId) -> impl Future<Output = StoreResult<()>> + Send;
    /// Sets the password hash and bumps the token version while the stored hash is still
    /// `current_hash`; `false` when it is not (or the account does not exist).
    fn change_password(
        &mut self,
        user: UserId,
        current_hash: &str,
        new_hash: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    fn insert_product(
        &mut self,
        product: &NewProduct,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Product>> + Send;
    /// `None` when the product does not exist.
    fn update_product(
        &mut self,
        id: ProductId,
        patch: &ProductPatch,
    ) -> impl Future<Output = StoreResult<Option<Product>>> + Send;
    /// Adds stock while the result stays `<=` [`crate::catalog::MAX_STOCK`]; `None` when the
    /// product does not exist or the guard failed.
    fn add_stock(&mut self, id: ProductId, quantity: i64) -> impl Future<Output = StoreResult<Option<Product>>> + Send;
    /// Puts stock back (a refund): adds `quantity`, capped at [`crate::catalog::MAX_STOCK`], so
    /// it never fails on the limit.
    fn return_stock(&mut self, id: ProductId, quantity: i64) -> impl Future<Output = StoreResult<()>> + Send;
    fn product(&mut self, id: ProductId) -> impl Future<Output = StoreResult<Option<Product>>> + Send;
    /// Takes `quantity` while stock covers it; `false` when it does not.
    fn take_stock(&mut self, id: ProductId, quantity: i64) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Adds `amount` while the balance stays `<=` [`crate::wallet::MAX_BALANCE`]; the new
    /// balance, `None` when the user does not exist or the guard failed.
    fn credit_balance(&mut self, user: UserId, amount: Krw) -> impl Future<Output = StoreResult<Option<Krw>>> + Send;
    /// Takes `amount` while the balance covers it; the new balance, `None` when it does not.
    fn debit_balance(&mut self, user: UserId, amount: Krw) -> impl Future<Output = StoreResult<Option<Krw>>> + Send;
    fn append_balance_entry(&mut self, entry: &NewBalanceEntry) -> impl Future<Output = StoreResult<()>> + Send;

    fn cart(&mut self, user: UserId) -> impl Future<Output = StoreResult<Vec<CartItem>>> + Send;
    /// Sets the quantity; a new item goes to the end of the cart.
    fn put_cart_item(
        &mut self,
        user: UserId,
        product: ProductId,
        quantity: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Removes these products from the cart; absent ones are no error.
    fn remove_cart_items(
        &mut self,
        user: UserId,
        products: &[ProductId],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn clear_cart(&mut self, user: UserId) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores the coupon with its quantity spread over `NewCoupon::shard_quantities`.
    fn insert_coupon(&mut self, coupon: &NewCoupon, now: Timestamp)
    -> impl Future<Output = StoreResult<Coupon>> + Send;
    /// `None` when the user already holds this coupon.
    fn insert_user_coupon(
        &mut self,
        coupon: &NewUserCoupon,
    ) -> impl Future<Output = StoreResult<Option<UserCouponId>>> + Send;
    /// Takes one coupon from the shards, trying `first_shard` then the next ones in turn
    /// (wrapping); `false` when every shard is empty.
    fn take_coupon(&mut self, coupon: CouponId, first_shard: i64) -> impl Future<Output = StoreResult<bool>> + Send;
    fn user_coupon(&mut self, id: UserCouponId) -> impl Future<Output = StoreResult<Option<UserCoupon>>> + Send;
    /// Marks the coupon used by `order` while it is unused and unexpired at `now`.
    fn use_coupon(
        &mut self,
        id: UserCouponId,
        order: OrderId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Makes a used coupon unused again.
    fn release_coupon(&mut self, id: UserCouponId) -> impl Future<Output = StoreResult<()>> + Send;

    fn insert_order(&mut self, order: &NewOrder) -> impl Future<Output = StoreResult<OrderId>> + Send;
    fn order(&mut self, id: OrderId) -> impl Future<Output = StoreResult<Option<Order>>> + Send;
    /// Moves a pending order whose `expires_at` is after `paid_at` to `PAID` with the payment's
    /// amounts; `false` when it is not such an order.
    fn mark_paid(&mut self, id: OrderId, payment: &Payment) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Moves a pending order whose `expires_at` is after `now` to `CANCELLED`.
    fn mark_cancelled(&mut self, id: OrderId, now: Timestamp) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Moves a paid order to `REFUNDED`.
    fn mark_refunded(&mut self, id: OrderId, now: Timestamp) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The quantity of `product` in the user's `PAID` orders, from the purchase tally (0 when
    /// the user never bought it).
    fn purchased_quantity(&mut self, user: UserId, product: ProductId)
    -> impl Future<Output = StoreResult<i64>> + Send;
    /// Adds `quantity` to the user's purchase tally of `product` while the result stays `<=` the
    /// product's `max_per_user` as it is in the same statement (any result when unset);
    /// `false` when the guard failed and nothing changed.
    /// Concurrent calls for one user and product queue on the tally row, so they add up exactly.
    fn add_purchase(
        &mut self,
        user: UserId,
        product: ProductId,
        quantity: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Takes `quantity` off the tally (a refund), never below 0.
    fn remove_purchase(
        &mut self,
        user: UserId,
        product: ProductId,
        quantity: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Adds `quantity` (negative for a refund) to the product's sales in `hour`.
    fn add_sales(
        &mut self,
        product: ProductId,
        hour: Hour,
        quantity: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records the event for the relay; it leaves only if this transaction commits.
    fn append_outbox(&mut self, event: &Event) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores a new draw: no entries, not drawn. (The caller has taken its units from stock.)
    fn insert_draw(&mut self, draw: &NewDraw, now: Timestamp) -> impl Future<Output = StoreResult<Draw>> + Send;
    fn draw(&mut self, id: DrawId) -> impl Future<Output = StoreResult<Option<Draw>>> + Send;
    fn draw_entry(&mut self, draw: DrawId, user: UserId)
    -> impl Future<Output = StoreResult<Option<DrawEntry>>> + Send;
    /// Inserts the user's `ENTERED` entry; `None` when the user already has one (the unique
    /// `(draw_id, user_id)` decides, also between simultaneous transactions).
    fn insert_draw_entry(
        &mut self,
        draw: DrawId,
        user: UserId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<DrawEntry>>> + Send;
    /// Inserts an `ENTERED` entry for each of `users` who has none (the unique
    /// `(draw_id, user_id)` decides; a user listed twice gets one); the entries inserted, in any
    /// order. Batched.
    fn insert_draw_entries(
        &mut self,
        draw: DrawId,
        users: &[UserId],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<DrawEntry>>> + Send;
    /// Adds `count` to the draw's `entry_count` while its window holds `now` and it is not
    /// drawn; `false` when it does not (the caller rolls the entries back).
    fn count_draw_entries(
        &mut self,
        draw: DrawId,
        count: i64,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Claims the draw for this transaction: sets `drawn_at = now` and the seed while it is not
    /// drawn and its window ended at or before `now`. `None` when another transaction drew it
    /// (or it is not due); the draw as claimed otherwise.
    fn claim_draw(
        &mut self,
        id: DrawId,
        now: Timestamp,
        seed: &str,
    ) -> impl Future<Output = StoreResult<Option<Draw>>> + Send;
    /// Everyone who entered, by user id ascending.
    fn draw_entrants(&mut self, draw: DrawId) -> impl Future<Output = StoreResult<Vec<UserId>>> + Send;
    /// One `PENDING_PAYMENT` order per winner, with `draw_id` set: one unit of `product` at its
    /// price, created at `now`, due at [`Draw::payment_due`]. Batched.
    fn insert_draw_orders(
        &mut self,
        draw: &Draw,
        product: &Product,
        winners: &[UserId],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Entries of the draw's winners (those with an order of the draw) become `WON` with its
    /// `order_id`; every other `ENTERED` entry becomes `LOST`.
    fn settle_draw_entries(&mut self, draw: DrawId) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records the number of winners of a claimed draw.
    fn finish_draw(&mut self, draw: DrawId, winner_count: i64) -> impl Future<Output = StoreResult<()>> + Send;
}
