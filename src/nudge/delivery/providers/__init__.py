"""The provider registry: platform name -> provider class.

A provider class has ``from_deps(deps) -> provider`` and raises :class:`ProviderNotConfigured`
when its settings are missing; deliveries to that platform then fail with that reason.
"""

from __future__ import annotations

import logging
from typing import Any

from nudge.delivery.providers.apns import ApnsProvider
from nudge.delivery.providers.base import Provider, ProviderDeps, ProviderNotConfigured
from nudge.delivery.providers.fcm import FcmProvider
from nudge.delivery.providers.inbox import InboxProvider
from nudge.delivery.providers.log import LogProvider
from nudge.delivery.providers.webpush import WebPushProvider

log = logging.getLogger("nudge.delivery")

__all__ = ["PROVIDERS", "Provider", "ProviderDeps", "ProviderNotConfigured", "build_providers"]


PROVIDERS: dict[str, Any] = {
    "inbox": InboxProvider,
    "log": LogProvider,
    "fcm": FcmProvider,
    "apns": ApnsProvider,
    "webpush": WebPushProvider,
}


def build_providers(deps: ProviderDeps) -> tuple[dict[str, Provider], dict[str, str]]:
    """Instantiate every configured provider; returns (providers, reasons the others are off)."""
    ready: dict[str, Provider] = {}
    missing: dict[str, str] = {}
    for name, cls in PROVIDERS.items():
        try:
            ready[name] = cls.from_deps(deps)
        except ProviderNotConfigured as exc:
            missing[name] = str(exc)
            log.info("provider off", extra={"provider": name, "reason": str(exc)})
    return ready, missing
