"""Webhook rules: the SSRF guard (every address class, URL forms, DNS rebinding at delivery), the
Standard Webhooks signature, the retry schedule, and what a delivery reads of the receiver."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from contrackt.adapters.webhooks.http import HttpWebhookTransport
from contrackt.domain.egress import EgressRefused, address_class, check_address, parse_target, redacted_url
from contrackt.domain.errors import WebhookUrlRefused
from contrackt.domain.webhooks import (
    MAX_RESPONSE_BYTES,
    RetryPolicy,
    delivery_headers,
    event_body,
    job_links,
    new_event_id,
    new_secret,
)
from tests.webhook_receiver import Receiver

NON_PUBLIC = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared"),
    ("169.254.169.254", "link_local"),  # the cloud metadata endpoint
    ("169.254.0.1", "link_local"),
    ("fe80::1", "link_local"),
    ("fc00::1", "unique_local"),
    ("fd12:3456::1", "unique_local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged by the IPv4 address inside
    ("::ffff:169.254.169.254", "link_local"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "translated"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "translated"),  # NAT64 of 169.254.169.254
    ("192.0.2.1", "reserved"),  # documentation
    ("198.18.0.1", "reserved"),  # benchmarking
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("2001:db8::1", "reserved"),
    ("0.1.2.3", "reserved"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::"]


@pytest.mark.parametrize(("address", "expected"), NON_PUBLIC)
def test_every_non_public_address_class_is_named_and_refused(address: str, expected: str) -> None:
    assert address_class(address) == expected
    with pytest.raises(EgressRefused) as refused:
        check_address(address, allow_private=False)
    assert refused.value.address_class == expected
    assert address not in refused.value.reason  # the tenant learns the class, not the address


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_class(address) is None
    check_address(address, allow_private=False)


@pytest.mark.parametrize(("address", "expected"), NON_PUBLIC)
def test_allow_private_opens_loopback_and_private_networks_only(address: str, expected: str) -> None:
    if expected in ("loopback", "private", "unique_local", "shared"):
        check_address(address, allow_private=True)
    else:  # link-local (metadata), multicast, unspecified, reserved, translated: never
        with pytest.raises(EgressRefused):
            check_address(address, allow_private=True)


@pytest.mark.parametrize(
    ("url", "allow_private", "fragment"),
    [
        ("http://hooks.example.com/x", False, "https"),
        ("ftp://hooks.example.com/x", True, "https"),
        ("file:///etc/passwd", True, "https"),
        ("https://user:pw@hooks.example.com/x", False, "credentials"),
        ("https://:443/x", False, "no host"),
        ("https://hooks.example.com/x#frag", False, "fragment"),
        ("https://hooks.example.com/ x", False, "whitespace"),
        ("https://hooks.example.com/\nx", False, "whitespace"),
        ("https://bücher.example/x", False, "ASCII"),
        ("https://hooks.example.com:99999/x", False, "not valid"),
        ("https://hooks.example.com/" + "a" * 2000, False, "longer"),
    ],
)
def test_url_forms_that_are_refused(url: str, allow_private: bool, fragment: str) -> None:
    with pytest.raises(EgressRefused, match=fragment):
        parse_target(url, allow_private=allow_private)


def test_url_forms_that_pass_and_what_the_audit_keeps() -> None:
    t = parse_target("https://Hooks.Example.com./in?token=s3cret&x=1", allow_private=False)
    assert (t.scheme, t.host, t.port) == ("https", "hooks.example.com", 443)
    assert t.without_query == "https://Hooks.Example.com./in"
    assert parse_target("http://127.0.0.1:8080/h", allow_private=True).port == 8080
    assert parse_target("https://[2606:4700::1]:8443/h", allow_private=False).host == "2606:4700::1"
    assert redacted_url("https://a.example/p?q=1#f") == "https://a.example/p"


async def test_registration_checks_every_resolved_address(container) -> None:  # type: ignore[no-untyped-def]
    answers: dict[str, list[str]] = {
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "mixed.example": ["93.184.216.34", "10.0.0.7"],  # one private answer among public ones
        "meta.example": ["169.254.169.254"],
        "empty.example": [],
    }

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    service = container.webhooks
    service.transport = HttpWebhookTransport(allow_private=False, timeout_s=1.0, resolver=resolve)
    assert await service.check_url("https://public.example/h") == "https://public.example/h"
    for url, why in [
        ("https://mixed.example/h", "private address"),
        ("https://meta.example/h", "link-local address"),
        ("https://empty.example/h", "does not resolve"),
        ("https://nowhere.example/h", "does not resolve"),
        ("https://127.0.0.1/h", "loopback address"),
        ("https://[::ffff:127.0.0.1]/h", "loopback address"),
        ("http://public.example/h", "https"),
    ]:
        with pytest.raises(WebhookUrlRefused, match=why):
            await service.check_url(url)


async def test_localhost_is_refused_through_the_real_resolver(container) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        await container.webhooks.check_url("https://localhost/h")


async def test_dns_rebinding_is_refused_at_delivery_time() -> None:
    """Public when registered, loopback now: the connection is never opened."""
    with Receiver() as rx:

        async def rebound(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        guarded = HttpWebhookTransport(allow_private=False, timeout_s=2.0, resolver=rebound)
        outcome = await guarded.post(f"https://rebind.example:{rx.port}/hook", {}, b"{}")
        assert (outcome.status_code, outcome.error) == (None, "address_refused")
        # The same lookup with the setting on reaches the receiver: the socket goes to the checked address.
        open_ = HttpWebhookTransport(allow_private=True, timeout_s=2.0, resolver=rebound)
        outcome = await open_.post(f"http://rebind.example:{rx.port}/hook", {}, b"{}")
        assert outcome.status_code == 204
        assert [(r.path, r.headers["host"]) for r in rx.all()] == [("/hook", f"rebind.example:{rx.port}")]


async def test_one_private_answer_among_public_ones_refuses_the_connection() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    outcome = await HttpWebhookTransport(allow_private=False, timeout_s=2.0, resolver=mixed).post(
        "https://mixed.example/h", {}, b"{}"
    )
    assert outcome.error == "address_refused"


async def test_http_is_refused_at_delivery_once_the_setting_is_off() -> None:
    with Receiver() as rx:
        outcome = await HttpWebhookTransport(allow_private=False, timeout_s=2.0).post(rx.url(), {}, b"{}")
        assert outcome.error == "url_refused"
        assert rx.all() == []


async def test_redirects_are_not_followed() -> None:
    with Receiver([302]) as rx:
        outcome = await HttpWebhookTransport(allow_private=True, timeout_s=2.0).post(rx.url(), {}, b"{}")
        assert outcome.status_code == 302 and not outcome.ok
        assert [r.path for r in rx.all()] == ["/hook"]  # /elsewhere was never asked for


async def test_an_endless_answer_is_cut_after_a_few_kilobytes() -> None:
    with Receiver(endless_body=True) as rx:
        started = time.monotonic()
        outcome = await HttpWebhookTransport(allow_private=True, timeout_s=10.0).post(rx.url(), {}, b"{}")
        took = time.monotonic() - started
        assert outcome.status_code == 200
        assert took < 3.0, f"the delivery read the endless body for {took:.1f}s"
        time.sleep(0.5)
        sent = rx.body_bytes_sent
        time.sleep(0.5)
        assert rx.body_bytes_sent == sent, "the receiver could still write: the connection was not closed"
        assert MAX_RESPONSE_BYTES <= 8192


async def test_a_slow_receiver_times_out() -> None:
    with Receiver(stall_s=3.0) as rx:
        started = time.monotonic()
        outcome = await HttpWebhookTransport(allow_private=True, timeout_s=0.5).post(rx.url(), {}, b"{}")
        assert (outcome.status_code, outcome.error) == (None, "timeout")
        assert time.monotonic() - started < 2.0


async def test_a_closed_port_is_a_connect_error() -> None:
    with Receiver() as rx:
        port = rx.port
    outcome = await HttpWebhookTransport(allow_private=True, timeout_s=2.0).post(
        f"http://127.0.0.1:{port}/h", {}, b"{}"
    )
    assert outcome.error == "connect_error"


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    text, raw = new_secret()
    assert text.startswith("whsec_") and len(raw) == 32
    body = event_body("job.completed", datetime.now(UTC), "0b8e2f4c-3c1d-4d8e-9a6b-2f1e0c9d8b7a", "completed", None)
    msg_id, stamp = new_event_id(), int(time.time())
    headers = delivery_headers(raw, msg_id, stamp, body)
    assert headers["webhook-signature"].startswith("v1,")
    verifier = StandardWebhook(text)
    assert verifier.verify(body, headers)["data"]["status"] == "completed"
    tampered = [
        (body.replace("completed", "failed"), headers),
        (body, {**headers, "webhook-id": new_event_id()}),
        (body, {**headers, "webhook-timestamp": str(stamp + 1)}),
    ]
    for data, hdrs in tampered:
        with pytest.raises(WebhookVerificationError):
            verifier.verify(data, hdrs)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_secret()[0]).verify(body, headers)


def test_event_bodies_carry_the_job_and_nothing_of_the_document() -> None:
    at = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    error = {"code": "corrupt_pdf", "message": "The PDF could not be read"}
    body = event_body("job.failed", at, "j-1", "failed", error)

    assert json.loads(body) == {
        "type": "job.failed",
        "timestamp": "2026-11-27T10:00:00.123456Z",
        "data": {
            "job_id": "j-1",
            "status": "failed",
            "links": job_links("j-1"),
            "error": error,
        },
    }
    from contrackt.api.routes.extract import job_links as api_links

    assert job_links("j-1") == api_links("j-1")  # the same links POST /v1/extract answers with


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    p = RetryPolicy(base_seconds=5.0, max_delay_seconds=7200.0, window_seconds=86400.0)
    for attempt in range(1, 40):
        nominal = min(7200.0, 5.0 * 2 ** (attempt - 1))
        low, high = p.delay(attempt, 0.0).total_seconds(), p.delay(attempt, 0.999999).total_seconds()
        assert low == pytest.approx(nominal / 2)
        assert high == pytest.approx(nominal, rel=1e-5)
        assert low <= p.delay(attempt, 0.37).total_seconds() <= high
    assert [p.delay(n, 0.999999).total_seconds() for n in range(1, 6)] == pytest.approx([5, 10, 20, 40, 80], rel=1e-5)
    assert p.delay(1000, 0.5).total_seconds() == pytest.approx(5400.0)  # capped, no overflow


def test_retries_stop_at_the_end_of_the_window_and_the_last_one_falls_on_it() -> None:
    p = RetryPolicy(base_seconds=5.0, max_delay_seconds=7200.0, window_seconds=86400.0)
    created = datetime(2026, 11, 27, tzinfo=UTC)
    deadline = created + timedelta(hours=24)
    now, attempt, times = created, 1, [created]
    while (nxt := p.next_attempt(created, now, attempt, 0.5)) is not None:
        assert now < nxt <= deadline
        now, attempt = nxt, attempt + 1
        times.append(now)
    assert times[-1] == deadline
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 7200.0
    assert 20 <= len(times) <= 30, len(times)  # attempts in 24 h with the default schedule
    assert p.next_attempt(created, deadline + timedelta(seconds=1), attempt, 0.5) is None
