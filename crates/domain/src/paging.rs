//! Keyset paging: `?limit=` (1..=100, default 20) and `?after=<id>`.

use crate::{Error, check_range};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after: Option<i64>,
    pub limit: i64,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 20;

    pub fn new(after: Option<i64>, limit: Option<i64>) -> Result<Self, Error> {
        let limit = check_range(limit.unwrap_or(Self::DEFAULT_LIMIT), 1..=100, "limit")?;
        if let Some(after) = after {
            check_range(after, 1..=i64::MAX, "after")?;
        }
        Ok(Self { after, limit })
    }

    /// `next_after` of a page: the last id when the page is full, else none.
    pub fn next_after<T>(&self, items: &[T], id: impl Fn(&T) -> i64) -> Option<i64> {
        if items.len() as i64 == self.limit {
            items.last().map(id)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_to_twenty_and_is_bounded() {
        assert_eq!(Page::new(None, None).unwrap().limit, 20);
        assert!(Page::new(None, Some(0)).is_err());
        assert!(Page::new(None, Some(101)).is_err());
        assert!(Page::new(None, Some(100)).is_ok());
        assert!(Page::new(Some(0), Some(5)).is_err());
    }

    #[test]
    fn next_after_is_set_only_for_a_full_page() {
        let page = Page::new(None, Some(2)).unwrap();
        assert_eq!(page.next_after(&[5, 4], |x| *x), Some(4));
        assert_eq!(page.next_after(&[5], |x| *x), None);
    }
}
