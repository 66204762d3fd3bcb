//! Use cases, written once for both engines. Each runs inside a transaction the caller owns
//! (`&mut impl Tx`) and commits; on any `Err` the caller drops the transaction, which rolls back
//! every write made so far. That is what makes "nothing half-done" hold.

use crate::account::NewUser;
use crate::catalog::{MAX_STOCK, NewProduct, Product, ProductPatch, ProductStatus};
use crate::coupon::Coupon;
use crate::events::{self, Event};
use crate::order::{LineRequest, NewOrder, Order, OrderStatus, check_direct_lines, price_lines};
use crate::store::Tx;
use crate::wallet::{ChargeReceipt, EntryKind, MAX_BALANCE, check_charge_amount};
use crate::{Error, OrderId, ProductId, Timestamp, UserCouponId, UserId};

/// Who is asking: orders of other users are invisible to everyone but admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub is_admin: bool,
}

impl Actor {
    pub fn may_access(&self, owner: UserId) -> bool {
        self.is_admin || self.user_id == owner
    }
}

pub async fn sign_up(tx: &mut impl Tx, user: &NewUser, now: Timestamp) -> Result<UserId, Error> {
    tx.insert_user(user, now).await?.ok_or(Error::EmailTaken)
}

pub async fn create_product(tx: &mut impl Tx, product: &NewProduct, now: Timestamp) -> Result<Product, Error> {
    Ok(tx.insert_product(product, now).await?)
}

pub async fn patch_product(tx: &mut impl Tx, id: ProductId, patch: &ProductPatch) -> Result<Product, Error> {
    tx.update_product(id, patch).await?.ok_or(Error::ProductNotFound)
}

pub async fn restock(tx: &mut impl Tx, id: ProductId, quantity: i64) -> Result<Product, Error> {
    match tx.add_stock(id, quantity, MAX_STOCK).await? {
        Some(product) => Ok(product),
        None if tx.product(id).await?.is_none() => Err(Error::ProductNotFound),
        None => Err(Error::validation(format!("stock would exceed {MAX_STOCK}"))),
    }
}

async fn require_user(tx: &mut impl Tx, user: UserId) -> Result<(), Error> {
    if tx.user_exists(user).await? {
        Ok(())
    } else {
        Err(Error::UserNotFound)
    }
}

pub async fn charge(tx: &mut impl Tx, user: UserId, amount: i64, now: Timestamp) -> Result<ChargeReceipt, Error> {
    check_charge_amount(amount)?;
    let Some(balance) = tx.credit_balance(user, amount, MAX_BALANCE).await? else {
        // The guard touched no row: either there is no such user or the limit would be passed.
        require_user(tx, user).await?;
        return Err(Error::BalanceLimitExceeded);
    };
    tx.append_balance_entry(user, EntryKind::Charge, amount, balance, None, now)
        .await?;
    Ok(ChargeReceipt {
        charged_amount: amount,
        balance,
    })
}

pub async fn put_cart_item(tx: &mut impl Tx, user: UserId, product: ProductId, quantity: i64) -> Result<(), Error> {
    crate::check_range(quantity, 1..=crate::order::MAX_LINE_QUANTITY, "quantity")?;
    require_user(tx, user).await?;
    let found = tx.product(product).await?.ok_or(Error::ProductNotFound)?;
    if found.status != ProductStatus::OnSale {
        return Err(Error::ProductNotOnSale(product));
    }
    Ok(tx.put_cart_item(user, product, quantity).await?)
}

/// Where the lines of a new order come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderSource {
    Lines(Vec<LineRequest>),
    Cart,
}

/// Prices the order at today's prices and saves it `PENDING_PAYMENT`. Stock is checked, not
/// reserved: payment takes it.
pub async fn create_order(
    tx: &mut impl Tx,
    user: UserId,
    source: &OrderSource,
    now: Timestamp,
    ttl_seconds: i64,
) -> Result<Order, Error> {
    require_user(tx, user).await?;
    let requested = match source {
        OrderSource::Lines(lines) => {
            check_direct_lines(lines)?;
            lines.clone()
        }
        OrderSource::Cart => {
            let cart = tx.cart(user).await?;
            if cart.is_empty() {
                return Err(Error::CartEmpty);
            }
            cart.iter()
                .map(|i| LineRequest {
                    product_id: i.product.id,
                    quantity: i.quantity,
                })
                .collect()
        }
    };
    let mut products = Vec::with_capacity(requested.len());
    for line in &requested {
        products.push(tx.product(line.product_id).await?);
    }
    let new_order = NewOrder::new(user, price_lines(&requested, &products)?, now, ttl_seconds);
    let id = tx.insert_order(&new_order).await?;
    Ok(Order {
        id,
        user_id: user,
        stored_status: OrderStatus::PendingPayment,
        lines: new_order.lines,
        total_amount: new_order.total_amount,
        discount_amount: 0,
        paid_amount: 0,
        user_coupon_id: None,
        created_at: new_order.created_at,
        expires_at: new_order.expires_at,
        paid_at: None,
    })
}

/// First come, first served: one per user (checked first), never more than the total.
pub async fn issue_coupon(
    tx: &mut impl Tx,
    user: UserId,
    coupon: &Coupon,
    now: Timestamp,
    first_shard: i64,
) -> Result<UserCouponId, Error> {
    require_user(tx, user).await?;
    let expires_at = now.plus_seconds(coupon.valid_for_seconds);
    let id = tx
        .insert_user_coupon(user, coupon.id, now, expires_at)
        .await?
        .ok_or(Error::CouponAlreadyIssued)?;
    if !tx.take_coupon(coupon.id, first_shard).await? {
        return Err(Error::CouponSoldOut);
    }
    Ok(id)
}

