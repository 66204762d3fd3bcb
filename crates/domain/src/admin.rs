//! What the operators read (the console's admin API): every account with its balance, and the
//! units sold per hour. The lists of every product, coupon and order are plain store reads.

use crate::account::{Role, parse_email};
use crate::paging::Page;
use crate::store::Store;
use crate::{Error, Hour, Krw, Timestamp, UserId, check_range};

/// An account as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub balance: Krw,
    pub created_at: Timestamp,
}

/// Accounts newest first; with `email`, only the account with that email (compared as stored:
/// lower-cased), so a page of zero or one. An `email` that does not look like one is
/// `VALIDATION_FAILED`.
pub async fn find_accounts(store: &impl Store, email: Option<&str>, page: Page) -> Result<Vec<Account>, Error> {
    let email = email.map(|raw| parse_email(raw.trim())).transpose()?;
    Ok(store.accounts(email.as_deref(), page).await?)
}

/// One account; `USER_NOT_FOUND` when there is none.
pub async fn get_account(store: &impl Store, id: UserId) -> Result<Account, Error> {
    store.account(id).await?.ok_or(Error::UserNotFound)
}

/// Units sold in one hour: paid minus refunded, from the hourly sales figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlySales {
    pub hour: Hour,
    pub quantity: i64,
}

/// Which hours the sales chart shows: the last `hours` whole hours, the current one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SalesWindow {
    pub hours: i64,
}

impl SalesWindow {
    pub const DEFAULT_HOURS: i64 = 72;
    pub const MAX_HOURS: i64 = 168;

    /// `hours` 1..=168 (a week), default 72 (3 days).
    pub fn parse(hours: Option<i64>) -> Result<Self, Error> {
        let hours = check_range(hours.unwrap_or(Self::DEFAULT_HOURS), 1..=Self::MAX_HOURS, "hours")?;
        Ok(Self { hours })
    }

    /// The first hour of the window that ends with the hour holding `now`.
    pub fn since(&self, now: Timestamp) -> Hour {
        Hour(now.hour().0 - (self.hours - 1))
    }

    /// One figure per hour of the window, oldest first, 0 for hours with no sales; `sold` are the
    /// hours the store knows (any order, hours outside the window ignored).
    pub fn series(&self, now: Timestamp, sold: &[HourlySales]) -> Vec<HourlySales> {
        let since = self.since(now);
        let mut series: Vec<HourlySales> = (0..self.hours)
            .map(|i| HourlySales {
                hour: Hour(since.0 + i),
                quantity: 0,
            })
            .collect();
        for s in sold {
            let index = s.hour.0 - since.0;
            if let Some(slot) = usize::try_from(index).ok().and_then(|i| series.get_mut(i)) {
                slot.quantity += s.quantity;
            }
        }
        series
    }
}

/// Units sold per hour over the window ending now.
pub async fn hourly_sales(store: &impl Store, window: SalesWindow, now: Timestamp) -> Result<Vec<HourlySales>, Error> {
    let sold = store.sales_by_hour(window.since(now)).await?;
    Ok(window.series(now, &sold))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn hours_default_to_72_and_are_bounded() {
        assert_eq!(SalesWindow::parse(None).unwrap().hours, 72);
        assert!(SalesWindow::parse(Some(0)).is_err());
        assert!(SalesWindow::parse(Some(169)).is_err());
        assert_eq!(SalesWindow::parse(Some(168)).unwrap().hours, 168);
    }

    #[test]
    fn the_window_ends_with_the_current_hour() {
        let now = Timestamp(100 * HOUR + 1234);
        let window = SalesWindow::parse(Some(3)).unwrap();
        assert_eq!(window.since(now), Hour(98));
    }

    #[test]
    fn the_series_has_every_hour_oldest_first_with_zeros_and_ignores_hours_outside() {
        let now = Timestamp(100 * HOUR + 5);
        let window = SalesWindow::parse(Some(3)).unwrap();
        let sold = [
            HourlySales {
                hour: Hour(100),
                quantity: 4,
            },
            HourlySales {
                hour: Hour(97),
                quantity: 9,
            },
            HourlySales {
                hour: Hour(98),
                quantity: 2,
            },
            HourlySales {
                hour: Hour(101),
                quantity: 7,
            },
        ];
        let series = window.series(now, &sold);
        let got: Vec<(i64, i64)> = series.iter().map(|s| (s.hour.0, s.quantity)).collect();
        assert_eq!(got, vec![(98, 2), (99, 0), (100, 4)]);
    }
}
