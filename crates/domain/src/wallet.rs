//! The prepaid KRW balance: charge limits and the signed history.

use crate::{Error, OrderId, Timestamp};

pub const MIN_CHARGE: i64 = 1_000;
pub const MAX_CHARGE: i64 = 1_000_000;
pub const MAX_BALANCE: i64 = 10_000_000;

string_enum! {
    /// Why the balance changed.
    pub enum EntryKind {
        Charge = "CHARGE",
        Payment = "PAYMENT",
        Refund = "REFUND",
    }
}

/// One line of the balance history. `amount` is signed: the change to the balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceEntry {
    pub id: i64,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: i64,
    pub order_id: Option<OrderId>,
    pub created_at: Timestamp,
}

pub fn check_charge_amount(amount: i64) -> Result<i64, Error> {
    if (MIN_CHARGE..=MAX_CHARGE).contains(&amount) {
        Ok(amount)
    } else {
        Err(Error::InvalidChargeAmount)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeReceipt {
    pub charged_amount: i64,
    pub balance: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn charge_bounds_are_inclusive() {
        assert!(check_charge_amount(999).is_err());
        assert!(check_charge_amount(1_000).is_ok());
        assert!(check_charge_amount(1_000_000).is_ok());
        assert!(check_charge_amount(1_000_001).is_err());
    }

    proptest! {
        #[test]
        fn negative_charges_are_invalid_amounts(amount in i64::MIN..0) {
            prop_assert!(matches!(check_charge_amount(amount), Err(Error::InvalidChargeAmount)));
        }
    }
}
