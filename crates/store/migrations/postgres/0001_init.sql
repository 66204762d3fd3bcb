-- Money and counts are bigint; instants are bigint milliseconds since the Unix epoch, so that
-- both engines compare them the same way.
create table app_setting (
    name  text primary key,
    value text not null
);

create table account (
    id            bigserial primary key,
    email         text   not null unique,
    password_hash text   not null,
    name          text   not null,
    role          text   not null,
    balance       bigint not null default 0 check (balance >= 0),
    created_at    bigint not null
);
create index account_admin on account (role) where role = 'ADMIN';

create table product (
    id         bigserial primary key,
    name       text   not null,
    price      bigint not null check (price >= 0),
    stock      bigint not null check (stock >= 0),
    status     text   not null,
    created_at bigint not null
);
create index product_on_sale on product (id) where status = 'ON_SALE';

create table balance_entry (
    id            bigserial primary key,
    user_id       bigint not null references account (id),
    kind          text   not null,
    amount        bigint not null,
    balance_after bigint not null,
    order_id      bigint,
    created_at    bigint not null
);
create index balance_entry_user on balance_entry (user_id, id);

create table idempotency_key (
    user_id       bigint not null,
    route         text   not null,
    key           text   not null,
    request_hash  text   not null,
    status_code   bigint,
    response_body text,
    created_at    bigint not null,
    primary key (user_id, route, key)
);

create table cart_item (
    id         bigserial primary key,
    user_id    bigint not null references account (id),
    product_id bigint not null references product (id),
    quantity   bigint not null,
    unique (user_id, product_id)
);

create table coupon (
    id                bigserial primary key,
    name              text   not null,
    discount_type     text   not null,
    discount_value    bigint not null,
    total_quantity    bigint not null,
    valid_for_seconds bigint not null,
    created_at        bigint not null
);

-- A coupon's quantity is spread over several counter rows so that a rush does not queue on one.
create table coupon_shard (
    coupon_id bigint not null references coupon (id),
    shard     bigint not null,
    remaining bigint not null check (remaining >= 0),
    primary key (coupon_id, shard)
);

create table user_coupon (
    id         bigserial primary key,
    user_id    bigint not null references account (id),
    coupon_id  bigint not null references coupon (id),
    issued_at  bigint not null,
    expires_at bigint not null,
    used_at    bigint,
    order_id   bigint,
    unique (user_id, coupon_id)
);
create index user_coupon_user on user_coupon (user_id, id);

create table purchase_order (
    id              bigserial primary key,
    user_id         bigint not null references account (id),
    status          text   not null,
    total_amount    bigint not null,
    discount_amount bigint not null default 0,
    paid_amount     bigint not null default 0,
    user_coupon_id  bigint,
    created_at      bigint not null,
    expires_at      bigint not null,
    paid_at         bigint,
    closed_at       bigint
);
create index purchase_order_user on purchase_order (user_id, id);
create index purchase_order_pending on purchase_order (expires_at) where status = 'PENDING_PAYMENT';

create table order_line (
    order_id   bigint not null references purchase_order (id),
    line_no    bigint not null,
    product_id bigint not null,
    name       text   not null,
    unit_price bigint not null,
    quantity   bigint not null,
    amount     bigint not null,
    primary key (order_id, line_no)
);

create table product_sales_hourly (
    hour       bigint not null,
    product_id bigint not null,
    quantity   bigint not null,
    primary key (hour, product_id)
);

create table outbox (
    seq         bigserial primary key,
    event_id    text   not null unique,
    event_type  text   not null,
    order_id    bigint not null,
    payload     text   not null,
    created_at  bigint not null,
    lease_until bigint,
    sent_at     bigint
);
create index outbox_unsent on outbox (seq) where sent_at is null;
create index outbox_unsent_order on outbox (order_id, seq) where sent_at is null;
