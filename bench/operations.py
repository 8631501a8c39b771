"""What the operations of docs/adr/0013-operations.md cost: pruning audit rows through the narrow path
(checkpoint + gate/SECURITY DEFINER function + guarded trigger) against a plain DELETE of the same
number of rows in the same database, `audit verify` of a pruned chain, a chain-head export for
many tenants, and listing the dead-letter queue on Redis and Kafka.

    .venv/bin/python -m bench.operations [--rows 20000] [--tenants 2000] [--dead 500]
        [--pg postgresql+asyncpg://admin@127.0.0.1/postgres] [--redis redis://127.0.0.1:6379]
        [--kafka 127.0.0.1:19092] [--json out.json]

Without ``--pg`` / ``--redis`` / ``--kafka`` those parts are skipped. Times are wall-clock seconds
of one run (each operation is long enough to time whole).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from contrackt.adapters.db.tables import audit_logs, tenants
from contrackt.domain.audit import GENESIS_HASH, AuditAction, AuditEvent, chain_hash
from contrackt.domain.ids import new_id

OLD = datetime.now(UTC) - timedelta(days=6 * 365)


def chain_rows(tenant_id: str, n: int, start: datetime) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        event = AuditEvent(
            tenant_id=tenant_id,
            action=AuditAction.PROCESSING,
            at=start + timedelta(seconds=seq),
            job_id=new_id(),
            details={"attempt": 1},
        )
        row_hash = chain_hash(prev, event, seq)
        rows.append(
            {
                "tenant_id": tenant_id,
                "seq": seq,
                "job_id": event.job_id,
                "action": event.action.value,
                "at": event.at,
                "api_key_id": None,
                "fingerprint": None,
                "details": event.details,
                "prev_hash": prev,
                "row_hash": row_hash,
            }
        )
        prev = row_hash
    return rows, (n, prev)


async def seed_chain(uow: Any, tenant_id: str, n: int) -> None:
    rows, (seq, head) = chain_rows(tenant_id, n, OLD)
    async with uow(tenant_id) as u:
        await u.conn.execute(tenants.insert().values(id=tenant_id, name="bench", created_at=OLD))
        for i in range(0, len(rows), 5000):
            await u.conn.execute(audit_logs.insert(), rows[i : i + 5000])
        await u.conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(audit_seq=seq, audit_head=head))


async def retention_part(c: Any, rows: int, plain_delete: Any) -> dict[str, Any]:
    """Two equal chains: one pruned by the retention service, one by a plain DELETE (guard off)."""
    from contrackt.services.audit import verify
    from contrackt.services.retention import RetentionService

    guarded = [new_id(), new_id()]
    for tenant_id in guarded:
        await seed_chain(c.uow, tenant_id, rows)
    await c.signer.public_key_raw()
    service = RetentionService(c.uow, c.signer, c.clock, retention_days=1826)
    started = time.perf_counter()
    report = await service.apply()  # two chains: the time per chain is half
    both = time.perf_counter() - started
    assert report.audit_rows == 2 * rows, report
    plain = new_id()  # the baseline: an equal chain deleted with no guard at all
    await seed_chain(c.uow, plain, rows)
    started = time.perf_counter()
    await plain_delete(plain, rows)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    [chain] = await verify(c.uow, guarded[0], public_key=await c.signer.public_key_raw())
    verify_s = time.perf_counter() - started
    assert chain.problems == [], chain.problems
    guarded_s = both / 2
    return {
        "rows_per_chain": rows,
        "retention_s_per_chain": round(guarded_s, 3),
        "retention_rows_per_s": round(rows / guarded_s),
        "plain_delete_s": round(plain_s, 3),
        "plain_rows_per_s": round(rows / plain_s),
        "overhead_ratio": round(guarded_s / plain_s, 2),
        "verify_pruned_chain_s": round(verify_s, 4),
    }


async def export_part(c: Any, n_tenants: int) -> dict[str, Any]:
    from contrackt.adapters.checkpoints.file import FileCheckpointSink
    from contrackt.services.checkpoints import CheckpointService

    for _ in range(n_tenants):
        tid = new_id()
        async with c.uow(tid) as u:
            await u.conn.execute(
                tenants.insert().values(id=tid, name="b", created_at=OLD, audit_seq=7, audit_head="a" * 64)
            )
    with tempfile.TemporaryDirectory() as tmp:
        sink = FileCheckpointSink(Path(tmp))
        service = CheckpointService(c.uow, c.signer, c.clock, sink)
        started = time.perf_counter()
        export = await service.export()
        seconds = time.perf_counter() - started
        size = (Path(tmp) / export.name).stat().st_size
        started = time.perf_counter()
        external = await service.newest()
        read_s = time.perf_counter() - started
    assert external is not None and external.signed
    return {
        "chains": export.chains,
        "export_s": round(seconds, 3),
        "bytes": size,
        "bytes_per_chain": round(size / export.chains),
        "read_and_check_s": round(read_s, 3),
    }


async def sqlite_part(args: argparse.Namespace) -> dict[str, Any]:
    from contrackt.adapters.db.migrate import upgrade
    from contrackt.bootstrap import build
    from contrackt.settings import Settings

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        await asyncio.to_thread(upgrade, settings.db_url)
        c = build(settings)
        try:

            async def plain_delete(tenant_id: str, upto: int) -> None:
                async with c.uow(tenant_id) as u:
                    await u.conn.exec_driver_sql("DROP TRIGGER audit_logs_no_delete")
                    await u.conn.execute(
                        audit_logs.delete().where(audit_logs.c.tenant_id == tenant_id, audit_logs.c.seq <= upto)
                    )
                    await u.conn.exec_driver_sql(
                        "CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs BEGIN "
                        "SELECT RAISE(ABORT, 'audit_logs is append-only'); END"
                    )

            return {
                "retention": await retention_part(c, args.rows, plain_delete),
                "export": await export_part(c, args.tenants),
            }
        finally:
            await c.close()


async def pg_part(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from contrackt.adapters.db.postgres_admin import migrate
    from contrackt.bootstrap import build
    from contrackt.settings import Settings

    admin = sa.engine.make_url(args.pg)
    suffix = uuid.uuid4().hex[:8]
    database, role = f"ctk_bench_{suffix}", f"ctk_bench_{suffix}"
    service_url = admin.set(username=role, password=f"pw-{suffix}", database=database)
    target_admin = admin.set(drivername="postgresql", database=database).render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            database_url=service_url.render_as_string(hide_password=False),
            database_admin_url=args.pg,  # type: ignore[arg-type]
        )
        await asyncio.to_thread(migrate, settings)
        c = build(settings)
        try:

            async def plain_delete(tenant_id: str, upto: int) -> None:
                conn = await asyncpg.connect(target_admin)
                try:
                    async with conn.transaction():
                        await conn.execute("SET LOCAL session_replication_role = replica")
                        await conn.execute(
                            "DELETE FROM audit_logs WHERE tenant_id = $1::uuid AND seq <= $2", tenant_id, upto
                        )
                finally:
                    await conn.close()

            return {
                "retention": await retention_part(c, args.rows, plain_delete),
                "export": await export_part(c, args.tenants),
            }
        finally:
            await c.close()
            conn = await asyncpg.connect(admin.set(drivername="postgresql").render_as_string(hide_password=False))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                for r in (role, f"{role}_owner"):
                    await conn.execute(f'DROP ROLE IF EXISTS "{r}"')
            finally:
                await conn.close()


async def dlq_part(args: argparse.Namespace) -> dict[str, Any]:
    """Listing ``--dead`` entries (each a real dead-lettered message's shape)."""
    from contrackt.domain.jobs import JobMessage

    out: dict[str, Any] = {}
    name = f"ctk-bench-dlq-{uuid.uuid4().hex[:8]}"
    messages = [JobMessage(new_id(), new_id(), "t/j.enc", 3) for _ in range(args.dead)]
    if args.redis:
        from redis.asyncio import Redis

        from contrackt.adapters.queue.dead_redis import RedisDeadLetters
        from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

        q = RedisStreamsQueue.from_url(f"{args.redis}/0/{name}")
        try:
            for m in messages:
                await q.client.xadd(
                    q.dead_stream, {"job": json.dumps(m.to_dict()), "reason": "timeout", "deliveries": "3"}
                )
            dead = RedisDeadLetters.for_queue(q)
            started = time.perf_counter()
            listed = await dead.list(limit=args.dead)
            out["redis_list_s"] = round(time.perf_counter() - started, 4)
            assert len(listed) == args.dead
        finally:
            r = Redis.from_url(args.redis)
            keys = [k async for k in r.scan_iter(match="{" + name + "}:*")]
            if keys:
                await r.delete(*keys)
            await r.aclose()
            await q.close()
    if args.kafka:
        from aiokafka import AIOKafkaProducer

        from contrackt.adapters.queue.dead_kafka import KafkaDeadLetters

        producer = AIOKafkaProducer(bootstrap_servers=args.kafka, enable_idempotence=False)
        await producer.start()
        try:
            for m in messages:
                body = {"job": m.to_dict(), "deliveries": 3, "reason": "timeout"}
                await producer.send(f"{name}.dead", json.dumps(body).encode())
            await producer.flush()
        finally:
            await producer.stop()
        dead_k = KafkaDeadLetters(args.kafka, f"{name}.dead")
        started = time.perf_counter()
        listed = await dead_k.list(limit=args.dead)
        out["kafka_list_s"] = round(time.perf_counter() - started, 4)
        assert len(listed) == args.dead, len(listed)
        started = time.perf_counter()
        assert await dead_k.remove(listed[0].entry_id, "dropped")
        out["kafka_remove_s"] = round(time.perf_counter() - started, 4)
        await dead_k.close()
    out["entries"] = args.dead
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000, help="audit rows per chain to prune")
    parser.add_argument("--tenants", type=int, default=2000, help="chains in the export")
    parser.add_argument("--dead", type=int, default=500, help="dead letters to list")
    parser.add_argument("--pg", default=None, help="admin URL of a PostgreSQL server (a database is made and dropped)")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--kafka", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"sqlite": await sqlite_part(args)}
    if args.pg:
        results["postgresql"] = await pg_part(args)
    if args.redis or args.kafka:
        results["dlq"] = await dlq_part(args)
    for backend in ("sqlite", "postgresql"):
        if backend in results:
            r, e = results[backend]["retention"], results[backend]["export"]
            print(
                f"{backend:10} prune {r['rows_per_chain']} rows: {r['retention_s_per_chain']} s "
                f"({r['retention_rows_per_s']}/s) vs plain DELETE {r['plain_delete_s']} s "
                f"({r['plain_rows_per_s']}/s), x{r['overhead_ratio']}; "
                f"verify pruned chain {r['verify_pruned_chain_s']} s"
            )
            print(
                f"{backend:10} export {e['chains']} chain heads: {e['export_s']} s, {e['bytes']} bytes "
                f"({e['bytes_per_chain']}/chain); read + check {e['read_and_check_s']} s"
            )
    if "dlq" in results:
        print(f"dlq        list {results['dlq']['entries']} entries: {results['dlq']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
