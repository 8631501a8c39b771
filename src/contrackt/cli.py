"""The ``contrackt`` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from contrackt.domain.audit import SERVICE_CHAIN
from contrackt.secret_files import SecretFileError
from contrackt.settings import Settings

T = TypeVar("T")


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


def _settings() -> Settings:
    from contrackt.logging import configure

    # Everything we write (database, WAL, blobs, key file) is for our eyes only.
    os.umask(0o077)
    try:
        s = Settings()
    except ValidationError as exc:  # the message of each error, never the input (it holds secrets)
        raise click.ClickException("; ".join(str(e["msg"]) for e in exc.errors(include_input=False))) from None
    except SecretFileError as exc:
        raise click.ClickException(str(exc)) from None
    configure(s.log_format, s.log_level)
    return s


def _ensure_schema(settings: Settings) -> None:
    """The embedded database creates itself; PostgreSQL needs ``contrackt migrate``."""
    if settings.db_url.startswith("sqlite"):
        from contrackt.adapters.db.migrate import upgrade

        upgrade(settings.db_url)


@click.group()
@click.version_option(package_name="contrackt")
def main() -> None:
    """Contrackt: private PDF text extraction."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """API and workers in one process group, embedded defaults."""
    import uvicorn

    from contrackt.api.app import create_app

    settings = _settings()
    _ensure_schema(settings)
    app = create_app(settings, run_worker=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # The client address is the TCP peer; X-Forwarded-For is weighed by the app
        # itself, only from CONTRACKT_TRUSTED_PROXIES (uvicorn would trust 127.0.0.1).
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def api(host: str, port: int) -> None:
    """The HTTP API alone (workers run as `contrackt worker`)."""
    import uvicorn

    from contrackt.api.app import create_app

    settings = _settings()
    _ensure_schema(settings)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # The client address is the TCP peer; X-Forwarded-For is weighed by the app
        # itself, only from CONTRACKT_TRUSTED_PROXIES (uvicorn would trust 127.0.0.1).
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


@main.command()
def worker() -> None:
    """Consume jobs until SIGTERM/SIGINT (then finish or release the job in hand)."""
    from contrackt.bootstrap import build
    from contrackt.worker.runtime import WorkerRuntime

    settings = _settings()
    _ensure_schema(settings)

    async def run() -> None:
        from contrackt.worker.listener import worker_listener

        c = build(settings)
        runtime = WorkerRuntime(c)
        listener = worker_listener(c, runtime)  # health + metrics (CONTRACKT_WORKER_LISTEN)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if listener is not None:
                await listener.start()
            await runtime.start(relay=True)
            await stop.wait()
            await runtime.stop(settings.shutdown_grace_seconds)
        finally:
            if listener is not None:
                await listener.stop()
            await c.close()

    _run(run)


@main.command()
@click.option(
    "--bucket/--no-bucket",
    default=True,
    show_default=True,
    help="With s3:// storage, also create the bucket and its one-day leftover-expiry rule",
)
def migrate(bucket: bool) -> None:
    """Create or upgrade the schema (and, on PostgreSQL, roles and policies)."""
    settings = _settings()
    if settings.db_url.startswith("postgresql"):
        from contrackt.adapters.db import postgres_admin

        postgres_admin.migrate(settings)
    else:
        from contrackt.adapters.db.migrate import upgrade

        upgrade(settings.db_url)
    click.echo("schema is up to date")
    if bucket and settings.blob_url.startswith("s3://"):
        from contrackt.adapters.blob.s3 import BucketRefused, S3BlobStore

        async def provision() -> str:
            store = S3BlobStore.from_url(settings.blob_url, endpoint_url=settings.s3_endpoint_url)
            try:
                return await store.ensure_bucket()
            finally:
                await store.close()

        try:
            versioning = _run(provision)
        except BucketRefused as exc:
            raise click.ClickException(f"refusing the bucket: {exc}") from None
        except Exception as exc:  # the service's credentials may not administer buckets
            raise click.ClickException(
                f"could not create the bucket or its lifecycle rule ({type(exc).__name__}); "
                "provision it with an account that may, or run with --no-bucket"
            ) from None
        click.echo("bucket and lifecycle rule are in place")
        if versioning:
            click.echo(
                f"warning: the bucket keeps object versions (versioning {versioning}). Every delete also "
                "removes each version and delete marker of the document (one listing and one call per "
                "version instead of one call; the service needs s3:ListBucketVersions and "
                "s3:DeleteObjectVersion), and the lifecycle rule expires noncurrent versions after a day. "
                "Turn versioning off unless something else needs it.",
                err=True,
            )


async def _with_container(fn: Callable[[Any], Awaitable[T]]) -> T:
    from contrackt.bootstrap import build

    c = build(Settings())
    try:
        return await fn(c)
    finally:
        await c.close()


@main.group()
def tenant() -> None:
    """Manage tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant_id": ..., "api_key": ...}')
