-- Draws (fair admission to a limited drop). A draw's units left the product's stock when it was
-- created; the winners' orders (`purchase_order.draw_id`) hold them until paid, cancelled or
-- expired. `seed` is the CSPRNG seed the winners were chosen with, kept for audits.
create table draws (
    id                     integer primary key autoincrement,
    product_id             bigint not null references product (id),
    quantity               bigint not null check (quantity > 0),
    entry_starts_at        bigint not null,
    entry_ends_at          bigint not null,
    payment_window_seconds bigint not null,
    entry_count            bigint not null default 0 check (entry_count >= 0),
    winner_count           bigint,
    drawn_at               bigint,
    seed                   text,
    created_at             bigint not null
);
create index draws_due on draws (entry_ends_at) where drawn_at is null;

create table draw_entries (
    id         integer primary key autoincrement,
    draw_id    bigint not null references draws (id),
    user_id    bigint not null references account (id),
    status     text   not null,
    entered_at bigint not null,
    order_id   bigint,
    unique (draw_id, user_id)
);
create index draw_entries_draw on draw_entries (draw_id, id);

alter table purchase_order add column draw_id bigint references draws (id);
create index purchase_order_draw on purchase_order (draw_id, user_id) where draw_id is not null;
