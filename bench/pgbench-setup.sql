-- Fills a fresh database (schema from crates/store/migrations/postgres/0001_init.sql already
-- applied) for bench/pgbench-payment.sql: the same shape as the `pay` scenario of loadgen.
--   psql -v accounts=200 -v products=100 -v orders=150000 -f bench/pgbench-setup.sql
-- accounts and products match loadgen's --users and --products defaults, so both runs spread
-- their writes over the same number of hot rows; orders must outlast the run (one per payment).
\set ON_ERROR_STOP on

insert into account (email, password_hash, name, role, balance, created_at)
select 'pgbench' || g || '@loadgen.test', 'not-a-hash', 'pgbench ' || g, 'USER', 10000000, 0
from generate_series(1, :accounts) g;

insert into product (name, price, stock, status, created_at)
select 'pgbench product ' || g, 1000, 10000000, 'ON_SALE', 0
from generate_series(1, :products) g;

-- Pending orders of one unit each, users and products taken in turn, never expiring.
insert into purchase_order (user_id, status, total_amount, created_at, expires_at)
select (select min(id) from account) + g % :accounts, 'PENDING_PAYMENT', 1000, 0, 9000000000000
from generate_series(0, :orders - 1) g;

insert into order_line (order_id, line_no, product_id, name, unit_price, quantity, amount)
select o.id, 0, (select min(id) from product) + o.id % :products, 'pgbench product', 1000, 1, 1000
from purchase_order o;

-- Each payment claims the next pending order.
create sequence bench_order_seq start with 1;
select setval('bench_order_seq', (select min(id) from purchase_order), false);

vacuum analyze;
