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
pub mod admin;
pub mod cart;
pub mod catalog;
pub mod changes;
pub mod coupon;
pub mod draw;
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

/// Trims `raw` and checks that it has `1..=max` characters and no invisible character (see
/// [`is_invisible`]); `what` names the field in errors.
pub fn parse_name(raw: &str, max: usize, what: &str) -> Result<String, Error> {
    let trimmed = raw.trim();
    let len = char_len(trimmed);
    if len == 0 || len > max {
        return Err(Error::validation(format!(
            "{what} must have 1 to {max} characters after trimming"
        )));
    }
    check_visible(trimmed, what)?;
    Ok(trimmed.to_owned())
}

/// Characters that a name or an email must not hold (contract v2, "Text limits"): control
/// characters (U+0000–U+001F, U+007F–U+009F), zero-width characters (U+200B–U+200D, U+2060,
/// U+FEFF) and bidirectional controls (U+202A–U+202E, U+2066–U+2069). They make a name look like
/// another one, or forge lines where it is shown.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `400 VALIDATION_FAILED` when `text` holds an [`is_invisible`] character.
pub fn check_visible(text: &str, what: &str) -> Result<(), Error> {
    match text.chars().find(|c| is_invisible(*c)) {
        Some(c) => Err(Error::validation(format!(
            "{what} must not hold control, zero-width or bidirectional characters (found U+{:04X})",
            u32::from(c)
        ))),
        None => Ok(()),
    }
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
    use crate::draw::{DrawStatus, EntryStatus};
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
        schema_lists::<DrawStatus>(&names(DrawStatus::ALL, DrawStatus::as_str));
        schema_lists::<EntryStatus>(&names(EntryStatus::ALL, EntryStatus::as_str));
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
    fn names_refuse_invisible_characters_after_trimming() {
        use crate::parse_name;
        for bad in [
            "a\u{0}b",
            "a\u{1b}[31mb",
            "a\nb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9f}",
            "ali\u{200b}ce",
            "a\u{200d}",
            "a\u{2060}",
            "\u{feff}a",
            "evil\u{202e}gnp.exe",
            "a\u{202a}",
            "a\u{2066}b",
            "a\u{2069}",
            "\u{200b}\u{200b}",
        ] {
            assert!(parse_name(bad, 50, "name").is_err(), "{bad:?} should be refused");
        }
        // Trimmed white space (tab and newline too) is no part of the name.
        assert_eq!(parse_name("\t Kim \n", 50, "name").unwrap(), "Kim");
        for good in [
            "Kim Minji",
            "김민지",
            "Zoë",
            "a\u{a0}b",
            "a\u{200e}b",
            "a\u{2061}b",
            "a\u{202f}b",
        ] {
            assert!(parse_name(good, 50, "name").is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn entry_kind_round_trips() {
        round_trips(EntryKind::ALL, EntryKind::as_str, EntryKind::parse);
    }

    #[test]
    fn draw_status_round_trips() {
        round_trips(DrawStatus::ALL, DrawStatus::as_str, DrawStatus::parse);
    }

    #[test]
    fn entry_status_round_trips() {
        round_trips(EntryStatus::ALL, EntryStatus::as_str, EntryStatus::parse);
    }
}
