//! Coupons: definitions, the discount math, the status of a user's coupon, and the use cases
//! that create and issue them.
//!
//! A coupon may have an issue window (`issue_starts_at`, `issue_ends_at`, each optional): it is
//! issuable from the start (inclusive) until the end (exclusive), decided by
//! [`Coupon::check_issuable`]. The window is part of the definition, which never changes once
//! created, so a cached definition decides it as well as a fresh one.

use crate::account::{Addressed, require_user, require_user_in};
use crate::paging::Page;
use crate::store::{Store, Tx};
use crate::{CouponId, Error, Krw, OrderId, Timestamp, UserCouponId, UserId, check_range, parse_name};

string_enum! {
    /// How a coupon's `discount_value` is read: FIXED a number of KRW off (at most the order
    /// total), RATE a percentage off (rounded down).
    pub enum DiscountType {
        Fixed = "FIXED",
        Rate = "RATE",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discount {
    pub kind: DiscountType,
    /// KRW for FIXED, percent for RATE.
    pub value: i64,
}

impl Discount {
    /// The amount taken off `total`: FIXED min(value, total); RATE floor(total × value / 100).
    /// Never more than `total`, never negative.
    pub fn amount_off(self, total: Krw) -> Krw {
        let total = total.0.max(0);
        Krw(match self.kind {
            DiscountType::Fixed => self.value.min(total),
            DiscountType::Rate => ((total as i128 * self.value as i128) / 100) as i64,
        })
    }
}

/// How many counter rows a quantity is spread over, so that a rush on one coupon does not
/// queue on one hot row. Each shard holds at least one coupon.
fn shard_count(total_quantity: i64) -> i64 {
    total_quantity.clamp(1, 16)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub remaining_quantity: i64,
    pub valid_for_seconds: i64,
    pub issue_starts_at: Option<Timestamp>,
    pub issue_ends_at: Option<Timestamp>,
}

impl Coupon {
    /// `COUPON_NOT_ISSUABLE` before `issue_starts_at` and from `issue_ends_at` on.
    pub fn check_issuable(&self, now: Timestamp) -> Result<(), Error> {
        let started = self.issue_starts_at.is_none_or(|start| start <= now);
        let ended = self.issue_ends_at.is_some_and(|end| end <= now);
        if started && !ended {
            Ok(())
        } else {
            Err(Error::CouponNotIssuable)
        }
    }

    /// Whether the issue window is over at `now`: such a coupon leaves the public list.
    pub fn window_ended(&self, now: Timestamp) -> bool {
        self.issue_ends_at.is_some_and(|end| end <= now)
    }

    /// The shard an issue tries first, picked from `random` so that a rush spreads evenly.
    pub fn first_shard(&self, random: u64) -> i64 {
        // `shard_count` is 1..=16, so the cast and the remainder are exact.
        (random % shard_count(self.total_quantity) as u64) as i64
    }
}

/// A coupon definition as an admin sent it, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CouponRequest<'a> {
    pub name: &'a str,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub total_quantity: i64,
    pub valid_for_seconds: i64,
    /// RFC 3339, or `None`.
    pub issue_starts_at: Option<&'a str>,
    /// RFC 3339, or `None`; after `issue_starts_at` when both are given.
    pub issue_ends_at: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoupon {
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub valid_for_seconds: i64,
    pub issue_starts_at: Option<Timestamp>,
    pub issue_ends_at: Option<Timestamp>,
}

impl NewCoupon {
    pub fn parse(request: CouponRequest<'_>) -> Result<Self, Error> {
        let value = match request.discount_type {
            DiscountType::Fixed => check_range(request.discount_value, 1..=10_000_000, "discount_value")?,
            DiscountType::Rate => check_range(request.discount_value, 1..=100, "discount_value")?,
        };
        let issue_starts_at = request
            .issue_starts_at
            .map(|t| Timestamp::parse_rfc3339(t, "issue_starts_at"))
            .transpose()?;
        let issue_ends_at = request
            .issue_ends_at
            .map(|t| Timestamp::parse_rfc3339(t, "issue_ends_at"))
            .transpose()?;
        if let (Some(start), Some(end)) = (issue_starts_at, issue_ends_at)
            && start >= end
        {
            return Err(Error::validation("issue_starts_at must be before issue_ends_at"));
        }
        Ok(Self {
            name: parse_name(request.name, 100, "name")?,
            discount: Discount {
                kind: request.discount_type,
                value,
            },
            total_quantity: check_range(request.total_quantity, 1..=10_000_000, "total_quantity")?,
            valid_for_seconds: check_range(request.valid_for_seconds, 1..=31_536_000, "valid_for_seconds")?,
            issue_starts_at,
            issue_ends_at,
        })
    }

    /// The quantity of each shard: an even split, the first shards taking the remainder.
    pub fn shard_quantities(&self) -> Vec<i64> {
        let n = shard_count(self.total_quantity);
        let (base, extra) = (self.total_quantity / n, self.total_quantity % n);
        (0..n).map(|i| base + i64::from(i < extra)).collect()
    }

    /// The coupon as it is right after it was stored under `id`: nothing issued yet.
    pub fn stored(self, id: CouponId) -> Coupon {
        Coupon {
            id,
            name: self.name,
            discount: self.discount,
            total_quantity: self.total_quantity,
            remaining_quantity: self.total_quantity,
            valid_for_seconds: self.valid_for_seconds,
            issue_starts_at: self.issue_starts_at,
            issue_ends_at: self.issue_ends_at,
        }
    }
}

string_enum! {
    /// A user coupon's state; `EXPIRED` is computed on read (past `expires_at` and unused).
    pub enum UserCouponStatus {
        Available = "AVAILABLE",
        Used = "USED",
        Expired = "EXPIRED",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCoupon {
    pub id: UserCouponId,
    pub user_id: UserId,
    pub coupon_id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub order_id: Option<OrderId>,
}

impl UserCoupon {
    /// `EXPIRED` is computed on read: past `expires_at` and unused.
    pub fn status(&self, now: Timestamp) -> UserCouponStatus {
        if self.used_at.is_some() {
            UserCouponStatus::Used
        } else if now >= self.expires_at {
            UserCouponStatus::Expired
        } else {
            UserCouponStatus::Available
        }
    }

    /// Whether this coupon may pay an order now, with the contract's error when not.
    pub fn check_usable(&self, now: Timestamp) -> Result<(), Error> {
        match self.status(now) {
            UserCouponStatus::Available => Ok(()),
            UserCouponStatus::Used => Err(Error::CouponAlreadyUsed),
            UserCouponStatus::Expired => Err(Error::CouponExpired),
        }
    }
}

/// A coupon issued to a user, ready to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewUserCoupon {
    pub user_id: UserId,
    pub coupon_id: CouponId,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl NewUserCoupon {
    /// `coupon` issued to `user` at `now`: valid for the coupon's `valid_for_seconds` from then.
    pub fn new(coupon: &Coupon, user: UserId, now: Timestamp) -> Self {
        Self {
            user_id: user,
            coupon_id: coupon.id,
            issued_at: now,
            expires_at: now.plus_seconds(coupon.valid_for_seconds),
        }
    }

    /// The user coupon as it is right after it was stored under `id`: unused.
    pub fn stored(self, id: UserCouponId, coupon: &Coupon) -> UserCoupon {
        UserCoupon {
            id,
            user_id: self.user_id,
            coupon_id: self.coupon_id,
            name: coupon.name.clone(),
            discount: coupon.discount,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            used_at: None,
            order_id: None,
        }
    }
}

/// Stores a new coupon with its whole quantity in stock.
pub async fn create_coupon(tx: &mut impl Tx, coupon: &NewCoupon, now: Timestamp) -> Result<Coupon, Error> {
    Ok(tx.insert_coupon(coupon, now).await?)
}

/// First come, first served: one per user (checked first), within the issue window (checked
/// next), never more than the total. `random` picks the shard to try first (see
/// [`Coupon::first_shard`]). Returns the coupon as stored.
pub async fn issue_coupon(
    tx: &mut impl Tx,
    who: Addressed,
    coupon: &Coupon,
    now: Timestamp,
    random: u64,
) -> Result<UserCoupon, Error> {
    require_user_in(tx, who).await?;
    let issued = NewUserCoupon::new(coupon, who.user_id, now);
    let id = tx
        .insert_user_coupon(&issued)
        .await?
        .ok_or(Error::CouponAlreadyIssued)?;
    coupon.check_issuable(now)?;
    if !tx.take_coupon(coupon.id, coupon.first_shard(random)).await? {
        return Err(Error::CouponSoldOut);
    }
    Ok(issued.stored(id, coupon))
}

/// The coupons of the public list at `now`: with stock left and an issue window that has not
/// ended (a window not yet started is listed), newest first.
pub async fn listed_coupons(store: &impl Store, now: Timestamp, page: Page) -> Result<Vec<Coupon>, Error> {
    Ok(store.coupons_in_stock(page, now).await?)
}

/// The addressed user's coupons, newest first; the status filter uses the status at `now`.
pub async fn user_coupons(
    store: &impl Store,
    who: Addressed,
    status: Option<UserCouponStatus>,
    now: Timestamp,
    page: Page,
) -> Result<Vec<UserCoupon>, Error> {
    require_user(store, who).await?;
    Ok(store.user_coupons(who.user_id, status, now, page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(kind: DiscountType, value: i64, total: i64, valid_for_seconds: i64) -> CouponRequest<'static> {
        CouponRequest {
            name: "A",
            discount_type: kind,
            discount_value: value,
            total_quantity: total,
            valid_for_seconds,
            issue_starts_at: None,
            issue_ends_at: None,
        }
    }

    fn fixed(value: i64) -> Discount {
        Discount {
            kind: DiscountType::Fixed,
            value,
        }
    }

    fn rate(value: i64) -> Discount {
        Discount {
            kind: DiscountType::Rate,
            value,
        }
    }

    #[test]
    fn fixed_discount_is_capped_by_the_total() {
        assert_eq!(fixed(3_000).amount_off(Krw(10_000)), Krw(3_000));
        assert_eq!(fixed(30_000).amount_off(Krw(10_000)), Krw(10_000));
    }

    #[test]
    fn rate_discount_rounds_down() {
        assert_eq!(rate(10).amount_off(Krw(9_999)), Krw(999));
        assert_eq!(rate(100).amount_off(Krw(9_999)), Krw(9_999));
        assert_eq!(rate(33).amount_off(Krw(1)), Krw(0));
    }

    #[test]
    fn coupon_limits() {
        assert!(NewCoupon::parse(request(DiscountType::Rate, 101, 1, 1)).is_err());
        assert!(NewCoupon::parse(request(DiscountType::Rate, 100, 1, 1)).is_ok());
        assert!(NewCoupon::parse(request(DiscountType::Fixed, 10_000_001, 1, 1)).is_err());
        assert!(NewCoupon::parse(request(DiscountType::Fixed, 0, 1, 1)).is_err());
        assert!(NewCoupon::parse(request(DiscountType::Fixed, 1, 0, 1)).is_err());
        assert!(NewCoupon::parse(request(DiscountType::Fixed, 1, 1, 31_536_001)).is_err());
        let long = "c".repeat(101);
        assert!(
            NewCoupon::parse(CouponRequest {
                name: &long,
                ..request(DiscountType::Fixed, 1, 1, 1)
            })
            .is_err()
        );
    }

    #[test]
    fn the_issue_window_is_start_inclusive_end_exclusive() {
        let windowed = |start: Option<&'static str>, end: Option<&'static str>| {
            NewCoupon::parse(CouponRequest {
                issue_starts_at: start,
                issue_ends_at: end,
                ..request(DiscountType::Fixed, 1, 1, 1)
            })
        };
        let coupon = windowed(Some("1970-01-01T00:00:01Z"), Some("1970-01-01T00:00:02Z"))
            .unwrap()
            .stored(CouponId(1));
        assert!(matches!(
            coupon.check_issuable(Timestamp(999)),
            Err(Error::CouponNotIssuable)
        ));
        assert!(coupon.check_issuable(Timestamp(1_000)).is_ok());
        assert!(coupon.check_issuable(Timestamp(1_999)).is_ok());
        assert!(matches!(
            coupon.check_issuable(Timestamp(2_000)),
            Err(Error::CouponNotIssuable)
        ));
        assert!(!coupon.window_ended(Timestamp(1_999)) && coupon.window_ended(Timestamp(2_000)));
        assert!(!coupon.window_ended(Timestamp(0)), "not started is not ended");
        let open = windowed(None, None).unwrap().stored(CouponId(2));
        assert!(open.check_issuable(Timestamp(i64::MAX)).is_ok() && !open.window_ended(Timestamp(i64::MAX)));
        assert!(windowed(Some("1970-01-01T00:00:02Z"), Some("1970-01-01T00:00:02Z")).is_err());
        assert!(windowed(Some("1970-01-01T00:00:03Z"), Some("1970-01-01T00:00:02Z")).is_err());
        assert!(windowed(Some("later"), None).is_err());
        assert!(windowed(None, Some("2026-12-01")).is_err());
        assert!(windowed(Some("1970-01-01T00:00:03Z"), None).is_ok());
    }

    #[test]
    fn user_coupon_status_is_computed() {
        let mut uc = UserCoupon {
            id: UserCouponId(1),
            user_id: UserId(1),
            coupon_id: CouponId(1),
            name: "c".into(),
            discount: fixed(1),
            issued_at: Timestamp(0),
            expires_at: Timestamp(1_000),
            used_at: None,
            order_id: None,
        };
        assert_eq!(uc.status(Timestamp(999)), UserCouponStatus::Available);
        assert_eq!(uc.status(Timestamp(1_000)), UserCouponStatus::Expired);
        assert!(matches!(uc.check_usable(Timestamp(1_000)), Err(Error::CouponExpired)));
        uc.used_at = Some(Timestamp(5));
        assert_eq!(uc.status(Timestamp(2_000)), UserCouponStatus::Used);
        assert!(matches!(uc.check_usable(Timestamp(5)), Err(Error::CouponAlreadyUsed)));
    }

    #[test]
    fn an_issued_coupon_expires_valid_for_seconds_after_its_issue() {
        let coupon = NewCoupon::parse(request(DiscountType::Rate, 10, 5, 60))
            .unwrap()
            .stored(CouponId(3));
        let issued = NewUserCoupon::new(&coupon, UserId(7), Timestamp(1_000));
        assert_eq!(issued.expires_at, Timestamp(61_000));
        let stored = issued.stored(UserCouponId(9), &coupon);
        assert_eq!(
            (stored.id, stored.coupon_id, stored.user_id),
            (UserCouponId(9), CouponId(3), UserId(7))
        );
        assert_eq!(stored.status(Timestamp(60_999)), UserCouponStatus::Available);
    }

    #[test]
    fn the_first_shard_wraps_over_the_shard_count() {
        let small = NewCoupon::parse(request(DiscountType::Fixed, 1, 3, 1))
            .unwrap()
            .stored(CouponId(1));
        assert_eq!([0, 1, 2, 3, 4].map(|r| small.first_shard(r)), [0, 1, 2, 0, 1]);
        let big = NewCoupon::parse(request(DiscountType::Fixed, 1, 1_000, 1))
            .unwrap()
            .stored(CouponId(1));
        assert_eq!(big.first_shard(17), 1);
        assert_eq!(big.first_shard(u64::MAX), 15);
    }

    proptest! {
        #[test]
        fn discount_never_exceeds_total(total in 0i64..=1_000_000_000_000, value in 1i64..=10_000_000, is_rate: bool) {
            let d = if is_rate { rate(value.min(100)) } else { fixed(value) };
            let off = d.amount_off(Krw(total));
            prop_assert!(off >= Krw(0) && off <= Krw(total));
        }

        #[test]
        fn shards_hold_the_whole_quantity(total in 1i64..=10_000_000, random: u64) {
            let c = NewCoupon::parse(request(DiscountType::Fixed, 1, total, 1)).unwrap();
            let shards = c.shard_quantities();
            prop_assert_eq!(shards.iter().sum::<i64>(), total);
            prop_assert!(shards.iter().all(|q| *q >= 1));
            let stored = c.stored(CouponId(1));
            prop_assert!((0..shards.len() as i64).contains(&stored.first_shard(random)));
        }
    }
}
