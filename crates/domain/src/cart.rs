//! The cart, kept on the server: one list per user of products and quantities, priced at
//! today's prices whenever it is read.

use crate::account::{Addressed, require_user, require_user_in};
use crate::catalog::{Audience, Product, ProductStatus, visible_product};
use crate::order::MAX_LINE_QUANTITY;
use crate::store::{Store, Tx};
use crate::{Error, Krw, ProductId, Timestamp, check_range};

/// One product in a cart, as the product is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    pub product: Product,
    pub quantity: i64,
}

impl CartItem {
    /// Current price × quantity.
    pub fn amount(&self) -> Krw {
        self.product.price * self.quantity
    }
}

/// What the whole cart costs at today's prices.
pub fn total_amount(items: &[CartItem]) -> Krw {
    items.iter().map(CartItem::amount).sum()
}

/// The items of a cart that `audience` may see at `now`. A product carted while released and
/// scheduled again later is hidden (not removed) until its release: cart reads and orders from
/// the cart both see the cart through this.
pub fn visible_items(items: Vec<CartItem>, audience: Audience, now: Timestamp) -> Vec<CartItem> {
    items
        .into_iter()
        .filter(|item| item.product.visible_to(audience, now))
        .collect()
}

/// Products one cart holds at most (audit M6): as many as an order's lines, so that an order
/// from the cart is capped like a direct one. A new product beyond is `409 CART_FULL`; the
/// quantity of a product already in the cart can still change.
pub const MAX_CART_LINES: usize = crate::order::MAX_ORDER_LINES;

/// Sets the quantity of an on-sale product in the addressed user's cart (a new product goes to
/// the end) and returns the whole cart. An unreleased product is `PRODUCT_NOT_FOUND` for a
/// caller who is not an admin; the cart is not bound by `max_per_user`.
pub async fn put_cart_item(
    tx: &mut impl Tx,
    who: Addressed,
    product: ProductId,
    quantity: i64,
    now: Timestamp,
) -> Result<Vec<CartItem>, Error> {
    check_range(quantity, 1..=MAX_LINE_QUANTITY, "quantity")?;
    require_user_in(tx, who).await?;
    let audience = Audience::from(who.actor);
    let found = visible_product(tx.product(product).await?, audience, now)?;
    if found.status != ProductStatus::OnSale {
        return Err(Error::ProductNotOnSale(product));
    }
    // The account's lock makes the count and the insert one step for this user.
    if !tx.lock_account(who.user_id).await? {
        return Err(Error::UserNotFound);
    }
    let items = tx.cart(who.user_id).await?;
    if items.len() >= MAX_CART_LINES && !items.iter().any(|item| item.product.id == product) {
        return Err(Error::CartFull(MAX_CART_LINES));
    }
    tx.put_cart_item(who.user_id, product, quantity).await?;
    Ok(visible_items(tx.cart(who.user_id).await?, audience, now))
}

/// Takes a product out of the cart; nothing happens when it was not there.
pub async fn remove_cart_item(tx: &mut impl Tx, who: Addressed, product: ProductId) -> Result<(), Error> {
    require_user_in(tx, who).await?;
    Ok(tx.remove_cart_items(who.user_id, &[product]).await?)
}

pub async fn clear_cart(tx: &mut impl Tx, who: Addressed) -> Result<(), Error> {
    require_user_in(tx, who).await?;
    Ok(tx.clear_cart(who.user_id).await?)
}

/// The addressed user's cart as the caller may see it at `now`, in the order items were first
/// added.
pub async fn cart(store: &impl Store, who: Addressed, now: Timestamp) -> Result<Vec<CartItem>, Error> {
    require_user(store, who).await?;
    Ok(visible_items(
        store.cart(who.user_id).await?,
        Audience::from(who.actor),
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(price: i64, quantity: i64) -> CartItem {
        CartItem {
            product: Product {
                id: ProductId(1),
                name: "p".to_owned(),
                price: Krw(price),
                stock: 0,
                status: ProductStatus::OnSale,
                sale_starts_at: None,
                max_per_user: None,
            },
            quantity,
        }
    }

    #[test]
    fn the_cart_is_priced_at_current_prices() {
        let items = [item(1_000, 3), item(250, 2)];
        assert_eq!(items[0].amount(), Krw(3_000));
        assert_eq!(total_amount(&items), Krw(3_500));
        assert_eq!(total_amount(&[]), Krw(0));
    }

    #[test]
    fn unreleased_items_are_hidden_but_for_admins() {
        let mut scheduled = item(1_000, 1);
        scheduled.product.id = ProductId(2);
        scheduled.product.sale_starts_at = Some(Timestamp(100));
        let items = vec![item(500, 1), scheduled];
        let ids = |items: Vec<CartItem>| items.iter().map(|i| i.product.id.0).collect::<Vec<_>>();
        assert_eq!(
            ids(visible_items(items.clone(), Audience::Everyone, Timestamp(99))),
            vec![1]
        );
        assert_eq!(
            ids(visible_items(items.clone(), Audience::Admin, Timestamp(99))),
            vec![1, 2]
        );
        assert_eq!(
            ids(visible_items(items, Audience::Everyone, Timestamp(100))),
            vec![1, 2]
        );
    }
}
