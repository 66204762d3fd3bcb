-- The console's lists read newest first by status: every user's orders, every product.
create index purchase_order_status on purchase_order (status, id);
create index product_status on product (status, id);
-- Its live figures count the orders paid in the last seconds.
create index purchase_order_paid_at on purchase_order (paid_at) where paid_at is not null;
