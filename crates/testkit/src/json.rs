//! Reading answers: ids, pages, integers and RFC 3339 timestamps out of JSON values.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::db::unique_suffix;

/// The integer `id` of an object.
#[track_caller]
pub fn id_of(value: &Value) -> i64 {
    int(value, "id")
}

/// The integer `field` of an object.
#[track_caller]
pub fn int(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("an integer {field:?} in {value}"))
}

/// The `items` array of a page (or a cart, or an order).
#[track_caller]
pub fn items(page: &Value) -> &Vec<Value> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("an items array in {page}"))
}

/// The ids of a page's items, in page order.
#[track_caller]
pub fn ids(page: &Value) -> Vec<i64> {
    items(page).iter().map(id_of).collect()
}

/// The field names of an object.
#[track_caller]
pub fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// `{"items": [{"product_id", "quantity"}, …]}` for a direct order of these lines.
pub fn lines_body(lines: &[(i64, i64)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
        .collect();
    json!({ "items": items })
}

/// An RFC 3339 timestamp in UTC (`…Z` or `…+00:00`, any fraction); panics on anything else.
#[track_caller]
pub fn instant(value: &Value) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {value} is not a string"));
    let parsed = OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|err| panic!("{text:?} is not RFC 3339: {err}"));
    assert!(parsed.offset().is_utc(), "{text:?} is not in UTC");
    parsed
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp.
#[track_caller]
pub fn millis(value: &Value) -> i64 {
    (instant(value).unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `millis` since the epoch as RFC 3339 in UTC with milliseconds, as the server writes instants.
pub fn rfc3339_at(millis: i64) -> String {
    let at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).expect("a representable instant");
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format).expect("format an instant")
}

/// Waits until the wall clock is safely past `timestamp` (a deadline the server set).
pub async fn wait_past(timestamp: &Value) {
    let target = millis(timestamp) + 150;
    let now = now_millis();
    if target > now {
        tokio::time::sleep(Duration::from_millis((target - now) as u64)).await;
    }
}

/// An email no other user of any test has.
pub fn unique_email() -> String {
    format!("user_{}@example.com", unique_suffix())
}

/// An idempotency key no other request uses.
pub fn unique_key() -> String {
    format!("key-{}", unique_suffix())
}
