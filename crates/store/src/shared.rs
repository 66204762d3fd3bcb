//! The SQL both engines run, written once and compiled once per engine: `postgres.rs` and
//! `sqlite.rs` each include this file as their `shared` module, with `super::EngineStore` their
//! store type. Everything else this file needs from the engine comes through
//! [`EngineSql`](crate::EngineSql): the sqlx database type, the reader pool, how a write
//! transaction begins, the idempotency-key lock and the two statements whose text differs (by
//! the lock clause only; their text is in `lib.rs`).
//!
//! The statements use `$n` placeholders, `RETURNING`, `ON CONFLICT` and guarded `UPDATE … WHERE`,
//! which both engines run unchanged. Rows are read by column name into the `*Row` structs below,
//! each declared next to the column list it reads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use ecommerce_domain::account::{Credentials, NewUser, Role, TokenState, User};
use ecommerce_domain::admin::{Account, HourlySales};
use ecommerce_domain::cart::CartItem;
use ecommerce_domain::catalog::{MAX_STOCK, NewProduct, Product, ProductPatch, ProductStatus};
use ecommerce_domain::changes::{ProductChange, ProductChanges, encode_change};
use ecommerce_domain::coupon::{
    Coupon, Discount, DiscountType, NewCoupon, NewUserCoupon, UserCoupon, UserCouponStatus,
};
use ecommerce_domain::draw::{Draw, DrawEntry, EntryStatus, NewDraw};
use ecommerce_domain::events::Event;
use ecommerce_domain::order::{NewOrder, Order, OrderLine, OrderStatus, Payment};
use ecommerce_domain::paging::Page;
use ecommerce_domain::payment::Allowance;
use ecommerce_domain::ranking::PopularEntry;
use ecommerce_domain::store::{IdempotencyScope, KeyClaim, OutboxBacklog, OutboxEvent, Store, StoreResult, Tx};
use ecommerce_domain::wallet::{BalanceEntry, EntryKind, MAX_BALANCE, NewBalanceEntry};
use ecommerce_domain::{
    BalanceEntryId, CouponId, DrawId, Hour, Krw, OrderId, ProductId, Timestamp, UserCouponId, UserId,
};
use sqlx::{Database, FromRow, QueryBuilder, Row, Transaction};

use super::EngineStore;
use crate::{EngineSql, corrupt, store_err};

type Db = <EngineStore as EngineSql>::Db;
type Conn = <Db as Database>::Connection;
type DbRow = <Db as Database>::Row;

/// One write transaction. Dropping it without [`Tx::commit`] rolls back.
///
/// Every method that changes a product row calls [`EngineTx::product_changed`]; the commit
/// announces those ids to the other instances (in the transaction, so only if it commits) and
/// then publishes them on the store's [`ProductChanges`] feed, which the catalog caches follow.
/// A unit test (`lib.rs`) fails when a statement that writes `product` sits in a method that
/// does not call it.
pub struct EngineTx {
    tx: Transaction<'static, Db>,
    /// Products whose rows this transaction changed, in the order first changed.
    changed: Vec<ProductId>,
    store: EngineStore,
}

// ---------------------------------------------------------------------------------------------
// Rows, each read by column name, with the column list that yields it

/// A struct whose fields are read from the columns of the same names.
macro_rules! row {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident: $ty:ty,)+ }) => {
        $(#[$meta])*
        struct $name {
            $($field: $ty,)+
        }

        impl FromRow<'_, DbRow> for $name {
            fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?,)+
                })
            }
        }
    };
}

/// The columns of a [`ProductRow`] (macros, so that `concat!` still yields the `&'static str`
/// sqlx wants).
macro_rules! product_columns {
    () => {
        "id, name, price, stock, status, sale_starts_at, max_per_user"
    };
}

row! {
    struct ProductRow {
        id: i64,
        name: String,
        price: i64,
        stock: i64,
        status: String,
        sale_starts_at: Option<i64>,
        max_per_user: Option<i64>,
    }
}

impl ProductRow {
    fn into_product(self) -> StoreResult<Product> {
        Ok(Product {
            id: ProductId(self.id),
            name: self.name,
            price: Krw(self.price),
            stock: self.stock,
            status: ProductStatus::parse(&self.status).ok_or_else(|| corrupt("product status", &self.status))?,
            sale_starts_at: self.sale_starts_at.map(Timestamp),
            max_per_user: self.max_per_user,
        })
    }
}

/// A product row and the quantity in the cart.
struct CartRow {
    product: ProductRow,
    quantity: i64,
}

impl FromRow<'_, DbRow> for CartRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            product: ProductRow::from_row(row)?,
            quantity: row.try_get("quantity")?,
        })
    }
}

const SELECT_CART: &str = "select p.id, p.name, p.price, p.stock, p.status, p.sale_starts_at, p.max_per_user, \
     ci.quantity from cart_item ci \
     join product p on p.id = ci.product_id where ci.user_id = $1 order by ci.id";

fn discount_from(kind: &str, value: i64) -> StoreResult<Discount> {
    let kind = DiscountType::parse(kind).ok_or_else(|| corrupt("discount type", kind))?;
    Ok(Discount { kind, value })
}

/// A [`CouponRow`], remaining quantity summed over the shards, from `coupon c`.
macro_rules! select_coupon {
    () => {
        "select c.id, c.name, c.discount_type, c.discount_value, c.total_quantity, c.valid_for_seconds, \
         c.issue_starts_at, c.issue_ends_at, \
         cast(coalesce((select sum(s.remaining) from coupon_shard s where s.coupon_id = c.id), 0) as bigint) \
         as remaining_quantity from coupon c "
    };
}

row! {
    struct CouponRow {
        id: i64,
        name: String,
        discount_type: String,
        discount_value: i64,
        total_quantity: i64,
        valid_for_seconds: i64,
        remaining_quantity: i64,
        issue_starts_at: Option<i64>,
        issue_ends_at: Option<i64>,
    }
}

impl CouponRow {
    fn into_coupon(self) -> StoreResult<Coupon> {
        Ok(Coupon {
            id: CouponId(self.id),
            name: self.name,
            discount: discount_from(&self.discount_type, self.discount_value)?,
            total_quantity: self.total_quantity,
            remaining_quantity: self.remaining_quantity,
            valid_for_seconds: self.valid_for_seconds,
            issue_starts_at: self.issue_starts_at.map(Timestamp),
            issue_ends_at: self.issue_ends_at.map(Timestamp),
        })
    }
}

/// A [`UserCouponRow`], from `user_coupon uc` joined with its `coupon c`.
macro_rules! select_user_coupon {
    () => {
        "select uc.id, uc.user_id, uc.coupon_id, c.name, c.discount_type, c.discount_value, \
         uc.issued_at, uc.expires_at, uc.used_at, uc.order_id from user_coupon uc join coupon c on c.id = uc.coupon_id "
    };
}

row! {
    struct UserCouponRow {
        id: i64,
        user_id: i64,
        coupon_id: i64,
        name: String,
        discount_type: String,
        discount_value: i64,
        issued_at: i64,
        expires_at: i64,
        used_at: Option<i64>,
        order_id: Option<i64>,
    }
}

impl UserCouponRow {
    fn into_user_coupon(self) -> StoreResult<UserCoupon> {
        Ok(UserCoupon {
            id: UserCouponId(self.id),
            user_id: UserId(self.user_id),
            coupon_id: CouponId(self.coupon_id),
            name: self.name,
            discount: discount_from(&self.discount_type, self.discount_value)?,
            issued_at: Timestamp(self.issued_at),
            expires_at: Timestamp(self.expires_at),
            used_at: self.used_at.map(Timestamp),
            order_id: self.order_id.map(OrderId),
        })
    }
}

/// The columns of an [`OrderLineRow`]: an order `o` joined with one of its lines `l`; orders
/// and their lines are read in one query.
macro_rules! order_line_columns {
    () => {
        "select o.id, o.user_id, o.status, o.total_amount, o.discount_amount, o.paid_amount, o.user_coupon_id, \
         o.created_at, o.expires_at, o.paid_at, o.draw_id, l.product_id, l.name, l.unit_price, l.quantity, l.amount "
    };
}

row! {
    struct OrderRow {
        id: i64,
        user_id: i64,
        status: String,
        total_amount: i64,
        discount_amount: i64,
        paid_amount: i64,
        user_coupon_id: Option<i64>,
        created_at: i64,
        expires_at: i64,
        paid_at: Option<i64>,
        draw_id: Option<i64>,
    }
}