def tenant_create(name: str, as_json: bool) -> None:
    """Create a tenant and its first API key (shown once)."""
    _ensure_schema(_settings())
    key = _run(lambda: _with_container(lambda c: c.tenants.create(name)))
    if as_json:
        click.echo(json.dumps({"tenant_id": key.tenant_id, "api_key": key.api_key}))
    else:
        click.echo(f"tenant_id: {key.tenant_id}\napi_key:   {key.api_key}\n(the key is shown only once)")


@tenant.command("list")
def tenant_list() -> None:
    _ensure_schema(_settings())
    tenants = _run(lambda: _with_container(lambda c: c.tenants.list()))
    for t in tenants:
        state = f"erased {t.erased_at.isoformat()}" if t.erased_at else "active"
        click.echo(f"{t.id}\t{t.name}\t{state}")


@tenant.command("erase")
@click.argument("tenant_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
def tenant_erase(tenant_id: str, yes: bool) -> None:
    """Crypto-shred a tenant: destroy its keys, blobs and results; revoke its API keys."""
    _ensure_schema(_settings())
    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase tenant {tenant_id} irreversibly?", abort=True)
    report = _run(lambda: _with_container(lambda c: c.tenants.erase(tenant_id, c.blobs, c.results)))
    click.echo(json.dumps(report))


@tenant.command("rotate-key")
@click.argument("tenant_id")
def tenant_rotate_key(tenant_id: str) -> None:
    """New data-key version; older ciphertexts still decrypt until they expire."""
    _ensure_schema(_settings())
    version = _run(lambda: _with_container(lambda c: c.keyring.rotate(tenant_id)))
    click.echo(f"key version {version}")


@tenant.command("limits")
@click.argument("tenant_id")
@click.option("--max-inflight", type=click.IntRange(min=1), default=None, help="Jobs processed at once")
@click.option("--max-backlog", type=click.IntRange(min=0), default=None, help="Unfinished jobs (0 pauses intake)")
@click.option("--reset", is_flag=True, help="Drop both overrides: the deployment's settings apply")
def tenant_limits(tenant_id: str, max_inflight: int | None, max_backlog: int | None, reset: bool) -> None:
    """Show or set the tenant's fair-share limits (overrides of CONTRACKT_TENANT_MAX_*)."""
    from contrackt.domain.errors import ContracktError

    settings = _settings()
    _ensure_schema(settings)

    async def run(c: Any) -> Any:
        current = await c.tenants.get(tenant_id)
        if not (reset or max_inflight is not None or max_backlog is not None):
            return current
        return await c.tenants.set_limits(
            tenant_id,
            max_inflight=None if reset else (max_inflight if max_inflight is not None else current.max_inflight),
            max_backlog=None if reset else (max_backlog if max_backlog is not None else current.max_backlog),
        )

    try:
        t = _run(lambda: _with_container(run))
    except ContracktError as exc:
        raise click.ClickException(exc.message) from None
    out = {"tenant_id": t.id}
    for name, override, default in (
        ("max_inflight", t.max_inflight, settings.tenant_max_inflight),
        ("max_backlog", t.max_backlog, settings.tenant_max_backlog),
    ):
        out[name] = {"effective": default if override is None else override, "override": override}
    click.echo(json.dumps(out))


@main.group()
def key() -> None:
    """Manage API keys."""


@key.command("create")
@click.argument("tenant_id")
def key_create(tenant_id: str) -> None:
    _ensure_schema(_settings())
    new = _run(lambda: _with_container(lambda c: c.tenants.create_key(tenant_id)))
    click.echo(json.dumps({"key_id": new.key_id, "api_key": new.api_key}))


@key.command("list")
@click.argument("tenant_id")
def key_list(tenant_id: str) -> None:
    _ensure_schema(_settings())
    keys = _run(lambda: _with_container(lambda c: c.tenants.list_keys(tenant_id)))
    for k in keys:
        state = f"revoked {k.revoked_at.isoformat()}" if k.revoked_at else "active"
        click.echo(f"{k.id}\tctk_{k.prefix}_…\t{state}")


@key.command("revoke")
@click.argument("key_id")
def key_revoke(key_id: str) -> None:
    _ensure_schema(_settings())
    done = _run(lambda: _with_container(lambda c: c.tenants.revoke_key(key_id)))
    if not done:
        raise click.ClickException("no such active key")
    click.echo("revoked")


@main.group()
def webhook() -> None:
    """Manage a tenant's webhook endpoints (the same rules as POST /v1/webhooks)."""


@webhook.command("add")
@click.argument("tenant_id")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(["job.completed", "job.failed"]),
    help="Event to send (repeatable; default: both)",
)
def webhook_add(tenant_id: str, url: str, events: tuple[str, ...]) -> None:
    """Register URL for TENANT_ID; prints {"id", "url", "events", "secret"} (the secret is shown once)."""
    from contrackt.domain.errors import ContracktError

    _ensure_schema(_settings())
    wanted = list(events) or ["job.completed", "job.failed"]
    try:
        new = _run(lambda: _with_container(lambda c: c.webhooks.add(tenant_id, url, wanted)))
    except ContracktError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    hook = new.webhook
    click.echo(json.dumps({"id": hook.id, "url": hook.url, "events": hook.events, "secret": new.secret}))


