//! Orders: the request rules and the state machine
//! `PENDING_PAYMENT → PAID → REFUNDED`, `PENDING_PAYMENT → CANCELLED | EXPIRED`.
//!
//! A pending order past `expires_at` is `EXPIRED` in every answer, whether or not the expiry job
//! has written it yet: [`Order::status`] computes that from the stored status and the clock.
//! Another user's order is invisible (`ORDER_NOT_FOUND`) to everyone but admins:
//! [`visible_order`] decides that for every route.

use std::collections::HashSet;

use crate::account::{Actor, Addressed, require_user};
use crate::catalog::{Audience, Product, ProductStatus};
use crate::coupon::UserCoupon;
use crate::paging::Page;
use crate::store::{Store, Tx};
use crate::{DrawId, Error, Krw, OrderId, ProductId, Timestamp, UserCouponId, UserId, check_range};

string_enum! {
    /// Where an order is in its life; a pending order past `expires_at` reads `EXPIRED`.
    pub enum OrderStatus {
        PendingPayment = "PENDING_PAYMENT",
        Paid = "PAID",
        Refunded = "REFUNDED",
        Cancelled = "CANCELLED",
        Expired = "EXPIRED",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Krw,
    pub quantity: i64,
    pub amount: Krw,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    /// The status as stored; read [`Order::status`] for the one to show.
    pub stored_status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_amount: Krw,
    pub discount_amount: Krw,
    pub paid_amount: Krw,
    pub user_coupon_id: Option<UserCouponId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
    /// The draw this order was won in: its unit was set aside by the draw, so paying takes no
    /// stock and cancelling or expiry gives the unit back.
    pub draw_id: Option<DrawId>,
}

impl Order {
    /// A new order as it is right after it was stored under `id`: pending, nothing paid.
    pub fn pending(id: OrderId, order: NewOrder) -> Self {
        Self {
            id,
            user_id: order.user_id,
            stored_status: OrderStatus::PendingPayment,
            lines: order.lines,
            total_amount: order.total_amount,
            discount_amount: Krw::ZERO,
            paid_amount: Krw::ZERO,
            user_coupon_id: None,
            created_at: order.created_at,
            expires_at: order.expires_at,
            paid_at: None,
            draw_id: None,
        }
    }

    pub fn status(&self, now: Timestamp) -> OrderStatus {
        match self.stored_status {
            OrderStatus::PendingPayment if now >= self.expires_at => OrderStatus::Expired,
            other => other,
        }
    }

    /// Payment and cancel need a pending, unexpired order.
    pub fn check_pending(&self, now: Timestamp) -> Result<(), Error> {
        match self.status(now) {
            OrderStatus::PendingPayment => Ok(()),
            OrderStatus::Expired => Err(Error::OrderExpired),
            _ => Err(Error::OrderNotPending),
        }
    }

    pub fn check_refundable(&self) -> Result<(), Error> {
        match self.stored_status {
            OrderStatus::Paid => Ok(()),
            _ => Err(Error::OrderNotPaid),
        }
    }

    /// Paying this order at `now`, with `coupon` if any: what is taken off and what is left.
    pub fn payment(&self, coupon: Option<&UserCoupon>, now: Timestamp) -> Payment {
        let discount_amount = coupon.map_or(Krw::ZERO, |c| c.discount.amount_off(self.total_amount));
        Payment {
            discount_amount,
            paid_amount: self.total_amount - discount_amount,
            user_coupon_id: coupon.map(|c| c.id),
            paid_at: now,
        }
    }

    /// `PENDING_PAYMENT → PAID` with the payment's amounts.
    pub fn mark_paid(&mut self, payment: &Payment) {
        self.stored_status = OrderStatus::Paid;
        self.discount_amount = payment.discount_amount;
        self.paid_amount = payment.paid_amount;
        self.user_coupon_id = payment.user_coupon_id;
        self.paid_at = Some(payment.paid_at);
    }
}

/// What paying an order records on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub discount_amount: Krw,
    pub paid_amount: Krw,
    pub user_coupon_id: Option<UserCouponId>,
    pub paid_at: Timestamp,
}

/// The order that `actor` asked for by id: `ORDER_NOT_FOUND` when there is none or it belongs
/// to another user and the actor is not an admin.
pub fn visible_order(order: Option<Order>, actor: Actor) -> Result<Order, Error> {
    order
        .filter(|o| actor.may_access(o.user_id))
        .ok_or(Error::OrderNotFound)
}

/// A requested order line before products are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: i64,
}

pub const MAX_ORDER_LINES: usize = 50;
/// Orders one user may have waiting for payment at once (audit M6): a new one beyond is
/// `409 TOO_MANY_PENDING_ORDERS` until one is paid, cancelled or expired.
pub const MAX_PENDING_ORDERS: usize = 100;
pub const MAX_LINE_QUANTITY: i64 = 1_000;