row! {
    struct LineRow {
        product_id: i64,
        name: String,
        unit_price: i64,
        quantity: i64,
        amount: i64,
    }
}

row! {
    /// An account and one of its logged-out tokens (`None`: it has none alive).
    struct TokenStateRow {
        id: i64,
        role: String,
        token_version: i64,
        jti: Option<String>,
    }
}

/// An order line with what its owner may still buy of the product (see [`Allowance`]).
struct AllowanceLineRow {
    line: OrderLineRow,
    max_per_user: Option<i64>,
    purchased: i64,
}

impl FromRow<'_, DbRow> for AllowanceLineRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            line: OrderLineRow::from_row(row)?,
            max_per_user: row.try_get("max_per_user")?,
            purchased: row.try_get("purchased")?,
        })
    }
}

/// An order row and one of its lines, from the same result row.
struct OrderLineRow {
    order: OrderRow,
    line: LineRow,
}

impl FromRow<'_, DbRow> for OrderLineRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            order: OrderRow::from_row(row)?,
            line: LineRow::from_row(row)?,
        })
    }
}

impl OrderRow {
    fn into_order(self, lines: Vec<OrderLine>) -> StoreResult<Order> {
        Ok(Order {
            id: OrderId(self.id),
            user_id: UserId(self.user_id),
            stored_status: OrderStatus::parse(&self.status).ok_or_else(|| corrupt("order status", &self.status))?,
            lines,
            total_amount: Krw(self.total_amount),
            discount_amount: Krw(self.discount_amount),
            paid_amount: Krw(self.paid_amount),
            user_coupon_id: self.user_coupon_id.map(UserCouponId),
            created_at: Timestamp(self.created_at),
            expires_at: Timestamp(self.expires_at),
            paid_at: self.paid_at.map(Timestamp),
            draw_id: self.draw_id.map(DrawId),
        })
    }
}

impl LineRow {
    fn into_line(self) -> OrderLine {
        OrderLine {
            product_id: ProductId(self.product_id),
            name: self.name,
            unit_price: Krw(self.unit_price),
            quantity: self.quantity,
            amount: Krw(self.amount),
        }
    }
}

/// Folds rows sorted by order (then line) into orders with their lines.
fn group_orders(rows: Vec<OrderLineRow>) -> StoreResult<Vec<Order>> {
    let mut orders: Vec<Order> = Vec::new();
    for OrderLineRow { order, line } in rows {
        let line = line.into_line();
        match orders.last_mut() {
            Some(last) if last.id.0 == order.id => last.lines.push(line),
            _ => orders.push(order.into_order(vec![line])?),
        }
    }
    Ok(orders)
}

/// The columns of a [`DrawRow`].
macro_rules! draw_columns {
    () => {
        "id, product_id, quantity, entry_starts_at, entry_ends_at, payment_window_seconds, entry_count, \
         winner_count, drawn_at, seed"
    };
}

row! {
    struct DrawRow {
        id: i64,
        product_id: i64,
        quantity: i64,
        entry_starts_at: i64,
        entry_ends_at: i64,
        payment_window_seconds: i64,
        entry_count: i64,
        winner_count: Option<i64>,
        drawn_at: Option<i64>,
        seed: Option<String>,
    }
}

impl DrawRow {
    fn into_draw(self) -> Draw {
        Draw {
            id: DrawId(self.id),
            product_id: ProductId(self.product_id),
            quantity: self.quantity,
            entry_starts_at: Timestamp(self.entry_starts_at),
            entry_ends_at: Timestamp(self.entry_ends_at),
            payment_window_seconds: self.payment_window_seconds,
            entry_count: self.entry_count,
            winner_count: self.winner_count,
            drawn_at: self.drawn_at.map(Timestamp),
            seed: self.seed,
        }
    }
}

/// The columns of a [`DrawEntryRow`].
macro_rules! draw_entry_columns {
    () => {
        "id, draw_id, user_id, status, entered_at, order_id"
    };
}

row! {
    struct DrawEntryRow {
        id: i64,
        draw_id: i64,
        user_id: i64,
        status: String,
        entered_at: i64,
        order_id: Option<i64>,
    }
}

impl DrawEntryRow {
    fn into_entry(self) -> StoreResult<DrawEntry> {
        Ok(DrawEntry {
            id: self.id,
            draw_id: DrawId(self.draw_id),
            user_id: UserId(self.user_id),
            status: EntryStatus::parse(&self.status).ok_or_else(|| corrupt("draw entry status", &self.status))?,
            entered_at: Timestamp(self.entered_at),
            order_id: self.order_id.map(OrderId),
        })
    }
}

/// Puts `$2` units back on product `$1`, capped at `$3` (the maximum stock) and never lowered by it.
const RETURN_STOCK: &str = "update product set stock = case when stock >= $3 then stock when stock > $3 - $2 then $3 \
     else stock + $2 end where id = $1";

row! {
    struct CredentialsRow {
        id: i64,
        password_hash: String,
        role: String,
        token_version: i64,
    }
}

impl CredentialsRow {
    fn into_credentials(self) -> StoreResult<Credentials> {
        Ok(Credentials {
            user_id: UserId(self.id),
            password_hash: self.password_hash,
            role: role_from(&self.role)?,
            token_version: self.token_version,
        })
    }
}

row! {
    struct UserRow {
        id: i64,
        email: String,
        name: String,
        role: String,
    }
}

/// The columns of an [`AccountRow`].
macro_rules! account_columns {
    () => {
        "id, email, name, role, balance, created_at"
    };
}

row! {
    struct AccountRow {
        id: i64,
        email: String,
        name: String,
        role: String,
        balance: i64,
        created_at: i64,
    }
}

impl AccountRow {
    fn into_account(self) -> StoreResult<Account> {
        Ok(Account {
            id: UserId(self.id),
            role: role_from(&self.role)?,
            email: self.email,
            name: self.name,
            balance: Krw(self.balance),
            created_at: Timestamp(self.created_at),
        })
    }
}

row! {
    struct HourlySalesRow {
        hour: i64,
        quantity: i64,
    }
}

fn role_from(role: &str) -> StoreResult<Role> {
    Role::parse(role).ok_or_else(|| corrupt("role", role))
}

row! {
    struct BalanceEntryRow {
        id: i64,
        kind: String,
        amount: i64,
        balance_after: i64,
        order_id: Option<i64>,
        created_at: i64,
    }
}

impl BalanceEntryRow {
    fn into_entry(self) -> StoreResult<BalanceEntry> {
        Ok(BalanceEntry {
            id: BalanceEntryId(self.id),
            kind: EntryKind::parse(&self.kind).ok_or_else(|| corrupt("balance entry kind", &self.kind))?,
            amount: Krw(self.amount),
            balance_after: Krw(self.balance_after),
            order_id: self.order_id.map(OrderId),
            created_at: Timestamp(self.created_at),
        })
    }
}

row! {
    struct PopularRow {
        product_id: i64,
        name: String,
        price: i64,
        sold_quantity: i64,
    }
}

row! {
    /// What `EngineSql::LEASE_OUTBOX` returns (`lib.rs`).
    struct OutboxRow {
        seq: i64,
        event_id: String,
        event_type: String,
        order_id: i64,
        payload: String,
    }
}

row! {
    struct BacklogRow {
        unsent: i64,
        oldest_created_at: Option<i64>,
    }
}

row! {
    struct IdempotencyKeyRow {
        request_hash: String,
        status_code: Option<i64>,
        response_body: Option<String>,
    }
}

// ---------------------------------------------------------------------------------------------
// Reads used both outside and inside a transaction

async fn fetch_product(conn: &mut Conn, id: ProductId) -> StoreResult<Option<Product>> {
    const SQL: &str = concat!("select ", product_columns!(), " from product where id = $1");
    sqlx::query_as::<Db, ProductRow>(SQL)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(ProductRow::into_product)
        .transpose()
}

async fn fetch_order(conn: &mut Conn, id: OrderId) -> StoreResult<Option<Order>> {
    const SQL: &str = concat!(
        order_line_columns!(),
        "from purchase_order o join order_line l on l.order_id = o.id where o.id = $1 order by l.line_no"
    );
    let rows = sqlx::query_as::<Db, OrderLineRow>(SQL)
        .bind(id.0)
        .fetch_all(conn)
        .await
        .map_err(store_err)?;
    Ok(group_orders(rows)?.pop())
}