@webhook.command("list")
@click.argument("tenant_id")
def webhook_list(tenant_id: str) -> None:
    """One JSON object per line: id, url, events, created_at, disabled_at, disabled_reason."""
    _ensure_schema(_settings())
    hooks = _run(lambda: _with_container(lambda c: c.webhooks.list_for_tenant(tenant_id)))
    for h in hooks:
        click.echo(
            json.dumps(
                {
                    "id": h.id,
                    "url": h.url,
                    "events": h.events,
                    "created_at": h.created_at.isoformat(),
                    "disabled_at": h.disabled_at.isoformat() if h.disabled_at else None,
                    "disabled_reason": h.disabled_reason,
                }
            )
        )


@webhook.command("remove")
@click.argument("tenant_id")
@click.argument("webhook_id")
def webhook_remove(tenant_id: str, webhook_id: str) -> None:
    """Remove one of TENANT_ID's endpoints (its pending events are dropped)."""
    from contrackt.domain.errors import ContracktError

    _ensure_schema(_settings())
    try:
        _run(lambda: _with_container(lambda c: c.webhooks.remove(tenant_id, webhook_id)))
    except ContracktError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo("removed")


@main.group()
def audit() -> None:
    """Audit trail."""


@audit.command("verify")
@click.option("--tenant", "tenant_id", default=None)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An exported chain-head checkpoint to check against (default: the newest at CONTRACKT_AUDIT_CHECKPOINT_URL)",
)
def audit_verify(tenant_id: str | None, checkpoint_file: Path | None) -> None:
    """Check the hash chains; exit 1 if any row was changed, removed or reordered.

    Chains pruned by the retention are checked from their signed checkpoint on; with an
    external checkpoint, every chain must still reach the head it had then.
    """
    from contrackt.services.audit import verify

    settings = _settings()
    _ensure_schema(settings)

    async def run(c: Any) -> tuple[Any, Any]:
        from contrackt.bootstrap import make_checkpoint_sink
        from contrackt.services.checkpoints import read_heads

        key = await _trusted_public_key(c)
        external = None
        sink = make_checkpoint_sink(c.settings)
        try:
            if checkpoint_file is not None:
                data, name = await asyncio.to_thread(checkpoint_file.read_bytes), checkpoint_file.name
            elif sink is not None:
                newest = await sink.newest()
                data, name = (await sink.read(newest), newest) if newest else (b"", "")
            else:
                data, name = b"", ""
            if name:
                if key is None:
                    raise click.ClickException("no receipt-signing key here: the checkpoint cannot be checked")
                external = read_heads(data, name, key)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if sink is not None:
                await sink.close()
        return await verify(c.uow, tenant_id, public_key=key, external=external), external

    reports, external = _run(lambda: _with_container(run))
    bad = 0
    if external is None:
        click.echo(
            "external checkpoint: none (set CONTRACKT_AUDIT_CHECKPOINT_URL and run `contrackt audit checkpoint`; "
            "without one, rows removed from a chain's end together with its recorded head go unnoticed)"
        )
    else:
        click.echo(f"external checkpoint: {external.name} ({external.made_at.isoformat(timespec='seconds')})")
        if not external.signed:
            click.echo("  the external checkpoint is not signed by this deployment's key")
            bad += 1
    if not reports:
        click.echo("no audit records yet")
    for r in reports:
        status = "ok" if not r.problems else "TAMPERED"
        name = "service" if r.tenant_id == SERVICE_CHAIN else r.tenant_id
        since = f" from seq {r.starts_after + 1}" if r.starts_after else ""
        click.echo(f"{name}\t{r.rows} rows{since}\t{status}")
        for p in r.problems:
            click.echo(f"  {p}")
        bad += bool(r.problems)
    sys.exit(1 if bad else 0)


