"""The outbound-address guard: which addresses Nudge may call when someone else chose them.

App webhooks, setup checks and Web Push endpoints all go through it: the name is resolved once,
every address it resolves to is checked (IPv6 forms carrying an IPv4 address and legacy IPv4
spellings such as ``0x7f.1`` are judged by the address they reach), the client connects only to a
checked address (no DNS-rebinding window) and the connected peer is checked once more
(docs/security.md). The rules are written out rather than read from ``ipaddress.is_global``
alone: Python 3.11 calls ``fec0::1``, ``::7f00:1`` and ``64:ff9b:1::1`` global."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_HINT = "set NUDGE_ALLOW_PRIVATE_WEBHOOKS=1 to allow private targets in development"

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")


class AddressRefused(Exception):
    """The target may not be called (a non-public address, a host not allowed); says why."""


class NotResolved(AddressRefused):
    """The name resolved to nothing usable; unlike a refusal this may pass later."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and may reach, or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: and ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _non_public(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is, or None when it is public."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _SHARED:
            return "shared (carrier-grade NAT)"
        return None if ip.is_global else "non-public"
    if ip not in _GLOBAL_UNICAST or ip in _NAT64_LOCAL or not ip.is_global:
        return "non-public"
    return None


def address_refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    shown, prefix = ip, ""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            shown, prefix = inner, f"{ip} reaches the IPv4 address {inner}: "
    if shown.is_unspecified or shown.is_multicast:
        return f"{prefix}{shown} is not a unicast address"
    if allow_private:
        return None
    kind = _non_public(shown)
    if kind is None:
        return None
    return f"{prefix}{shown} is a {kind} address; calls must reach public hosts ({PRIVATE_HINT})"


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells (IPv4, IPv6 without brackets, legacy IPv4 forms), or None
    when it is a name."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host)
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedResolver:
    """Resolve, check every answer, hand back only checked addresses: the HTTP client connects
    to one of them and does not resolve again."""

    def __init__(
        self,
        allow_private: bool,
        *,
        cache_ttl_s: float = 30.0,
        resolve: Callable[[str, int], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.cache_ttl_s = cache_ttl_s
        self._resolve = resolve or system_resolve
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def check_literal(self, host: str) -> IPAddress | None:
        """If ``host`` is an address, check it (raises :class:`AddressRefused`) and return it."""
        ip = literal_address(host)
        if ip is not None:
            reason = address_refusal(ip, self.allow_private)
            if reason:  # name the spelling when it is not the usual one (0x7f.1)
                raise AddressRefused(reason if host == str(ip) else f"{host} refused: {reason}")
        return ip

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, all checked; raises :class:`AddressRefused` (or its
        :class:`NotResolved`) instead."""
        ip = self.check_literal(host)
        if ip is not None:
            return [str(ip)]
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached and cached[0] > now:
            return cached[1]
        try:
            found = await self._resolve(host, port)
        except OSError as exc:
            raise NotResolved(f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        if not addresses:
            raise NotResolved(f"{host} resolves to no address")
        for address in addresses:
            reason = address_refusal(address, self.allow_private)
            if reason:
                raise AddressRefused(f"{host} refused: {reason}")
        checked = [str(a) for a in addresses]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(host, port)] = (now + self.cache_ttl_s, checked)
        return checked

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; raises :class:`AddressRefused`."""
        return (await self.checked_addresses(host, port))[0]

    def check_peer(self, ip: str) -> None:
        """The last gate, on the peer actually connected to; raises :class:`AddressRefused`."""
        reason = address_refusal(ipaddress.ip_address(ip), self.allow_private)
        if reason:
            raise AddressRefused(reason)


@dataclass(frozen=True)
class HostAllowList:
    """Host names a call may go to: ``name`` allows it and its subdomains, ``*.name`` only its
    subdomains; a ``*`` entry (or an empty list) allows any host."""

    entries: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> HostAllowList:
        """From a comma-separated list, as in ``NUDGE_WEBPUSH_ALLOWED_HOSTS``."""
        entries = tuple(e.strip().lower().rstrip(".") for e in text.split(",") if e.strip())
        return cls(() if "*" in entries else entries)

    def refusal(self, host: str) -> str | None:
        """Why ``host`` is not allowed, or None."""
        if not self.entries:
            return None
        name = host.lower().rstrip(".")
        for entry in self.entries:
            if entry.startswith("*."):
                if name.endswith(entry[1:]):
                    return None
            elif name == entry or name.endswith("." + entry):
                return None
        return f"{host} is not one of the allowed hosts ({', '.join(self.entries)})"
