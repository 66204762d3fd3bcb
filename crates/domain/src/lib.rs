//! Business rules of the e-commerce server, free of I/O.
//!
//! Everything here is plain Rust: validation of user input into domain values, money limits,
//! discount math, the order state machine, and the storage port ([`store`]) that the PostgreSQL
//! and SQLite adapters implement. Use cases ([`usecase`]) run against a unit of work so that the
//! caller owns the transaction boundary (idempotent requests save their answer in it).

pub mod account;
pub mod catalog;
pub mod coupon;
pub mod error;
pub mod events;
pub mod order;
pub mod paging;
pub mod store;
pub mod time;
pub mod usecase;
pub mod wallet;

pub use error::{Error, StoreError};
pub use time::Timestamp;

pub type UserId = i64;
pub type ProductId = i64;
pub type OrderId = i64;
pub type CouponId = i64;
pub type UserCouponId = i64;

/// Counts Unicode scalar values, the unit of every text limit in the contract.
pub(crate) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Trims `raw` and checks that it has `1..=max` characters; `what` names the field in errors.
pub fn parse_name(raw: &str, max: usize, what: &str) -> Result<String, Error> {
    let trimmed = raw.trim();
    let len = char_len(trimmed);
    if len == 0 || len > max {
        return Err(Error::validation(format!(
            "{what} must have 1 to {max} characters after trimming"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Checks that `value` lies in `range`; `what` names the field in errors.
pub fn check_range(value: i64, range: std::ops::RangeInclusive<i64>, what: &str) -> Result<i64, Error> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Error::validation(format!(
            "{what} must be between {} and {}",
            range.start(),
            range.end()
        )))
    }
}
