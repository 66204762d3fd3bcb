//! Products: limits on name, price and stock, and the sale status.

use crate::{Error, ProductId, check_range, parse_name};

pub const MAX_PRICE: i64 = 100_000_000;
pub const MAX_INITIAL_STOCK: i64 = 1_000_000;
pub const MAX_RESTOCK: i64 = 1_000_000;
/// Stock never exceeds this, whatever the restocks.
pub const MAX_STOCK: i64 = 10_000_000;

string_enum! {
    /// Whether a product can be put in a cart and ordered.
    pub enum ProductStatus {
        OnSale = "ON_SALE",
        Stopped = "STOPPED",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub price: i64,
    pub stock: i64,
    pub status: ProductStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

impl NewProduct {
    pub fn parse(name: &str, price: i64, stock: i64) -> Result<Self, Error> {
        Ok(Self {
            name: parse_product_name(name)?,
            price: parse_price(price)?,
            stock: check_range(stock, 0..=MAX_INITIAL_STOCK, "stock")?,
        })
    }
}

/// A partial update; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub price: Option<i64>,
    pub status: Option<ProductStatus>,
}

impl ProductPatch {
    pub fn parse(name: Option<&str>, price: Option<i64>, status: Option<ProductStatus>) -> Result<Self, Error> {
        Ok(Self {
            name: name.map(parse_product_name).transpose()?,
            price: price.map(parse_price).transpose()?,
            status,
        })
    }
}

pub fn parse_product_name(raw: &str) -> Result<String, Error> {
    parse_name(raw, 200, "name")
}

pub fn parse_price(price: i64) -> Result<i64, Error> {
    check_range(price, 0..=MAX_PRICE, "price")
}

pub fn parse_restock_quantity(quantity: i64) -> Result<i64, Error> {
    check_range(quantity, 1..=MAX_RESTOCK, "quantity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_product_limits() {
        assert!(NewProduct::parse("Coat", 0, 0).is_ok());
        assert!(NewProduct::parse("Coat", MAX_PRICE, MAX_INITIAL_STOCK).is_ok());
        assert!(NewProduct::parse("Coat", MAX_PRICE + 1, 0).is_err());
        assert!(NewProduct::parse("Coat", -1, 0).is_err());
        assert!(NewProduct::parse("Coat", 1, -1).is_err());
        assert!(NewProduct::parse("Coat", 1, MAX_INITIAL_STOCK + 1).is_err());
        assert!(NewProduct::parse(" ", 1, 1).is_err());
        assert!(NewProduct::parse(&"x".repeat(201), 1, 1).is_err());
        assert_eq!(NewProduct::parse("  Coat ", 1, 1).unwrap().name, "Coat");
    }

    #[test]
    fn restock_quantity_limits() {
        assert!(parse_restock_quantity(0).is_err());
        assert!(parse_restock_quantity(1).is_ok());
        assert!(parse_restock_quantity(MAX_RESTOCK + 1).is_err());
    }

    #[test]
    fn empty_patch_changes_nothing() {
        assert_eq!(ProductPatch::parse(None, None, None).unwrap(), ProductPatch::default());
    }
}
