//! Every way a use case can fail. Each variant is one stable error code of the HTTP contract;
//! the HTTP layer maps them exhaustively, so adding a variant forces a decision there.

use std::fmt;

/// A failure of the storage engine itself (connection lost, unexpected constraint, bad row).
/// Guard failures are not errors: adapters report them as `false`/`None`.
#[derive(Debug)]
pub struct StoreError {
    pub source: Box<dyn std::error::Error + Send + Sync>,
    /// The database could not be reached (down, restarting, pool exhausted): worth a 503 and a
    /// retry, not a 500.
    pub unavailable: bool,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.source)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Box::new(err),
            unavailable: false,
        }
    }

    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Box::new(err),
            unavailable: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Validation(String),
    #[error("the amount must be an integer from 1,000 to 1,000,000 KRW")]
    InvalidChargeAmount,
    #[error("the balance would exceed 10,000,000 KRW")]
    BalanceLimitExceeded,
    #[error("the cart is empty")]
    CartEmpty,
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("no such user")]
    UserNotFound,
    #[error("no such product")]
    ProductNotFound,
    #[error("no such coupon")]
    CouponNotFound,
    #[error("no such order")]
    OrderNotFound,
    #[error("this email is already registered")]
    EmailTaken,
    #[error("not enough stock for product {0}")]
    OutOfStock(crate::ProductId),
    #[error("product {0} is not on sale")]
    ProductNotOnSale(crate::ProductId),
    #[error("this purchase would pass the limit per customer of product {0}")]
    PurchaseLimitExceeded(crate::ProductId),
    #[error("this coupon cannot be issued now: its issue window has not started or has ended")]
    CouponNotIssuable,
    #[error("the balance does not cover the payment")]
    InsufficientBalance,
    #[error("this coupon was already issued to the user")]
    CouponAlreadyIssued,
    #[error("this coupon is sold out")]
    CouponSoldOut,
    #[error("this coupon was already used")]
    CouponAlreadyUsed,
    #[error("this coupon has expired")]
    CouponExpired,
    #[error("the order has expired")]
    OrderExpired,
    #[error("the order is not pending payment")]
    OrderNotPending,
    #[error("the order is not paid")]
    OrderNotPaid,
    #[error("no such draw")]
    DrawNotFound,
    #[error("no entry of this user in this draw")]
    EntryNotFound,
    #[error("the draw is not taking entries now")]
    DrawNotOpen,
    #[error("this user already entered the draw")]
    AlreadyEntered,
    #[error("a request with this idempotency key is still running")]
    RequestInProgress,
    #[error("this idempotency key was used with another request body")]
    IdempotencyKeyReused,
    /// Over a rate limit: nothing was done; retry after this many seconds (at least 1).
    #[error("too many requests; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// The user already holds the most pending orders allowed.
    #[error("too many orders are waiting for payment; pay or cancel one first (at most {0})")]
    TooManyPendingOrders(usize),
    /// The cart already holds the most lines allowed.
    #[error("the cart is full (at most {0} products)")]
    CartFull(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn validation(msg: impl Into<String>) -> Self {
        Self::Validation(msg.into())
    }
}
