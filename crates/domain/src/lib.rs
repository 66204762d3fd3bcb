//! Business rules of the e-commerce server, free of I/O.
//!
//! Everything here is plain Rust, one module per noun: validation of user input into domain
//! values, money limits, discount math, the order state machine, and the storage port
//! ([`store`]) that the PostgreSQL and SQLite adapters implement. The use cases of each noun live
//! in its module and run against a unit of work (`&mut impl Tx`) so that the caller owns the
//! transaction boundary (idempotent requests save their answer in it); reads that need no
//! transaction take the store (`&impl Store`). Whatever comes from outside (the clock, random
//! numbers, event ids) is passed in, so every rule is deterministic under test.

#[macro_use]
mod macros;

pub mod account;
pub mod cart;
pub mod catalog;
pub mod changes;
pub mod coupon;
pub mod error;
pub mod events;
pub mod money;
pub mod order;
pub mod paging;
pub mod payment;
pub mod ranking;
pub mod store;
pub mod time;
pub mod wallet;

pub use error::{Error, StoreError};
pub use money::Krw;
pub use time::{Hour, Timestamp};

i64_newtype! {
    /// An account (user or admin).
    UserId;
    /// A product of the catalog.
    ProductId;
    /// An order.
    OrderId;
    /// A coupon definition.
    CouponId;
    /// One coupon issued to one user.
    UserCouponId;
    /// One line of a balance history.
    BalanceEntryId;
    /// A limited-drop draw.
    DrawId;
}

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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::account::Role;
    use crate::catalog::ProductStatus;
    use crate::coupon::{DiscountType, UserCouponStatus};
    use crate::order::OrderStatus;
    use crate::wallet::EntryKind;

    /// Every variant survives the database string and JSON, and no two share a string.
    fn round_trips<T>(all: &[T], as_str: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
    where
        T: Copy + PartialEq + Debug + Serialize + DeserializeOwned,
    {
        let mut seen = HashSet::new();
        for &v in all {
            let text = as_str(v);
            assert_eq!(parse(text), Some(v), "{v:?} does not parse back from {text:?}");
            assert!(seen.insert(text), "{text:?} names two variants");
            assert!(
                !text.is_empty() && text.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{text:?} is not SCREAMING_SNAKE_CASE"
            );
            let json = serde_json::to_string(&v).expect("serialize");
            assert_eq!(json, format!("\"{text}\""), "JSON of {v:?}");
            assert_eq!(serde_json::from_str::<T>(&json).expect("deserialize"), v);
            assert_eq!(parse(&text.to_lowercase()), None, "parse is case-sensitive");
        }
        assert_eq!(parse("NO_SUCH_NAME"), None);
    }

    /// The OpenAPI schema lists the same strings (it is derived from serde's names).
    #[cfg(feature = "openapi")]
    fn schema_lists<T: utoipa::PartialSchema>(all: &[&str]) {
        let schema = serde_json::to_value(T::schema()).expect("schema as JSON");
        let listed: Vec<&str> = schema["enum"]
            .as_array()
            .expect("an enum schema")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(listed, all);
    }

    #[cfg(feature = "openapi")]
    #[test]
    fn openapi_schemas_list_the_stored_strings() {
        fn names<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|&v| as_str(v)).collect()
        }
        schema_lists::<Role>(&names(Role::ALL, Role::as_str));
        schema_lists::<ProductStatus>(&names(ProductStatus::ALL, ProductStatus::as_str));
        schema_lists::<DiscountType>(&names(DiscountType::ALL, DiscountType::as_str));
        schema_lists::<UserCouponStatus>(&names(UserCouponStatus::ALL, UserCouponStatus::as_str));
        schema_lists::<OrderStatus>(&names(OrderStatus::ALL, OrderStatus::as_str));
        schema_lists::<EntryKind>(&names(EntryKind::ALL, EntryKind::as_str));
    }

    #[test]
    fn role_round_trips() {
        round_trips(Role::ALL, Role::as_str, Role::parse);
    }

    #[test]
    fn product_status_round_trips() {
        round_trips(ProductStatus::ALL, ProductStatus::as_str, ProductStatus::parse);
    }

    #[test]
    fn discount_type_round_trips() {
        round_trips(DiscountType::ALL, DiscountType::as_str, DiscountType::parse);
    }

    #[test]
    fn user_coupon_status_round_trips() {
        round_trips(UserCouponStatus::ALL, UserCouponStatus::as_str, UserCouponStatus::parse);
    }

    #[test]
    fn order_status_round_trips() {
        round_trips(OrderStatus::ALL, OrderStatus::as_str, OrderStatus::parse);
    }

    #[test]
    fn entry_kind_round_trips() {
        round_trips(EntryKind::ALL, EntryKind::as_str, EntryKind::parse);
    }
}
