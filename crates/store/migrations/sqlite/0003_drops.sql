-- Limited drops: scheduled release and per-customer limits on products, issue windows on
-- coupons. Every new column is nullable (null: no release time, no limit, no window), so a
-- rolling restart runs the previous version against this schema unchanged.
alter table product add column sale_starts_at bigint;
alter table product add column max_per_user bigint check (max_per_user between 1 and 1000);
alter table coupon add column issue_starts_at bigint;
alter table coupon add column issue_ends_at bigint;

-- The quantity of each product in each user's PAID orders. Payment adds to it with a guarded
-- write (the row is the lock of a user's concurrent payments), refund takes it back off. No
-- foreign keys: like the sales figures, it is written on the payment path and read by key.
create table purchase_tally (
    user_id    bigint not null,
    product_id bigint not null,
    quantity   bigint not null check (quantity >= 0),
    primary key (user_id, product_id)
);

-- What was paid before this migration counts too.
insert into purchase_tally (user_id, product_id, quantity)
select o.user_id, l.product_id, cast(sum(l.quantity) as bigint)
from purchase_order o join order_line l on l.order_id = o.id
where o.status = 'PAID'
group by o.user_id, l.product_id;
