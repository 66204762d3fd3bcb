//! Products: limits on name, price and stock, the sale status, and the admin's use cases.

use crate::store::Tx;
use crate::{Error, Krw, ProductId, Timestamp, check_range, parse_name};

pub const MAX_PRICE: Krw = Krw(100_000_000);
pub const MAX_INITIAL_STOCK: i64 = 1_000_000;
pub const MAX_RESTOCK: i64 = 1_000_000;
/// Stock never exceeds this, whatever the restocks and refunds (the store's stock guards use it).
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
    pub price: Krw,
    pub stock: i64,
    pub status: ProductStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price: Krw,
    pub stock: i64,
}

impl NewProduct {
    pub fn parse(name: &str, price: Krw, stock: i64) -> Result<Self, Error> {
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
    pub price: Option<Krw>,
    pub status: Option<ProductStatus>,
}

impl ProductPatch {
    pub fn parse(name: Option<&str>, price: Option<Krw>, status: Option<ProductStatus>) -> Result<Self, Error> {
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

pub fn parse_price(price: Krw) -> Result<Krw, Error> {
    check_range(price.0, 0..=MAX_PRICE.0, "price").map(Krw)
}

pub fn parse_restock_quantity(quantity: i64) -> Result<i64, Error> {
    check_range(quantity, 1..=MAX_RESTOCK, "quantity")
}

pub async fn create_product(tx: &mut impl Tx, product: &NewProduct, now: Timestamp) -> Result<Product, Error> {
    Ok(tx.insert_product(product, now).await?)
}

pub async fn patch_product(tx: &mut impl Tx, id: ProductId, patch: &ProductPatch) -> Result<Product, Error> {
    tx.update_product(id, patch).await?.ok_or(Error::ProductNotFound)
}

/// Adds `quantity` to the stock; `VALIDATION_FAILED` when it would pass [`MAX_STOCK`].
pub async fn restock(tx: &mut impl Tx, id: ProductId, quantity: i64) -> Result<Product, Error> {
    match tx.add_stock(id, quantity).await? {
        Some(product) => Ok(product),
        None if tx.product(id).await?.is_none() => Err(Error::ProductNotFound),
        None => Err(Error::validation(format!("stock would exceed {MAX_STOCK}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_product_limits() {
        assert!(NewProduct::parse("Coat", Krw(0), 0).is_ok());
        assert!(NewProduct::parse("Coat", MAX_PRICE, MAX_INITIAL_STOCK).is_ok());
        assert!(NewProduct::parse("Coat", MAX_PRICE + Krw(1), 0).is_err());
        assert!(NewProduct::parse("Coat", Krw(-1), 0).is_err());
        assert!(NewProduct::parse("Coat", Krw(1), -1).is_err());
        assert!(NewProduct::parse("Coat", Krw(1), MAX_INITIAL_STOCK + 1).is_err());
        assert!(NewProduct::parse(" ", Krw(1), 1).is_err());
        assert!(NewProduct::parse(&"x".repeat(201), Krw(1), 1).is_err());
        assert_eq!(NewProduct::parse("  Coat ", Krw(1), 1).unwrap().name, "Coat");
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
