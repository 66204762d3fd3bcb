//! Invariants read straight from the database after a run (DESIGN.md, "Invariants"). The
//! queries live once, in `ecommerce_testkit::invariants`, shared with the black-box tests.

use ecommerce_testkit::invariants;

use crate::stats::Check;

fn converted(checks: Vec<invariants::Check>) -> Vec<Check> {
    checks
        .into_iter()
        .map(|check| Check::new(check.name, check.ok, check.detail))
        .collect()
}

/// Checks that hold after any scenario: stock, balances and their history, events, coupons.
pub async fn database(url: &str) -> Vec<Check> {
    converted(invariants::database(url).await)
}

/// A rush issues exactly min(requests, total) coupons, never more than the total.
pub async fn coupon_count(url: &str, coupon_id: i64, requests: i64, total: i64) -> Vec<Check> {
    converted(invariants::coupon_rush(url, coupon_id, requests, total).await)
}
