-- Token hygiene (contract v2): a password change bumps the account's token version, and every
-- token carries the version it was issued under, so older tokens are refused; a logout records
-- the token's id until the token would have expired anyway (then the purge job forgets it).
alter table account add column token_version bigint not null default 0;

create table revoked_token (
    jti        text   primary key,
    user_id    bigint not null references account (id),
    expires_at bigint not null
);
-- Read per account on every token check, purged by age.
create index revoked_token_user on revoked_token (user_id, expires_at);
create index revoked_token_expiry on revoked_token (expires_at);
