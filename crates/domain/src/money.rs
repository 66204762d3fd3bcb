//! Money: whole Korean won. Every amount in the contract is an integer number of KRW, so a
//! 64-bit integer holds it exactly; the limits keep every sum far from overflow.

use std::iter::Sum;
use std::ops::{Add, Mul, Neg, Sub};

i64_newtype! {
    /// An amount of KRW. Signed: a change to a balance is negative for a payment.
    Krw;
}

impl Krw {
    pub const ZERO: Krw = Krw(0);
}

impl Add for Krw {
    type Output = Krw;

    fn add(self, other: Krw) -> Krw {
        Krw(self.0 + other.0)
    }
}

impl Sub for Krw {
    type Output = Krw;

    fn sub(self, other: Krw) -> Krw {
        Krw(self.0 - other.0)
    }
}

impl Neg for Krw {
    type Output = Krw;

    fn neg(self) -> Krw {
        Krw(-self.0)
    }
}

/// A unit price times a quantity.
impl Mul<i64> for Krw {
    type Output = Krw;

    fn mul(self, quantity: i64) -> Krw {
        Krw(self.0 * quantity)
    }
}

impl Sum for Krw {
    fn sum<I: Iterator<Item = Krw>>(amounts: I) -> Krw {
        Krw(amounts.map(|k| k.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_that_of_the_amounts() {
        assert_eq!(Krw(1_000) * 3 - Krw(500) + Krw(0), Krw(2_500));
        assert_eq!(-Krw(2_000), Krw(-2_000));
        assert_eq!([Krw(1), Krw(2), Krw(3)].into_iter().sum::<Krw>(), Krw(6));
        assert_eq!(serde_json::to_string(&Krw(5_000)).unwrap(), "5000");
        assert_eq!(Krw(5_000).to_string(), "5000");
    }
}
