-- The periodic purge of old idempotency keys reads by age.
create index idempotency_key_created on idempotency_key (created_at);