/// Checks a direct order: 1..=50 lines, quantity 1..=1000, each product at most once.
pub fn check_direct_lines(lines: &[LineRequest]) -> Result<(), Error> {
    if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
        return Err(Error::validation(format!(
            "items must have 1 to {MAX_ORDER_LINES} lines"
        )));
    }
    let mut seen = HashSet::with_capacity(lines.len());
    for line in lines {
        check_range(line.product_id.0, 1..=i64::MAX, "product_id")?;
        check_range(line.quantity, 1..=MAX_LINE_QUANTITY, "quantity")?;
        if !seen.insert(line.product_id) {
            return Err(Error::validation(format!(
                "product {} appears more than once",
                line.product_id
            )));
        }
    }
    Ok(())
}

/// Prices the requested lines from the products as they are now. `products[i]` is the product of
/// `lines[i]`, `None` when it does not exist for the caller (unknown, or unreleased), and
/// `paid[i]` the quantity of it the user already holds in paid orders. Existence is checked for
/// every line before state (404 before 409), then sale status, the per-customer limit and stock,
/// each for every line before the next.
pub fn price_lines(lines: &[LineRequest], products: &[Option<Product>], paid: &[i64]) -> Result<Vec<OrderLine>, Error> {
    let mut found = Vec::with_capacity(lines.len());
    for ((line, product), &paid) in lines.iter().zip(products).zip(paid.iter().chain(std::iter::repeat(&0))) {
        match product {
            Some(p) => found.push((line, p, paid)),
            None => return Err(Error::ProductNotFound),
        }
    }
    if let Some((_, p, _)) = found.iter().find(|(_, p, _)| p.status != ProductStatus::OnSale) {
        return Err(Error::ProductNotOnSale(p.id));
    }
    if let Some((_, p, _)) = found.iter().find(|(l, p, paid)| !p.allows_purchase(*paid, l.quantity)) {
        return Err(Error::PurchaseLimitExceeded(p.id));
    }
    if let Some((_, p, _)) = found.iter().find(|(l, p, _)| p.stock < l.quantity) {
        return Err(Error::OutOfStock(p.id));
    }
    Ok(found
        .into_iter()
        .map(|(l, p, _)| OrderLine {
            product_id: p.id,
            name: p.name.clone(),
            unit_price: p.price,
            quantity: l.quantity,
            amount: p.price * l.quantity,
        })
        .collect())
}

/// An order ready to be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: UserId,
    pub lines: Vec<OrderLine>,
    pub total_amount: Krw,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl NewOrder {
    pub fn new(user_id: UserId, lines: Vec<OrderLine>, now: Timestamp, ttl_seconds: i64) -> Self {
        let total_amount = lines.iter().map(|l| l.amount).sum();
        Self {
            user_id,
            lines,
            total_amount,
            created_at: now,
            expires_at: now.plus_seconds(ttl_seconds),
        }
    }
}

/// Where the lines of a new order come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderSource {
    Lines(Vec<LineRequest>),
    Cart,
}

