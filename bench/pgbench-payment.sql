-- One payment as the server runs it (crates/domain/src/payment.rs `pay`, statements from
-- crates/store/src/shared.rs and crates/store/src/postgres.rs), for pgbench against a database
-- filled by bench/pgbench-setup.sql:
--   pgbench -n -M prepared -c 64 -j 2 -T 10 -f bench/pgbench-payment.sql <db>
-- Same statements, same order, one transaction: read the order with its lines (one join),
-- guarded order update (mark_paid), the purchase tally upsert with the product's limit read in
-- it (add_purchase), stock update (take_stock), balance debit (debit_balance), history insert
-- (append_balance_entry), cart delete (remove_cart_items), sales upsert (add_sales), outbox
-- insert (append_outbox), the product-change notification (pg_notify). The only addition is
-- nextval(), which hands each payment its own order; the order's one line is read in the same
-- join the server uses.
-- (The event payload is written with ~ for : so that pgbench does not read :name as a variable.)
begin;
select o.id as oid, o.user_id as uid, o.total_amount as total, l.product_id as pid, l.quantity as qty,
    (extract(epoch from clock_timestamp()) * 1000)::bigint as now
  from purchase_order o join order_line l on l.order_id = o.id
  where o.id = (select nextval('bench_order_seq')) order by l.line_no \gset
\set hour :now / 3600000
update purchase_order set status = 'PAID', discount_amount = 0, paid_amount = :total, user_coupon_id = null, paid_at = :now
  where id = :oid and status = 'PENDING_PAYMENT' and expires_at > :now;
insert into purchase_tally (user_id, product_id, quantity)
  select :uid, p.id, :qty from product p where p.id = :pid and (p.max_per_user is null or :qty <= p.max_per_user)
  on conflict (user_id, product_id) do update set quantity = purchase_tally.quantity + excluded.quantity
  where purchase_tally.quantity + excluded.quantity <=
    coalesce((select max_per_user from product where id = :pid), purchase_tally.quantity + excluded.quantity)
  returning quantity;
update product set stock = stock - :qty where id = :pid and stock >= :qty;
update account set balance = balance - :total where id = :uid and balance >= :total returning balance as bal \gset
insert into balance_entry (user_id, kind, amount, balance_after, order_id, created_at)
  values (:uid, 'PAYMENT', -(:total::bigint), :bal, :oid, :now);
delete from cart_item where user_id = :uid and product_id = :pid;
insert into product_sales_hourly (hour, product_id, quantity) values (:hour, :pid, :qty)
  on conflict (hour, product_id) do update set quantity = product_sales_hourly.quantity + excluded.quantity;
insert into outbox (event_id, event_type, order_id, payload, created_at)
  values (gen_random_uuid()::text, 'order.paid', :oid,
    replace('{"id"~"00000000-0000-4000-8000-000000000000","type"~"order.paid","occurred_at"~"2025-01-01T00~00~00Z","data"~{"order_id"~1,"user_id"~1,"items"~[{"product_id"~1,"quantity"~1,"unit_price"~1000,"amount"~1000}],"total_amount"~1000,"discount_amount"~0,"paid_amount"~1000,"user_coupon_id"~null,"paid_at"~"2025-01-01T00~00~00Z"}}', '~', ':'),
    :now);
select pg_notify('ecommerce_product_changes', :pid::text);
commit;
