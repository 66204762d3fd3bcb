//! Products: limits on name, price and stock, the sale status, the scheduled release and the
//! per-customer limit of a limited drop, and the admin's use cases.
//!
//! **Scheduled release.** A product whose `sale_starts_at` is still ahead is *unreleased*: for
//! everyone but an admin it does not exist. [`Product::visible_to`] decides that, and
//! [`Audience::release_cutoff`] is the same rule for lists that the store filters; every route
//! asks one of the two. The release is a comparison with the clock of the request, so a product
//! is released at its instant on every instance with no job to run.
//!
//! **Per-customer limit.** `max_per_user` bounds the quantity of the product in one user's
//! `PAID` orders (see [`crate::payment`] for the tally that enforces it).

use crate::account::Actor;
use crate::paging::Page;
use crate::store::{Store, Tx};
use crate::{Error, Krw, ProductId, Timestamp, check_range, parse_name};

pub const MAX_PRICE: Krw = Krw(100_000_000);
pub const MAX_INITIAL_STOCK: i64 = 1_000_000;
pub const MAX_RESTOCK: i64 = 1_000_000;
/// Stock never exceeds this, whatever the restocks and refunds (the store's stock guards use it).
pub const MAX_STOCK: i64 = 10_000_000;
/// `max_per_user` is 1..=this.
pub const MAX_PER_USER: i64 = 1_000;

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
    /// Before this instant the product is unreleased; `None`: released from its creation.
    pub sale_starts_at: Option<Timestamp>,
    /// The most units one user may hold in `PAID` orders; `None`: no limit.
    pub max_per_user: Option<i64>,
}

/// Who looks at the catalog: an admin sees unreleased products, everyone else does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// No token, or a user's token.
    Everyone,
    Admin,
}

impl Audience {
    /// The audience of a request made with `actor`'s token, or with none.
    pub fn of(actor: Option<Actor>) -> Self {
        match actor {
            Some(actor) if actor.is_admin => Self::Admin,
            _ => Self::Everyone,
        }
    }

    /// For lists filtered by the store: `Some(now)` shows only products released by `now`,
    /// `None` shows unreleased ones too. The same rule as [`Product::visible_to`].
    pub fn release_cutoff(self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Everyone => Some(now),
            Self::Admin => None,
        }
    }
}

impl From<Actor> for Audience {
    fn from(actor: Actor) -> Self {
        Self::of(Some(actor))
    }
}

impl Product {
    /// Released at `now`: no `sale_starts_at`, or it has come.
    pub fn is_released(&self, now: Timestamp) -> bool {
        self.sale_starts_at.is_none_or(|starts| starts <= now)
    }

    /// Whether the product exists for `audience` at `now`: the one rule of the scheduled
    /// release, asked by every route that shows, carts or orders a product.
    pub fn visible_to(&self, audience: Audience, now: Timestamp) -> bool {
        audience == Audience::Admin || self.is_released(now)
    }

    /// Whether `user_paid` units already paid and `quantity` more stay within `max_per_user`.
    pub fn allows_purchase(&self, user_paid: i64, quantity: i64) -> bool {
        self.max_per_user
            .is_none_or(|limit| user_paid.saturating_add(quantity) <= limit)
    }
}

/// The product that `audience` asked for by id: `PRODUCT_NOT_FOUND` when there is none or it is
/// unreleased and the audience is not an admin.
pub fn visible_product(product: Option<Product>, audience: Audience, now: Timestamp) -> Result<Product, Error> {
    product
        .filter(|p| p.visible_to(audience, now))
        .ok_or(Error::ProductNotFound)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price: Krw,
    pub stock: i64,
    pub sale_starts_at: Option<Timestamp>,
    pub max_per_user: Option<i64>,
}

/// A product as an admin sent it, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductRequest<'a> {
    pub name: &'a str,
    pub price: Krw,
    pub stock: i64,
    /// RFC 3339, or `None`.
    pub sale_starts_at: Option<&'a str>,
    pub max_per_user: Option<i64>,
}

