//! Envelopes of the events streamed to the data platform (`order.paid`, `order.refunded`).
//! The event id comes from the caller (a random UUID), like the clock, so that building an
//! event is deterministic.

use serde_json::{Value, json};

use crate::order::Order;
use crate::{OrderId, Timestamp};

pub const ORDER_PAID: &str = "order.paid";
pub const ORDER_REFUNDED: &str = "order.refunded";

/// A new event for the outbox: its id, its order and the whole envelope as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    /// Events of one order leave in the order they were recorded.
    pub order_id: OrderId,
    pub occurred_at: Timestamp,
    pub payload: String,
}

fn items(order: &Order) -> Value {
    order
        .lines
        .iter()
        .map(|l| json!({"product_id": l.product_id, "quantity": l.quantity, "unit_price": l.unit_price, "amount": l.amount}))
        .collect()
}

fn envelope(id: String, event_type: &'static str, order: &Order, occurred_at: Timestamp, data: Value) -> Event {
    let payload =
        json!({"id": id, "type": event_type, "occurred_at": occurred_at.to_rfc3339(), "data": data}).to_string();
    Event {
        id,
        event_type,
        order_id: order.id,
        occurred_at,
        payload,
    }
}

/// `order.paid`, with id `event_id`, for an order just paid at `paid_at`.
pub fn order_paid(order: &Order, paid_at: Timestamp, event_id: String) -> Event {
    envelope(
        event_id,
        ORDER_PAID,
        order,
        paid_at,
        json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "items": items(order),
            "total_amount": order.total_amount,
            "discount_amount": order.discount_amount,
            "paid_amount": order.paid_amount,
            "user_coupon_id": order.user_coupon_id,
            "paid_at": paid_at.to_rfc3339(),
        }),
    )
}

/// `order.refunded`, with id `event_id`, for a paid order refunded at `refunded_at`.
pub fn order_refunded(order: &Order, refunded_at: Timestamp, event_id: String) -> Event {
    envelope(
        event_id,
        ORDER_REFUNDED,
        order,
        refunded_at,
        json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "items": items(order),
            "total_amount": order.total_amount,
            "discount_amount": order.discount_amount,
            "refunded_amount": order.paid_amount,
            "user_coupon_id": order.user_coupon_id,
            "refunded_at": refunded_at.to_rfc3339(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{NewOrder, OrderLine};
    use crate::{Krw, ProductId, UserId};

    #[test]
    fn an_envelope_carries_the_given_id_and_the_order() {
        let line = OrderLine {
            product_id: ProductId(3),
            name: "Coat".to_owned(),
            unit_price: Krw(1_000),
            quantity: 2,
            amount: Krw(2_000),
        };
        let order = Order::pending(OrderId(9), NewOrder::new(UserId(4), vec![line], Timestamp(0), 900));
        let event = order_paid(&order, Timestamp(1_000), "e-1".to_owned());
        assert_eq!(
            (event.id.as_str(), event.order_id, event.occurred_at),
            ("e-1", OrderId(9), Timestamp(1_000))
        );
        let payload: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(payload["id"], "e-1");
        assert_eq!(payload["type"], ORDER_PAID);
        assert_eq!(payload["occurred_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(payload["data"]["order_id"], 9);
        assert_eq!(payload["data"]["items"][0]["amount"], 2_000);
    }
}
