//! SQL shared by both engines, compiled once per engine: `super::Db` is `sqlx::Postgres` in
//! `postgres.rs` and `sqlx::Sqlite` in `sqlite.rs`. Everything here uses `$n` placeholders,
//! `RETURNING`, `ON CONFLICT` and guarded `UPDATE … WHERE`, which both engines run unchanged.
//! The engine module supplies `EngineStore` (its pools and how a write transaction begins) and
//! the few statements that differ (`expire_orders_sql`, `lease_outbox_sql`).

use ecommerce_domain::account::{Credentials, NewUser, Role, User};
use ecommerce_domain::catalog::{NewProduct, Product, ProductPatch, ProductStatus};
use ecommerce_domain::coupon::{Coupon, Discount, DiscountType, NewCoupon, UserCoupon, UserCouponStatus};
use ecommerce_domain::order::{NewOrder, Order, OrderLine, OrderStatus};
use ecommerce_domain::paging::Page;
use ecommerce_domain::store::{
    CartItem, IdempotencyScope, KeyClaim, OutboxBacklog, OutboxEvent, PopularEntry, Store, StoreResult, Tx,
};
use ecommerce_domain::wallet::{BalanceEntry, EntryKind};
use ecommerce_domain::{CouponId, OrderId, ProductId, Timestamp, UserCouponId, UserId};
use sqlx::{Database, QueryBuilder, Transaction};

use super::{Db, EngineStore};
use crate::{corrupt, store_err};

type Conn = <Db as Database>::Connection;

// SELECT heads shared by the single-row reads and the lists (macros, so that `concat!` still
// yields the `&'static str` sqlx wants).

/// Columns of an order joined with one line: an [`OrderLineRow`]; `o` is the order, `l` the line.
macro_rules! order_line_columns {
    () => {
        "select o.id, o.user_id, o.status, o.total_amount, o.discount_amount, o.paid_amount, o.user_coupon_id, \
         o.created_at, o.expires_at, o.paid_at, l.product_id, l.name, l.unit_price, l.quantity, l.amount "
    };
}

/// A [`CouponRow`], remaining quantity summed over the shards, from `coupon c`.
macro_rules! select_coupon {
    () => {
        "select c.id, c.name, c.discount_type, c.discount_value, c.total_quantity, c.valid_for_seconds, \
         cast(coalesce((select sum(s.remaining) from coupon_shard s where s.coupon_id = c.id), 0) as bigint) \
         from coupon c "
    };
}

/// A [`UserCouponRow`], from `user_coupon uc` joined with its `coupon c`.
macro_rules! select_user_coupon {
    () => {
        "select uc.id, uc.user_id, uc.coupon_id, c.name, c.discount_type, c.discount_value, \
         uc.issued_at, uc.expires_at, uc.used_at, uc.order_id from user_coupon uc join coupon c on c.id = uc.coupon_id "
    };
}

/// One write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct EngineTx {
    pub(super) tx: Transaction<'static, Db>,
}

// ---------------------------------------------------------------------------------------------
// Row mapping

type ProductRow = (i64, String, i64, i64, String);

fn product_from(row: ProductRow) -> StoreResult<Product> {
    let (id, name, price, stock, status) = row;
    let status = ProductStatus::parse(&status).ok_or_else(|| corrupt("product status", &status))?;
    Ok(Product {
        id,
        name,
        price,
        stock,
        status,
    })
}

fn discount_from(kind: &str, value: i64) -> StoreResult<Discount> {
    let kind = DiscountType::parse(kind).ok_or_else(|| corrupt("discount type", kind))?;
    Ok(Discount { kind, value })
}

type CouponRow = (i64, String, String, i64, i64, i64, i64);

fn coupon_from(row: CouponRow) -> StoreResult<Coupon> {
    let (id, name, kind, value, total_quantity, valid_for_seconds, remaining_quantity) = row;
    Ok(Coupon {
        id,
        name,
        discount: discount_from(&kind, value)?,
        total_quantity,
        remaining_quantity,
        valid_for_seconds,
    })
}