async fn fetch_cart(conn: &mut Conn, user: UserId) -> StoreResult<Vec<CartItem>> {
    let rows = sqlx::query_as::<Db, CartRow>(SELECT_CART)
        .bind(user.0)
        .fetch_all(conn)
        .await
        .map_err(store_err)?;
    rows.into_iter()
        .map(|row| {
            Ok(CartItem {
                product: row.product.into_product()?,
                quantity: row.quantity,
            })
        })
        .collect()
}

async fn fetch_user_coupon(conn: &mut Conn, id: UserCouponId) -> StoreResult<Option<UserCoupon>> {
    const SQL: &str = concat!(select_user_coupon!(), "where uc.id = $1");
    sqlx::query_as::<Db, UserCouponRow>(SQL)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(UserCouponRow::into_user_coupon)
        .transpose()
}

async fn fetch_coupon(conn: &mut Conn, id: CouponId) -> StoreResult<Option<Coupon>> {
    const SQL: &str = concat!(select_coupon!(), "where c.id = $1");
    sqlx::query_as::<Db, CouponRow>(SQL)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(CouponRow::into_coupon)
        .transpose()
}

async fn fetch_draw(conn: &mut Conn, id: DrawId) -> StoreResult<Option<Draw>> {
    const SQL: &str = concat!("select ", draw_columns!(), " from draws where id = $1");
    let row = sqlx::query_as::<Db, DrawRow>(SQL)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?;
    Ok(row.map(DrawRow::into_draw))
}

async fn fetch_draw_entry(conn: &mut Conn, draw: DrawId, user: UserId) -> StoreResult<Option<DrawEntry>> {
    const SQL: &str = concat!(
        "select ",
        draw_entry_columns!(),
        " from draw_entries where draw_id = $1 and user_id = $2"
    );
    sqlx::query_as::<Db, DrawEntryRow>(SQL)
        .bind(draw.0)
        .bind(user.0)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(DrawEntryRow::into_entry)
        .transpose()
}

async fn fetch_draw_entrants(conn: &mut Conn, draw: DrawId) -> StoreResult<Vec<UserId>> {
    let users = sqlx::query_scalar::<Db, i64>("select user_id from draw_entries where draw_id = $1 order by user_id")
        .bind(draw.0)
        .fetch_all(conn)
        .await
        .map_err(store_err)?;
    Ok(users.into_iter().map(UserId).collect())
}

async fn fetch_purchased_quantity(conn: &mut Conn, user: UserId, product: ProductId) -> StoreResult<i64> {
    let quantity =
        sqlx::query_scalar::<Db, i64>("select quantity from purchase_tally where user_id = $1 and product_id = $2")
            .bind(user.0)
            .bind(product.0)
            .fetch_optional(conn)
            .await
            .map_err(store_err)?;
    Ok(quantity.unwrap_or(0))
}

impl EngineStore {
    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Db>> {
        self.reader().acquire().await.map_err(store_err)
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Db>> {
        self.begin_write().await.map_err(store_err)
    }
}

impl Store for EngineStore {
    type Tx = EngineTx;

    async fn begin(&self) -> StoreResult<EngineTx> {
        Ok(EngineTx {
            tx: self.write().await?,
            changed: Vec::new(),
            store: self.clone(),
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query_scalar::<Db, i64>("select cast(1 as bigint)")
            .fetch_one(self.reader())
            .await
            .map(drop)
            .map_err(store_err)
    }

    async fn check_writable(&self) -> StoreResult<()> {
        self.probe_writes().await
    }

    fn product_changes(&self) -> &ProductChanges {
        self.changes()
    }

    fn catalog_reads(&self) -> Self {
        self.catalog_store()
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.write().await?;
        sqlx::query::<Db>("insert into app_setting (name, value) values ($1, $2) on conflict (name) do nothing")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        let stored = sqlx::query_scalar::<Db, String>("select value from app_setting where name = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(stored)
    }

    async fn credentials(&self, email: &str) -> StoreResult<Option<Credentials>> {
        let row = sqlx::query_as::<Db, CredentialsRow>(
            "select id, password_hash, role, token_version from account where email = $1",
        )
        .bind(email)
        .fetch_optional(self.reader())
        .await
        .map_err(store_err)?;
        row.map(CredentialsRow::into_credentials).transpose()
    }

    async fn credentials_of(&self, id: UserId) -> StoreResult<Option<Credentials>> {
        let row = sqlx::query_as::<Db, CredentialsRow>(
            "select id, password_hash, role, token_version from account where id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.reader())
        .await
        .map_err(store_err)?;
        row.map(CredentialsRow::into_credentials).transpose()
    }

    async fn token_states(&self, ids: &[UserId], now: Timestamp) -> StoreResult<HashMap<UserId, TokenState>> {
        let mut states = HashMap::new();
        if ids.is_empty() {
            return Ok(states);
        }
        // One read for all: each account, with one row per logged-out token still alive (none:
        // one row with a null jti).
        let mut query = QueryBuilder::<Db>::new(
            "select a.id, a.role, a.token_version, r.jti from account a \
             left join revoked_token r on r.user_id = a.id and r.expires_at > ",
        );
        query.push_bind(now.millis()).push(" where a.id in (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        query.push(")");
        let rows = query
            .build_query_as::<TokenStateRow>()
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(store_err)?;
        for row in rows {
            let state = match states.entry(UserId(row.id)) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(TokenState {
                    role: role_from(&row.role)?,
                    token_version: row.token_version,
                    revoked: Vec::new(),
                }),
            };
            state.revoked.extend(row.jti);
        }
        Ok(states)
    }

    async fn purge_revoked_tokens(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let purged = sqlx::query("delete from revoked_token where expires_at < $1")
            .bind(before.millis())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(purged)
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query_as::<Db, UserRow>("select id, email, name, role from account where id = $1")
            .bind(id.0)
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)?;
        row.map(|row| {
            Ok(User {
                id: UserId(row.id),
                email: row.email,
                name: row.name,
                role: role_from(&row.role)?,
            })
        })
        .transpose()
    }

    async fn admin_exists(&self) -> StoreResult<bool> {
        let row = sqlx::query_scalar::<Db, i64>("select id from account where role = 'ADMIN' limit 1")
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)?;
        Ok(row.is_some())
    }

    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>> {
        let mut conn = self.catalog_reader().await?.acquire().await.map_err(store_err)?;
        fetch_product(&mut conn, id).await
    }

    async fn products_on_sale(&self, page: Page, released_by: Option<Timestamp>) -> StoreResult<Vec<Product>> {
        const SQL: &str = concat!(
            "select ",
            product_columns!(),
            " from product where status = 'ON_SALE' and id > $1 \
             and ($3 is null or sale_starts_at is null or sale_starts_at <= $3) order by id limit $2"
        );
        let rows = sqlx::query_as::<Db, ProductRow>(SQL)
            .bind(page.after.unwrap_or(0))
            .bind(page.limit)
            .bind(released_by.map(Timestamp::millis))
            .fetch_all(self.catalog_reader().await?)
            .await
            .map_err(store_err)?;
        rows.into_iter().map(ProductRow::into_product).collect()
    }

    async fn balance(&self, user: UserId) -> StoreResult<Option<Krw>> {
        let balance = sqlx::query_scalar::<Db, i64>("select balance from account where id = $1")
            .bind(user.0)
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)?;
        Ok(balance.map(Krw))
    }

    async fn balance_history(&self, user: UserId, page: Page) -> StoreResult<Vec<BalanceEntry>> {
        let rows = sqlx::query_as::<Db, BalanceEntryRow>(
            "select id, kind, amount, balance_after, order_id, created_at from balance_entry \
             where user_id = $1 and id < $2 order by id desc limit $3",
        )
        .bind(user.0)
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        rows.into_iter().map(BalanceEntryRow::into_entry).collect()
    }

    async fn cart(&self, user: UserId) -> StoreResult<Vec<CartItem>> {
        fetch_cart(&mut *self.conn().await?, user).await
    }

    async fn coupon(&self, id: CouponId) -> StoreResult<Option<Coupon>> {
        fetch_coupon(&mut *self.conn().await?, id).await
    }

    async fn user_coupon(&self, id: UserCouponId) -> StoreResult<Option<UserCoupon>> {
        fetch_user_coupon(&mut *self.conn().await?, id).await
    }