/// Prices the order at today's prices and saves it `PENDING_PAYMENT`. Stock and the
/// per-customer limit are checked, not reserved: payment takes the stock and counts the
/// purchase. Unreleased products do not exist for a caller who is not an admin: a line naming
/// one is `PRODUCT_NOT_FOUND`, and an order from the cart uses the cart as the caller sees it
/// (see [`crate::cart::visible_items`]).
pub async fn create_order(
    tx: &mut impl Tx,
    who: Addressed,
    source: &OrderSource,
    now: Timestamp,
    ttl_seconds: i64,
) -> Result<Order, Error> {
    // The account's lock makes the count of pending orders and the insert one step for this
    // user; a missing account is USER_NOT_FOUND, as `require_user_in` would say.
    if !tx.lock_account(who.user_id).await? {
        return Err(Error::UserNotFound);
    }
    let user = who.user_id;
    let audience = Audience::from(who.actor);
    let requested = match source {
        OrderSource::Lines(lines) => {
            check_direct_lines(lines)?;
            lines.clone()
        }
        OrderSource::Cart => {
            let cart = crate::cart::visible_items(tx.cart(user).await?, audience, now);
            if cart.is_empty() {
                return Err(Error::CartEmpty);
            }
            if cart.len() > MAX_ORDER_LINES {
                return Err(Error::validation(format!(
                    "an order holds at most {MAX_ORDER_LINES} lines; the cart has {}",
                    cart.len()
                )));
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
    let mut paid = Vec::with_capacity(requested.len());
    for line in &requested {
        let product = tx
            .product(line.product_id)
            .await?
            .filter(|p| p.visible_to(audience, now));
        paid.push(match &product {
            Some(p) if p.max_per_user.is_some() => tx.purchased_quantity(user, p.id).await?,
            _ => 0,
        });
        products.push(product);
    }
    let new_order = NewOrder::new(user, price_lines(&requested, &products, &paid)?, now, ttl_seconds);
    if tx.pending_order_count(user, now).await? >= MAX_PENDING_ORDERS as i64 {
        return Err(Error::TooManyPendingOrders(MAX_PENDING_ORDERS));
    }
    let id = tx.insert_order(&new_order).await?;
    Ok(Order::pending(id, new_order))
}

/// Cancels a pending, unexpired order of the actor (or any, for an admin). A draw's order gives
/// its unit back to stock in the same transaction.
pub async fn cancel_order(tx: &mut impl Tx, id: OrderId, actor: Actor, now: Timestamp) -> Result<Order, Error> {
    let mut order = visible_order(tx.order(id).await?, actor)?;
    order.check_pending(now)?;
    if !tx.mark_cancelled(id, now).await? {
        // Another request changed the order since we read it.
        visible_order(tx.order(id).await?, actor)?.check_pending(now)?;
        return Err(Error::OrderNotPending);
    }
    if order.draw_id.is_some() {
        for line in &order.lines {
            tx.return_stock(line.product_id, line.quantity).await?;
        }
    }
    order.stored_status = OrderStatus::Cancelled;
    Ok(order)
}

/// One order, as the actor may see it.
pub async fn get_order(store: &impl Store, id: OrderId, actor: Actor) -> Result<Order, Error> {
    visible_order(store.order(id).await?, actor)
}

/// The addressed user's orders, newest first; the status filter uses the computed status.
pub async fn list_orders(
    store: &impl Store,
    who: Addressed,
    status: Option<OrderStatus>,
    now: Timestamp,
    page: Page,
) -> Result<Vec<Order>, Error> {
    require_user(store, who).await?;
    Ok(store.orders(who.user_id, status, now, page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: i64, stock: i64, status: ProductStatus) -> Option<Product> {
        Some(Product {
            id: ProductId(id),
            name: format!("p{id}"),
            price: Krw(1_000 * id),
            stock,
            status,
            sale_starts_at: None,
            max_per_user: None,
        })
    }

    fn limited(id: i64, stock: i64, status: ProductStatus, limit: i64) -> Option<Product> {
        product(id, stock, status).map(|p| Product {
            max_per_user: Some(limit),
            ..p
        })
    }

    fn line(product_id: i64, quantity: i64) -> LineRequest {
        LineRequest {
            product_id: ProductId(product_id),
            quantity,
        }
    }

    fn pending(expires_at: i64) -> Order {
        let order = NewOrder {
            user_id: UserId(1),
            lines: vec![],
            total_amount: Krw(10_000),
            created_at: Timestamp(0),
            expires_at: Timestamp(expires_at),
        };
        Order::pending(OrderId(1), order)
    }

    #[test]
    fn direct_lines_rules() {
        assert!(check_direct_lines(&[]).is_err());
        assert!(check_direct_lines(&[line(1, 0)]).is_err());
        assert!(check_direct_lines(&[line(1, 1_001)]).is_err());
        assert!(check_direct_lines(&[line(1, 1), line(1, 2)]).is_err());
        assert!(check_direct_lines(&(1..=50).map(|i| line(i, 1)).collect::<Vec<_>>()).is_ok());
        assert!(check_direct_lines(&(1..=51).map(|i| line(i, 1)).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn missing_product_wins_over_state_errors() {
        let lines = [line(1, 5), line(2, 1)];
        let products = [product(1, 0, ProductStatus::Stopped), None];
        assert!(matches!(
            price_lines(&lines, &products, &[9, 9]),
            Err(Error::ProductNotFound)
        ));
    }

    #[test]
    fn not_on_sale_wins_over_out_of_stock() {
        let lines = [line(1, 5), line(2, 1)];
        let products = [
            product(1, 0, ProductStatus::OnSale),
            product(2, 9, ProductStatus::Stopped),
        ];
        assert!(matches!(
            price_lines(&lines, &products, &[0, 0]),
            Err(Error::ProductNotOnSale(ProductId(2)))
        ));
    }

    #[test]
    fn not_on_sale_wins_over_the_limit_which_wins_over_out_of_stock() {
        let lines = [line(1, 5), line(2, 2)];
        let products = [
            limited(1, 9, ProductStatus::OnSale, 5),
            limited(2, 9, ProductStatus::Stopped, 1),
        ];
        assert!(matches!(
            price_lines(&lines, &products, &[1, 0]),
            Err(Error::ProductNotOnSale(ProductId(2)))
        ));
        let products = [
            limited(1, 0, ProductStatus::OnSale, 5),
            limited(2, 9, ProductStatus::OnSale, 3),
        ];
        assert!(matches!(
            price_lines(&lines, &products, &[0, 2]),
            Err(Error::PurchaseLimitExceeded(ProductId(2)))
        ));
        assert!(matches!(
            price_lines(&lines, &products, &[0, 1]),
            Err(Error::OutOfStock(ProductId(1)))
        ));
        let products = [
            limited(1, 9, ProductStatus::OnSale, 5),
            limited(2, 9, ProductStatus::OnSale, 3),
        ];
        assert!(
            price_lines(&lines, &products, &[0, 1]).is_ok(),
            "paid + quantity == limit is allowed"
        );
    }

    #[test]
    fn lines_are_priced_in_request_order() {
        let lines = [line(2, 3), line(1, 1)];
        let products = [
            product(2, 3, ProductStatus::OnSale),
            product(1, 1, ProductStatus::OnSale),
        ];
        let priced = price_lines(&lines, &products, &[0, 0]).unwrap();
        assert_eq!(
            priced.iter().map(|l| (l.product_id.0, l.amount.0)).collect::<Vec<_>>(),
            vec![(2, 6_000), (1, 1_000)]
        );
        let order = NewOrder::new(UserId(7), priced, Timestamp(1_000), 900);
        assert_eq!(order.total_amount, Krw(7_000));
        assert_eq!(order.expires_at, Timestamp(901_000));
    }

    #[test]
    fn overdue_pending_order_reads_as_expired() {
        let order = pending(1_000);
        assert_eq!(order.status(Timestamp(999)), OrderStatus::PendingPayment);
        assert_eq!(order.status(Timestamp(1_000)), OrderStatus::Expired);
        assert!(matches!(
            order.check_pending(Timestamp(1_000)),
            Err(Error::OrderExpired)
        ));
        assert!(matches!(order.check_refundable(), Err(Error::OrderNotPaid)));
    }

    #[test]
    fn a_new_order_is_pending_with_nothing_paid() {
        let order = pending(1_000);
        assert_eq!(order.stored_status, OrderStatus::PendingPayment);
        assert_eq!((order.discount_amount, order.paid_amount), (Krw(0), Krw(0)));
        assert_eq!((order.user_coupon_id, order.paid_at), (None, None));
    }

    #[test]
    fn a_payment_takes_the_discount_off_the_total() {
        let mut order = pending(1_000);
        let coupon = UserCoupon {
            id: UserCouponId(4),
            user_id: UserId(1),
            coupon_id: crate::CouponId(2),
            name: "c".to_owned(),
            discount: crate::coupon::Discount {
                kind: crate::coupon::DiscountType::Rate,
                value: 15,
            },
            issued_at: Timestamp(0),
            expires_at: Timestamp(100),
            used_at: None,
            order_id: None,
        };
        let payment = order.payment(Some(&coupon), Timestamp(10));
        assert_eq!((payment.discount_amount, payment.paid_amount), (Krw(1_500), Krw(8_500)));
        order.mark_paid(&payment);
        assert_eq!(order.stored_status, OrderStatus::Paid);
        assert_eq!(order.user_coupon_id, Some(UserCouponId(4)));
        assert_eq!(order.paid_at, Some(Timestamp(10)));
        let plain = pending(1_000).payment(None, Timestamp(10));
        assert_eq!((plain.discount_amount, plain.paid_amount), (Krw(0), Krw(10_000)));
    }

    #[test]
    fn another_users_order_is_visible_only_to_admins() {
        let actor = |user, is_admin| Actor {
            user_id: UserId(user),
            is_admin,
        };
        assert!(visible_order(Some(pending(1)), actor(1, false)).is_ok());
        assert!(matches!(
            visible_order(Some(pending(1)), actor(2, false)),
            Err(Error::OrderNotFound)
        ));
        assert!(visible_order(Some(pending(1)), actor(2, true)).is_ok());
        assert!(matches!(visible_order(None, actor(1, true)), Err(Error::OrderNotFound)));
    }

    #[test]
    fn only_pending_orders_can_be_paid_or_cancelled() {
        let mut order = pending(1_000);
        order.stored_status = OrderStatus::Paid;
        assert!(matches!(order.check_pending(Timestamp(0)), Err(Error::OrderNotPending)));
        assert!(order.check_refundable().is_ok());
        order.stored_status = OrderStatus::Cancelled;
        assert!(matches!(order.check_pending(Timestamp(0)), Err(Error::OrderNotPending)));
    }
}