impl NewProduct {
    pub fn parse(request: ProductRequest<'_>) -> Result<Self, Error> {
        Ok(Self {
            name: parse_product_name(request.name)?,
            price: parse_price(request.price)?,
            stock: check_range(request.stock, 0..=MAX_INITIAL_STOCK, "stock")?,
            sale_starts_at: request.sale_starts_at.map(parse_sale_starts_at).transpose()?,
            max_per_user: request.max_per_user.map(parse_max_per_user).transpose()?,
        })
    }

    /// A product with only the v1 fields: released, no limit.
    pub fn simple(name: &str, price: Krw, stock: i64) -> Result<Self, Error> {
        Self::parse(ProductRequest {
            name,
            price,
            stock,
            sale_starts_at: None,
            max_per_user: None,
        })
    }
}

/// A partial update; `None` leaves the field as it is. The two nullable fields are double
/// options: `Some(None)` clears them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub price: Option<Krw>,
    pub status: Option<ProductStatus>,
    pub sale_starts_at: Option<Option<Timestamp>>,
    pub max_per_user: Option<Option<i64>>,
}

/// A PATCH body as an admin sent it, before validation (`None` absent, `Some(None)` null).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchRequest<'a> {
    pub name: Option<&'a str>,
    pub price: Option<Krw>,
    pub status: Option<ProductStatus>,
    pub sale_starts_at: Option<Option<&'a str>>,
    pub max_per_user: Option<Option<i64>>,
}

impl ProductPatch {
    pub fn parse(request: PatchRequest<'_>) -> Result<Self, Error> {
        Ok(Self {
            name: request.name.map(parse_product_name).transpose()?,
            price: request.price.map(parse_price).transpose()?,
            status: request.status,
            sale_starts_at: request
                .sale_starts_at
                .map(|v| v.map(parse_sale_starts_at).transpose())
                .transpose()?,
            max_per_user: request
                .max_per_user
                .map(|v| v.map(parse_max_per_user).transpose())
                .transpose()?,
        })
    }
}

pub fn parse_sale_starts_at(raw: &str) -> Result<Timestamp, Error> {
    Timestamp::parse_rfc3339(raw, "sale_starts_at")
}