    async fn coupons_in_stock(&self, page: Page, now: Timestamp) -> StoreResult<Vec<Coupon>> {
        const SQL: &str = concat!(
            select_coupon!(),
            "where c.id < $1 and (c.issue_ends_at is null or c.issue_ends_at > $3) \
             and exists (select 1 from coupon_shard s where s.coupon_id = c.id and s.remaining > 0) \
             order by c.id desc limit $2"
        );
        let rows = sqlx::query_as::<Db, CouponRow>(SQL)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit)
            .bind(now.millis())
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(CouponRow::into_coupon).collect()
    }

    async fn coupon_holders(&self, coupon: CouponId) -> StoreResult<Vec<UserId>> {
        let holders = sqlx::query_scalar::<Db, i64>("select user_id from user_coupon where coupon_id = $1")
            .bind(coupon.0)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        Ok(holders.into_iter().map(UserId).collect())
    }

    async fn has_user_coupon(&self, user: UserId, coupon: CouponId) -> StoreResult<bool> {
        let row = sqlx::query_scalar::<Db, i64>("select id from user_coupon where user_id = $1 and coupon_id = $2")
            .bind(user.0)
            .bind(coupon.0)
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)?;
        Ok(row.is_some())
    }

    async fn user_coupons(
        &self,
        user: UserId,
        status: Option<UserCouponStatus>,
        now: Timestamp,
        page: Page,
    ) -> StoreResult<Vec<UserCoupon>> {
        const SQL: &str = concat!(
            select_user_coupon!(),
            "where uc.user_id = $1 and uc.id < $3 and ($4 = 'ANY' or $4 = \
             (case when uc.used_at is not null then 'USED' when uc.expires_at <= $2 then 'EXPIRED' else 'AVAILABLE' end)) \
             order by uc.id desc limit $5"
        );
        let rows = sqlx::query_as::<Db, UserCouponRow>(SQL)
            .bind(user.0)
            .bind(now.millis())
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(status.map_or("ANY", UserCouponStatus::as_str))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(UserCouponRow::into_user_coupon).collect()
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        fetch_order(&mut *self.conn().await?, id).await
    }

    async fn orders_for_payment(&self, ids: &[OrderId]) -> StoreResult<HashMap<OrderId, (Order, Vec<Allowance>)>> {
        let mut found = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let mut query = QueryBuilder::<Db>::new(concat!(
            order_line_columns!(),
            ", p.max_per_user, coalesce(t.quantity, 0) as purchased \
             from purchase_order o join order_line l on l.order_id = o.id \
             left join product p on p.id = l.product_id \
             left join purchase_tally t on t.user_id = o.user_id and t.product_id = l.product_id \
             where o.id in ("
        ));
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        query.push(") order by o.id, l.line_no");
        let rows = query
            .build_query_as::<AllowanceLineRow>()
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(store_err)?;
        let mut allowances: HashMap<OrderId, Vec<Allowance>> = HashMap::new();
        for row in &rows {
            allowances
                .entry(OrderId(row.line.order.id))
                .or_default()
                .push(Allowance {
                    product_id: ProductId(row.line.line.product_id),
                    max_per_user: row.max_per_user,
                    purchased: row.purchased,
                });
        }
        for order in group_orders(rows.into_iter().map(|row| row.line).collect())? {
            let lines = allowances.remove(&order.id).unwrap_or_default();
            found.insert(order.id, (order, lines));
        }
        Ok(found)
    }

    async fn orders(
        &self,
        user: UserId,
        status: Option<OrderStatus>,
        now: Timestamp,
        page: Page,
    ) -> StoreResult<Vec<Order>> {
        const SQL: &str = concat!(
            order_line_columns!(),
            "from (select * from purchase_order where user_id = $1 and id < $3 and ($4 = 'ANY' or $4 = \
                 (case when status = 'PENDING_PAYMENT' and expires_at <= $2 then 'EXPIRED' else status end)) \
                 order by id desc limit $5) o \
             join order_line l on l.order_id = o.id order by o.id desc, l.line_no"
        );
        let rows = sqlx::query_as::<Db, OrderLineRow>(SQL)
            .bind(user.0)
            .bind(now.millis())
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(status.map_or("ANY", OrderStatus::as_str))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        group_orders(rows)
    }

    async fn expire_orders(&self, now: Timestamp, batch: i64) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let expired = sqlx::query_scalar::<Db, Option<i64>>(<EngineStore as EngineSql>::EXPIRE_ORDERS)
            .bind(now.millis())
            .bind(batch)
            .fetch_all(tx.conn())
            .await
            .map_err(store_err)?;
        // A draw's order held one unit set aside by the draw: it goes back to stock now.
        let mut units_by_draw = std::collections::BTreeMap::<i64, i64>::new();
        for draw in expired.iter().flatten() {
            *units_by_draw.entry(*draw).or_default() += 1;
        }
        for (draw, units) in units_by_draw {
            let product = sqlx::query_scalar::<Db, i64>("select product_id from draws where id = $1")
                .bind(draw)
                .fetch_one(tx.conn())
                .await
                .map_err(store_err)?;
            // The catalog caches hear of it at commit, like every other stock change.
            tx.product_changed(ProductId(product));
            sqlx::query::<Db>(RETURN_STOCK)
                .bind(product)
                .bind(units)
                .bind(MAX_STOCK)
                .execute(tx.conn())
                .await
                .map_err(store_err)?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    async fn purge_idempotency_keys(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let purged = sqlx::query::<Db>("delete from idempotency_key where created_at < $1")
            .bind(before.millis())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(purged)
    }

    async fn popular(&self, since: Hour, limit: i64, released_by: Timestamp) -> StoreResult<Vec<PopularEntry>> {
        let rows = sqlx::query_as::<Db, PopularRow>(
            "select p.id as product_id, p.name, p.price, s.sold as sold_quantity from \
             (select product_id, cast(sum(quantity) as bigint) as sold from product_sales_hourly \
              where hour >= $1 group by product_id having sum(quantity) > 0) s \
             join product p on p.id = s.product_id \
             where p.sale_starts_at is null or p.sale_starts_at <= $3 order by s.sold desc, p.id limit $2",
        )
        .bind(since.0)
        .bind(limit)
        .bind(released_by.millis())
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|row| PopularEntry {
                product_id: ProductId(row.product_id),
                name: row.name,
                price: Krw(row.price),
                sold_quantity: row.sold_quantity,
            })
            .collect())
    }

    async fn lease_outbox(&self, now: Timestamp, lease_until: Timestamp, limit: i64) -> StoreResult<Vec<OutboxEvent>> {
        let mut tx = self.write().await?;
        let mut rows = sqlx::query_as::<Db, OutboxRow>(<EngineStore as EngineSql>::LEASE_OUTBOX)
            .bind(now.millis())
            .bind(lease_until.millis())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        rows.sort_unstable_by_key(|row| row.seq);
        Ok(rows
            .into_iter()
            .map(|row| OutboxEvent {
                seq: row.seq,
                event_id: row.event_id,
                event_type: row.event_type,
                order_id: OrderId(row.order_id),
                payload: row.payload,
            })
            .collect())
    }

    async fn mark_outbox_sent(&self, seqs: &[i64], now: Timestamp) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Db>::new("update outbox set sent_at = ");
        query.push_bind(now.millis()).push(" where seq in (");
        let mut list = query.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        query.push(")");
        let mut tx = self.write().await?;
        query.build().execute(&mut *tx).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    async fn release_outbox(&self, seqs: &[i64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut query =
            QueryBuilder::<Db>::new("update outbox set lease_until = null where sent_at is null and seq in (");
        let mut list = query.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        query.push(")");
        let mut tx = self.write().await?;
        query.build().execute(&mut *tx).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    async fn purge_sent_outbox(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let purged = sqlx::query::<Db>("delete from outbox where sent_at is not null and sent_at < $1")
            .bind(before.millis())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(purged)
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let row = sqlx::query_as::<Db, BacklogRow>(
            "select count(*) as unsent, min(created_at) as oldest_created_at from outbox where sent_at is null",
        )
        .fetch_one(self.reader())
        .await
        .map_err(store_err)?;
        Ok(OutboxBacklog {
            unsent: row.unsent,
            oldest_created_at: row.oldest_created_at.map(Timestamp),
        })
    }

    // ----- admin reads ---------------------------------------------------------------------

    async fn all_products(&self, status: Option<ProductStatus>, page: Page) -> StoreResult<Vec<Product>> {
        const ALL: &str = concat!(
            "select ",
            product_columns!(),
            " from product where id < $1 order by id desc limit $2"
        );
        const BY_STATUS: &str = concat!(
            "select ",
            product_columns!(),
            " from product where status = $3 and id < $1 order by id desc limit $2"
        );
        let query = sqlx::query_as::<Db, ProductRow>(if status.is_some() { BY_STATUS } else { ALL })
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit);
        let query = match status {
            Some(status) => query.bind(status.as_str()),
            None => query,
        };
        let rows = query.fetch_all(self.reader()).await.map_err(store_err)?;
        rows.into_iter().map(ProductRow::into_product).collect()
    }

    async fn all_coupons(&self, page: Page) -> StoreResult<Vec<Coupon>> {
        const SQL: &str = concat!(select_coupon!(), "where c.id < $1 order by c.id desc limit $2");
        let rows = sqlx::query_as::<Db, CouponRow>(SQL)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(CouponRow::into_coupon).collect()
    }

    async fn all_orders(&self, status: Option<OrderStatus>, now: Timestamp, page: Page) -> StoreResult<Vec<Order>> {
        // Without a filter: the newest orders by primary key.
        const ALL: &str = concat!(
            order_line_columns!(),
            "from (select * from purchase_order where id < $1 order by id desc limit $2) o \
             join order_line l on l.order_id = o.id order by o.id desc, l.line_no"
        );
        // With one: the computed status comes from at most two stored ones (`EXPIRED` is stored
        // `EXPIRED`, or `PENDING_PAYMENT` past `expires_at`), each read newest first through the
        // index on (status, id), then merged.
        const FILTERED: &str = concat!(
            order_line_columns!(),
            "from (select * from ( \
                 select * from (select * from purchase_order where status = $1 and id < $3 and $4 = \
                     (case when status = 'PENDING_PAYMENT' and expires_at <= $2 then 'EXPIRED' else status end) \
                     order by id desc limit $5) a \
                 union all \
                 select * from (select * from purchase_order where status = $6 and id < $3 and $4 = \
                     (case when status = 'PENDING_PAYMENT' and expires_at <= $2 then 'EXPIRED' else status end) \
                     order by id desc limit $5) b \
             ) u order by id desc limit $5) o \
             join order_line l on l.order_id = o.id order by o.id desc, l.line_no"
        );
        let after = page.after.unwrap_or(i64::MAX);
        let query = match status {
            None => sqlx::query_as::<Db, OrderLineRow>(ALL).bind(after).bind(page.limit),
            Some(status) => {
                let (first, second) = match status {
                    OrderStatus::Expired => (OrderStatus::Expired.as_str(), OrderStatus::PendingPayment.as_str()),
                    other => (other.as_str(), ""),
                };
                sqlx::query_as::<Db, OrderLineRow>(FILTERED)
                    .bind(first)
                    .bind(now.millis())
                    .bind(after)
                    .bind(status.as_str())
                    .bind(page.limit)
                    .bind(second)
            }
        };
        let rows = query.fetch_all(self.reader()).await.map_err(store_err)?;
        group_orders(rows)
    }

    async fn accounts(&self, email: Option<&str>, page: Page) -> StoreResult<Vec<Account>> {
        const ALL: &str = concat!(
            "select ",
            account_columns!(),
            " from account where id < $1 order by id desc limit $2"
        );
        // Two statements rather than `($3 is null or email = $3)`, so that each has its index.
        const BY_EMAIL: &str = concat!(
            "select ",
            account_columns!(),
            " from account where email = $3 and id < $1 order by id desc limit $2"
        );
        let query = sqlx::query_as::<Db, AccountRow>(if email.is_some() { BY_EMAIL } else { ALL })
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit);
        let query = match email {
            Some(email) => query.bind(email),
            None => query,
        };
        let rows = query.fetch_all(self.reader()).await.map_err(store_err)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    async fn account(&self, id: UserId) -> StoreResult<Option<Account>> {
        const SQL: &str = concat!("select ", account_columns!(), " from account where id = $1");
        sqlx::query_as::<Db, AccountRow>(SQL)
            .bind(id.0)
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)?
            .map(AccountRow::into_account)
            .transpose()
    }

    async fn orders_paid_since(&self, since: Timestamp) -> StoreResult<i64> {
        sqlx::query_scalar::<Db, i64>("select count(*) from purchase_order where paid_at >= $1")
            .bind(since.millis())
            .fetch_one(self.reader())
            .await
            .map_err(store_err)
    }

    async fn sales_by_hour(&self, since: Hour) -> StoreResult<Vec<HourlySales>> {
        let rows = sqlx::query_as::<Db, HourlySalesRow>(
            "select hour, cast(sum(quantity) as bigint) as quantity from product_sales_hourly \
             where hour >= $1 group by hour order by hour",
        )
        .bind(since.0)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|row| HourlySales {
                hour: Hour(row.hour),
                quantity: row.quantity,
            })
            .collect())
    }

    async fn draw(&self, id: DrawId) -> StoreResult<Option<Draw>> {
        fetch_draw(&mut *self.conn().await?, id).await
    }

    async fn draws(&self, undrawn_only: bool, page: Page) -> StoreResult<Vec<Draw>> {
        const SQL: &str = concat!(
            "select ",
            draw_columns!(),
            " from draws where id < $1 and ($2 = 0 or drawn_at is null) order by id desc limit $3"
        );
        let rows = sqlx::query_as::<Db, DrawRow>(SQL)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(i64::from(undrawn_only))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        Ok(rows.into_iter().map(DrawRow::into_draw).collect())
    }

    async fn draw_entry(&self, draw: DrawId, user: UserId) -> StoreResult<Option<DrawEntry>> {
        fetch_draw_entry(&mut *self.conn().await?, draw, user).await
    }

    async fn draw_entries(&self, draw: DrawId, status: Option<EntryStatus>, page: Page) -> StoreResult<Vec<DrawEntry>> {
        const SQL: &str = concat!(
            "select ",
            draw_entry_columns!(),
            " from draw_entries where draw_id = $1 and id < $2 and ($3 = 'ANY' or status = $3) \
             order by id desc limit $4"
        );
        let rows = sqlx::query_as::<Db, DrawEntryRow>(SQL)
            .bind(draw.0)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(status.map_or("ANY", EntryStatus::as_str))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(DrawEntryRow::into_entry).collect()
    }

    async fn draw_entrants(&self, draw: DrawId) -> StoreResult<Vec<UserId>> {
        fetch_draw_entrants(&mut *self.conn().await?, draw).await
    }

    async fn due_draws(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<DrawId>> {
        let ids = sqlx::query_scalar::<Db, i64>(
            "select id from draws where drawn_at is null and entry_ends_at <= $1 order by entry_ends_at, id limit $2",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        Ok(ids.into_iter().map(DrawId).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

impl EngineTx {
    fn conn(&mut self) -> &mut Conn {
        &mut self.tx
    }

    /// Records that this transaction changed the product's row (see [`EngineTx`]).
    fn product_changed(&mut self, id: ProductId) {
        if !self.changed.contains(&id) {
            self.changed.push(id);
        }
    }

    async fn execute(&mut self, query: sqlx::query::Query<'_, Db, <Db as Database>::Arguments>) -> StoreResult<u64> {
        Ok(query.execute(self.conn()).await.map_err(store_err)?.rows_affected())
    }
}

impl Tx for EngineTx {
    async fn commit(mut self) -> StoreResult<()> {
        if !self.changed.is_empty() {
            EngineStore::announce_changes(&mut self.tx, &encode_change(&self.changed)).await?;
        }
        let committed = self.tx.commit().await;
        if !self.changed.is_empty() {
            self.store.after_product_commit().await;
            // Also when the commit's answer was lost: emptying a cache entry is always safe.
            self.store.changes().publish(ProductChange::Products(&self.changed));
        }
        committed.map_err(store_err)
    }

    async fn rollback(self) -> StoreResult<()> {
        self.tx.rollback().await.map_err(store_err)
    }

    async fn claim_idempotency_key(
        &mut self,
        scope: &IdempotencyScope,
        request_hash: &str,
        now: Timestamp,
    ) -> StoreResult<KeyClaim> {
        let lock_name = format!("{}/{}/{}", scope.user_id, scope.route, scope.key);
        if !EngineStore::try_lock_key(self.conn(), &lock_name).await? {
            return Ok(KeyClaim::InProgress);
        }
        let inserted = self
            .execute(
                sqlx::query::<Db>(
                    "insert into idempotency_key (user_id, route, key, request_hash, created_at) \
                     values ($1, $2, $3, $4, $5) on conflict (user_id, route, key) do nothing",
                )
                .bind(scope.user_id.0)
                .bind(scope.route)
                .bind(&scope.key)
                .bind(request_hash)
                .bind(now.millis()),
            )
            .await?;
        if inserted == 1 {
            return Ok(KeyClaim::Fresh);
        }
        let row = sqlx::query_as::<Db, IdempotencyKeyRow>(
            "select request_hash, status_code, response_body from idempotency_key \
             where user_id = $1 and route = $2 and key = $3",
        )
        .bind(scope.user_id.0)
        .bind(scope.route)
        .bind(&scope.key)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(match row {
            // The holder rolled back between our insert and this read: the key is free again,
            // but this transaction did not take it; the client can retry.
            None => KeyClaim::InProgress,
            Some(row) if row.request_hash != request_hash => KeyClaim::Reused,
            Some(IdempotencyKeyRow {
                status_code: Some(status),
                response_body: Some(body),
                ..
            }) => KeyClaim::Replay {
                status: u16::try_from(status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| corrupt("idempotent response status", &status.to_string()))?,
                body,
            },
            Some(_) => KeyClaim::InProgress,
        })
    }

    async fn save_idempotent_response(&mut self, scope: &IdempotencyScope, status: u16, body: &str) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "update idempotency_key set status_code = $4, response_body = $5 \
                 where user_id = $1 and route = $2 and key = $3",
            )
            .bind(scope.user_id.0)
            .bind(scope.route)
            .bind(&scope.key)
            .bind(i64::from(status))
            .bind(body),
        )
        .await
        .map(drop)
    }

    async fn insert_user(&mut self, user: &NewUser, now: Timestamp) -> StoreResult<Option<UserId>> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into account (email, password_hash, name, role, created_at) values ($1, $2, $3, $4, $5) \
             on conflict (email) do nothing returning id",
        )
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(now.millis())
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(id.map(UserId))
    }

    async fn upsert_admin(&mut self, user: &NewUser, now: Timestamp) -> StoreResult<UserId> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into account (email, password_hash, name, role, created_at) values ($1, $2, $3, 'ADMIN', $4) \
             on conflict (email) do update set password_hash = excluded.password_hash, role = 'ADMIN', \
             token_version = account.token_version + 1 returning id",
        )
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.name)
        .bind(now.millis())
        .fetch_one(self.conn())
        .await
        .map_err(store_err)?;
        Ok(UserId(id))
    }

    async fn user_exists(&mut self, id: UserId) -> StoreResult<bool> {
        let row = sqlx::query_scalar::<Db, i64>("select id from account where id = $1")
            .bind(id.0)
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?;
        Ok(row.is_some())
    }

    async fn lock_account(&mut self, user: UserId) -> StoreResult<bool> {
        let locked = self
            .execute(sqlx::query("update account set token_version = token_version where id = $1").bind(user.0))
            .await?;
        Ok(locked == 1)
    }

    async fn pending_order_count(&mut self, user: UserId, now: Timestamp) -> StoreResult<i64> {
        sqlx::query_scalar::<Db, i64>(
            "select count(*) from purchase_order where user_id = $1 and status = 'PENDING_PAYMENT' and expires_at > $2",
        )
        .bind(user.0)
        .bind(now.millis())
        .fetch_one(self.conn())
        .await
        .map_err(store_err)
    }

    async fn revoke_token(&mut self, jti: &str, user: UserId, expires_at: Timestamp) -> StoreResult<()> {
        self.execute(
            sqlx::query(
                "insert into revoked_token (jti, user_id, expires_at) values ($1, $2, $3) on conflict (jti) do nothing",
            )
            .bind(jti)
            .bind(user.0)
            .bind(expires_at.millis()),
        )
        .await
        .map(drop)
    }

    async fn bump_token_version(&mut self, user: UserId) -> StoreResult<()> {
        self.execute(sqlx::query("update account set token_version = token_version + 1 where id = $1").bind(user.0))
            .await
            .map(drop)
    }

    async fn change_password(&mut self, user: UserId, current_hash: &str, new_hash: &str) -> StoreResult<bool> {
        let changed = self
            .execute(
                sqlx::query(
                    "update account set password_hash = $1, token_version = token_version + 1 \
                     where id = $2 and password_hash = $3",
                )
                .bind(new_hash)
                .bind(user.0)
                .bind(current_hash),
            )
            .await?;
        Ok(changed == 1)
    }

    async fn insert_product(&mut self, product: &NewProduct, now: Timestamp) -> StoreResult<Product> {
        const SQL: &str = concat!(
            "insert into product (name, price, stock, status, created_at, sale_starts_at, max_per_user) \
             values ($1, $2, $3, 'ON_SALE', $4, $5, $6) returning ",
            product_columns!()
        );
        let created = sqlx::query_as::<Db, ProductRow>(SQL)
            .bind(&product.name)
            .bind(product.price.0)
            .bind(product.stock)
            .bind(now.millis())
            .bind(product.sale_starts_at.map(Timestamp::millis))
            .bind(product.max_per_user)
            .fetch_one(self.conn())
            .await
            .map_err(store_err)?
            .into_product()?;
        // A cache may hold "not found" for the new id.
        self.product_changed(created.id);
        Ok(created)
    }

    async fn update_product(&mut self, id: ProductId, patch: &ProductPatch) -> StoreResult<Option<Product>> {
        self.product_changed(id);
        const SQL: &str = concat!(
            "update product set name = coalesce($2, name), price = coalesce($3, price), status = coalesce($4, status), \
             sale_starts_at = case when $5 then $6 else sale_starts_at end, \
             max_per_user = case when $7 then $8 else max_per_user end \
             where id = $1 returning ",
            product_columns!()
        );
        sqlx::query_as::<Db, ProductRow>(SQL)
            .bind(id.0)
            .bind(patch.name.as_deref())
            .bind(patch.price.map(|p| p.0))
            .bind(patch.status.map(ProductStatus::as_str))
            .bind(patch.sale_starts_at.is_some())
            .bind(patch.sale_starts_at.flatten().map(Timestamp::millis))
            .bind(patch.max_per_user.is_some())
            .bind(patch.max_per_user.flatten())
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?
            .map(ProductRow::into_product)
            .transpose()
    }

    async fn add_stock(&mut self, id: ProductId, quantity: i64) -> StoreResult<Option<Product>> {
        self.product_changed(id);
        const SQL: &str = concat!(
            "update product set stock = stock + $2 where id = $1 and stock <= $3 - $2 returning ",
            product_columns!()
        );
        sqlx::query_as::<Db, ProductRow>(SQL)
            .bind(id.0)
            .bind(quantity)
            .bind(MAX_STOCK)
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?
            .map(ProductRow::into_product)
            .transpose()
    }

    async fn return_stock(&mut self, id: ProductId, quantity: i64) -> StoreResult<()> {
        self.product_changed(id);
        // Capped at the maximum, and never lowered by it.
        self.execute(
            sqlx::query::<Db>(RETURN_STOCK)
                .bind(id.0)
                .bind(quantity)
                .bind(MAX_STOCK),
        )
        .await
        .map(drop)
    }

    async fn product(&mut self, id: ProductId) -> StoreResult<Option<Product>> {
        fetch_product(self.conn(), id).await
    }

    async fn take_stock(&mut self, id: ProductId, quantity: i64) -> StoreResult<bool> {
        self.product_changed(id);
        let taken = self
            .execute(
                sqlx::query::<Db>("update product set stock = stock - $2 where id = $1 and stock >= $2")
                    .bind(id.0)
                    .bind(quantity),
            )
            .await?;
        Ok(taken == 1)
    }

    async fn credit_balance(&mut self, user: UserId, amount: Krw) -> StoreResult<Option<Krw>> {
        let balance = sqlx::query_scalar::<Db, i64>(
            "update account set balance = balance + $2 where id = $1 and balance <= $3 - $2 returning balance",
        )
        .bind(user.0)
        .bind(amount.0)
        .bind(MAX_BALANCE.0)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(balance.map(Krw))
    }

    async fn debit_balance(&mut self, user: UserId, amount: Krw) -> StoreResult<Option<Krw>> {
        let balance = sqlx::query_scalar::<Db, i64>(
            "update account set balance = balance - $2 where id = $1 and balance >= $2 returning balance",
        )
        .bind(user.0)
        .bind(amount.0)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(balance.map(Krw))
    }

    async fn append_balance_entry(&mut self, entry: &NewBalanceEntry) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into balance_entry (user_id, kind, amount, balance_after, order_id, created_at) \
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(entry.user_id.0)
            .bind(entry.kind.as_str())
            .bind(entry.amount.0)
            .bind(entry.balance_after.0)
            .bind(entry.order_id.map(|o| o.0))
            .bind(entry.created_at.millis()),
        )
        .await
        .map(drop)
    }

    async fn cart(&mut self, user: UserId) -> StoreResult<Vec<CartItem>> {
        fetch_cart(self.conn(), user).await
    }

    async fn put_cart_item(&mut self, user: UserId, product: ProductId, quantity: i64) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into cart_item (user_id, product_id, quantity) values ($1, $2, $3) \
                 on conflict (user_id, product_id) do update set quantity = excluded.quantity",
            )
            .bind(user.0)
            .bind(product.0)
            .bind(quantity),
        )
        .await
        .map(drop)
    }

    async fn remove_cart_items(&mut self, user: UserId, products: &[ProductId]) -> StoreResult<()> {
        if products.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Db>::new("delete from cart_item where user_id = ");
        query.push_bind(user.0).push(" and product_id in (");
        let mut list = query.separated(", ");
        for product in products {
            list.push_bind(product.0);
        }
        query.push(")");
        query.build().execute(self.conn()).await.map_err(store_err).map(drop)
    }

    async fn clear_cart(&mut self, user: UserId) -> StoreResult<()> {
        self.execute(sqlx::query::<Db>("delete from cart_item where user_id = $1").bind(user.0))
            .await
            .map(drop)
    }

    async fn insert_coupon(&mut self, coupon: &NewCoupon, now: Timestamp) -> StoreResult<Coupon> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into coupon (name, discount_type, discount_value, total_quantity, valid_for_seconds, created_at, \
             issue_starts_at, issue_ends_at) values ($1, $2, $3, $4, $5, $6, $7, $8) returning id",
        )
        .bind(&coupon.name)
        .bind(coupon.discount.kind.as_str())
        .bind(coupon.discount.value)
        .bind(coupon.total_quantity)
        .bind(coupon.valid_for_seconds)
        .bind(now.millis())
        .bind(coupon.issue_starts_at.map(Timestamp::millis))
        .bind(coupon.issue_ends_at.map(Timestamp::millis))
        .fetch_one(self.conn())
        .await
        .map_err(store_err)?;
        let mut shards = QueryBuilder::<Db>::new("insert into coupon_shard (coupon_id, shard, remaining) ");
        shards.push_values(
            coupon.shard_quantities().into_iter().enumerate(),
            |mut row, (shard, quantity)| {
                row.push_bind(id).push_bind(shard as i64).push_bind(quantity);
            },
        );
        shards.build().execute(self.conn()).await.map_err(store_err)?;
        Ok(coupon.clone().stored(CouponId(id)))
    }

    async fn insert_user_coupon(&mut self, coupon: &NewUserCoupon) -> StoreResult<Option<UserCouponId>> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into user_coupon (user_id, coupon_id, issued_at, expires_at) values ($1, $2, $3, $4) \
             on conflict (user_id, coupon_id) do nothing returning id",
        )
        .bind(coupon.user_id.0)
        .bind(coupon.coupon_id.0)
        .bind(coupon.issued_at.millis())
        .bind(coupon.expires_at.millis())
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(id.map(UserCouponId))
    }

    async fn take_coupon(&mut self, coupon: CouponId, first_shard: i64) -> StoreResult<bool> {
        // Pick the first shard with stock at or after `first_shard`, wrapping round to shard 0
        // (shards below `first_shard` sort after the others), then take one from it with a
        // guarded update. Losing the race for the last one of a shard just means trying again;
        // the loop ends when no shard has stock left.
        loop {
            let taken = self
                .execute(
                    sqlx::query::<Db>(
                        "update coupon_shard set remaining = remaining - 1 where coupon_id = $1 and remaining > 0 and shard = \
                         (select shard from coupon_shard where coupon_id = $1 and remaining > 0 \
                          order by shard < $2, shard limit 1)",
                    )
                    .bind(coupon.0)
                    .bind(first_shard),
                )
                .await?;
            if taken == 1 {
                return Ok(true);
            }
            let left = sqlx::query_scalar::<Db, i64>(
                "select count(*) from coupon_shard where coupon_id = $1 and remaining > 0",
            )
            .bind(coupon.0)
            .fetch_one(self.conn())
            .await
            .map_err(store_err)?;
            if left == 0 {
                return Ok(false);
            }
        }
    }

    async fn user_coupon(&mut self, id: UserCouponId) -> StoreResult<Option<UserCoupon>> {
        fetch_user_coupon(self.conn(), id).await
    }

    async fn use_coupon(&mut self, id: UserCouponId, order: OrderId, now: Timestamp) -> StoreResult<bool> {
        let used = self
            .execute(
                sqlx::query::<Db>(
                    "update user_coupon set used_at = $3, order_id = $2 where id = $1 and used_at is null and expires_at > $3",
                )
                .bind(id.0)
                .bind(order.0)
                .bind(now.millis()),
            )
            .await?;
        Ok(used == 1)
    }

    async fn release_coupon(&mut self, id: UserCouponId) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>("update user_coupon set used_at = null, order_id = null where id = $1").bind(id.0),
        )
        .await
        .map(drop)
    }

    async fn insert_order(&mut self, order: &NewOrder) -> StoreResult<OrderId> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into purchase_order (user_id, status, total_amount, created_at, expires_at) \
             values ($1, 'PENDING_PAYMENT', $2, $3, $4) returning id",
        )
        .bind(order.user_id.0)
        .bind(order.total_amount.0)
        .bind(order.created_at.millis())
        .bind(order.expires_at.millis())
        .fetch_one(self.conn())
        .await
        .map_err(store_err)?;
        let mut lines = QueryBuilder::<Db>::new(
            "insert into order_line (order_id, line_no, product_id, name, unit_price, quantity, amount) ",
        );
        lines.push_values(order.lines.iter().enumerate(), |mut row, (line_no, line)| {
            row.push_bind(id)
                .push_bind(line_no as i64)
                .push_bind(line.product_id.0)
                .push_bind(line.name.clone())
                .push_bind(line.unit_price.0)
                .push_bind(line.quantity)
                .push_bind(line.amount.0);
        });
        lines.build().execute(self.conn()).await.map_err(store_err)?;
        Ok(OrderId(id))
    }

    async fn order(&mut self, id: OrderId) -> StoreResult<Option<Order>> {
        fetch_order(self.conn(), id).await
    }

    async fn mark_paid(&mut self, id: OrderId, payment: &Payment) -> StoreResult<bool> {
        let updated = self
            .execute(
                sqlx::query::<Db>(
                    "update purchase_order set status = 'PAID', discount_amount = $2, paid_amount = $3, user_coupon_id = $4, \
                     paid_at = $5 where id = $1 and status = 'PENDING_PAYMENT' and expires_at > $5",
                )
                .bind(id.0)
                .bind(payment.discount_amount.0)
                .bind(payment.paid_amount.0)
                .bind(payment.user_coupon_id.map(|c| c.0))
                .bind(payment.paid_at.millis()),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn mark_cancelled(&mut self, id: OrderId, now: Timestamp) -> StoreResult<bool> {
        let updated = self
            .execute(
                sqlx::query::<Db>(
                    "update purchase_order set status = 'CANCELLED', closed_at = $2 \
                     where id = $1 and status = 'PENDING_PAYMENT' and expires_at > $2",
                )
                .bind(id.0)
                .bind(now.millis()),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn mark_refunded(&mut self, id: OrderId, now: Timestamp) -> StoreResult<bool> {
        let updated = self
            .execute(
                sqlx::query::<Db>(
                    "update purchase_order set status = 'REFUNDED', closed_at = $2 where id = $1 and status = 'PAID'",
                )
                .bind(id.0)
                .bind(now.millis()),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn purchased_quantity(&mut self, user: UserId, product: ProductId) -> StoreResult<i64> {
        fetch_purchased_quantity(self.conn(), user, product).await
    }

    async fn add_purchase(&mut self, user: UserId, product: ProductId, quantity: i64) -> StoreResult<bool> {
        // One statement, the limit read in it (no read of the product before): a first purchase
        // inserts the row if the quantity alone fits; later ones add to it while the sum fits. A
        // concurrent payment of the same user and product waits on the row (or on its key, for
        // the first insert) and then sees the sum it left.
        let tallied = sqlx::query_scalar::<Db, i64>(
            "insert into purchase_tally (user_id, product_id, quantity) \
             select $1, p.id, $3 from product p where p.id = $2 and (p.max_per_user is null or $3 <= p.max_per_user) \
             on conflict (user_id, product_id) do update set quantity = purchase_tally.quantity + excluded.quantity \
             where purchase_tally.quantity + excluded.quantity <= \
             coalesce((select max_per_user from product where id = $2), purchase_tally.quantity + excluded.quantity) \
             returning quantity",
        )
        .bind(user.0)
        .bind(product.0)
        .bind(quantity)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(tallied.is_some())
    }

    async fn remove_purchase(&mut self, user: UserId, product: ProductId, quantity: i64) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "update purchase_tally set quantity = case when quantity > $3 then quantity - $3 else 0 end \
                 where user_id = $1 and product_id = $2",
            )
            .bind(user.0)
            .bind(product.0)
            .bind(quantity),
        )
        .await
        .map(drop)
    }

    async fn add_sales(&mut self, product: ProductId, hour: Hour, quantity: i64) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into product_sales_hourly (hour, product_id, quantity) values ($1, $2, $3) \
                 on conflict (hour, product_id) do update set quantity = product_sales_hourly.quantity + excluded.quantity",
            )
            .bind(hour.0)
            .bind(product.0)
            .bind(quantity),
        )
        .await
        .map(drop)
    }

    async fn append_outbox(&mut self, event: &Event) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into outbox (event_id, event_type, order_id, payload, created_at) values ($1, $2, $3, $4, $5)",
            )
            .bind(&event.id)
            .bind(event.event_type)
            .bind(event.order_id.0)
            .bind(&event.payload)
            .bind(event.occurred_at.millis()),
        )
        .await
        .map(drop)
    }

    async fn insert_draw(&mut self, draw: &NewDraw, now: Timestamp) -> StoreResult<Draw> {
        const SQL: &str = concat!(
            "insert into draws (product_id, quantity, entry_starts_at, entry_ends_at, payment_window_seconds, created_at) \
             values ($1, $2, $3, $4, $5, $6) returning ",
            draw_columns!()
        );
        let row = sqlx::query_as::<Db, DrawRow>(SQL)
            .bind(draw.product_id.0)
            .bind(draw.quantity)
            .bind(draw.entry_starts_at.millis())
            .bind(draw.entry_ends_at.millis())
            .bind(draw.payment_window_seconds)
            .bind(now.millis())
            .fetch_one(self.conn())
            .await
            .map_err(store_err)?;
        Ok(row.into_draw())
    }

    async fn draw(&mut self, id: DrawId) -> StoreResult<Option<Draw>> {
        fetch_draw(self.conn(), id).await
    }

    async fn draw_entry(&mut self, draw: DrawId, user: UserId) -> StoreResult<Option<DrawEntry>> {
        fetch_draw_entry(self.conn(), draw, user).await
    }

    async fn insert_draw_entry(
        &mut self,
        draw: DrawId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<Option<DrawEntry>> {
        const SQL: &str = concat!(
            "insert into draw_entries (draw_id, user_id, status, entered_at) values ($1, $2, 'ENTERED', $3) \
             on conflict (draw_id, user_id) do nothing returning ",
            draw_entry_columns!()
        );
        sqlx::query_as::<Db, DrawEntryRow>(SQL)
            .bind(draw.0)
            .bind(user.0)
            .bind(now.millis())
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?
            .map(DrawEntryRow::into_entry)
            .transpose()
    }

    async fn insert_draw_entries(
        &mut self,
        draw: DrawId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<DrawEntry>> {
        /// Rows per statement: well within both engines' limits on bound parameters.
        const CHUNK: usize = 1_000;
        let mut inserted = Vec::with_capacity(users.len());
        for chunk in users.chunks(CHUNK) {
            let mut query = QueryBuilder::<Db>::new("insert into draw_entries (draw_id, user_id, status, entered_at) ");
            query.push_values(chunk, |mut row, user| {
                row.push_bind(draw.0)
                    .push_bind(user.0)
                    .push_bind("ENTERED")
                    .push_bind(now.millis());
            });
            query.push(concat!(
                " on conflict (draw_id, user_id) do nothing returning ",
                draw_entry_columns!()
            ));
            let rows = query
                .build_query_as::<DrawEntryRow>()
                .fetch_all(self.conn())
                .await
                .map_err(store_err)?;
            for row in rows {
                inserted.push(row.into_entry()?);
            }
        }
        Ok(inserted)
    }

    async fn count_draw_entries(&mut self, draw: DrawId, count: i64, now: Timestamp) -> StoreResult<bool> {
        let counted = self
            .execute(
                sqlx::query::<Db>(
                    "update draws set entry_count = entry_count + $3 \
                     where id = $1 and drawn_at is null and entry_starts_at <= $2 and entry_ends_at > $2",
                )
                .bind(draw.0)
                .bind(now.millis())
                .bind(count),
            )
            .await?;
        Ok(counted == 1)
    }

    async fn claim_draw(&mut self, id: DrawId, now: Timestamp, seed: &str) -> StoreResult<Option<Draw>> {
        const SQL: &str = concat!(
            "update draws set drawn_at = $2, seed = $3 where id = $1 and drawn_at is null and entry_ends_at <= $2 \
             returning ",
            draw_columns!()
        );
        let row = sqlx::query_as::<Db, DrawRow>(SQL)
            .bind(id.0)
            .bind(now.millis())
            .bind(seed)
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?;
        Ok(row.map(DrawRow::into_draw))
    }

    async fn draw_entrants(&mut self, draw: DrawId) -> StoreResult<Vec<UserId>> {
        fetch_draw_entrants(self.conn(), draw).await
    }

    async fn insert_draw_orders(
        &mut self,
        draw: &Draw,
        product: &Product,
        winners: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()> {
        /// Rows per statement: well within both engines' limits on bound parameters.
        const CHUNK: usize = 1_000;
        if winners.is_empty() {
            return Ok(());
        }
        let expires_at = draw.payment_due(now).millis();
        for chunk in winners.chunks(CHUNK) {
            let mut orders = QueryBuilder::<Db>::new(
                "insert into purchase_order (user_id, status, total_amount, created_at, expires_at, draw_id) ",
            );
            orders.push_values(chunk, |mut row, user| {
                row.push_bind(user.0)
                    .push_bind("PENDING_PAYMENT")
                    .push_bind(product.price.0)
                    .push_bind(now.millis())
                    .push_bind(expires_at)
                    .push_bind(draw.id.0);
            });
            orders.build().execute(self.conn()).await.map_err(store_err)?;
        }
        self.execute(
            sqlx::query::<Db>(
                "insert into order_line (order_id, line_no, product_id, name, unit_price, quantity, amount) \
                 select id, 0, $2, $3, $4, 1, $4 from purchase_order where draw_id = $1",
            )
            .bind(draw.id.0)
            .bind(product.id.0)
            .bind(&product.name)
            .bind(product.price.0),
        )
        .await
        .map(drop)
    }

    async fn settle_draw_entries(&mut self, draw: DrawId) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "update draw_entries set status = 'WON', order_id = \
                 (select o.id from purchase_order o where o.draw_id = $1 and o.user_id = draw_entries.user_id) \
                 where draw_id = $1 and exists \
                 (select 1 from purchase_order o where o.draw_id = $1 and o.user_id = draw_entries.user_id)",
            )
            .bind(draw.0),
        )
        .await?;
        self.execute(
            sqlx::query::<Db>("update draw_entries set status = 'LOST' where draw_id = $1 and status = 'ENTERED'")
                .bind(draw.0),
        )
        .await
        .map(drop)
    }

    async fn finish_draw(&mut self, draw: DrawId, winner_count: i64) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>("update draws set winner_count = $2 where id = $1")
                .bind(draw.0)
                .bind(winner_count),
        )
        .await
        .map(drop)
    }
}
