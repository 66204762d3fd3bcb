//! Coupons: definitions, the discount math, and the status of a user's coupon.

use crate::{CouponId, Error, OrderId, Timestamp, UserCouponId, UserId, check_range, parse_name};

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
    pub value: i64,
}

impl Discount {
    /// The amount taken off `total`: FIXED min(value, total); RATE floor(total × value / 100).
    /// Never more than `total`, never negative.
    pub fn amount_off(self, total: i64) -> i64 {
        let total = total.max(0);
        match self.kind {
            DiscountType::Fixed => self.value.min(total),
            DiscountType::Rate => ((total as i128 * self.value as i128) / 100) as i64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub remaining_quantity: i64,
    pub valid_for_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoupon {
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub valid_for_seconds: i64,
}

impl NewCoupon {
    pub fn parse(
        name: &str,
        kind: DiscountType,
        value: i64,
        total_quantity: i64,
        valid_for_seconds: i64,
    ) -> Result<Self, Error> {
        let value = match kind {
            DiscountType::Fixed => check_range(value, 1..=10_000_000, "discount_value")?,
            DiscountType::Rate => check_range(value, 1..=100, "discount_value")?,
        };
        Ok(Self {
            name: parse_name(name, 100, "name")?,
            discount: Discount { kind, value },
            total_quantity: check_range(total_quantity, 1..=10_000_000, "total_quantity")?,
            valid_for_seconds: check_range(valid_for_seconds, 1..=31_536_000, "valid_for_seconds")?,
        })
    }

    /// How many counter rows the quantity is spread over, so that a rush on one coupon does
    /// not queue on one hot row. Each shard holds at least one coupon.
    pub fn shard_count(&self) -> i64 {
        self.total_quantity.clamp(1, 16)
    }

    /// The quantity of each shard: an even split, the first shards taking the remainder.
    pub fn shard_quantities(&self) -> Vec<i64> {
        let n = self.shard_count();
        let (base, extra) = (self.total_quantity / n, self.total_quantity % n);
        (0..n).map(|i| base + i64::from(i < extra)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(fixed(3_000).amount_off(10_000), 3_000);
        assert_eq!(fixed(30_000).amount_off(10_000), 10_000);
    }

    #[test]
    fn rate_discount_rounds_down() {
        assert_eq!(rate(10).amount_off(9_999), 999);
        assert_eq!(rate(100).amount_off(9_999), 9_999);
        assert_eq!(rate(33).amount_off(1), 0);
    }

    #[test]
    fn coupon_limits() {
        assert!(NewCoupon::parse("A", DiscountType::Rate, 101, 1, 1).is_err());
        assert!(NewCoupon::parse("A", DiscountType::Rate, 100, 1, 1).is_ok());
        assert!(NewCoupon::parse("A", DiscountType::Fixed, 10_000_001, 1, 1).is_err());
        assert!(NewCoupon::parse("A", DiscountType::Fixed, 0, 1, 1).is_err());
        assert!(NewCoupon::parse("A", DiscountType::Fixed, 1, 0, 1).is_err());
        assert!(NewCoupon::parse("A", DiscountType::Fixed, 1, 1, 31_536_001).is_err());
        assert!(NewCoupon::parse(&"c".repeat(101), DiscountType::Fixed, 1, 1, 1).is_err());
    }

    #[test]
    fn user_coupon_status_is_computed() {
        let mut uc = UserCoupon {
            id: 1,
            user_id: 1,
            coupon_id: 1,
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

    proptest! {
        #[test]
        fn discount_never_exceeds_total(total in 0i64..=1_000_000_000_000, value in 1i64..=10_000_000, is_rate: bool) {
            let d = if is_rate { rate(value.min(100)) } else { fixed(value) };
            let off = d.amount_off(total);
            prop_assert!(off >= 0 && off <= total);
        }

        #[test]
        fn shards_hold_the_whole_quantity(total in 1i64..=10_000_000) {
            let c = NewCoupon::parse("c", DiscountType::Fixed, 1, total, 1).unwrap();
            let shards = c.shard_quantities();
            prop_assert_eq!(shards.iter().sum::<i64>(), total);
            prop_assert!(shards.iter().all(|q| *q >= 1));
        }
    }
}
