//! Best sellers: the products with the most units in orders paid within the last days, from
//! hourly sales figures that payments add to and refunds take back out of.

use crate::store::Store;
use crate::{Error, Hour, Krw, ProductId, Timestamp, check_range};

/// One ranked product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopularEntry {
    pub product_id: ProductId,
    pub name: String,
    pub price: Krw,
    pub sold_quantity: i64,
}

/// Which best sellers to show: sales of the last `days`×24 hours, at most `limit` products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub days: i64,
    pub limit: i64,
}

impl Window {
    pub const DEFAULT_DAYS: i64 = 3;
    pub const DEFAULT_LIMIT: i64 = 5;

    /// `days` 1..=30 (default 3), `limit` 1..=50 (default 5).
    pub fn parse(days: Option<i64>, limit: Option<i64>) -> Result<Self, Error> {
        Ok(Self {
            days: check_range(days.unwrap_or(Self::DEFAULT_DAYS), 1..=30, "days")?,
            limit: check_range(limit.unwrap_or(Self::DEFAULT_LIMIT), 1..=50, "limit")?,
        })
    }

    /// The first sales hour inside the window that ends at `now`: the hour that holds the
    /// instant `days`×24 hours ago, so the window is whole hours and reaches back a little more.
    pub fn since(&self, now: Timestamp) -> Hour {
        now.plus_seconds(-self.days * 24 * 3_600).hour()
    }
}

/// The best sellers at `now`, ranked by quantity descending then product id ascending. Products
/// not yet released are left out for everyone (the answer is shared, and cached, by all).
pub async fn best_sellers(store: &impl Store, window: Window, now: Timestamp) -> Result<Vec<PopularEntry>, Error> {
    let released_by = crate::catalog::Audience::Everyone.release_cutoff(now).unwrap_or(now);
    Ok(store.popular(window.since(now), window.limit, released_by).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(Window::parse(None, None).unwrap(), Window { days: 3, limit: 5 });
        assert!(Window::parse(Some(0), None).is_err());
        assert!(Window::parse(Some(31), None).is_err());
        assert!(Window::parse(None, Some(0)).is_err());
        assert!(Window::parse(None, Some(51)).is_err());
        assert!(Window::parse(Some(30), Some(50)).is_ok());
    }

    #[test]
    fn the_window_starts_at_the_hour_days_ago() {
        let now = Timestamp(10 * 24 * 3_600_000 + 90 * 60_000); // day 10, 01:30
        let window = Window { days: 3, limit: 5 };
        assert_eq!(window.since(now), Hour(7 * 24 + 1));
    }
}
