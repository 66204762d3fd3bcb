//! Paying an order from the balance, and refunding it: the two use cases that move money,
//! stock and coupons together. Each is one unit of work in the lock order of [`crate::store`];
//! on any `Err` the caller drops the transaction, which rolls back every write made so far, so
//! nothing is ever half done.
//!
//! **Per-customer limits.** Every payment adds its quantities to the user's purchase tally (one
//! row per user and product) with a guarded write that holds only while the tally stays within
//! the product's `max_per_user`; a refund takes them back off. The tally row is the lock: several
//! pending orders of one user paid at once, on any number of instances, queue on it and stop
//! exactly at the limit. Every purchase is counted, limited or not, so that a limit set later
//! counts what was bought before it.

use crate::account::Actor;
use crate::events::{self, Event};
use crate::order::{Order, OrderStatus, visible_order};
use crate::store::{Store, Tx};
use crate::wallet::{EntryKind, NewBalanceEntry};
use crate::{Error, OrderId, ProductId, Timestamp, UserCouponId};

/// What a successful payment or refund leaves behind for the caller.
#[derive(Debug)]
pub struct Settled {
    pub order: Order,
    pub event: Event,
}

/// Lines in product-id order: every multi-row write takes product rows in this order.
fn lines_by_product(order: &Order) -> Vec<(ProductId, i64)> {
    let mut lines: Vec<_> = order.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    lines.sort_unstable();
    lines
}

/// Pays a pending order from the owner's balance, in the lock order of [`crate::store`]. Errors
/// come in the contract's order: order state, coupon, per-customer limit, stock, balance.
/// `event_id` names the `order.paid` event. The product's release and sale status were checked
/// when the order was made and are not asked again (as for the price).
pub async fn pay(
    tx: &mut impl Tx,
    id: OrderId,
    actor: Actor,
    user_coupon: Option<UserCouponId>,
    now: Timestamp,
    event_id: String,
) -> Result<Settled, Error> {
    let mut order = visible_order(tx.order(id).await?, actor)?;
    order.check_pending(now)?;
    let coupon = match user_coupon {
        None => None,
        Some(coupon_id) => {
            let coupon = tx
                .user_coupon(coupon_id)
                .await?
                .filter(|c| c.user_id == order.user_id)
                .ok_or(Error::CouponNotFound)?;
            coupon.check_usable(now)?;
            Some(coupon)
        }
    };
    let payment = order.payment(coupon.as_ref(), now);
    if !tx.mark_paid(id, &payment).await? {
        // Another request changed the order since we read it.
        visible_order(tx.order(id).await?, actor)?.check_pending(now)?;
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
        if !tx.add_purchase(order.user_id, product, quantity).await? {
            return Err(Error::PurchaseLimitExceeded(product));
        }
    }
    // A draw's order holds its unit already (set aside when the draw was created).
    let takes_stock = order.draw_id.is_none();
    for &(product, quantity) in lines.iter().filter(|_| takes_stock) {
        if !tx.take_stock(product, quantity).await? {
            return Err(Error::OutOfStock(product));
        }
    }
    let balance = tx
        .debit_balance(order.user_id, payment.paid_amount)
        .await?
        .ok_or(Error::InsufficientBalance)?;
    tx.append_balance_entry(&NewBalanceEntry {
        user_id: order.user_id,
        kind: EntryKind::Payment,
        amount: -payment.paid_amount,
        balance_after: balance,
        order_id: Some(id),
        created_at: now,
    })
    .await?;
    let products: Vec<ProductId> = lines.iter().map(|(p, _)| *p).collect();
    tx.remove_cart_items(order.user_id, &products).await?;
    for &(product, quantity) in &lines {
        tx.add_sales(product, now.hour(), quantity).await?;
    }
    order.mark_paid(&payment);
    let event = events::order_paid(&order, now, event_id);
    tx.append_outbox(&event).await?;
    Ok(Settled { order, event })
}

/// What the owner of an order may still buy of one of its products: the product's
/// `max_per_user` and the units of it in the owner's paid orders (the purchase tally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub product_id: ProductId,
    pub max_per_user: Option<i64>,
    pub purchased: i64,
}

