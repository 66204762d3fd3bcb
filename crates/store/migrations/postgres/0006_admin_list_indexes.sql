-- The console's list of every user's orders, filtered by status, reads newest first by status.
create index purchase_order_status on purchase_order (status, id);