type UserCouponRow = (i64, i64, i64, String, String, i64, i64, i64, Option<i64>, Option<i64>);

fn user_coupon_from(row: UserCouponRow) -> StoreResult<UserCoupon> {
    let (id, user_id, coupon_id, name, kind, value, issued_at, expires_at, used_at, order_id) = row;
    Ok(UserCoupon {
        id,
        user_id,
        coupon_id,
        name,
        discount: discount_from(&kind, value)?,
        issued_at: Timestamp(issued_at),
        expires_at: Timestamp(expires_at),
        used_at: used_at.map(Timestamp),
        order_id,
    })
}

type OrderRow = (i64, i64, String, i64, i64, i64, Option<i64>, i64, i64, Option<i64>);
type LineRow = (i64, String, i64, i64, i64);

fn order_from(row: OrderRow, lines: Vec<OrderLine>) -> StoreResult<Order> {
    let (
        id,
        user_id,
        status,
        total_amount,
        discount_amount,
        paid_amount,
        user_coupon_id,
        created_at,
        expires_at,
        paid_at,
    ) = row;
    Ok(Order {
        id,
        user_id,
        stored_status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", &status))?,
        lines,
        total_amount,
        discount_amount,
        paid_amount,
        user_coupon_id,
        created_at: Timestamp(created_at),
        expires_at: Timestamp(expires_at),
        paid_at: paid_at.map(Timestamp),
    })
}

fn line_from((product_id, name, unit_price, quantity, amount): LineRow) -> OrderLine {
    OrderLine {
        product_id,
        name,
        unit_price,
        quantity,
        amount,
    }
}

// ---------------------------------------------------------------------------------------------
// Reads used both outside and inside a transaction