impl Allowance {
    /// Whether `quantity` more units stay within the limit.
    pub fn allows(&self, quantity: i64) -> bool {
        self.max_per_user
            .is_none_or(|limit| self.purchased.saturating_add(quantity) <= limit)
    }
}

/// The sold-out gate of a hot product: when `known_stock` says (from a recent look at the
/// database) that a product of the order has less stock than the order needs, the payment's
/// answer is `OUT_OF_STOCK` as long as everything the contract checks before the stock holds —
/// the order is the actor's and pending, the coupon is the owner's and usable, the per-customer
/// limit allows it. This decides that from reads alone, with no write: `Some(OutOfStock)` is
/// the answer to give, `None` means the payment must run (to succeed, or to fail on something
/// else, which it then reports in the contract's order). An order whose units were set aside
/// beforehand (a draw winner's) takes no stock at payment and must never be refused here.
/// `order` and `allowances` are what the caller just read in one go
/// ([`Store::order_for_payment`]); only a coupon, when one is given, is read here.
pub async fn refusal_without_writes(
    store: &impl Store,
    order: &Order,
    allowances: &[Allowance],
    actor: Actor,
    user_coupon: Option<UserCouponId>,
    now: Timestamp,
    known_stock: impl Fn(ProductId) -> Option<i64>,
) -> Result<Option<Error>, Error> {
    if !actor.may_access(order.user_id) {
        return Ok(None);
    }
    if order.draw_id.is_some() {
        // A draw's order holds its unit already: it never fails on stock.
        return Ok(None);
    }
    let lines = lines_by_product(order);
    let Some(&(sold_out, _)) = lines
        .iter()
        .find(|&&(product, quantity)| known_stock(product).is_some_and(|stock| stock < quantity))
    else {
        return Ok(None);
    };
    if order.check_pending(now).is_err() {
        return Ok(None);
    }
    let within_limits = lines.iter().all(|&(product, quantity)| {
        allowances
            .iter()
            .find(|a| a.product_id == product)
            .is_some_and(|a| a.allows(quantity))
    });
    if !within_limits {
        return Ok(None);
    }
    if let Some(coupon_id) = user_coupon {
        let usable = store
            .user_coupon(coupon_id)
            .await?
            .is_some_and(|c| c.user_id == order.user_id && c.check_usable(now).is_ok());
        if !usable {
            return Ok(None);
        }
    }
    Ok(Some(Error::OutOfStock(sold_out)))
}

/// Gives back the paid amount, the stock (up to [`crate::catalog::MAX_STOCK`]: a refund never fails on
/// stock) and the per-customer allowance, frees the coupon and takes the sale out of the
/// best-seller figures of the hour it was paid in. `event_id` names the `order.refunded` event.
pub async fn refund(
    tx: &mut impl Tx,
    id: OrderId,
    actor: Actor,
    now: Timestamp,
    event_id: String,
) -> Result<Settled, Error> {
    let mut order = visible_order(tx.order(id).await?, actor)?;
    order.check_refundable()?;
    if !tx.mark_refunded(id, now).await? {
        return Err(Error::OrderNotPaid);
    }
    if let Some(coupon_id) = order.user_coupon_id {
        tx.release_coupon(coupon_id).await?;
    }
    let lines = lines_by_product(&order);
    for &(product, quantity) in &lines {
        tx.remove_purchase(order.user_id, product, quantity).await?;
    }
    for &(product, quantity) in &lines {
        tx.return_stock(product, quantity).await?;
    }
    let balance = tx
        .credit_balance(order.user_id, order.paid_amount)
        .await?
        .ok_or(Error::BalanceLimitExceeded)?;
    tx.append_balance_entry(&NewBalanceEntry {
        user_id: order.user_id,
        kind: EntryKind::Refund,
        amount: order.paid_amount,
        balance_after: balance,
        order_id: Some(id),
        created_at: now,
    })
    .await?;
    let paid_hour = order.paid_at.unwrap_or(now).hour();
    for &(product, quantity) in &lines {
        tx.add_sales(product, paid_hour, -quantity).await?;
    }
    order.stored_status = OrderStatus::Refunded;
    let event = events::order_refunded(&order, now, event_id);
    tx.append_outbox(&event).await?;
    Ok(Settled { order, event })
}