pub fn parse_max_per_user(limit: i64) -> Result<i64, Error> {
    check_range(limit, 1..=MAX_PER_USER, "max_per_user")
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

/// One product as `audience` may see it at `now`.
pub async fn get_product(
    store: &impl Store,
    id: ProductId,
    audience: Audience,
    now: Timestamp,
) -> Result<Product, Error> {
    visible_product(store.product(id).await?, audience, now)
}

/// The `ON_SALE` products `audience` may see at `now`, ascending by id.
pub async fn list_products(
    store: &impl Store,
    audience: Audience,
    now: Timestamp,
    page: Page,
) -> Result<Vec<Product>, Error> {
    Ok(store.products_on_sale(page, audience.release_cutoff(now)).await?)
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

    fn product(sale_starts_at: Option<i64>, max_per_user: Option<i64>) -> Product {
        Product {
            id: ProductId(1),
            name: "Coat".to_owned(),
            price: Krw(1_000),
            stock: 5,
            status: ProductStatus::OnSale,
            sale_starts_at: sale_starts_at.map(Timestamp),
            max_per_user,
        }
    }

    fn request(sale_starts_at: Option<&str>, max_per_user: Option<i64>) -> ProductRequest<'_> {
        ProductRequest {
            name: "Coat",
            price: Krw(1),
            stock: 1,
            sale_starts_at,
            max_per_user,
        }
    }

    #[test]
    fn new_product_limits() {
        assert!(NewProduct::simple("Coat", Krw(0), 0).is_ok());
        assert!(NewProduct::simple("Coat", MAX_PRICE, MAX_INITIAL_STOCK).is_ok());
        assert!(NewProduct::simple("Coat", MAX_PRICE + Krw(1), 0).is_err());
        assert!(NewProduct::simple("Coat", Krw(-1), 0).is_err());
        assert!(NewProduct::simple("Coat", Krw(1), -1).is_err());
        assert!(NewProduct::simple("Coat", Krw(1), MAX_INITIAL_STOCK + 1).is_err());
        assert!(NewProduct::simple(" ", Krw(1), 1).is_err());
        assert!(NewProduct::simple(&"x".repeat(201), Krw(1), 1).is_err());
        assert_eq!(NewProduct::simple("  Coat ", Krw(1), 1).unwrap().name, "Coat");
    }

    #[test]
    fn drop_fields_limits() {
        assert!(NewProduct::parse(request(None, Some(0))).is_err());
        assert!(NewProduct::parse(request(None, Some(-1))).is_err());
        assert!(NewProduct::parse(request(None, Some(MAX_PER_USER + 1))).is_err());
        assert_eq!(NewProduct::parse(request(None, Some(1))).unwrap().max_per_user, Some(1));
        assert_eq!(
            NewProduct::parse(request(None, Some(MAX_PER_USER)))
                .unwrap()
                .max_per_user,
            Some(MAX_PER_USER)
        );
        assert!(NewProduct::parse(request(Some("soon"), None)).is_err());
        assert!(NewProduct::parse(request(Some("2026-12-01"), None)).is_err());
        assert_eq!(
            NewProduct::parse(request(Some("1970-01-01T00:00:01Z"), None))
                .unwrap()
                .sale_starts_at,
            Some(Timestamp(1_000))
        );
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let patch = ProductPatch::parse(PatchRequest {
            sale_starts_at: Some(None),
            max_per_user: Some(Some(3)),
            ..PatchRequest::default()
        })
        .unwrap();
        assert_eq!(patch.sale_starts_at, Some(None));
        assert_eq!(patch.max_per_user, Some(Some(3)));
        assert!(
            ProductPatch::parse(PatchRequest {
                max_per_user: Some(Some(1_001)),
                ..PatchRequest::default()
            })
            .is_err()
        );
        assert!(
            ProductPatch::parse(PatchRequest {
                sale_starts_at: Some(Some("x")),
                ..PatchRequest::default()
            })
            .is_err()
        );
    }

    #[test]
    fn an_unreleased_product_exists_only_for_admins() {
        let scheduled = product(Some(1_000), None);
        assert!(!scheduled.visible_to(Audience::Everyone, Timestamp(999)));
        assert!(scheduled.visible_to(Audience::Admin, Timestamp(999)));
        assert!(
            scheduled.visible_to(Audience::Everyone, Timestamp(1_000)),
            "released at the instant"
        );
        assert!(product(None, None).visible_to(Audience::Everyone, Timestamp(0)));
        assert!(matches!(
            visible_product(Some(scheduled.clone()), Audience::Everyone, Timestamp(999)),
            Err(Error::ProductNotFound)
        ));
        assert!(visible_product(Some(scheduled), Audience::Admin, Timestamp(999)).is_ok());
        assert!(matches!(
            visible_product(None, Audience::Admin, Timestamp(0)),
            Err(Error::ProductNotFound)
        ));
    }

    #[test]
    fn the_list_cutoff_is_the_same_rule() {
        assert_eq!(Audience::Everyone.release_cutoff(Timestamp(5)), Some(Timestamp(5)));
        assert_eq!(Audience::Admin.release_cutoff(Timestamp(5)), None);
        let user = Actor {
            user_id: crate::UserId(1),
            is_admin: false,
        };
        assert_eq!(Audience::of(None), Audience::Everyone);
        assert_eq!(Audience::of(Some(user)), Audience::Everyone);
        assert_eq!(Audience::from(Actor { is_admin: true, ..user }), Audience::Admin);
    }

    #[test]
    fn the_limit_counts_what_was_paid() {
        let limited = product(None, Some(2));
        assert!(limited.allows_purchase(0, 2));
        assert!(limited.allows_purchase(1, 1));
        assert!(!limited.allows_purchase(1, 2));
        assert!(
            !limited.allows_purchase(3, 1),
            "a lowered limit refuses the next purchase"
        );
        assert!(product(None, None).allows_purchase(i64::MAX, 1_000));
    }

    #[test]
    fn restock_quantity_limits() {
        assert!(parse_restock_quantity(0).is_err());
        assert!(parse_restock_quantity(1).is_ok());
        assert!(parse_restock_quantity(MAX_RESTOCK + 1).is_err());
    }

    #[test]
    fn empty_patch_changes_nothing() {
        assert_eq!(
            ProductPatch::parse(PatchRequest::default()).unwrap(),
            ProductPatch::default()
        );
    }
}