async fn fetch_product(conn: &mut Conn, id: ProductId) -> StoreResult<Option<Product>> {
    sqlx::query_as::<Db, ProductRow>("select id, name, price, stock, status from product where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(product_from)
        .transpose()
}

/// An order row joined with one of its lines; orders and their lines are read in one query.
type OrderLineRow = (
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
    i64,
    String,
    i64,
    i64,
    i64,
);

/// Folds rows sorted by order (then line) into orders with their lines.
fn group_orders(rows: Vec<OrderLineRow>) -> StoreResult<Vec<Order>> {
    let mut orders: Vec<Order> = Vec::new();
    for r in rows {
        let line = line_from((r.10, r.11, r.12, r.13, r.14));
        match orders.last_mut() {
            Some(last) if last.id == r.0 => last.lines.push(line),
            _ => orders.push(order_from(
                (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9),
                vec![line],
            )?),
        }
    }
    Ok(orders)
}

async fn fetch_order(conn: &mut Conn, id: OrderId) -> StoreResult<Option<Order>> {
    let rows = sqlx::query_as::<Db, OrderLineRow>(concat!(
        order_line_columns!(),
        "from purchase_order o join order_line l on l.order_id = o.id where o.id = $1 order by l.line_no"
    ))
    .bind(id)
    .fetch_all(conn)
    .await
    .map_err(store_err)?;
    Ok(group_orders(rows)?.pop())
}

async fn fetch_cart(conn: &mut Conn, user: UserId) -> StoreResult<Vec<CartItem>> {
    let rows = sqlx::query_as::<Db, (i64, String, i64, i64, String, i64)>(
        "select p.id, p.name, p.price, p.stock, p.status, ci.quantity from cart_item ci \
         join product p on p.id = ci.product_id where ci.user_id = $1 order by ci.id",
    )
    .bind(user)
    .fetch_all(conn)
    .await
    .map_err(store_err)?;
    rows.into_iter()
        .map(|(id, name, price, stock, status, quantity)| {
            Ok(CartItem {
                product: product_from((id, name, price, stock, status))?,
                quantity,
            })
        })
        .collect()
}

async fn fetch_user_coupon(conn: &mut Conn, id: UserCouponId) -> StoreResult<Option<UserCoupon>> {
    const SQL: &str = concat!(select_user_coupon!(), "where uc.id = $1");
    sqlx::query_as::<Db, UserCouponRow>(SQL)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(user_coupon_from)
        .transpose()
}

async fn fetch_coupon(conn: &mut Conn, id: CouponId) -> StoreResult<Option<Coupon>> {
    const SQL: &str = concat!(select_coupon!(), "where c.id = $1");
    sqlx::query_as::<Db, CouponRow>(SQL)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(store_err)?
        .map(coupon_from)
        .transpose()
}

impl EngineStore {
    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Db>> {
        self.reader().acquire().await.map_err(store_err)
    }
}

impl Store for EngineStore {
    type Tx = EngineTx;

    async fn begin(&self) -> StoreResult<EngineTx> {
        Ok(EngineTx {
            tx: self.begin_write().await.map_err(store_err)?,
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

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.begin_write().await.map_err(store_err)?;
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
        let row =
            sqlx::query_as::<Db, (i64, String, String)>("select id, password_hash, role from account where email = $1")
                .bind(email)
                .fetch_optional(self.reader())
                .await
                .map_err(store_err)?;
        row.map(|(user_id, password_hash, role)| {
            let role = Role::parse(&role).ok_or_else(|| corrupt("role", &role))?;
            Ok(Credentials {
                user_id,
                password_hash,
                role,
            })
        })
        .transpose()
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query_as::<Db, (i64, String, String, String)>(
            "select id, email, name, role from account where id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await
        .map_err(store_err)?;
        row.map(|(id, email, name, role)| {
            let role = Role::parse(&role).ok_or_else(|| corrupt("role", &role))?;
            Ok(User { id, email, name, role })
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
        fetch_product(&mut *self.conn().await?, id).await
    }

    async fn products_on_sale(&self, page: Page) -> StoreResult<Vec<Product>> {
        let rows = sqlx::query_as::<Db, ProductRow>(
            "select id, name, price, stock, status from product where status = 'ON_SALE' and id > $1 order by id limit $2",
        )
        .bind(page.after.unwrap_or(0))
        .bind(page.limit)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        rows.into_iter().map(product_from).collect()
    }

    async fn balance(&self, user: UserId) -> StoreResult<Option<i64>> {
        sqlx::query_scalar::<Db, i64>("select balance from account where id = $1")
            .bind(user)
            .fetch_optional(self.reader())
            .await
            .map_err(store_err)
    }

    async fn balance_history(&self, user: UserId, page: Page) -> StoreResult<Vec<BalanceEntry>> {
        let rows = sqlx::query_as::<Db, (i64, String, i64, i64, Option<i64>, i64)>(
            "select id, kind, amount, balance_after, order_id, created_at from balance_entry \
             where user_id = $1 and id < $2 order by id desc limit $3",
        )
        .bind(user)
        .bind(page.after.unwrap_or(i64::MAX))
        .bind(page.limit)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        rows.into_iter()
            .map(|(id, kind, amount, balance_after, order_id, created_at)| {
                let kind = EntryKind::parse(&kind).ok_or_else(|| corrupt("balance entry kind", &kind))?;
                Ok(BalanceEntry {
                    id,
                    kind,
                    amount,
                    balance_after,
                    order_id,
                    created_at: Timestamp(created_at),
                })
            })
            .collect()
    }

    async fn cart(&self, user: UserId) -> StoreResult<Vec<CartItem>> {
        fetch_cart(&mut *self.conn().await?, user).await
    }

    async fn coupon(&self, id: CouponId) -> StoreResult<Option<Coupon>> {
        fetch_coupon(&mut *self.conn().await?, id).await
    }

    async fn coupons_in_stock(&self, page: Page) -> StoreResult<Vec<Coupon>> {
        const SQL: &str = concat!(
            select_coupon!(),
            "where c.id < $1 \
             and exists (select 1 from coupon_shard s where s.coupon_id = c.id and s.remaining > 0) \
             order by c.id desc limit $2"
        );
        let rows = sqlx::query_as::<Db, CouponRow>(SQL)
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(coupon_from).collect()
    }

    async fn coupon_holders(&self, coupon: CouponId) -> StoreResult<Vec<UserId>> {
        sqlx::query_scalar::<Db, i64>("select user_id from user_coupon where coupon_id = $1")
            .bind(coupon)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)
    }

    async fn has_user_coupon(&self, user: UserId, coupon: CouponId) -> StoreResult<bool> {
        let row = sqlx::query_scalar::<Db, i64>("select id from user_coupon where user_id = $1 and coupon_id = $2")
            .bind(user)
            .bind(coupon)
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
            .bind(user)
            .bind(now.millis())
            .bind(page.after.unwrap_or(i64::MAX))
            .bind(status.map_or("ANY", UserCouponStatus::as_str))
            .bind(page.limit)
            .fetch_all(self.reader())
            .await
            .map_err(store_err)?;
        rows.into_iter().map(user_coupon_from).collect()
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        fetch_order(&mut *self.conn().await?, id).await
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
            .bind(user)
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
        let mut tx = self.begin_write().await.map_err(store_err)?;
        let done = sqlx::query::<Db>(super::EXPIRE_ORDERS_SQL)
            .bind(now.millis())
            .bind(batch)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(done)
    }

    async fn purge_idempotency_keys(&self, before: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin_write().await.map_err(store_err)?;
        let purged = sqlx::query::<Db>("delete from idempotency_key where created_at < $1")
            .bind(before.millis())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?
            .rows_affected();
        tx.commit().await.map_err(store_err)?;
        Ok(purged)
    }

    async fn popular(&self, since_hour: i64, limit: i64) -> StoreResult<Vec<PopularEntry>> {
        let rows = sqlx::query_as::<Db, (i64, String, i64, i64)>(
            "select p.id, p.name, p.price, s.sold from \
             (select product_id, cast(sum(quantity) as bigint) as sold from product_sales_hourly \
              where hour >= $1 group by product_id having sum(quantity) > 0) s \
             join product p on p.id = s.product_id order by s.sold desc, p.id limit $2",
        )
        .bind(since_hour)
        .bind(limit)
        .fetch_all(self.reader())
        .await
        .map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|(product_id, name, price, sold_quantity)| PopularEntry {
                product_id,
                name,
                price,
                sold_quantity,
            })
            .collect())
    }

    async fn lease_outbox(&self, now: Timestamp, lease_until: Timestamp, limit: i64) -> StoreResult<Vec<OutboxEvent>> {
        let mut tx = self.begin_write().await.map_err(store_err)?;
        let mut rows = sqlx::query_as::<Db, (i64, String, String, i64, String)>(super::LEASE_OUTBOX_SQL)
            .bind(now.millis())
            .bind(lease_until.millis())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        rows.sort_unstable_by_key(|r| r.0);
        Ok(rows
            .into_iter()
            .map(|(seq, event_id, event_type, order_id, payload)| OutboxEvent {
                seq,
                event_id,
                event_type,
                order_id,
                payload,
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
        let mut tx = self.begin_write().await.map_err(store_err)?;
        query.build().execute(&mut *tx).await.map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (unsent, oldest) = sqlx::query_as::<Db, (i64, Option<i64>)>(
            "select count(*), min(created_at) from outbox where sent_at is null",
        )
        .fetch_one(self.reader())
        .await
        .map_err(store_err)?;
        Ok(OutboxBacklog {
            unsent,
            oldest_created_at: oldest.map(Timestamp),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

impl EngineTx {
    fn conn(&mut self) -> &mut Conn {
        &mut self.tx
    }

    async fn execute(&mut self, query: sqlx::query::Query<'_, Db, <Db as Database>::Arguments>) -> StoreResult<u64> {
        Ok(query.execute(self.conn()).await.map_err(store_err)?.rows_affected())
    }
}

impl Tx for EngineTx {
    async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await.map_err(store_err)
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
        if !super::try_lock_key(self.conn(), &lock_name).await? {
            return Ok(KeyClaim::InProgress);
        }
        let inserted = self
            .execute(
                sqlx::query::<Db>(
                    "insert into idempotency_key (user_id, route, key, request_hash, created_at) \
                     values ($1, $2, $3, $4, $5) on conflict (user_id, route, key) do nothing",
                )
                .bind(scope.user_id)
                .bind(scope.route)
                .bind(&scope.key)
                .bind(request_hash)
                .bind(now.millis()),
            )
            .await?;
        if inserted == 1 {
            return Ok(KeyClaim::Fresh);
        }
        let row = sqlx::query_as::<Db, (String, Option<i64>, Option<String>)>(
            "select request_hash, status_code, response_body from idempotency_key where user_id = $1 and route = $2 and key = $3",
        )
        .bind(scope.user_id)
        .bind(scope.route)
        .bind(&scope.key)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?;
        Ok(match row {
            // The holder rolled back between our insert and this read: the key is free again,
            // but this transaction did not take it; the client can retry.
            None => KeyClaim::InProgress,
            Some((hash, _, _)) if hash != request_hash => KeyClaim::Reused,
            Some((_, Some(status), Some(body))) => KeyClaim::Replay {
                status: u16::try_from(status).unwrap_or(200),
                body,
            },
            Some(_) => KeyClaim::InProgress,
        })
    }

    async fn save_idempotent_response(&mut self, scope: &IdempotencyScope, status: u16, body: &str) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "update idempotency_key set status_code = $4, response_body = $5 where user_id = $1 and route = $2 and key = $3",
            )
            .bind(scope.user_id)
            .bind(scope.route)
            .bind(&scope.key)
            .bind(i64::from(status))
            .bind(body),
        )
        .await
        .map(drop)
    }

    async fn insert_user(&mut self, user: &NewUser, now: Timestamp) -> StoreResult<Option<UserId>> {
        sqlx::query_scalar::<Db, i64>(
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
        .map_err(store_err)
    }

    async fn upsert_admin(&mut self, user: &NewUser, now: Timestamp) -> StoreResult<UserId> {
        sqlx::query_scalar::<Db, i64>(
            "insert into account (email, password_hash, name, role, created_at) values ($1, $2, $3, 'ADMIN', $4) \
             on conflict (email) do update set password_hash = excluded.password_hash, role = 'ADMIN' returning id",
        )
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.name)
        .bind(now.millis())
        .fetch_one(self.conn())
        .await
        .map_err(store_err)
    }

    async fn user_exists(&mut self, id: UserId) -> StoreResult<bool> {
        let row = sqlx::query_scalar::<Db, i64>("select id from account where id = $1")
            .bind(id)
            .fetch_optional(self.conn())
            .await
            .map_err(store_err)?;
        Ok(row.is_some())
    }

    async fn insert_product(&mut self, product: &NewProduct, now: Timestamp) -> StoreResult<Product> {
        let row = sqlx::query_as::<Db, ProductRow>(
            "insert into product (name, price, stock, status, created_at) values ($1, $2, $3, 'ON_SALE', $4) \
             returning id, name, price, stock, status",
        )
        .bind(&product.name)
        .bind(product.price)
        .bind(product.stock)
        .bind(now.millis())
        .fetch_one(self.conn())
        .await
        .map_err(store_err)?;
        product_from(row)
    }

    async fn update_product(&mut self, id: ProductId, patch: &ProductPatch) -> StoreResult<Option<Product>> {
        sqlx::query_as::<Db, ProductRow>(
            "update product set name = coalesce($2, name), price = coalesce($3, price), status = coalesce($4, status) \
             where id = $1 returning id, name, price, stock, status",
        )
        .bind(id)
        .bind(patch.name.as_deref())
        .bind(patch.price)
        .bind(patch.status.map(ProductStatus::as_str))
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?
        .map(product_from)
        .transpose()
    }

    async fn add_stock(&mut self, id: ProductId, quantity: i64, max_stock: i64) -> StoreResult<Option<Product>> {
        sqlx::query_as::<Db, ProductRow>(
            "update product set stock = stock + $2 where id = $1 and stock <= $3 - $2 returning id, name, price, stock, status",
        )
        .bind(id)
        .bind(quantity)
        .bind(max_stock)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)?
        .map(product_from)
        .transpose()
    }

    async fn product(&mut self, id: ProductId) -> StoreResult<Option<Product>> {
        fetch_product(self.conn(), id).await
    }

    async fn take_stock(&mut self, id: ProductId, quantity: i64) -> StoreResult<bool> {
        let taken = self
            .execute(
                sqlx::query::<Db>("update product set stock = stock - $2 where id = $1 and stock >= $2")
                    .bind(id)
                    .bind(quantity),
            )
            .await?;
        Ok(taken == 1)
    }

    async fn credit_balance(&mut self, user: UserId, amount: i64, max_balance: i64) -> StoreResult<Option<i64>> {
        sqlx::query_scalar::<Db, i64>(
            "update account set balance = balance + $2 where id = $1 and balance <= $3 - $2 returning balance",
        )
        .bind(user)
        .bind(amount)
        .bind(max_balance)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)
    }

    async fn debit_balance(&mut self, user: UserId, amount: i64) -> StoreResult<Option<i64>> {
        sqlx::query_scalar::<Db, i64>(
            "update account set balance = balance - $2 where id = $1 and balance >= $2 returning balance",
        )
        .bind(user)
        .bind(amount)
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)
    }

    async fn append_balance_entry(
        &mut self,
        user: UserId,
        kind: EntryKind,
        amount: i64,
        balance_after: i64,
        order_id: Option<OrderId>,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into balance_entry (user_id, kind, amount, balance_after, order_id, created_at) \
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user)
            .bind(kind.as_str())
            .bind(amount)
            .bind(balance_after)
            .bind(order_id)
            .bind(now.millis()),
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
            .bind(user)
            .bind(product)
            .bind(quantity),
        )
        .await
        .map(drop)
    }

    async fn remove_cart_items(&mut self, user: UserId, products: &[ProductId]) -> StoreResult<()> {
        for product in products {
            self.execute(
                sqlx::query::<Db>("delete from cart_item where user_id = $1 and product_id = $2")
                    .bind(user)
                    .bind(*product),
            )
            .await?;
        }
        Ok(())
    }

    async fn clear_cart(&mut self, user: UserId) -> StoreResult<()> {
        self.execute(sqlx::query::<Db>("delete from cart_item where user_id = $1").bind(user))
            .await
            .map(drop)
    }

    async fn insert_coupon(&mut self, coupon: &NewCoupon, now: Timestamp) -> StoreResult<Coupon> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into coupon (name, discount_type, discount_value, total_quantity, valid_for_seconds, created_at) \
             values ($1, $2, $3, $4, $5, $6) returning id",
        )
        .bind(&coupon.name)
        .bind(coupon.discount.kind.as_str())
        .bind(coupon.discount.value)
        .bind(coupon.total_quantity)
        .bind(coupon.valid_for_seconds)
        .bind(now.millis())
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
        Ok(Coupon {
            id,
            name: coupon.name.clone(),
            discount: coupon.discount,
            total_quantity: coupon.total_quantity,
            remaining_quantity: coupon.total_quantity,
            valid_for_seconds: coupon.valid_for_seconds,
        })
    }

    async fn insert_user_coupon(
        &mut self,
        user: UserId,
        coupon: CouponId,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<Option<UserCouponId>> {
        sqlx::query_scalar::<Db, i64>(
            "insert into user_coupon (user_id, coupon_id, issued_at, expires_at) values ($1, $2, $3, $4) \
             on conflict (user_id, coupon_id) do nothing returning id",
        )
        .bind(user)
        .bind(coupon)
        .bind(issued_at.millis())
        .bind(expires_at.millis())
        .fetch_optional(self.conn())
        .await
        .map_err(store_err)
    }

    async fn take_coupon(&mut self, coupon: CouponId, first_shard: i64) -> StoreResult<bool> {
        // Pick the first shard with stock at or after `first_shard` (wrapping), then take one
        // from it with a guarded update. Losing the race for the last one of a shard just means
        // trying again; the loop ends when no shard has stock left.
        loop {
            let taken = self
                .execute(
                    sqlx::query::<Db>(
                        "update coupon_shard set remaining = remaining - 1 where coupon_id = $1 and remaining > 0 and shard = \
                         (select shard from coupon_shard where coupon_id = $1 and remaining > 0 \
                          order by case when shard >= $2 then shard - $2 else shard + 1000000 end limit 1)",
                    )
                    .bind(coupon)
                    .bind(first_shard),
                )
                .await?;
            if taken == 1 {
                return Ok(true);
            }
            let left = sqlx::query_scalar::<Db, i64>(
                "select count(*) from coupon_shard where coupon_id = $1 and remaining > 0",
            )
            .bind(coupon)
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
                .bind(id)
                .bind(order)
                .bind(now.millis()),
            )
            .await?;
        Ok(used == 1)
    }

    async fn release_coupon(&mut self, id: UserCouponId) -> StoreResult<()> {
        self.execute(sqlx::query::<Db>("update user_coupon set used_at = null, order_id = null where id = $1").bind(id))
            .await
            .map(drop)
    }

    async fn insert_order(&mut self, order: &NewOrder) -> StoreResult<OrderId> {
        let id = sqlx::query_scalar::<Db, i64>(
            "insert into purchase_order (user_id, status, total_amount, created_at, expires_at) \
             values ($1, 'PENDING_PAYMENT', $2, $3, $4) returning id",
        )
        .bind(order.user_id)
        .bind(order.total_amount)
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
                .push_bind(line.product_id)
                .push_bind(line.name.clone())
                .push_bind(line.unit_price)
                .push_bind(line.quantity)
                .push_bind(line.amount);
        });
        lines.build().execute(self.conn()).await.map_err(store_err)?;
        Ok(id)
    }

    async fn order(&mut self, id: OrderId) -> StoreResult<Option<Order>> {
        fetch_order(self.conn(), id).await
    }

    async fn mark_paid(
        &mut self,
        id: OrderId,
        discount_amount: i64,
        paid_amount: i64,
        user_coupon: Option<UserCouponId>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let updated = self
            .execute(
                sqlx::query::<Db>(
                    "update purchase_order set status = 'PAID', discount_amount = $2, paid_amount = $3, user_coupon_id = $4, \
                     paid_at = $5 where id = $1 and status = 'PENDING_PAYMENT' and expires_at > $5",
                )
                .bind(id)
                .bind(discount_amount)
                .bind(paid_amount)
                .bind(user_coupon)
                .bind(now.millis()),
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
                .bind(id)
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
                .bind(id)
                .bind(now.millis()),
            )
            .await?;
        Ok(updated == 1)
    }

    async fn add_sales(&mut self, product: ProductId, hour: i64, quantity: i64) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into product_sales_hourly (hour, product_id, quantity) values ($1, $2, $3) \
                 on conflict (hour, product_id) do update set quantity = product_sales_hourly.quantity + excluded.quantity",
            )
            .bind(hour)
            .bind(product)
            .bind(quantity),
        )
        .await
        .map(drop)
    }

    async fn append_outbox(
        &mut self,
        event_id: &str,
        event_type: &str,
        order_id: OrderId,
        payload: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.execute(
            sqlx::query::<Db>(
                "insert into outbox (event_id, event_type, order_id, payload, created_at) values ($1, $2, $3, $4, $5)",
            )
            .bind(event_id)
            .bind(event_type)
            .bind(order_id)
            .bind(payload)
            .bind(now.millis()),
        )
        .await
        .map(drop)
    }
}
