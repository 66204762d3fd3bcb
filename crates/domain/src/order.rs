//! Orders: the request rules and the state machine
//! `PENDING_PAYMENT → PAID → REFUNDED`, `PENDING_PAYMENT → CANCELLED | EXPIRED`.
//!
//! A pending order past `expires_at` is `EXPIRED` in every answer, whether or not the expiry job
//! has written it yet: [`Order::status`] computes that from the stored status and the clock.

use std::collections::HashSet;

use crate::catalog::{Product, ProductStatus};
use crate::{Error, OrderId, ProductId, Timestamp, UserCouponId, UserId, check_range};

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
    pub unit_price: i64,
    pub quantity: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    /// The status as stored; read [`Order::status`] for the one to show.
    pub stored_status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub paid_amount: i64,
    pub user_coupon_id: Option<UserCouponId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
}

impl Order {
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
}

/// A requested order line before products are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: i64,
}

pub const MAX_ORDER_LINES: usize = 50;
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
        check_range(line.product_id, 1..=i64::MAX, "product_id")?;
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
/// `lines[i]`, `None` when it does not exist. Existence is checked for every line before state
/// (404 before 409), and sale status before stock.
pub fn price_lines(lines: &[LineRequest], products: &[Option<Product>]) -> Result<Vec<OrderLine>, Error> {
    let mut found = Vec::with_capacity(lines.len());
    for (line, product) in lines.iter().zip(products) {
        match product {
            Some(p) => found.push((line, p)),
            None => return Err(Error::ProductNotFound),
        }
    }
    if let Some((_, p)) = found.iter().find(|(_, p)| p.status != ProductStatus::OnSale) {
        return Err(Error::ProductNotOnSale(p.id));
    }
    if let Some((_, p)) = found.iter().find(|(l, p)| p.stock < l.quantity) {
        return Err(Error::OutOfStock(p.id));
    }
    Ok(found
        .into_iter()
        .map(|(l, p)| OrderLine {
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
    pub total_amount: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: i64, stock: i64, status: ProductStatus) -> Option<Product> {
        Some(Product {
            id,
            name: format!("p{id}"),
            price: 1_000 * id,
            stock,
            status,
        })
    }

    fn line(product_id: i64, quantity: i64) -> LineRequest {
        LineRequest { product_id, quantity }
    }

    fn pending(expires_at: i64) -> Order {
        Order {
            id: 1,
            user_id: 1,
            stored_status: OrderStatus::PendingPayment,
            lines: vec![],
            total_amount: 0,
            discount_amount: 0,
            paid_amount: 0,
            user_coupon_id: None,
            created_at: Timestamp(0),
            expires_at: Timestamp(expires_at),
            paid_at: None,
        }
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
        assert!(matches!(price_lines(&lines, &products), Err(Error::ProductNotFound)));
    }

    #[test]
    fn not_on_sale_wins_over_out_of_stock() {
        let lines = [line(1, 5), line(2, 1)];
        let products = [
            product(1, 0, ProductStatus::OnSale),
            product(2, 9, ProductStatus::Stopped),
        ];
        assert!(matches!(
            price_lines(&lines, &products),
            Err(Error::ProductNotOnSale(2))
        ));
    }

    #[test]
    fn lines_are_priced_in_request_order() {
        let lines = [line(2, 3), line(1, 1)];
        let products = [
            product(2, 3, ProductStatus::OnSale),
            product(1, 1, ProductStatus::OnSale),
        ];
        let priced = price_lines(&lines, &products).unwrap();
        assert_eq!(
            priced.iter().map(|l| (l.product_id, l.amount)).collect::<Vec<_>>(),
            vec![(2, 6_000), (1, 1_000)]
        );
        let order = NewOrder::new(7, priced, Timestamp(1_000), 900);
        assert_eq!(order.total_amount, 7_000);
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
    fn only_pending_orders_can_be_paid_or_cancelled() {
        let mut order = pending(1_000);
        order.stored_status = OrderStatus::Paid;
        assert!(matches!(order.check_pending(Timestamp(0)), Err(Error::OrderNotPending)));
        assert!(order.check_refundable().is_ok());
        order.stored_status = OrderStatus::Cancelled;
        assert!(matches!(order.check_pending(Timestamp(0)), Err(Error::OrderNotPending)));
    }
}