async def _trusted_public_key(c: Any) -> bytes | None:
    """The deployment's receipt key as the signer holds it (unwrapped through the key provider, so
    a public key rewritten in the database is not believed); None when none exists yet (nothing
    was signed), without creating one."""
    from contrackt.adapters.keys.receipt_db import stored_public_key

    if c.settings.receipt_key_file is None and await stored_public_key(c.settings.db_url) is None:
        return None
    raw: bytes = await c.signer.public_key_raw()
    return raw


@main.command()
def purge() -> None:
    """Run the retention sweeper once: expired results, orphan blobs, stuck jobs."""
    _ensure_schema(_settings())
    report = _run(lambda: _with_container(lambda c: c.sweeper.sweep()))
    click.echo(json.dumps(report.__dict__))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "pdf"]),
    default="text",
    show_default=True,
    help="pdf: the searchable PDF (binary, to stdout or --output)",
)
@click.option("--engine", default=None, help="OCR engine (default: the configured one)")
@click.option("--mode", type=click.Choice(["auto", "ocr", "text"]), default="auto", show_default=True)
@click.option("--pages", default=None, help="pages to read, e.g. 1-3,7 (PDF and TIFF)")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write here, not stdout")
def extract(file: Path, fmt: str, engine: str | None, mode: str, pages: str | None, output: Path | None) -> None:
    """Extract FILE (PDF, JPEG, PNG or TIFF) in-process (no server, no database); progress on stderr."""
    from contrackt.bootstrap_ocr import make_extractor
    from contrackt.domain.errors import ContracktError
    from contrackt.domain.limits import SNIFF_BYTES, sniff_media_type
    from contrackt.domain.pages import expand_pages, format_pages, parse_pages
    from contrackt.ports.extractor import ExtractOptions
    from contrackt.services.markdown import render_markdown

    settings = _settings()
    data = file.read_bytes()
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if media_type is None:
        raise click.ClickException("not a PDF, JPEG, PNG or TIFF file (told by its first bytes)")
    try:
        selection = expand_pages(format_pages(parse_pages(pages, settings.max_pages))) if pages else None
    except ContracktError as exc:
        raise click.ClickException(exc.message) from None
    options = ExtractOptions(
        engine=engine, mode=mode, media_type=media_type, pages=selection, searchable_pdf=fmt == "pdf"
    )

    async def run() -> Any:
        # one document: load OCR models only if one of its pages needs them
        extractor = make_extractor(settings, preload=False)
        await extractor.start()

        async def progress(done: int, total: int) -> None:
            width = 30
            filled = int(width * done / max(total, 1))
            end = "" if sys.stderr.isatty() and done < total else "\n"
            sys.stderr.write(f"\rpages {done}/{total} [{'#' * filled}{'.' * (width - filled)}]{end}")
            sys.stderr.flush()

        try:
            result = await extractor.extract(data, options, progress)
        finally:
            await extractor.close()
        return result

    try:
        result = _run(run)
    except ContracktError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    if fmt == "pdf":
        if result.searchable_pdf is None:
            raise click.ClickException("format_unavailable: the searchable PDF could not be built")
        out = result.searchable_pdf
    elif fmt == "json":
        out = (json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n").encode()
    elif fmt == "markdown":
        out = render_markdown(result).encode()
    else:
        out = (result.text + "\n").encode()
    if output is not None:
        output.write_bytes(out)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--api-key", envvar="CONTRACKT_API_KEY", required=True)
@click.option("--wait", is_flag=True, help="Wait for the result and print its text")
@click.option("--timeout", default=600.0, show_default=True)
def submit(file: Path, url: str, api_key: str, wait: bool, timeout: float) -> None:
    """Upload FILE to a running server (through the Python client, contrackt.client).

    Without --wait, prints the job as accepted (JSON). With --wait, shows the pages done on
    stderr as they come and prints the text.
    """
    from contrackt.client import Client, ContracktClientError

    def progress(done: int, total: int) -> None:
        click.echo(f"page {done}/{total}", err=True)

    try:
        with Client(url, api_key, timeout=60.0) as client:
            if not wait:
                click.echo(json.dumps(client.extract(file, wait=False).raw))
                return
            result = client.extract(file, format="text", progress=progress, timeout=timeout)
    except ContracktClientError as exc:
        where = f" (job {exc.job_id})" if exc.job_id else ""
        raise click.ClickException(f"{exc.code}: {exc.detail}{where}") from None
    click.echo(result.text)


@main.group()
def receipt() -> None:
    """Deletion receipts."""


@receipt.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM, base64 or the JSON of GET /v1/receipt-key (default: this deployment's key, from its "
    "database or CONTRACKT_RECEIPT_KEY_FILE)",
)
def receipt_verify(file: Path, public_key: Path | None) -> None:
    """Check a deletion receipt's signature offline; exit 0 "valid", or 1 with the reason."""
    from contrackt.services.receipts import ReceiptInvalid, parse_public_key, verify_receipt

    try:
        if public_key is not None:
            raw = parse_public_key(public_key.read_bytes())
        else:
            local = _installation_public_key(Settings())
            if local is None:
                raise ReceiptInvalid("no public key: pass --public-key (saved from GET /v1/receipt-key)")
            raw = local
        try:
            doc = json.loads(file.read_bytes())
        except ValueError as exc:
            raise ReceiptInvalid("the receipt is not JSON") from exc
        verify_receipt(doc, raw)
    except ReceiptInvalid as exc:
        click.echo(f"invalid: {exc}")
        sys.exit(1)
    click.echo("valid")


def _installation_public_key(settings: Settings) -> bytes | None:
    """This deployment's receipt public key, read without creating anything: the mounted secret,
    else the key in the database, else (never started since the upgrade) the old per-home file
    that the first start will adopt."""
    from contrackt.adapters.keys.ed25519 import raw_public, read_signing_key
    from contrackt.adapters.keys.receipt_db import LEGACY_KEY_FILE, stored_public_key
    from contrackt.adapters.keys.receipt_file import FORBIDDEN_MODE

    if settings.receipt_key_file is not None:
        return raw_public(read_signing_key(settings.receipt_key_file, forbidden_mode=FORBIDDEN_MODE))
    stored = _run(lambda: stored_public_key(settings.db_url))
    if stored is not None:
        return stored
    legacy = settings.home / LEGACY_KEY_FILE
    return raw_public(read_signing_key(legacy)) if legacy.exists() else None


def _register_operations() -> None:
    from contrackt.cli_ops import audit_checkpoint, dlq, retention

    main.add_command(dlq)
    main.add_command(retention)
    audit.add_command(audit_checkpoint)


_register_operations()

if __name__ == "__main__":
    main()
