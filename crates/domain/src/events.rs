//! Envelopes of the events streamed to the data platform (`order.paid`, `order.refunded`).

use serde_json::{Value, json};

use crate::Timestamp;
use crate::order::Order;

pub const ORDER_PAID: &str = "order.paid";
pub const ORDER_REFUNDED: &str = "order.refunded";

/// A new event: its id and the whole envelope as JSON text.
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub payload: String,
}

fn items(order: &Order) -> Value {
    order
        .lines
        .iter()
        .map(|l| json!({"product_id": l.product_id, "quantity": l.quantity, "unit_price": l.unit_price, "amount": l.amount}))
        .collect()
}

fn envelope(event_type: &'static str, occurred_at: Timestamp, data: Value) -> Event {
    let id = uuid::Uuid::new_v4().to_string();
    let payload =
        json!({"id": id, "type": event_type, "occurred_at": occurred_at.to_rfc3339(), "data": data}).to_string();
    Event {
        id,
        event_type,
        payload,
    }
}

/// `order.paid` for an order just paid at `paid_at`.
pub fn order_paid(order: &Order, paid_at: Timestamp) -> Event {
    envelope(
        ORDER_PAID,
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

/// `order.refunded` for a paid order refunded at `refunded_at`.
pub fn order_refunded(order: &Order, refunded_at: Timestamp) -> Event {
    envelope(
        ORDER_REFUNDED,
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
