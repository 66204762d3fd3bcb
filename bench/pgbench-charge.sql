-- One balance charge as the server runs it with an Idempotency-Key (crates/api/src/idempotency.rs,
-- crates/domain/src/wallet.rs `charge`, statements from crates/store/src/shared.rs and
-- crates/store/src/postgres.rs), for pgbench against a database filled by bench/pgbench-setup.sql
-- whose balances were then set to 0 (bench/run.sh does it):
--   pgbench -n -M prepared -c 64 -j 2 -T 10 -D accounts=200 -f bench/pgbench-charge.sql <db>
-- Same statements, same order, one transaction: the key's advisory lock (try_lock_key), the key
-- claim (claim_idempotency_key), the guarded credit (credit_balance), the history line
-- (append_balance_entry), the stored answer (save_idempotent_response). The only addition is
-- nextval(), which hands each charge its own key, as loadgen's `charge` scenario does.
\set uid random(1, :accounts)
begin;
select nextval('bench_key_seq') as k, (extract(epoch from clock_timestamp()) * 1000)::bigint as now \gset
select pg_try_advisory_xact_lock(hashtextextended(:uid::text || '/balance.charge/pgb-' || :k::text, 0));
insert into idempotency_key (user_id, route, key, request_hash, created_at)
  values (:uid, 'balance.charge', 'pgb-' || :k::text, 'c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2', :now)
  on conflict (user_id, route, key) do nothing;
update account set balance = balance + 1000 where id = :uid and balance <= 10000000 - 1000 returning balance as bal \gset
insert into balance_entry (user_id, kind, amount, balance_after, order_id, created_at)
  values (:uid, 'CHARGE', 1000, :bal, null, :now);
update idempotency_key set status_code = 200, response_body = '{"charged_amount": 1000, "balance": 1000}'
  where user_id = :uid and route = 'balance.charge' and key = 'pgb-' || :k::text;
commit;
