//! The prepaid KRW balance: charge limits, the signed history, and the use cases that read and
//! charge it.

use crate::account::{Addressed, require_user, require_user_in};
use crate::paging::Page;
use crate::store::{Store, Tx};
use crate::{BalanceEntryId, Error, Krw, OrderId, Timestamp, UserId};

pub const MIN_CHARGE: Krw = Krw(1_000);
pub const MAX_CHARGE: Krw = Krw(1_000_000);
/// A balance never exceeds this (the store's credit guard uses it).
pub const MAX_BALANCE: Krw = Krw(10_000_000);

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
    pub id: BalanceEntryId,
    pub kind: EntryKind,
    pub amount: Krw,
    pub balance_after: Krw,
    pub order_id: Option<OrderId>,
    pub created_at: Timestamp,
}

/// A line of the history, ready to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewBalanceEntry {
    pub user_id: UserId,
    pub kind: EntryKind,
    pub amount: Krw,
    pub balance_after: Krw,
    pub order_id: Option<OrderId>,
    pub created_at: Timestamp,
}

pub fn check_charge_amount(amount: Krw) -> Result<Krw, Error> {
    if (MIN_CHARGE..=MAX_CHARGE).contains(&amount) {
        Ok(amount)
    } else {
        Err(Error::InvalidChargeAmount)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeReceipt {
    pub charged_amount: Krw,
    pub balance: Krw,
}

/// Adds `amount` to the addressed user's balance and records it.
pub async fn charge(tx: &mut impl Tx, who: Addressed, amount: Krw, now: Timestamp) -> Result<ChargeReceipt, Error> {
    check_charge_amount(amount)?;
    let Some(balance) = tx.credit_balance(who.user_id, amount).await? else {
        // The guard touched no row: either there is no such user or the limit would be passed.
        require_user_in(tx, who).await?;
        return Err(Error::BalanceLimitExceeded);
    };
    tx.append_balance_entry(&NewBalanceEntry {
        user_id: who.user_id,
        kind: EntryKind::Charge,
        amount,
        balance_after: balance,
        order_id: None,
        created_at: now,
    })
    .await?;
    Ok(ChargeReceipt {
        charged_amount: amount,
        balance,
    })
}

/// The addressed user's balance. Reading it is the existence check: no extra query.
pub async fn balance(store: &impl Store, who: Addressed) -> Result<Krw, Error> {
    store.balance(who.user_id).await?.ok_or(Error::UserNotFound)
}

/// The addressed user's balance changes, newest first.
pub async fn balance_history(store: &impl Store, who: Addressed, page: Page) -> Result<Vec<BalanceEntry>, Error> {
    require_user(store, who).await?;
    Ok(store.balance_history(who.user_id, page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn charge_bounds_are_inclusive() {
        assert!(check_charge_amount(Krw(999)).is_err());
        assert!(check_charge_amount(Krw(1_000)).is_ok());
        assert!(check_charge_amount(Krw(1_000_000)).is_ok());
        assert!(check_charge_amount(Krw(1_000_001)).is_err());
    }

    proptest! {
        #[test]
        fn negative_charges_are_invalid_amounts(amount in i64::MIN..0) {
            prop_assert!(matches!(check_charge_amount(Krw(amount)), Err(Error::InvalidChargeAmount)));
        }
    }
}