async fn visible_order(tx: &mut impl Tx, id: OrderId, actor: Actor) -> Result<Order, Error> {
    tx.order(id)
        .await?
        .filter(|o| actor.may_access(o.user_id))
        .ok_or(Error::OrderNotFound)
}

/// Lines in product-id order: every multi-row write takes product rows in this order.
fn lines_by_product(order: &Order) -> Vec<(ProductId, i64)> {
    let mut lines: Vec<_> = order.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    lines.sort_unstable();
    lines
}

/// What a successful payment or refund leaves behind for the caller.
pub struct Settled {
    pub order: Order,
    pub event: Event,
}

/// Pays a pending order from the owner's balance, in the lock order of [`crate::store`]. Errors
/// come in the contract's order: order state, coupon, stock, balance.
pub async fn pay(
    tx: &mut impl Tx,
    id: OrderId,
    actor: Actor,
    user_coupon: Option<UserCouponId>,
    now: Timestamp,
) -> Result<Settled, Error> {
    let mut order = visible_order(tx, id, actor).await?;
    order.check_pending(now)?;
    let discount = match user_coupon {
        None => 0,
        Some(coupon_id) => {
            let coupon = tx
                .user_coupon(coupon_id)
                .await?
                .filter(|c| c.user_id == order.user_id)
                .ok_or(Error::CouponNotFound)?;
            coupon.check_usable(now)?;
            coupon.discount.amount_off(order.total_amount)
        }
    };
    let paid = order.total_amount - discount;
    if !tx.mark_paid(id, discount, paid, user_coupon, now).await? {
        // Another request changed the order since we read it.
        visible_order(tx, id, actor).await?.check_pending(now)?;
        return Err(Error::OrderNotPending);
    }
    if let Some(coupon_id) = user_coupon
        && !tx.use_coupon(coupon_id, id, now).await?
    {
        if let Some(coupon) = tx.user_coupon(coupon_id).await? {
            coupon.check_usable(now)?;
        }
        return Err(Error::CouponAlreadyUsed);
    }
    let lines = lines_by_product(&order);
    for &(product, quantity) in &lines {
        if !tx.take_stock(product, quantity).await? {
            return Err(Error::OutOfStock(product));
        }
    }
    let balance = tx
        .debit_balance(order.user_id, paid)
        .await?
        .ok_or(Error::InsufficientBalance)?;
    tx.append_balance_entry(order.user_id, EntryKind::Payment, -paid, balance, Some(id), now)
        .await?;
    let products: Vec<ProductId> = lines.iter().map(|(p, _)| *p).collect();
    tx.remove_cart_items(order.user_id, &products).await?;
    for &(product, quantity) in &lines {
        tx.add_sales(product, now.hour(), quantity).await?;
    }
    order.stored_status = OrderStatus::Paid;
    order.discount_amount = discount;
    order.paid_amount = paid;
    order.user_coupon_id = user_coupon;
    order.paid_at = Some(now);
    let event = events::order_paid(&order, now);
    tx.append_outbox(&event.id, event.event_type, id, &event.payload, now)
        .await?;
    Ok(Settled { order, event })
}

pub async fn cancel(tx: &mut impl Tx, id: OrderId, actor: Actor, now: Timestamp) -> Result<Order, Error> {
    let mut order = visible_order(tx, id, actor).await?;
    order.check_pending(now)?;
    if !tx.mark_cancelled(id, now).await? {
        visible_order(tx, id, actor).await?.check_pending(now)?;
        return Err(Error::OrderNotPending);
    }
    order.stored_status = OrderStatus::Cancelled;
    Ok(order)
}

/// Gives back the paid amount and the stock, frees the coupon and takes the sale out of the
/// best-seller figures of the hour it was paid in.
pub async fn refund(tx: &mut impl Tx, id: OrderId, actor: Actor, now: Timestamp) -> Result<Settled, Error> {
    let mut order = visible_order(tx, id, actor).await?;
    order.check_refundable()?;
    if !tx.mark_refunded(id, now).await? {
        return Err(Error::OrderNotPaid);
    }
    if let Some(coupon_id) = order.user_coupon_id {
        tx.release_coupon(coupon_id).await?;
    }
    let lines = lines_by_product(&order);
    for &(product, quantity) in &lines {
        tx.add_stock(product, quantity, i64::MAX).await?;
    }
    let balance = tx
        .credit_balance(order.user_id, order.paid_amount, MAX_BALANCE)
        .await?
        .ok_or(Error::BalanceLimitExceeded)?;
    tx.append_balance_entry(
        order.user_id,
        EntryKind::Refund,
        order.paid_amount,
        balance,
        Some(id),
        now,
    )
    .await?;
    let paid_hour = order.paid_at.unwrap_or(now).hour();
    for &(product, quantity) in &lines {
        tx.add_sales(product, paid_hour, -quantity).await?;
    }
    order.stored_status = OrderStatus::Refunded;
    let event = events::order_refunded(&order, now);
    tx.append_outbox(&event.id, event.event_type, id, &event.payload, now)
        .await?;
    Ok(Settled { order, event })
}
