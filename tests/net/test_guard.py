"""The outbound-address guard: which addresses are refused, how names and odd spellings are read,
and that webhook calls (setup checks included) to a refused address never open a connection."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nudge.net.guard import (
    AddressRefused,
    GuardedResolver,
    HostAllowList,
    NotResolved,
    address_refusal,
    literal_address,
)
from nudge.net.webhooks import WebhookClient, WebhookTarget
from tests.conftest import make_settings
from tests.net.conftest import REFUSED_FORMS, Listener, resolve

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "2606:4700::1111",
    "2620:4f:8000::1",
    "64:ff9b::808:808",  # NAT64 of a public address (DNS64 networks)
    "2002:808:808::1",  # 6to4 of a public address
]

# (address, words the reason must contain)
REFUSED = [
    ("127.0.0.2", "127.0.0.2 is a loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "shared"),
    ("192.0.2.1", "private"),  # documentation
    ("198.18.0.1", "private"),  # benchmarking
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fec0::1", "site-local"),  # Python 3.11 calls it global
    ("100::1", "reserved"),  # discard prefix
    ("2001:db8::1", "private"),
    ("5f00::1", "reserved"),  # outside 2000::/3
    ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64; Python 3.11 calls it global
    ("::ffff:127.0.0.1", "reaches the IPv4 address 127.0.0.1: 127.0.0.1 is a loopback"),
    ("::127.0.0.1", "reaches the IPv4 address 127.0.0.1"),  # IPv4-compatible
    ("64:ff9b::7f00:1", "reaches the IPv4 address 127.0.0.1"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "169.254.169.254 is a link-local"),  # NAT64 to the metadata service
    ("2002:7f00:1::", "reaches the IPv4 address 127.0.0.1"),  # 6to4
    ("2002:c0a8:101::1", "192.168.1.1 is a private"),  # 6to4
]

ALWAYS_REFUSED = ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "::ffff:0.0.0.0", "64:ff9b::e000:1"]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), False) is None


@pytest.mark.parametrize(("address", "words"), REFUSED)
def test_non_public_addresses_are_refused_with_the_reason(address: str, words: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address), False)
    assert reason is not None and words in reason, reason
    assert "NUDGE_ALLOW_PRIVATE_WEBHOOKS" in reason
    assert address_refusal(ipaddress.ip_address(address), True) is None  # development


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_unspecified_and_multicast_are_refused_even_in_development(address: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address), True)
    assert reason is not None and "not a unicast address" in reason


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.com", None),
        ("cafe", None),  # a name, not hex (that needs 0x)
        ("1.2.3.4.example", None),
    ],
)
def test_literal_spellings(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found else None) == address


async def test_every_answer_is_checked_and_only_checked_addresses_come_back() -> None:
    answers = {"ok.example": ["93.184.216.34", "2606:4700::1111"], "mixed.example": []}
    answers["mixed.example"] = ["93.184.216.34", "64:ff9b::7f00:1"]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host == "gone.example":
            raise OSError(-2, "Name or service not known")
        return answers.get(host, [])

    guard = GuardedResolver(False, resolve=resolve)
    assert await guard.checked_addresses("ok.example", 443) == answers["ok.example"]
    assert await guard.checked_address("ok.example", 443) == "93.184.216.34"
    assert asked == ["ok.example"]  # cached
    with pytest.raises(AddressRefused, match="mixed.example refused: 64:ff9b::7f00:1 reaches"):
        await guard.checked_addresses("mixed.example", 443)
    with pytest.raises(NotResolved, match="cannot resolve gone.example"):
        await guard.checked_addresses("gone.example", 443)
    with pytest.raises(NotResolved, match="resolves to no address"):
        await guard.checked_addresses("empty.example", 443)
    # Literals, odd spellings included, are checked without resolving.
    with pytest.raises(AddressRefused, match="0x7f.1 refused: 127.0.0.1 is a loopback"):
        await guard.checked_addresses("0x7f.1", 80)
    assert "0x7f.1" not in asked
    with pytest.raises(AddressRefused, match="127.0.0.1 is a loopback"):
        guard.check_peer("::ffff:127.0.0.1")


def test_host_allow_list() -> None:
    allowed = HostAllowList.parse(" fcm.googleapis.com, *.notify.windows.com ,web.push.apple.com")
    assert allowed.refusal("fcm.googleapis.com") is None
    assert allowed.refusal("FCM.googleapis.com.") is None
    assert allowed.refusal("eu.fcm.googleapis.com") is None
    assert allowed.refusal("wns2-par02p.notify.windows.com") is None
    assert allowed.refusal("notify.windows.com") is not None  # "*." means subdomains only
    assert allowed.refusal("evilfcm.googleapis.com") is not None  # not a subdomain
    assert allowed.refusal("fcm.googleapis.com.evil.example") is not None
    reason = allowed.refusal("127.0.0.1")
    assert reason is not None and "127.0.0.1 is not one of the allowed hosts" in reason
    assert HostAllowList.parse("*").refusal("anything.example") is None
    assert HostAllowList.parse("a.example,*").refusal("b.example") is None


SECRET = "whsec_dGhpcy1pcy1hLXRlc3Qtc2lnbmluZy1zZWNyZXQ="


@pytest.mark.parametrize("host", [*REFUSED_FORMS, "[64:ff9b:1::7f00:1]", "[fec0::1]"])
async def test_webhooks_and_setup_checks_never_connect_to_refused_forms(
    tmp_path: Path, listener: Listener, host: str
) -> None:
    settings = make_settings(tmp_path, allow_private_webhooks=False)
    webhooks = WebhookClient(settings, resolver=GuardedResolver(False, resolve=resolve))
    try:
        url = f"http://{host}:{listener.port}/setup"
        result = await webhooks.send(
            WebhookTarget("app_x", SECRET), "GET", url, params={"uid": "u1"}
        )
    finally:
        await webhooks.aclose()
    assert not result.ok and result.status is None
    assert (result.error or "").startswith("refused:"), result.error
    assert listener.connections == 0


async def test_the_listener_is_reached_when_private_targets_are_allowed(
    tmp_path: Path, listener: Listener
) -> None:
    """The control for the test above: the same calls, allowed, do connect."""
    webhooks = WebhookClient(make_settings(tmp_path), resolver=GuardedResolver(True))
    try:
        for host in ("localhost", "0x7f.1"):
            url = f"http://{host}:{listener.port}/setup"
            result = await webhooks.send(WebhookTarget("app_x", SECRET), "GET", url, params={})
            assert result.ok and result.status == 201, result
    finally:
        await webhooks.aclose()
    assert listener.connections == 2
